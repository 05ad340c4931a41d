"""The `editgraph` command. Heavy imports (torch, diffusers) happen inside commands, so --help is instant.

Exit codes: 0 success, 2 usage, 3 invalid workflow, 4 a node failed, 5 other error, 130 cancelled;
`verify`: 1 when the image's C2PA credentials do not verify.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

from typing import Any

from editgraph.settings import OFFLOAD_MODES

# Commands that load a workflow or an image only to check or describe it.
_READ_ONLY = frozenset({"validate", "show", "extract", "nodes", "schema", "workflows"})

EXIT_OK, EXIT_USAGE, EXIT_INVALID, EXIT_NODE_FAILED, EXIT_ERROR, EXIT_CANCELLED = 0, 2, 3, 4, 5, 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    collecting = gc.isenabled()
    if command in _READ_ONLY:
        # These check or describe and print. Importing pydantic and the node modules makes tens of
        # thousands of objects that live until exit and no cycles worth finding: the collector's
        # passes over them were 3 % of `editgraph validate` (issue 9).
        gc.disable()
    try:
        return _dispatch(_parser(command).parse_args(argv))
    finally:
        if collecting:
            gc.enable()  # main() called from Python (tests, scripts) leaves the collector as it was


def _dispatch(args: argparse.Namespace) -> int:
    from editgraph.errors import Cancelled, EditgraphError, NodeFailed, WorkflowInvalid

    try:
        return args.func(args) or EXIT_OK
    except WorkflowInvalid as exc:
        _err(str(exc))
        return EXIT_INVALID
    except NodeFailed as exc:
        _err(f"error: {exc}\n(everything computed before it is cached: fix and run again to resume)")
        return EXIT_NODE_FAILED
    except (Cancelled, KeyboardInterrupt):
        _err("cancelled (finished nodes are cached)")
        return EXIT_CANCELLED
    except EditgraphError as exc:
        _err(f"error: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:  # `editgraph models list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # a file or folder the user named: missing, a directory, not writable ...
        _err(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return EXIT_ERROR
    except Exception as exc:  # a bug of ours: say so briefly; EDITGRAPH_DEBUG=1 shows the traceback
        from editgraph.settings import Settings

        if Settings.from_env().debug:
            raise
        _err(f"error: unexpected {type(exc).__name__}: {exc}\n(an editgraph bug; run with EDITGRAPH_DEBUG=1 for the traceback and report it)")
        return EXIT_ERROR


def _executor_args(p: argparse.ArgumentParser) -> None:
    """The options run and batch share: where the cache is, torch's threads, the display."""
    p.add_argument("--cache-dir", help="cache root (default: $EDITGRAPH_CACHE_DIR or the user cache dir)")
    p.add_argument("--cache", dest="shared_cache", metavar="URL",
                   help="a cache tier shared by machines, behind the local ones: s3://BUCKET/PREFIX (endpoint from "
                        "$EDITGRAPH_S3_ENDPOINT or $AWS_ENDPOINT_URL) or a folder on a shared filesystem (default: $EDITGRAPH_SHARED_CACHE)")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (results are bit-identical only at equal counts)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the best available); results are bit-identical per device")
    p.add_argument("--offload", choices=OFFLOAD_MODES, default=None,
                   help="keep model weights on the CPU and move them to the device per node (model), per block (group) or per "
                        "layer (sequential), for models bigger than the device's memory; same bytes in every mode "
                        "(default: $EDITGRAPH_OFFLOAD, else none)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads, 1 or more, got {text!r}")
    return value


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. With `command` (the word after `editgraph`), only that command gets its
    options: the others stay listed for --help and for argparse's `invalid choice`, but their
    options are not built nor their modules imported (`validate` spent a tenth of its time on
    the other sixteen; issue 9)."""
    p = argparse.ArgumentParser(prog="editgraph", description="Run image-edit workflows (JSON node graphs) with content-keyed caching.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_, configure) in COMMANDS.items():
        parser = sub.add_parser(name, help=help_)
        if command is None or command == name or command not in COMMANDS:
            if isinstance(configure, str):  # "module:function" in another cli module
                import importlib

                module, _, function = configure.partition(":")
                configure = getattr(importlib.import_module(module), function)
            configure(parser)
    return p


def _configure_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("workflow")
    run.add_argument("--set", dest="sets", action="append", default=[], type=_name_value, metavar="NAME=VALUE", help="set a workflow param")
    run.add_argument("--out", default="out", help="output folder; the only place a run writes files (default: ./out)")
    run.add_argument("--report", help="write a JSON report: each node's status, seconds and key; the resolved params")
    run.add_argument("--no-cache", action="store_true", help="run every node; read and write no cache")
    _executor_args(run)
    _mismatch_arg(run)
    from editgraph.cli import spend as cli_spend

    cli_spend.add_args(run, batch=False)
    run.set_defaults(func=cmd_run)


def _configure_validate(val: argparse.ArgumentParser) -> None:
    val.add_argument("workflow")
    val.add_argument("--set", dest="sets", action="append", default=[], type=_name_value, metavar="NAME=VALUE")
    _mismatch_arg(val)
    val.set_defaults(func=cmd_validate)


def _configure_show(show: argparse.ArgumentParser) -> None:
    show.add_argument("workflow", help="a workflow file, a bundled name, or an image editgraph wrote")
    show.add_argument("--format", "-f", choices=["text", "mermaid", "dot", "png", "json"], default="text", help="json: the raw provenance of an image, or the document")
    show.add_argument("-o", "--output", help="write here instead of stdout (required for png)")
    show.add_argument("--report", help="a report from `run --report` or `batch --report`: label each node ran / cached / failed")
    show.add_argument("--row", type=int, help="with a batch report: which row's statuses (default: the last row that ran)")
    show.set_defaults(func=cmd_show)


def _configure_extract(ext: argparse.ArgumentParser) -> None:
    ext.add_argument("image")
    ext.add_argument("-o", "--output", help="workflow file to write (default: stdout); nothing else is written")
    ext.set_defaults(func=cmd_extract)


def _configure_batch(batch: argparse.ArgumentParser) -> None:
    batch.add_argument("workflow")
    batch.add_argument("--table", help="CSV: a header of workflow param names, one row per run; empty cell = default")
    batch.add_argument("--zip", dest="zips", action="append", default=[], metavar="NAME=A,B,C", help="lists walked together (equal lengths)")
    batch.add_argument("--product", dest="products", action="append", default=[], metavar="NAME=A,B", help="every combination of these lists")
    batch.add_argument("--set", dest="sets", action="append", default=[], type=_name_value, metavar="NAME=VALUE", help="a param held the same in every row")
    batch.add_argument("--out", default="out", help="output root (rows go to OUT/row-<n>/), or a template using {row} and param names")
    batch.add_argument("--report", help="write a JSON report: per row per node status, and how often each node ran")
    batch.add_argument("--keep-going", action="store_true", help="after a failed row, run the remaining rows (exit 4 at the end)")
    batch.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="run the rows on Ray workers that keep models loaded: no ADDRESS starts a local Ray; "
                            "'auto', HOST:PORT or ray://... joins a cluster (needs: pip install 'editgraph[ray]')")
    batch.add_argument("--workers", type=_positive_int, help="with --ray: workers to start (default: one per GPU, else cluster CPUs / --threads)")
    batch.add_argument("--retries", type=int, default=2, help="with --ray: times a row is retried after its worker dies (default: 2)")
    _executor_args(batch)
    _mismatch_arg(batch)
    from editgraph.cli import spend as cli_spend

    cli_spend.add_args(batch, batch=True)
    batch.set_defaults(func=cmd_batch)


def _configure_nodes(nodes: argparse.ArgumentParser) -> None:
    nodes.add_argument("type", nargs="?")
    nodes.set_defaults(func=cmd_nodes)


def _configure_schema(schema: argparse.ArgumentParser) -> None:
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(func=cmd_schema)


def _configure_workflows(wfs: argparse.ArgumentParser) -> None:
    wfs.set_defaults(func=cmd_workflows)


def _configure_cache(cache: argparse.ArgumentParser) -> None:
    cache.add_argument("action", choices=["info", "clear", "gc"])
    cache.add_argument("--cache-dir")
    cache.set_defaults(func=cmd_cache)


def _mismatch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-model-mismatch", action="store_true", help="use a model whose files differ from the hash the workflow pins")


# name: (help, how to add its options: a function here, or "module:function" in another cli module)
COMMANDS: dict[str, tuple[str, Any]] = {
    "run": ("run a workflow (a file, a bundled name, or an image editgraph made: same pixels again)", _configure_run),
    "validate": ("check a workflow without running it, input files included; lists every problem", _configure_validate),
    "show": ("describe a workflow (text, Mermaid, DOT, PNG) or the provenance a saved image carries", _configure_show),
    "extract": ("write the workflow an image carries (params and seeds resolved) to a file", _configure_extract),
    "batch": ("run a workflow once per row of params (CSV table, --zip, --product) with one cache", _configure_batch),
    "nodes": ("list node types, or show one's sockets and params", _configure_nodes),
    "schema": ("print the workflow JSON Schema (for editors)", _configure_schema),
    "workflows": ("list the bundled workflows", _configure_workflows),
    "models": ("list resolvable models, build the tiny ones, print a model's content hash", "editgraph.cli.models:configure"),
    "verify": ("check an image's C2PA manifest (Content Credentials): signer, actions, AI disclosure, ingredients",
               "editgraph.cli.credentials:configure"),
    "import": ("translate another tool's workflow into an editgraph document", "editgraph.cli.comfy:configure"),
    "serve": ("serve the HTTP API and the web page (127.0.0.1:8188 by default)", "editgraph.cli.serve:configure"),
    "cache": ("inspect or clear the disk cache", _configure_cache),
}


# --- loading -----------------------------------------------------------------------------------


def _name_value(item: str) -> str:
    """--set's argument type: a malformed one is a usage error (exit 2), found by argparse before
    any workflow is read, like any other malformed option."""
    import argparse

    name, eq, _ = item.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {item!r}")
    return item


def _parse_sets(sets: list[str]) -> dict[str, str]:
    out = {}
    for item in sets:
        name, _, value = item.partition("=")
        out[name.strip()] = value
    return out


def _load(ref: str, *, relocate: bool = False):
    """(Workflow, base dir, label): see editgraph.sharing.source.open_source."""
    from editgraph.sharing.source import open_source

    return open_source(ref, relocate=relocate, on_note=lambda note: _err(f"note: {note}"))


def _settings(args):
    """The environment's settings with this command's options."""
    from editgraph.settings import Settings

    settings = Settings.from_env()
    return settings.with_options(
        allow_model_mismatch=getattr(args, "allow_model_mismatch", False),
        offload=getattr(args, "offload", None) or settings.offload,
        shared_cache=getattr(args, "shared_cache", None) or settings.shared_cache,
    )


# --- commands ----------------------------------------------------------------------------------


def cmd_validate(args) -> int:
    from editgraph.errors import WorkflowInvalid
    from editgraph.graph.validate import bind
    from editgraph.sharing.preflight import check_sources

    workflow, base, label = _load(args.workflow, relocate=True)  # an image: check what `run` would use
    graph = bind(workflow, _parse_sets(args.sets), base_dir=base, require_values=False, source=label)
    problems = check_sources(graph, deep=True, settings=_settings(args))
    if problems:
        raise WorkflowInvalid(problems, label)
    needs = f"; params to set when running: {', '.join(graph.unbound)}" if graph.unbound else ""
    print(f"{label}: valid ({len(graph.nodes)} nodes){needs}")
    return EXIT_OK


def cmd_run(args) -> int:
    from editgraph.api import Workflow, execute
    from editgraph.cli import spend as cli_spend
    from editgraph.atomic import write_atomic
    from editgraph.cli.display import Display
    from editgraph.engines.spend import Ledger
    from editgraph.errors import NodeFailed
    from editgraph.executor.cache import Cache
    from editgraph.graph.validate import bind

    workflow, base, label = _load_to_run(args)
    graph = bind(workflow, _parse_sets(args.sets), base_dir=base, source=label)
    _warn_threads(args.workflow)
    settings = _settings(args)
    cache = Cache(None, None) if args.no_cache else _open_cache(args.cache_dir)
    try:
        ests = cli_spend.estimates([graph], cache) if cli_spend.has_paid_nodes(graph) else []
        if args.estimate:
            cli_spend.print_estimate(ests, rows=False)
            return EXIT_OK
        cli_spend.check_budget(ests, args.max_cost)
        from editgraph.sharing.source import is_image

        if is_image(args.workflow) and Path(args.workflow).is_file():
            cli_spend.check_rerun(ests, args.workflow, args.spend_again)
        ledger = Ledger(args.max_cost)
        display = Display(quiet=args.quiet)
        try:
            with display:
                result = execute(
                    Workflow(workflow, base, label),
                    graph,
                    out=args.out,
                    cache=False if args.no_cache else cache,
                    device=args.device,
                    listeners=[display],
                    settings=settings,
                    ledger=ledger,
                )
        except NodeFailed as exc:
            cli_spend.print_spend(ledger)
            if args.report:  # what was spent before the failure (or the budget stop) is reported too
                _write_failed_report(Path(args.report), label, graph, exc, cli_spend.report_section(ledger, ests) if ests else None)
            raise
    finally:
        cache.close()
        _note_problems(cache.disk)  # index errors met mid-run cost entries, never the run: say so
    for path in result.written:
        print(f"wrote {path}")
    if graph.seeds:
        print("seeds drawn: " + ", ".join(f"{k}={v}" for k, v in graph.seeds.items()))
    cli_spend.print_spend(ledger)
    if args.report:
        report = result.report
        if ests:
            report["cost"] = cli_spend.report_section(ledger, ests)
        write_atomic(Path(args.report), (json.dumps(report, indent=2) + "\n").encode())
    return EXIT_OK


def _open_cache(root, settings=None):
    from editgraph.executor.cache import Cache

    cache = Cache.default(root, settings)
    _note_recovery(cache.disk)
    return cache


def _note_recovery(store) -> None:
    if store is not None and store.recovered_from is not None:
        _err(f"note: the cache index was damaged and has been set aside as {store.recovered_from}; starting a fresh one")


def _note_problems(store) -> None:
    """Index errors met mid-run cost cached entries, never the run: say so once, at the end."""
    if store is None or not store.problems:
        return
    _err(f"note: {store.problems[0]}" + (f" (and {len(store.problems) - 1} more)" if len(store.problems) > 1 else ""))
    _note_recovery(store)


def _load_to_run(args):
    """run and batch: pin torch's threads first (they change float rounding), then load the
    workflow, finding an image's moved inputs by name and hash."""
    if args.threads:
        from editgraph.executor.devices import set_threads

        set_threads(args.threads)  # now, or when a node first imports torch
    return _load(args.workflow, relocate=True)


