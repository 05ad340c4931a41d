"""Run a bound graph: key each node from its parents' fingerprints, reuse what the cache has,
run the rest, load only the cached values a running node actually consumes.

One pass in topological order. For node n:

  1. key(n) = H(format, type, version, key params, source token, sorted input fingerprints);
     input fingerprints are known: every parent was either found in the cache (its ref gives
     them) or has just run.
  2. A deterministic node whose key has a ref is done: record its output fingerprints, load nothing.
  3. Otherwise fetch its inputs (memory, then disk; a blob that vanished is recomputed by re-running
     its producer), run it, fingerprint and store its outputs.

Values in hand are dropped as soon as no remaining node consumes them, so a long chain of large
images holds a bounded working set. A failing node flushes the cache before raising NodeFailed:
the fixed re-run starts where this one stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import torch

from editgraph.atomic import write_atomic
from editgraph.nodes.context import RunContext
from editgraph.errors import Cancelled, EditgraphError, NodeFailed, WorkflowInvalid
from editgraph.executor.cache import Cache
from editgraph.executor.components import ComponentPlan
from editgraph.values.codec import Unstorable, encode, fingerprint
from editgraph.executor.events import (
    ArtifactWritten,
    Event,
    NodeFailedEvent,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunPlanned,
)
from editgraph.executor.store import MISSING
from editgraph.graph.document import FORMAT
from editgraph.graph.sources import check_sources
from editgraph.graph.validate import BoundGraph, BoundNode
from editgraph.settings import Settings
from editgraph.values.sockets import Artifact

Ref = tuple[str, str]  # (node id, output name)
# Given a finished run, a function (node id, file name, bytes) -> the bytes to write.
Stamp = Callable[["RunResult"], Callable[[str, str, bytes], bytes]]


def node_key(node: BoundNode, input_fps: dict[str, str]) -> str:
    """The content key: what the node is and what it consumes; never its id.

    blake3 of the fields joined by NUL, which none of them can hold (type and version are
    validated names, params are JSON, which escapes NUL, the rest are hex digests and input names).
    """
    cls = node.cls
    source = cls.source_token(node.params)
    inputs = ",".join(f"{name}={fp}" for name, fp in sorted(input_fps.items()))
    text = f"{FORMAT}\0{cls.type}\0{cls.version}\0{cls.key_params(node.params)}\0{'' if source is None else source}\0{inputs}"
    return blake3.blake3(text.encode()).hexdigest()


@dataclass
class NodeRecord:
    type: str
    status: str  # "ran" | "cached"
    seconds: float
    key: str
    # paid engine nodes: the CallLog's calls, engine and scores (ran: paid now; cached: saved)
    calls: dict[str, Any] | None = None


@dataclass
class RunResult:
    graph: BoundGraph
    records: dict[str, NodeRecord]
    fingerprints: dict[Ref, str]
    written: list[Path] = field(default_factory=list)
    device: Any = "cpu"  # what the run's model work ran on; provenance records it
    _fetch: Callable[[Ref], Any] | None = None

    def value(self, node_id: str, output: str | None = None) -> Any:
        """An output of the run (loaded from the cache if it was not computed in this run)."""
        node = self.graph.nodes[node_id]
        output = output or next(iter(node.cls.outputs))
        assert self._fetch is not None
        return self._fetch((node_id, output))

    def ran(self) -> list[str]:
        return [nid for nid, r in self.records.items() if r.status == "ran"]


class Executor:
    def __init__(
        self,
        cache: Cache | None = None,
        *,
        listeners: Iterable[Callable[[Event], None]] = (),
        device: torch.device | None = None,
        use_cache: bool = True,
        settings: Settings | None = None,
        ledger: Any = None,
        waiting: Callable[[], Any] | None = None,
        free_components: bool = False,
    ):
        self.cache = cache or Cache()
        if not use_cache:
            # Neither read (lookups are skipped below) nor written: a run-local memory tier only.
            self.cache = Cache(None, None)
        self.ledger = ledger  # engines.spend.Ledger for paid engine nodes (spend, --max-cost, saved)
        self.waiting = waiting or nullcontext  # batch rows overlap hosted calls' network waits in it
        self.listeners = list(listeners)
        self.device = device or torch.device("cpu")
        self.use_cache = use_cache
        # Release a big model's components once no node left in a run needs them (see
        # executor/components.py). Off by default: a batch's rows would re-read weights each row.
        self.free_components = free_components
        # Cached values are shared, so a node that writes into its inputs corrupts them for every
        # later consumer. EDITGRAPH_CHECK_INPUTS=1 (the test suite sets it) re-hashes inputs after
        # each node and fails the node that changed one.
        self.settings = settings or Settings.from_env()
        self.check_inputs = self.settings.check_inputs

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    def run(
        self,
        graph: BoundGraph,
        *,
        targets: Iterable[str] | None = None,
        out_dir: str | Path | None = None,
        cancel: threading.Event | None = None,
        stamp: Stamp | None = None,
    ) -> RunResult:
        """Run what `targets` (default: every sink) need; write Artifacts into `out_dir`, each
        file passed through `stamp(result)` first (provenance, metadata, signatures: the sharing
        layer's, see editgraph.sharing.provenance.stamp)."""
        return _Run(self, graph, targets, cancel).execute(out_dir, stamp)


class _Run:
    def __init__(self, ex: Executor, graph: BoundGraph, targets: Iterable[str] | None, cancel: threading.Event | None):
        self.ex = ex
        self.graph = graph
        self.cancel = cancel
        consumers: dict[str, list[str]] = {nid: [] for nid in graph.nodes}
        for nid, node in graph.nodes.items():
            for src, _ in node.inputs.values():
                consumers[src].append(nid)
        wanted = list(targets) if targets is not None else [n for n, c in consumers.items() if not c]
        unknown = [t for t in wanted if t not in graph.nodes]
        if unknown:
            raise EditgraphError(f"unknown target node(s) {unknown}; nodes are {list(graph.nodes)}")
        self.targets = set(wanted)
        self.order = self._needed_in_order()
        # How many still-unprocessed nodes consume each output: values are dropped at zero.
        self.pending_uses: dict[Ref, int] = {}
        for nid in self.order:
            for ref in graph.nodes[nid].inputs.values():
                self.pending_uses[ref] = self.pending_uses.get(ref, 0) + 1
        self.keys: dict[str, str] = {}
        self.fps: dict[Ref, str] = {}
        self.values: dict[Ref, Any] = {}
        self.records: dict[str, NodeRecord] = {}
        self.components = ComponentPlan(graph, self.order) if ex.free_components else None

    def _needed_in_order(self) -> list[str]:
        needed: set[str] = set()
        stack = list(self.targets)
        while stack:
            nid = stack.pop()
            if nid in needed:
                continue
            needed.add(nid)
            stack.extend(src for src, _ in self.graph.nodes[nid].inputs.values())
        return [nid for nid in self.graph.nodes if nid in needed]

    # --- the pass ---------------------------------------------------------------------------

    def execute(self, out_dir, stamp: Stamp | None) -> RunResult:
        ex = self.ex
        problems = check_sources(self.graph, deep=True, settings=ex.settings)
        if problems:
            raise WorkflowInvalid(problems, self.graph.workflow.name or None)
        ex.emit(RunPlanned(tuple(self.order)))
        result = RunResult(self.graph, self.records, self.fps, device=ex.device, _fetch=self.fetch)
        try:
            for index, nid in enumerate(self.order):
                node = self.graph.nodes[nid]
                t0 = time.perf_counter()
                try:  # source nodes hash what they read here: a missing file fails as that node
                    key = self.keys[nid] = node_key(node, {name: self.fps[ref] for name, ref in node.inputs.items()})
                except Exception as exc:
                    ex.emit(NodeFailedEvent(nid, node.type, f"{type(exc).__name__}: {exc}"))
                    raise NodeFailed(nid, node.type, exc) from exc
                hit = ex.cache.lookup(key) if ex.use_cache and node.cls.deterministic else None
                if hit is not None and hit.keys() == node.cls.outputs.keys():
                    for out, fp in hit.items():
                        self.fps[(nid, out)] = fp
                    seconds = time.perf_counter() - t0
                    self.records[nid] = NodeRecord(node.type, "cached", seconds, key, self._billed(node, hit, cached=True))
                    ex.emit(NodeFinished(nid, node.type, "cached", seconds, key, 0))
                else:
                    self._run_node(node)
                if self.components is not None:
                    self.components.after(index, self.values)
                self._release_inputs(node)
            if out_dir is not None:
                self._write_artifacts(Path(out_dir), result, stamp)
        finally:
            ex.cache.flush()
        return result

    def _release_inputs(self, node: BoundNode) -> None:
        for ref in node.inputs.values():
            left = self.pending_uses[ref] = self.pending_uses[ref] - 1
            if left == 0 and ref[0] not in self.targets:
                self.values.pop(ref, None)

    def _run_node(self, node: BoundNode) -> None:
        ex = self.ex
        nid, key = node.id, self.keys[node.id]
        args = {name: self.fetch(ref) for name, ref in node.inputs.items()}
        ex.emit(NodeStarted(nid, node.type, key))
        ctx = RunContext(
            nid,
            node.type,
            ex.device,
            on_progress=lambda k, n, preview=None: ex.emit(NodeProgress(nid, node.type, k, n, preview)),
            cancel=self.cancel,
            settings=ex.settings,
            ledger=ex.ledger,
            waiting=ex.waiting,
            memo=self._memo if ex.use_cache else None,
            input_fps={name: self.fps[ref] for name, ref in node.inputs.items()},
        )
        t0 = time.perf_counter()
        try:
            ctx.check_cancelled()
            out = node.cls(node.params).run(ctx, **args)
        except Cancelled:
            ex.emit(NodeFailedEvent(nid, node.type, "cancelled"))
            raise
        except Exception as exc:
            ex.emit(NodeFailedEvent(nid, node.type, f"{type(exc).__name__}: {exc}"))
            raise NodeFailed(nid, node.type, exc) from exc
        if ex.check_inputs:
            for name, ref in node.inputs.items():
                if fingerprint(args[name]) != self.fps[ref]:
                    exc = RuntimeError(f"run() modified its input {name!r} in place; cached values are shared, copy first")
                    ex.emit(NodeFailedEvent(nid, node.type, str(exc)))
                    raise NodeFailed(nid, node.type, exc)
        outputs = out._asdict() if node.cls.multi_output else {next(iter(node.cls.outputs)): out}
        fps, nbytes = {}, 0
        for name, value in outputs.items():
            try:
                enc = encode(value)
            except Unstorable:
                enc = None
                fp = fingerprint(value)  # models fingerprint themselves and stay in memory
            else:
                fp = enc.fingerprint()
                nbytes += enc.nbytes
            ex.cache.store_blob(fp, value, enc)
            fps[name] = fp
            self.fps[(nid, name)] = fp
            self.values[(nid, name)] = value
        if node.cls.deterministic:
            ex.cache.store_ref(key, fps)
        seconds = time.perf_counter() - t0
        if seconds > 0.05:
            ex.cache.flush()  # expensive work reaches the disk index at once, not in the next batch
        self.records[nid] = NodeRecord(node.type, "ran", seconds, key, self._billed(node, fps, cached=False))
        ex.emit(NodeFinished(nid, node.type, "ran", seconds, key, nbytes))

    def _billed(self, node: BoundNode, fps: dict[str, str], *, cached: bool) -> dict[str, Any] | None:
        """A paid node's call log for the report; a cached one's cost is credited as saved."""
        out = node.cls.billing
        if out is None:
            return None
        log = self.values.get((node.id, out), MISSING)
        if log is MISSING:
            log = self.ex.cache.load(fps[out])  # a few hundred bytes, inline in the index
        if log is MISSING:
            return None
        if cached and self.ex.ledger is not None:
            self.ex.ledger.credit_saved(log.cost_usd)
        return {"engine": log.engine, "cost_usd": log.cost_usd, "calls": log.calls, "tried": log.tried, "scores": log.scores}

    def _memo(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """ctx.memo: one piece of a node's work, cached under `key` in the run's cache."""
        ref = "memo:" + key
        hit = self.ex.cache.lookup(ref)
        if hit is not None:
            value = self.ex.cache.load(hit["value"])
            if value is not MISSING:
                return value, True
        value = compute()
        enc = encode(value)
        fp = enc.fingerprint()
        self.ex.cache.store_blob(fp, value, enc)
        self.ex.cache.store_ref(ref, {"value": fp})
        self.ex.cache.flush()  # paid work reaches the disk index at once
        return value, False

    def fetch(self, ref: Ref) -> Any:
        """A value in hand, else from the cache, else recomputed by re-running what made it."""
        value = self.values.get(ref, MISSING)
        if value is MISSING:
            value = self.ex.cache.load(self.fps[ref])
            if value is MISSING:
                self._recompute(ref[0])
                value = self.values[ref]
            elif self.pending_uses.get(ref, 0) > 1 or ref[0] in self.targets:
                self.values[ref] = value
        return value

    def _recompute(self, nid: str) -> None:
        """Re-run a node whose stored output is gone (evicted, corrupt, or a model in a new process),
        and, first, any ancestors whose outputs are gone too. Iterative: chains can be long."""
        todo, seen, plan = [nid], set(), []
        while todo:
            cur = todo.pop()
            if cur in seen:
                continue
            seen.add(cur)
            plan.append(cur)
            for ref in self.graph.nodes[cur].inputs.values():
                if ref not in self.values:
                    value = self.ex.cache.load(self.fps[ref])
                    if value is MISSING:
                        todo.append(ref[0])
                    else:
                        self.values[ref] = value
        index = {n: i for i, n in enumerate(self.graph.nodes)}
        for cur in sorted(plan, key=index.__getitem__):
            self._run_node(self.graph.nodes[cur])

    # --- outputs ----------------------------------------------------------------------------

    def _write_artifacts(self, out_dir: Path, result: RunResult, stamp: Stamp | None) -> None:
        root = out_dir.resolve()
        finish = stamp(result) if stamp is not None else None
        for nid in self.order:
            node = self.graph.nodes[nid]
            for out, sock in node.cls.outputs.items():
                if sock.name != "Artifact" or nid not in self.targets:
                    continue
                artifact: Artifact = self.fetch((nid, out))
                for name, data in artifact.files.items():
                    dest = (root / name).resolve()
                    if not dest.is_relative_to(root):
                        raise EditgraphError(f"node '{nid}' ({node.type}): refusing to write {name!r} outside {root}")
                    write_atomic(dest, finish(nid, name, data) if finish is not None else data)
                    result.written.append(dest)
                    self.ex.emit(ArtifactWritten(nid, str(dest)))
