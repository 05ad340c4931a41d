"""The public Python API: open a workflow, run it, get its outputs and report.

    import editgraph

    wf = editgraph.open_workflow("look")                  # a file, a bundled name, an image, a dict
    result = editgraph.run(wf, {"match_strength": 0.8}, out="out")
    result.written                                        # [Path('out/look.png')]
    result.report["nodes"]["graded"]["status"]            # 'ran' or 'cached'

The CLI's `editgraph run` goes through `execute()` below, so both write the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgraph.settings import Settings


@dataclass(frozen=True)
class Workflow:
    """A workflow document and where its relative paths resolve from."""

    document: Any  # editgraph.graph.document.Workflow
    base_dir: Path
    label: str

    @property
    def name(self) -> str:
        return self.document.name

    @property
    def params(self) -> dict[str, Any]:
        """The workflow's typed params: name -> spec (type, default, bounds, description)."""
        return dict(self.document.params)

    def to_dict(self) -> dict[str, Any]:
        return self.document.to_dict()

    def bind(self, params: Mapping[str, Any] | None = None, *, require_values: bool = True):
        """Validate with these param values: every problem at once (WorkflowInvalid), each with
        its JSON path, or the bound graph."""
        from editgraph.graph.memo import bind_document
        from editgraph.graph.validate import bind

        if require_values:  # the same document and params bound earlier in this process: reused
            return bind_document(self.document, dict(params or {}), base_dir=self.base_dir, source=self.label)
        return bind(self.document, dict(params or {}), base_dir=self.base_dir, require_values=require_values, source=self.label)


def open_workflow(source: Any, *, relocate: bool = True, on_note: Callable[[str], None] | None = None) -> Workflow:
    """A workflow from a JSON file, a bundled name (`"inpaint"`), an image editgraph wrote, an
    `editgraph/1` document as a dict, or a Graph from the builder."""
    from editgraph.graph.builder import Graph
    from editgraph.graph.document import load_workflow
    from editgraph.sharing.source import open_source

    if isinstance(source, Workflow):
        return source
    if isinstance(source, Graph):
        source = source.document()
    if isinstance(source, Mapping):
        doc = load_workflow(dict(source))
        return Workflow(doc, Path.cwd(), doc.name or "<document>")
    doc, base, label = open_source(source, relocate=relocate, on_note=on_note)
    return Workflow(doc, base, label)


@dataclass
class Result:
    """What a run made: the files written, each node's status, the report, and any output value."""

    report: dict[str, Any]
    written: list[Path]
    seeds: dict[str, int]
    _result: Any = field(repr=False)

    @property
    def ran(self) -> list[str]:
        return self._result.ran()

    @property
    def cached(self) -> list[str]:
        return [nid for nid, r in self._result.records.items() if r.status == "cached"]

    def value(self, node_id: str, output: str | None = None) -> Any:
        """A node's output value (an image tensor, a mask ...), from memory or the cache."""
        return self._result.value(node_id, output)


def run(
    workflow: Any,
    params: Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    cache: Any = True,
    device: str | None = None,
    targets: Iterable[str] | None = None,
    listeners: Iterable[Callable[[Any], None]] = (),
    cancel: Any = None,
    settings: Settings | None = None,
    offload: str | None = None,
) -> Result:
    """Validate and run `workflow` (anything open_workflow takes) with `params`.

    out: folder for the files image.save nodes make (none written when None).
    cache: True (memory + the disk cache of the settings), a folder for the disk cache, an
           executor Cache, or False (neither read nor written).
    device: "cpu", "cuda", "cuda:1", "mps"; default the best available.
    offload: CPU offload of model weights, "none", "model", "group" or "sequential" (default: the
           settings', i.e. $EDITGRAPH_OFFLOAD, else "none"). Same bytes in every mode; see the
           README's "Big models".
    """
    wf = open_workflow(workflow)
    graph = wf.bind(params)
    return execute(wf, graph, out=out, cache=cache, device=device, targets=targets, listeners=listeners, cancel=cancel,
                   settings=settings, offload=offload)


def execute(wf: Workflow, graph, *, out=None, cache: Any = True, device: str | None = None, targets=None,
            listeners=(), cancel=None, settings: Settings | None = None, on_cache_open: Callable[[Any], None] | None = None,
            ledger: Any = None, offload: str | None = None) -> Result:
    """Run an already bound graph (the CLI binds first to report problems its own way).

    ledger: an editgraph.engines.spend.Ledger for hosted engine nodes: it records what each paid
    call cost and what the cache saved, and enforces its max_cost (see `editgraph run --max-cost`)."""
    from editgraph.executor.cache import Cache
    from editgraph.executor.report import run_report
    from editgraph.executor.run import Executor
    from editgraph.sharing import provenance
    from editgraph.sharing.source import is_image

    settings = settings or Settings.from_env()
    # A C2PA identity is checked before anything runs; an image's replayed workflow cites it.
    stamp = provenance.signing_stamp(settings, replayed_from=wf.label if is_image(wf.label) and Path(wf.label).is_file() else None)
    use_cache = cache is not False
    owned = False
    if isinstance(cache, Cache):
        store = cache
    elif cache is False:
        store = Cache(None, None)
    else:
        store = Cache.default(None if cache is True else cache, settings)
        owned = True
        if on_cache_open is not None:
            on_cache_open(store)
    # the device is checked now, resolved (torch imported) at the first node that uses torch
    executor = Executor(store, listeners=listeners, device=device, use_cache=use_cache, settings=settings, ledger=ledger,
                        offload=offload)
    t0 = time.perf_counter()
    try:
        result = executor.run(graph, targets=targets, out_dir=out, stamp=stamp, cancel=cancel)
    finally:
        if owned:
            store.close()
    report = run_report(wf.label, graph, result, time.perf_counter() - t0)
    return Result(report, list(result.written), dict(graph.seeds), result)