def _warn_threads(ref: str) -> None:
    """Re-running an image's workflow reproduces its pixels bit for bit only at its thread count."""
    from editgraph.sharing.source import is_image

    if not is_image(ref):
        return
    from editgraph.executor.devices import torch_threads
    from editgraph.sharing.source import read_image_provenance

    made_with = read_image_provenance(ref).get("torch_threads")
    if made_with:  # None: no torch code made its pixels, any count will do
        now = torch_threads()
        if made_with != now:
            _err(f"note: {ref} was made with {made_with} torch threads, this run uses {now}; add --threads {made_with} for identical pixels")


def _write_failed_report(path: Path, label: str, graph, exc, spend: dict[str, Any] | None) -> None:
    from editgraph.atomic import write_atomic

    report: dict[str, Any] = {
        "workflow": label, "name": graph.workflow.name, "params": graph.params, "seeds": graph.seeds,
        "status": "failed", "failed": {"node": exc.node_id, "type": exc.node_type, "error": str(exc)},
    }
    if spend is not None:
        report["cost"] = spend
    write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())


def cmd_nodes(args) -> int:
    from editgraph.nodes.registry import load_builtin_nodes

    registry = load_builtin_nodes()
    if not args.type:
        width = max(map(len, registry))
        for name in sorted(registry):
            doc = (registry[name].__doc__ or "").strip().splitlines()[0]
            print(f"{name:<{width}}  {doc}")
        return EXIT_OK
    cls = registry.get(args.type)
    if cls is None:
        import difflib

        close = difflib.get_close_matches(args.type, list(registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        _err(f"error: unknown node type {args.type!r}{hint}")
        return EXIT_USAGE
    flags = ("" if cls.deterministic else ", not deterministic: never cached") + (", generative: files saved downstream disclose AI" if cls.generative else "")
    print(f"{cls.type}  (version {cls.version}{flags})")
    print("\n" + (cls.__doc__ or "").strip() + "\n")
    print("inputs:")
    for i in cls.inputs.values():
        print(f"  {i.name}: {i.socket.name}{' (optional)' if i.optional else ''}")
    if not cls.inputs:
        print("  (none)")
    print("outputs:")
    for n, s in cls.outputs.items():
        print(f"  {n}: {s.name}")
    print("params:")
    for name, f in cls.Params.model_fields.items():
        schema = cls.Params.model_json_schema()["properties"][name]
        bounds = ", ".join(f"{k} {schema[k]}" for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum") if k in schema)
        default = "required" if f.is_required() else f"default {f.default!r}"
        kind = schema.get("type") or "/".join(str(a.get("type", a.get("const", "?"))) for a in schema.get("anyOf", [])) or "?"
        print(f"  {name}: {kind}, {default}{', ' + bounds if bounds else ''}")
        if f.description:
            print(f"      {f.description}")
    if not cls.Params.model_fields:
        print("  (none)")
    return EXIT_OK


def _write_out(output: str | None, data: bytes) -> None:
    """To the named file (atomically: a reader never sees half of it), else stdout."""
    if output:
        from editgraph.atomic import write_atomic

        write_atomic(Path(output), data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def _statuses(report_path: str | None, row: int | None) -> dict[str, str]:
    from editgraph.errors import EditgraphError
    from editgraph.graph.render import statuses_from_report

    if not report_path:
        return {}
    try:
        report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EditgraphError(f"cannot read report {report_path}: {exc}") from None
    if isinstance(report.get("rows"), list):  # a batch report: one row's statuses
        rows = [r for r in report["rows"] if r.get("nodes")]
        if row is not None:
            rows = [r for r in report["rows"] if r.get("row") == row]
            if not rows:
                raise EditgraphError(f"report {report_path} has no row {row}; rows are 1..{len(report['rows'])}")
        return statuses_from_report(rows[-1]) if rows else {}
    return statuses_from_report(report)


def cmd_show(args) -> int:
    from editgraph.graph import render
    from editgraph.sharing.preflight import describe_provenance

    fmt = args.format
    if fmt == "png" and not args.output:
        _err("error: --format png needs -o FILE (a picture is not written to the terminal)")
        return EXIT_USAGE
    from editgraph.sharing.source import is_image, read_image_provenance

    image = is_image(args.workflow) and Path(args.workflow).is_file()
    info = read_image_provenance(args.workflow) if image else None
    workflow, _, label = _load(args.workflow)
    status = _statuses(args.report, args.row)
    if fmt == "json":
        data = info if info is not None else workflow.to_dict()
        _write_out(args.output, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())
    elif fmt == "png":
        _write_out(args.output, render.to_png(workflow, status))
    elif fmt == "mermaid":
        _write_out(args.output, render.to_mermaid(workflow, status).encode())
    elif fmt == "dot":
        _write_out(args.output, render.to_dot(workflow, status).encode())
    else:
        text = render.to_text(workflow, status)
        if info is not None:
            text = describe_provenance(label, info, Path(args.workflow).read_bytes()) + "\nworkflow " + text
        _write_out(args.output, text.encode())
    return EXIT_OK


def cmd_extract(args) -> int:
    from editgraph.graph.document import load_workflow

    from editgraph.sharing.source import read_image_provenance

    info = read_image_provenance(args.image)
    workflow = load_workflow(info["workflow"])  # checks it is a well-formed document before writing
    _write_out(args.output, workflow.to_json().encode())
    if args.output:
        _err(f"wrote {args.output}")
    return EXIT_OK


def cmd_batch(args) -> int:
    from editgraph.cli import spend as cli_spend
    from editgraph.sharing.provenance import signing_stamp
    from editgraph.batch import runner as batch
    from editgraph.atomic import write_atomic
    from editgraph.executor.run import Executor

    workflow, base, label = _load_to_run(args)
    try:
        groups = []
        if args.table:
            groups.append(batch.rows_from_table(Path(args.table), workflow))
        if args.zips:
            groups.append(batch.rows_from_zip(args.zips))
        if args.products:
            groups.append(batch.rows_from_product(args.products))
        if not groups:
            _err("error: batch needs rows: --table FILE.csv, --zip NAME=A,B,..., or --product NAME=A,B,...")
            return EXIT_USAGE
        rows = batch.combine(groups)
        graphs = batch.bind_rows(workflow, rows, _parse_sets(args.sets), base_dir=base, source=label)
        dirs = batch.out_dirs(args.out, graphs, {n: p.type for n, p in workflow.params.items()})
    except batch.BatchUsageError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    signing_stamp()  # a misconfigured C2PA identity fails before row 1, not after it
    from editgraph.cli.display import Display
    from editgraph.sharing.preflight import check_sources

    from editgraph.errors import Issue, WorkflowInvalid

    # Every row's sources (files, models and their pinned hashes) are checked before a long run.
    problems = [
        Issue(f"rows[{i}].{issue.path}", issue.message, issue.node_id, issue.node_type)
        for i, graph in enumerate(graphs)
        for issue in check_sources(graph, deep=True, settings=_settings(args))
    ]
    if problems:
        raise WorkflowInvalid(problems, label)
    if args.ray is not None:
        from editgraph.cli.cluster import cmd_batch_ray

        return cmd_batch_ray(args, workflow, graphs, dirs, base, label, _settings(args))
    from editgraph.engines.spend import Ledger

    cache = _open_cache(args.cache_dir, _settings(args))
    display = Display(rows=len(graphs), quiet=args.quiet)
    try:
        paid = cli_spend.has_paid_nodes(graphs[0])
        ests = cli_spend.estimates(graphs, cache) if paid else []
        if args.estimate:
            cli_spend.print_estimate(ests, rows=True)
            return EXIT_OK
        cli_spend.check_budget(ests, args.max_cost)
        ledger = Ledger(args.max_cost)
        executor = Executor(cache, listeners=[display], device=args.device, settings=_settings(args), ledger=ledger)
        t0 = time.perf_counter()

        def on_row(row, results) -> None:
            display.row_done(row)
            if args.report:
                report = batch.report(label, workflow, results, time.perf_counter() - t0, executor.device, executor.offload)
                if paid:
                    report["cost"] = cli_spend.report_section(ledger, ests)
                write_atomic(Path(args.report), (json.dumps(report, indent=2) + "\n").encode())

        jobs = args.jobs or (8 if paid else 1)  # hosted rows overlap their network waits
        with display:
            results = batch.run_batch(
                graphs, dirs, executor, keep_going=args.keep_going, on_row=on_row, on_row_start=display.row_start, jobs=jobs
            )
    finally:
        cache.close()
        _note_problems(cache.disk)
    if args.report and paid:  # the final word on spend (rows may have finished out of order)
        report = batch.report(label, workflow, results, time.perf_counter() - t0, executor.device, executor.offload)
        report["cost"] = cli_spend.report_section(ledger, ests)
        write_atomic(Path(args.report), (json.dumps(report, indent=2) + "\n").encode())
    cli_spend.print_spend(ledger)
    s = batch.summary(results)
    print(f"{s['ok']} of {s['rows']} rows ok" + (f", {s['failed']} failed" if s["failed"] else "") + (f", {s['not run']} not run" if s["not run"] else ""))
    if s["shared"]:
        print("computed once for all rows: " + ", ".join(s["shared"]))
    for r in results:
        if r.status == "failed":
            _err(f"row {r.row}: {r.error}")
    if s["failed"]:
        _err("(everything computed is cached: fix and run the batch again to resume)")
        return EXIT_NODE_FAILED
    return EXIT_OK


def cmd_schema(args) -> int:
    from editgraph.graph.schema import workflow_schema

    text = json.dumps(workflow_schema(), indent=2) + "\n"
    if args.output:
        from editgraph.atomic import write_atomic

        write_atomic(Path(args.output), text.encode())
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_workflows(args) -> int:
    from editgraph import workflows
    from editgraph.graph.document import load_workflow

    for name in workflows.names():
        wf = load_workflow(workflows.find(name))
        print(f"{name:<20} {wf.description}")
    return EXIT_OK


def cmd_cache(args) -> int:
    from editgraph.executor.cache import default_disk
    from editgraph.models.tiny import sweep_stale_builds
    from editgraph.settings import Settings, format_size

    store = default_disk(args.cache_dir)
    _note_recovery(store)
    models_root = Settings.from_env().models_root
    if args.action == "clear":
        store.clear()
        sweep_stale_builds(models_root)
        print(f"cleared {store.root}")
    elif args.action == "gc":
        removed = store.sweep_orphans() + len(sweep_stale_builds(models_root))
        print(f"removed {removed} orphaned files from {store.root}")
    else:
        info = store.info()
        print(f"root:    {info['root']}\nentries: {info['entries']}\nblobs:   {info['blobs']}\nsize:    {format_size(info['bytes'])} of {format_size(info['max_bytes'])}")
        print(f"outputs: {info['outputs']} named by entries; {info['outputs_stored']} stored, {info['outputs_recompute']} recomputed when needed (cheaper than storing)")
    store.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
