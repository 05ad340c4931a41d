"""The `editgraph` command. Heavy imports (torch, diffusers) happen inside commands, so --help is instant.

Exit codes: 0 success, 2 usage, 3 invalid workflow, 4 a node failed, 5 other error, 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_USAGE, EXIT_INVALID, EXIT_NODE_FAILED, EXIT_ERROR, EXIT_CANCELLED = 0, 2, 3, 4, 5, 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="editgraph", description="Run image-edit workflows (JSON node graphs) with content-keyed caching.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a workflow (a file, a bundled name, or a PNG editgraph made)")
    run.add_argument("workflow")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE", help="set a workflow param")
    run.add_argument("--out", default="out", help="output folder; the only place a run writes files (default: ./out)")
    run.add_argument("--report", help="write a JSON report: each node's status, seconds and key; the resolved params")
    run.add_argument("--no-cache", action="store_true", help="run every node; read and write no cache")
    run.add_argument("--cache-dir", help="cache root (default: $EDITGRAPH_CACHE_DIR or the user cache dir)")
    run.add_argument("--threads", type=int, help="torch CPU threads (results are bit-identical only at equal counts)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a workflow without running it; lists every problem")
    val.add_argument("workflow")
    val.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE")
    val.set_defaults(func=cmd_validate)

    nodes = sub.add_parser("nodes", help="list node types, or show one's sockets and params")
    nodes.add_argument("type", nargs="?")
    nodes.set_defaults(func=cmd_nodes)

    schema = sub.add_parser("schema", help="print the workflow JSON Schema (for editors)")
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(func=cmd_schema)

    wfs = sub.add_parser("workflows", help="list the bundled workflows")
    wfs.set_defaults(func=cmd_workflows)

    cache = sub.add_parser("cache", help="inspect or clear the disk cache")
    cache.add_argument("action", choices=["info", "clear", "gc"])
    cache.add_argument("--cache-dir")
    cache.set_defaults(func=cmd_cache)
    return p


# --- loading -----------------------------------------------------------------------------------


def _parse_sets(sets: list[str]) -> dict[str, str]:
    from editgraph.errors import Issue, WorkflowInvalid

    out, issues = {}, []
    for item in sets:
        name, eq, value = item.partition("=")
        if not eq or not name:
            issues.append(Issue(f"--set {item}", "expected NAME=VALUE"))
        out[name.strip()] = value
    if issues:
        raise WorkflowInvalid(issues)
    return out


def _load(ref: str):
    """(Workflow, base dir for relative paths, label) from a path, a bundled name, or a PNG."""
    from editgraph import workflows
    from editgraph.errors import Issue, WorkflowInvalid
    from editgraph.graph.document import load_workflow

    path = Path(ref)
    if path.suffix.lower() == ".png" and path.is_file():
        from editgraph.provenance import read

        info = read(path.read_bytes())
        if info is None:
            raise WorkflowInvalid([Issue("", "this PNG carries no editgraph workflow")], ref)
        return load_workflow(info["workflow"]), Path.cwd(), ref
    if path.is_file():
        return load_workflow(path), path.resolve().parent, ref
    bundled = workflows.find(ref)
    if bundled is not None:
        return load_workflow(bundled), bundled.parent, ref
    names = ", ".join(workflows.names()) or "(none)"
    raise WorkflowInvalid([Issue("", f"no workflow file {ref!r}, and no bundled workflow by that name; bundled: {names}")], ref)


# --- commands ----------------------------------------------------------------------------------


def cmd_validate(args) -> int:
    from editgraph.graph.validate import bind

    workflow, base, label = _load(args.workflow)
    graph = bind(workflow, _parse_sets(args.sets), base_dir=base, require_values=False, source=label)
    needs = f"; params to set when running: {', '.join(graph.unbound)}" if graph.unbound else ""
    print(f"{label}: valid ({len(graph.nodes)} nodes){needs}")
    return EXIT_OK


def cmd_run(args) -> int:
    import torch

    from editgraph import provenance
    from editgraph.executor.cache import Cache
    from editgraph.executor.run import Executor
    from editgraph.graph.validate import bind

    if args.threads:
        torch.set_num_threads(args.threads)
    workflow, base, label = _load(args.workflow)
    graph = bind(workflow, _parse_sets(args.sets), base_dir=base, source=label)
    cache = Cache(None, None) if args.no_cache else Cache.default(args.cache_dir)
    display = _Display(graph, quiet=args.quiet)
    executor = Executor(cache, listeners=[display], use_cache=not args.no_cache)
    t0 = time.perf_counter()
    try:
        with display:
            result = executor.run(graph, out_dir=args.out, provenance=provenance.build)
    finally:
        cache.close()
    wall = time.perf_counter() - t0
    for path in result.written:
        print(f"wrote {path}")
    if graph.seeds:
        print("seeds drawn: " + ", ".join(f"{k}={v}" for k, v in graph.seeds.items()))
    if args.report:
        _write_report(Path(args.report), label, graph, result, wall)
    return EXIT_OK


def _write_report(path: Path, label: str, graph, result, wall: float) -> None:
    import torch

    import editgraph
    from editgraph.atomic import write_atomic

    report: dict[str, Any] = {
        "workflow": label,
        "name": graph.workflow.name,
        "params": graph.params,
        "seeds": graph.seeds,
        "nodes": {nid: {"type": r.type, "status": r.status, "seconds": round(r.seconds, 6), "key": r.key} for nid, r in result.records.items()},
        "outputs": [str(p) for p in result.written],
        "seconds": round(wall, 6),
        "torch_threads": torch.get_num_threads(),
        "editgraph": editgraph.__version__,
    }
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
        return EXIT_ERROR
    print(f"{cls.type}  (version {cls.version}{'' if cls.deterministic else ', not deterministic: never cached'})")
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
    import os

    from editgraph.executor.store import DiskStore, default_cache_root, parse_size
    from editgraph.executor.cache import DEFAULT_DISK

    root = Path(args.cache_dir) if args.cache_dir else default_cache_root()
    store = DiskStore(root, parse_size(os.environ.get("EDITGRAPH_CACHE_SIZE", DEFAULT_DISK)))
    if args.action == "clear":
        store.clear()
        print(f"cleared {root}")
    elif args.action == "gc":
        print(f"removed {store.sweep_orphans()} orphaned files from {root}")
    else:
        info = store.info()
        print(f"root:    {info['root']}\nentries: {info['entries']}\nblobs:   {info['blobs']}\nsize:    {info['bytes'] / 2**20:.1f} MiB of {info['max_bytes'] / 2**30:.1f} GiB")
    store.close()
    return EXIT_OK


class _Display:
    """Draws executor events with rich: one line per node as it finishes, a bar for steps."""

    def __init__(self, graph, quiet: bool):
        self.quiet = quiet
        self.total = 0
        self.done = 0
        self.progress = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self):
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=False
            )
            self.progress.start()
            self.overall = self.progress.add_task("nodes", total=None)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event) -> None:
        if self.progress is None:
            return
        from editgraph.executor.events import NodeFailedEvent, NodeFinished, NodeProgress, NodeStarted, RunPlanned

        p = self.progress
        if isinstance(event, RunPlanned):
            p.update(self.overall, total=len(event.nodes))
        elif isinstance(event, NodeStarted):
            self.tasks[event.node_id] = p.add_task(f"  {event.node_id} ({event.node_type})", total=None)
        elif isinstance(event, NodeProgress):
            p.update(self.tasks[event.node_id], completed=event.step, total=event.total)
        elif isinstance(event, NodeFinished):
            task = self.tasks.pop(event.node_id, None)
            if task is not None:
                p.remove_task(task)
            mark = "[green]ran[/]" if event.status == "ran" else "[dim]cached[/]"
            p.console.print(f"  {mark:<20} {event.node_id} ({event.node_type}) {event.seconds * 1000:.1f} ms")
            p.advance(self.overall)
        elif isinstance(event, NodeFailedEvent):
            p.console.print(f"  [red]failed[/] {event.node_id} ({event.node_type}): {event.error}")


if __name__ == "__main__":
    sys.exit(main())
