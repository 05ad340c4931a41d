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
from pathlib import Path
from typing import Any

from editgraph.cli.common import (  # noqa: F401  (the exit codes are this module's API too)
    EXIT_CANCELLED, EXIT_ERROR, EXIT_INVALID, EXIT_NODE_FAILED, EXIT_OK, EXIT_USAGE, err, load, mismatch_arg, name_value,
    note_recovery, parse_sets, settings_for,
)

# Commands that load a workflow or an image only to check or describe it.
_READ_ONLY = frozenset({"validate", "show", "extract", "nodes", "schema", "workflows"})


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
        err(str(exc))
        return EXIT_INVALID
    except NodeFailed as exc:
        err(f"error: {exc}\n(everything computed before it is cached: fix and run again to resume)")
        return EXIT_NODE_FAILED
    except (Cancelled, KeyboardInterrupt):
        err("cancelled (finished nodes are cached)")
        return EXIT_CANCELLED
    except EditgraphError as exc:
        err(f"error: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:  # `editgraph models list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # a file or folder the user named: missing, a directory, not writable ...
        err(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return EXIT_ERROR
    except Exception as exc:  # a bug of ours: say so briefly; EDITGRAPH_DEBUG=1 shows the traceback
        from editgraph.settings import Settings

        if Settings.from_env().debug:
            raise
        err(f"error: unexpected {type(exc).__name__}: {exc}\n(an editgraph bug; run with EDITGRAPH_DEBUG=1 for the traceback and report it)")
        return EXIT_ERROR


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


def _configure_validate(val: argparse.ArgumentParser) -> None:
    val.add_argument("workflow")
    val.add_argument("--set", dest="sets", action="append", default=[], type=name_value, metavar="NAME=VALUE")
    mismatch_arg(val)
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


# name: (help, how to add its options: a function here, or "module:function" in another cli module)
COMMANDS: dict[str, tuple[str, Any]] = {
    "run": ("run a workflow (a file, a bundled name, or an image editgraph made: same pixels again)", "editgraph.cli.run:configure"),
    "validate": ("check a workflow without running it, input files included; lists every problem", _configure_validate),
    "show": ("describe a workflow (text, Mermaid, DOT, PNG) or the provenance a saved image carries", _configure_show),
    "extract": ("write the workflow an image carries (params and seeds resolved) to a file", _configure_extract),
    "batch": ("run a workflow once per row of params (CSV table, --zip, --product) with one cache", "editgraph.cli.batch:configure"),
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


# --- commands ----------------------------------------------------------------------------------


def cmd_validate(args) -> int:
    from editgraph.errors import WorkflowInvalid
    from editgraph.graph.validate import bind
    from editgraph.sharing.preflight import check_sources

    workflow, base, label = load(args.workflow, relocate=True)  # an image: check what `run` would use
    graph = bind(workflow, parse_sets(args.sets), base_dir=base, require_values=False, source=label)
    problems = check_sources(graph, deep=True, settings=settings_for(args))
    if problems:
        raise WorkflowInvalid(problems, label)
    needs = f"; params to set when running: {', '.join(graph.unbound)}" if graph.unbound else ""
    print(f"{label}: valid ({len(graph.nodes)} nodes){needs}")
    return EXIT_OK


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
        err(f"error: unknown node type {args.type!r}{hint}")
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
        err("error: --format png needs -o FILE (a picture is not written to the terminal)")
        return EXIT_USAGE
    from editgraph.sharing.source import is_image, read_image_provenance

    image = is_image(args.workflow) and Path(args.workflow).is_file()
    info = read_image_provenance(args.workflow) if image else None
    workflow, _, label = load(args.workflow)
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
        err(f"wrote {args.output}")
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
    note_recovery(store)
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
