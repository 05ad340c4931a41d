"""`editgraph serve`: argument parsing and starting uvicorn; the server itself is editgraph.serve."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    """`serve`'s options (cli/main.py's COMMANDS holds its help line)."""
    p.set_defaults(func=cmd_serve)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; any other needs --token)")
    p.add_argument("--port", type=int, default=8188, help="port (default 8188)")
    p.add_argument("--token", default=None, help="required on every API request and socket (default: $EDITGRAPH_TOKEN)")
    p.add_argument("--data-dir", default=None, help="jobs database, uploads and outputs (default: <user data dir>/editgraph/serve)")
    p.add_argument("--cache-dir", default=None, help="the executor's cache root (default: $EDITGRAPH_CACHE_DIR or the user cache dir)")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR", help="a folder workflows may read files from (repeatable)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow a page on this origin to call the API (default: none)")
    p.add_argument("--max-body", type=int, default=64 * 2**20, metavar="BYTES", help="largest request body (default 64 MiB)")
    p.add_argument("--max-queue", type=int, default=100, help="unfinished jobs held at once (default 100)")
    p.add_argument("--rate", type=int, default=120, metavar="N", help="submissions per minute per client address (default 120)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available); one worker runs jobs on it")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (results are bit-identical only at equal counts)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def config_from_args(args):
    from editgraph.serve.config import ServeConfig
    from editgraph.settings import Settings

    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        import platformdirs

        data_dir = Path(platformdirs.user_data_dir("editgraph")) / "serve"
    return ServeConfig(
        data_dir=data_dir.resolve(),
        host=args.host,
        port=args.port,
        token=args.token if args.token is not None else Settings.from_env().serve_token,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        allow_dirs=tuple(Path(d) for d in args.allow_dir),
        cors_origins=tuple(args.cors_origin),
        max_body_bytes=args.max_body,
        max_queue=args.max_queue,
        submits_per_minute=args.rate,
        threads=args.threads,
        device=args.device,
    )


def cmd_serve(args) -> int:
    from editgraph.serve.config import StartRefused, check_start

    config = config_from_args(args)
    try:
        check_start(config)  # before anything binds a socket
    except StartRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        print(f"error: `editgraph serve` needs the serve extra ({exc.name} is missing): pip install 'editgraph[serve]'", file=sys.stderr)
        return 2

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    from editgraph.serve.app import create_app

    app = create_app(config)
    where = f"http://{'[' + config.host + ']' if ':' in config.host else config.host}:{config.port}/"
    print(f"editgraph serve: {where}  (data: {config.data_dir}{'; token required' if config.token else ''})", file=sys.stderr, flush=True)
    # proxy_headers off: X-Forwarded-For from a client must not pick its own rate-limit identity.
    uvicorn.run(app, host=config.host, port=config.port, log_level=args.log_level, proxy_headers=False, server_header=False)
    return 0

