"""Run a bound graph: key each node from its parents' fingerprints, reuse what the cache has,
run the rest, load only the cached values a running node actually consumes.

One pass in topological order. For node n:

  1. key(n) = H(format, type, version, key params, source token, sorted input fingerprints);
     input fingerprints are known: every parent was either found in the cache (its ref gives
     them) or has just run.
  2. A deterministic node whose key has a ref is done: record its output fingerprints, load nothing.
  3. Otherwise fetch its inputs (memory, then disk; a blob that vanished or was never stored is
     recomputed by re-running its producer), run it, fingerprint its outputs and keep them in
     memory; each goes to disk too when storing it costs less than recomputing it would
     (persist.py), written behind by the disk tier's writer thread. Its ref always goes to disk.
  4. At the end (or on failure) flush the cache: the run returns once its writes are durable.

Plans (order, where each output is last used, key prefixes) are derived once per bound graph,
so an identical re-run costs a key and a lookup per node.

Values in hand are dropped as soon as no remaining node consumes them, so a long chain of large
images holds a bounded working set. A failing node flushes the cache before raising NodeFailed:
the fixed re-run starts where this one stopped.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from editgraph import allocator
from editgraph.atomic import write_atomic
from editgraph.nodes.context import RunContext
from editgraph.errors import Cancelled, EditgraphError, NodeFailed, WorkflowInvalid
from editgraph.executor.cache import Cache
from editgraph.collector import collector_paused
from editgraph.executor.components import ComponentPlan
from editgraph.executor.devices import RunDevice, torch_ready
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
from editgraph.executor.persist import ALWAYS, DEFAULT as DEFAULT_PERSISTENCE, Persistence, RunBudget, reason_text
from editgraph.executor.plan import Plan, Ref, step_key
from editgraph.executor.store import MISSING
from editgraph.graph.sources import check_sources
from editgraph.graph.validate import BoundGraph, BoundNode
from editgraph.models.offload import running
from editgraph.settings import Settings
from editgraph.values.sockets import Artifact, Model

# Given a finished run, a function (node id, file name, bytes) -> the bytes to write.
Stamp = Callable[["RunResult"], Callable[[str, str, bytes], bytes]]


# Tracked objects a cold run makes per node and keeps (its plan step, record, fingerprints and
# values' wrappers; measured ~19.4 on a chain of no-op nodes): the collector waits for them
# (collector_paused's `expect`) before it scans what the run made.
KEPT_PER_NODE = 25


# A node's record in RunResult.records is the event that finished it (type, status, seconds, key,
# and for a node that ran whether its outputs were persisted and why not).
NodeRecord = NodeFinished


@dataclass
class RunResult:
    graph: BoundGraph
    records: dict[str, NodeRecord]
    fingerprints: dict[Ref, str]
    written: list[Path] = field(default_factory=list)
    # what the run's torch work ran on (a torch.device), or "cpu" when no node used torch;
    # provenance records it
    device: Any = "cpu"
    offload: str = "none"  # the CPU offload mode (models/offload.py): recorded, never keyed
    # Whether a node the run needed takes torch tensors (Node.arrays): if none does, torch's
    # thread count and device cannot touch the pixels, and neither is recorded as if they could.
    uses_torch: bool = True
    _fetch: Callable[[Ref], Any] | None = None

    def value(self, node_id: str, output: str | None = None) -> Any:
        """An output of the run (loaded from the cache if it was not computed in this run); images
        and masks as torch tensors, whichever kind of array the node made."""
        node = self.graph.nodes[node_id]
        output = output or next(iter(node.cls.outputs))
        assert self._fetch is not None
        return _as_torch(self._fetch((node_id, output)))

    def ran(self) -> list[str]:
        return [nid for nid, r in self.records.items() if r.status == "ran"]


class Executor:
    def __init__(
        self,
        cache: Cache | None = None,
        *,
        listeners: Iterable[Callable[[Event], None]] = (),
        device: Any = None,
        use_cache: bool = True,
        settings: Settings | None = None,
        ledger: Any = None,
        waiting: Callable[[], Any] | None = None,
        free_components: bool = False,
        offload: str | None = None,
        persistence: Persistence | None = None,
    ):
        self.cache = cache or Cache()
        if not use_cache:
            # Neither read (lookups are skipped below) nor written: a run-local memory tier only.
            self.cache = Cache(None, None)
        self.ledger = ledger  # engines.spend.Ledger for paid engine nodes (spend, --max-cost, saved)
        self.waiting = waiting or nullcontext  # batch rows overlap hosted calls' network waits in it
        self.listeners = list(listeners)
        # torch.device or name; None, "auto" and "cpu" are resolved (torch imported) only when a
        # node that takes torch tensors runs; "auto" then picks the best available device
        self.run_device = RunDevice(device)
        self.use_cache = use_cache
        # Release a big model's components once no node left in a run needs them (see
        # executor/components.py). Off by default: a batch's rows would re-read weights each row.
        self.free_components = free_components
        # Cached values are shared, so a node that writes into its inputs corrupts them for every
        # later consumer. EDITGRAPH_CHECK_INPUTS=1 (the test suite sets it) re-hashes inputs after
        # each node and fails the node that changed one.
        self.settings = settings or Settings.from_env()
        self.check_inputs = self.settings.check_inputs
        allocator.tune(self.settings.allocator)  # once a process: runs keep their working memory (allocator.py)
        # Which outputs are worth a disk entry: given, else the settings' mode (EDITGRAPH_PERSIST).
        if persistence is None:
            persistence = ALWAYS if self.settings.persist == "always" else DEFAULT_PERSISTENCE
        self.persistence = persistence
        # CPU offload (models/offload.py): None takes the settings' mode. It lives in the settings
        # the nodes see, so model.load puts weights on the CPU when a mode is on. No key holds it.
        # (Settings checks the mode, also when with_options() replaces it.)
        if offload is not None and offload != self.settings.offload:
            self.settings = self.settings.with_options(offload=offload)
        self.offload = self.settings.offload

    @property
    def device(self) -> Any:
        """The run's torch.device (imports torch)."""
        return self.run_device.get()

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
        persistence: Persistence | None = None,
    ) -> RunResult:
        """Run what `targets` (default: every sink) need; write Artifacts into `out_dir`, each
        file passed through `stamp(result)` first (provenance, metadata, signatures: the sharing
        layer's, see editgraph.sharing.provenance.stamp). `persistence` overrides the executor's
        for this run (a batch's shared nodes are all stored: executor.persist.ALWAYS)."""
        with collector_paused(expect=KEPT_PER_NODE * len(graph.nodes)) as pause:  # the plan makes a third of them
            run = _Run(self, graph, targets, cancel, persistence)
            result = run.execute(out_dir, stamp)
            # A run that ran no node's code (every node a cache hit, no value recomputed for an
            # output file) made records and fingerprints, which hold no cycles: the collector
            # need not scan them (editgraph/collector.py). Listeners' and stamps' own garbage
            # cycles, if any, wait for the next full collection.
            pause.clean = not run.ran_code
            return result


def _as_numpy(value: Any) -> Any:
    """An input for a node that takes numpy arrays: a tensor's CPU memory as an array."""
    if isinstance(value, np.ndarray):
        return value
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _as_torch(value: Any) -> Any:
    """An input for a node that takes torch tensors: an array becomes a tensor on its memory."""
    if isinstance(value, np.ndarray):
        return torch_ready().from_numpy(value)
    return value


class _Run:
    def __init__(self, ex: Executor, graph: BoundGraph, targets: Iterable[str] | None, cancel: threading.Event | None,
                 persistence: Persistence | None = None):
        self.ex = ex
        self.persistence = persistence or ex.persistence
        self.graph = graph
        self.cancel = cancel
        self.plan = Plan.of(graph, targets)
        self.targets = self.plan.targets
        self.order = [step.id for step in self.plan.steps]
        self.at = -1  # index of the step being processed
        self.ahead: dict[str, str] = {}  # keys made by _prefetch for steps not reached yet
        self.absent: set[str] = set()  # keys of the last prefetched group that no local tier holds
        self.fps: dict[Ref, str] = {}
        self.values: dict[Ref, Any] = {}
        self.records: dict[str, NodeRecord] = {}
        # Outputs not persisted: the seconds a recompute would take (theirs plus their unpersisted
        # inputs'), so a chain of cheap nodes persists one output before recomputing grows costly.
        self.redo_s: dict[Ref, float] = {}
        self.budget = RunBudget(self.persistence.budget)  # what writes of measured outputs may cost this run
        # Nodes this run computed (their keys missed every tier). A key made from such a node's
        # output is one only a process that computed the same value could have stored: its lookup
        # asks the local tiers, not the shared one, whose miss would cost a request per node.
        self.fresh: set[str] = set()
        self.ran_code = False  # whether any node's run() was called (a recompute counts)
        self.components = ComponentPlan(graph, self.order) if ex.free_components else None

    # --- the pass ---------------------------------------------------------------------------

    def execute(self, out_dir, stamp: Stamp | None) -> RunResult:
        ex = self.ex
        problems = check_sources(self.graph, deep=True, settings=ex.settings)
        if problems:
            raise WorkflowInvalid(problems, self.graph.workflow.name or None)
        ex.emit(RunPlanned(tuple(self.order)))
        uses_torch = self.plan.uses_torch
        result = RunResult(self.graph, self.records, self.fps, offload=ex.offload, uses_torch=uses_torch, _fetch=self.fetch)
        try:
            fps, records, values, cache, listeners = self.fps, self.records, self.values, ex.cache, ex.listeners
            use_cache, clock, components, fresh = ex.use_cache, time.perf_counter, self.components, self.fresh
            groups = self.plan.groups if use_cache and cache.disk is not None else None
            ahead, memory_refs, has_shared = self.ahead, cache.memory.refs, cache.shared is not None
            for self.at, step in enumerate(self.plan.steps):
                nid = step.id
                t0 = clock()
                if groups and self.at in groups:
                    self._prefetch(self.at, groups[self.at])
                try:  # source nodes hash what they read here: a missing file fails as that node
                    key = ahead.pop(nid) if nid in ahead else step_key(step, self.fps)
                except Exception as exc:
                    ex.emit(NodeFailedEvent(nid, step.type, f"{type(exc).__name__}: {exc}"))
                    raise NodeFailed(nid, step.type, exc) from exc
                if use_cache and step.deterministic:
                    hit = memory_refs.get(key)  # Cache.lookup's first tier, without its two calls
                    if hit is None:
                        # the shared tier is asked only for keys of inputs this run did not compute
                        shared = has_shared and fresh.isdisjoint(step.parents)
                        if shared or key not in self.absent:  # else the prefetch found it on no local tier
                            hit = cache.lookup(key, shared)
                else:
                    hit = None
                if hit is not None and hit.keys() == step.output_names:
                    for out, ref in step.out_refs:
                        fps[ref] = hit[out]
                    seconds = clock() - t0
                    calls = None if not step.billed else self._billed(step.node, hit, cached=True)
                    event = records[nid] = NodeFinished(nid, step.type, "cached", seconds, key, 0, None, calls)
                    for listener in listeners:
                        listener(event)
                else:
                    self._run_node(step.node, key)
                    fresh.add(nid)
                if components is not None:
                    components.after(self.at, values)
                if values:
                    for ref in step.drop:
                        values.pop(ref, None)
            if out_dir is not None:
                self._write_artifacts(Path(out_dir), result, stamp)
        finally:
            ex.cache.flush()
            # the device the torch nodes ran on, or would have (a cached re-run records what the
            # run that made the pixels did); "cpu" when no node uses torch: numpy ran there
            result.device = ex.run_device.get() if uses_torch or ex.run_device.resolved else "cpu"
        return result

    def _prefetch(self, start: int, end: int) -> None:
        """Key the group of steps [start, end) (self.ahead, used when each is reached) and ask the
        disk tier for them in one query. A step whose key fails (a source file gone) ends the
        group: it fails as itself when reached."""
        ask, ahead = [], self.ahead
        for step in self.plan.steps[start:end]:
            try:
                key = ahead[step.id] = step_key(step, self.fps)
            except Exception:
                break
            if step.deterministic:
                ask.append(key)
        self.absent = self.ex.cache.prefetch(ask)

    def _run_node(self, node: BoundNode, key: str, again: str | None = None) -> None:
        ex = self.ex
        self.ran_code = True
        if again is not None:
            self.ahead.clear()  # a re-run may make other bytes (a non-deterministic node): key them anew
        nid = node.id
        if node.cls.arrays == "numpy":  # numpy arrays in; the work runs on the CPU
            device: Any = "cpu"
            args = {name: _as_numpy(self.fetch(ref)) for name, ref in node.inputs.items()}
        else:  # torch imported before the fetch, so values read from the cache come as tensors
            device = ex.run_device.get()
            args = {name: _as_torch(self.fetch(ref)) for name, ref in node.inputs.items()}
        ex.emit(NodeStarted(nid, node.type, key))
        ctx = RunContext(
            nid,
            node.type,
            device,
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
            with ExitStack() as models:
                # Model handles that share modules (LoRA variants) put them in their own state
                # for this node's duration (models/lora.py); plain handles do nothing. Then the
                # modules are placed for the run's offload mode (after: a LoRA adds layers).
                for name, value in args.items():
                    if isinstance(value, Model):
                        uses = node.cls.model_components.get(name)
                        models.enter_context(value.using(uses))
                        models.enter_context(running(value, uses, ex.offload, device))
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
        run_s = time.perf_counter() - t0
        self.budget.ran_s += run_s
        outputs = out._asdict() if node.cls.multi_output else {next(iter(node.cls.outputs)): out}
        # Recomputing this output later costs its run plus re-making any input not stored either:
        # the costliest such input's chain (exact for chains; joins share ancestors, so summing
        # every input's chain would count shared ones again and again).
        redo_s = run_s + max([self.redo_s.get(ref, 0.0) for ref in node.inputs.values()], default=0.0)
        cache = ex.cache
        disk, shared_tier = cache.disk, getattr(cache, "shared", None)
        on_disk = disk is not None or shared_tier is not None  # a tier that outlives the process
        write_bps = disk.write_bps if disk is not None else None  # measured by its writer
        fps, nbytes, why_not = {}, 0, {}
        for name, value in outputs.items():
            try:
                enc = encode(value)
            except Unstorable:
                enc = None
                fp = fingerprint(value)  # models fingerprint themselves and stay in memory
                why = "not storable (held in memory; a new process re-runs the node)"
            else:
                fp = enc.fingerprint()
                nbytes += enc.nbytes
                if not on_disk:
                    why = "no disk tier"
                elif name == node.cls.billing:
                    why = None  # a paid call's log: a cached re-run credits its cost as saved
                else:
                    queued = disk.queued_bytes if disk is not None else 0
                    why = self.persistence.decide(node.cls.cost_class, redo_s, enc.nbytes, write_bps, self.budget, queued)
            if why is not None:
                why_not[name] = why
                self.redo_s[(nid, name)] = redo_s
            # the shared tier prices a transfer, not a disk write: the disk may keep what it does not
            shared = why is None and (shared_tier is None or name == node.cls.billing
                                      or self.persistence.why_not_shared(node.cls.cost_class, redo_s, enc.nbytes) is None)
            cache.store_blob(fp, value, enc if why is None else None, shared)
            fps[name] = fp
            self.fps[(nid, name)] = fp
            self.values[(nid, name)] = value
        if node.cls.deterministic:
            cache.store_ref(key, fps, run_s)
        seconds = time.perf_counter() - t0
        if not why_not:
            reason = None
        elif len(outputs) == 1:
            reason = next(iter(why_not.values()))
        else:
            reason = "; ".join(f"{name}: {reason_text(why)}" for name, why in why_not.items())
        calls = self._billed(node, fps, cached=False)
        event = self.records[nid] = NodeFinished(nid, node.type, "ran", seconds, key, nbytes, again, calls, not why_not, reason)
        ex.emit(event)

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
            elif self.plan.last_use.get(ref, -1) > self.at or ref[0] in self.targets:
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
            self._run_node(self.graph.nodes[cur], self.records[cur].key, self._why_again(cur))

    def _why_again(self, nid: str) -> str:
        """Why a node this run already reported runs again: the words a person reads after
        'again (...)', true to what happened to its value."""
        node = self.graph.nodes[nid]
        if any(sock.name == "Model" for sock in node.cls.outputs.values()):
            return "models are not stored"
        disk = self.ex.cache.disk
        if disk is not None and any(self.fps.get((nid, out)) in disk.lost for out in node.cls.outputs):
            return "its stored value was damaged or missing"
        record = self.records.get(nid)
        if record is not None and record.why_not:
            return f"not stored: {record.why_not}"
        return "its value was not kept"

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
                    if any(ord(c) < 32 for c in name):  # NUL would fail in the OS call, as a "bug"
                        raise EditgraphError(f"node '{nid}' ({node.type}): file name {name!r} has a control character")
                    dest = (root / name).resolve()
                    if not dest.is_relative_to(root):
                        raise EditgraphError(f"node '{nid}' ({node.type}): refusing to write {name!r} outside {root}")
                    write_atomic(dest, finish(nid, name, data) if finish is not None else data)
                    result.written.append(dest)
                    self.ex.emit(ArtifactWritten(nid, str(dest)))
