"""`editgraph batch --ray`: the rows of a batch on Ray actors that keep their models loaded, with a
cache tier the workers share. The engine's promises hold as in a local batch (batch/runner.py):
shared upstream nodes computed once, every intermediate cached by content, resumable, the same
report, the same bytes.

How a batch runs:

  1. Connect: no address starts a local Ray for the run (on the loopback address only); `auto`,
     HOST:PORT or ray://... joins an existing cluster.
  2. Start the workers: one Ray actor per GPU when the cluster has GPUs, else one per `threads`
     CPUs (or --workers). Each actor is a batch/worker.py Worker: an Executor whose cache is its
     memory tier, its machine's disk tier and the shared tier (--cache s3://... or a shared path).
  3. Prepare: the nodes that are the same computation in every row (same type, params and inputs:
     the hero photo's load, its crop and encode, the model load) run once, on the first worker up,
     before the rows fan out, so they reach the shared tier and every other worker finds them
     there. A model is never stored; it loads once per worker, where a row first needs it.
  4. Fan out: each idle worker takes the next row. A row's files come back as bytes and are written
     here, under --out, whichever machine computed them.
  5. Faults: a worker that dies mid-row (killed process, lost node) is replaced and its row is
     retried on another worker, up to `retries` times; the retry finds the upstream nodes the dead
     worker finished in the shared tier. A row whose own inputs make a node fail is reported failed
     once, not retried. Ctrl-C (or `cancel`) stops scheduling, asks running rows to stop at their
     next node or step, and returns: everything finished is cached, so the same command resumes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgraph.atomic import write_atomic
from editgraph.batch.runner import RowResult, report as batch_report, summary
from editgraph.errors import EditgraphError

INSTALL_HINT = "pip install 'editgraph[ray]'"
POLL_S = 0.5  # how often running rows are asked where they are (the progress bar, tests' hooks)
STOP_WAIT_S = 60.0  # after Ctrl-C, how long running rows get to reach their next node and stop
NO_WORKER_WAIT_S = 300.0  # with every worker dead, how long replacements get to start before giving up


class RayMissing(EditgraphError):
    """--ray without Ray installed."""


def import_ray(local: bool = False):
    """Ray, or RayMissing saying how to install it. local: this process will start its own Ray,
    which then listens on the loopback address only (Ray reads that choice when it is imported)."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayMissing(f"--ray runs the batch on a Ray cluster, and Ray is not installed here: {INSTALL_HINT}") from None
    return ray


# --- what every row shares ----------------------------------------------------------------------


def shared_nodes(graphs: list) -> list[str]:
    """Nodes that are one computation in every row: deterministic, the same type and bound params
    in each row, and fed only by such nodes. Their keys are then equal in every row too (a key is
    type, version, params, source token and input fingerprints), so running them once serves all."""
    first = graphs[0]
    shared: list[str] = []
    for nid, node in first.nodes.items():  # topological order: inputs are decided first
        if not node.cls.deterministic or any(src not in shared for src, _ in node.inputs.values()):
            continue
        if all(g.nodes[nid].cls is node.cls and g.nodes[nid].params == node.params for g in graphs[1:]):
            shared.append(nid)
    return shared


# --- results ------------------------------------------------------------------------------------


@dataclass
class ClusterRow(RowResult):
    worker: str | None = None  # the worker that finished the row (or last tried it)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # tries that a worker's death ended
    requests: dict[str, int] = field(default_factory=dict)  # to the shared tier: GET hit / GET miss / PUT / DELETE


@dataclass
class ClusterBatch:
    rows: list[ClusterRow]
    prepare: dict[str, Any] | None  # the shared nodes' run: worker, nodes, status
    workers: dict[str, dict[str, Any]]  # name -> pid, host, node id, device, rows, node_runs
    shared: list[str]
    address: str
    cancelled: bool = False
    seconds: float = 0.0
    offload: str = "none"  # the workers' CPU offload mode (models/offload.py)

    def summary(self) -> dict[str, Any]:
        """The local batch's summary, with node runs counted across the cluster (prepare included)
        and the shared nodes split into once-for-all and once-per-worker (models)."""
        s = summary(self.rows)
        runs = dict(s["node_runs"])
        for nid, rec in ((self.prepare or {}).get("nodes") or {}).items():
            if rec["status"] == "ran":
                runs[nid] = runs.get(nid, 0) + 1
        s["node_runs"] = {n: runs[n] for n in sorted(runs)}
        s["shared"] = [n for n in self.shared if runs.get(n, 0) <= 1]
        s["per_worker"] = [n for n in self.shared if runs.get(n, 0) > 1]
        s["retries"] = sum(len(r.attempts) for r in self.rows)
        s["workers"] = len(self.workers)
        return s

    def report(self, label: str, workflow) -> dict[str, Any]:
        devices = sorted({str(w.get("device")) for w in self.workers.values() if w.get("device")})
        out = batch_report(label, workflow, self.rows, self.seconds, ",".join(devices) or None, self.offload)
        out["summary"] = self.summary()
        out["ray"] = {"address": self.address, "prepare": self.prepare, "workers": self.workers, "shared": self.shared}
        if self.cancelled:
            out["cancelled"] = True
        return out


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class _Slot:
    name: str
    handle: Any
    ready: Any  # ObjectRef of info(): resolves once the actor is constructed
    info: dict[str, Any] | None = None
    job: int | None = None  # row index in flight (-1: the prepare job)
    ref: Any = None
    spawned: float = field(default_factory=time.perf_counter)


def connect(ray, address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join `address`, or start a local Ray (loopback only) when it is None. True if started here.
    An already-initialized Ray in this process (a test's, a notebook's) is used as it is."""
    if ray.is_initialized():
        return False
    if address is None:
        # Ray starts its workers at niceness 15: on a machine that also runs other work, a batch's
        # rows then got a fraction of the CPU the same rows get in a local batch (issue 15 measured
        # +40 % per row on a loaded 2-core machine). A Ray started for this run is this command's
        # own: its workers run at the command's priority. A cluster's operator sets its own.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=True,
                 _system_config={"worker_niceness": os.nice(0)})
        return True
    ray.init(address=address, logging_level="ERROR", log_to_driver=True)
    return False


def run_on_ray(
    graphs: list,
    dirs: list[Path],
    *,
    ray=None,
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    disk_dir: str | None = None,
    shared: str | None = None,
    retries: int = 2,
    device: str | None = None,
    allow_model_mismatch: bool = False,
    offload: str = "none",
    keep_going: bool = False,
    cancel: threading.Event | None = None,
    source: str | None = None,
    base_dir: Path | None = None,
    on_row_start: Callable[[ClusterRow], None] | None = None,
    on_row: Callable[[ClusterRow, "ClusterBatch"], None] | None = None,
    on_status: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    poll_s: float = POLL_S,
) -> ClusterBatch:
    """Run each bound graph (one per row) on Ray workers; write each row's files into its folder.

    workers: actors to start (default: one per GPU, else cluster CPUs // threads). device: the
    workers' torch device (default: cuda on a cluster with GPUs, else cpu). threads: torch
    CPU threads per worker (default: this process's; equal counts give equal bytes). disk_dir: the
    workers' local disk tier (default: each machine's own). shared: the shared tier's URL.
    on_row_start(row) as a row goes to a worker, on_row(row, batch) as it ends; on_status receives
    {worker: {"row", "node", "step", "total", "pid"}} (row 0: the shared nodes) about every poll_s
    seconds (a shorter interval: finer-grained statuses, at a status request per busy worker each time)."""
    import torch

    ray = ray or import_ray(local=address is None)
    started = connect(ray, address)
    t0 = time.perf_counter()
    try:
        return _Driver(ray, graphs, dirs, workers=workers, threads=threads or torch.get_num_threads(), disk_dir=disk_dir,
                       shared=shared, retries=retries, keep_going=keep_going, device=device,
                       allow_model_mismatch=allow_model_mismatch, offload=offload, cancel=cancel, source=source,
                       base_dir=base_dir or Path.cwd(), on_row_start=on_row_start, on_row=on_row, on_status=on_status,
                       address=address or "local", poll_s=poll_s).run(t0)
    finally:
        if started:
            ray.shutdown()


class _Driver:
    def __init__(self, ray, graphs, dirs, *, workers, threads, disk_dir, shared, retries, keep_going, device,
                 allow_model_mismatch, offload, cancel, source, base_dir, on_row_start, on_row, on_status, address,
                 poll_s=POLL_S):
        self.ray = ray
        self.graphs, self.dirs = graphs, dirs
        self.threads, self.disk_dir, self.shared_url = threads, disk_dir, shared
        self.retries, self.keep_going = retries, keep_going
        self.device, self.allow_model_mismatch, self.offload = device, allow_model_mismatch, offload
        self.cancel = cancel or threading.Event()
        self.source, self.base_dir = source, base_dir
        self.on_row_start, self.on_row, self.on_status = on_row_start, on_row, on_status
        self.poll_s = poll_s
        self.rows = [ClusterRow(i, g.params, str(d), dict(g.seeds)) for i, (g, d) in enumerate(zip(graphs, dirs), start=1)]
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        wanted = workers or (self.gpus if self.gpus else max(1, cpus // max(1, threads)))
        self.n_workers = max(1, min(wanted, len(graphs)))
        self.slots: list[_Slot] = []
        self.dead: list[_Slot] = []
        self.workers: dict[str, dict[str, Any]] = {}
        self.spawned = 0
        self._remote = None
        self.start_error: str | None = None
        self.batch = ClusterBatch(self.rows, None, self.workers, shared_nodes(graphs), address, offload=offload)
        self.last_alive = time.monotonic()
        self.last_poll = time.monotonic()

    # --- actors -----------------------------------------------------------------------------------

    def _spawn(self) -> None:
        from editgraph.batch.worker import Worker

        self.spawned += 1
        name = f"w{self.spawned}"
        if self._remote is None:
            self._remote = self.ray.remote(Worker)
        # Two threads per actor: one runs rows, the other answers status() and cancel() meanwhile.
        opts: dict[str, Any] = {"max_concurrency": 2, "max_restarts": 0, "num_cpus": 1}
        if self.gpus:
            opts["num_gpus"] = 1
        options = {"threads": self.threads, "device": self.device or ("cuda" if self.gpus else "cpu"), "disk_dir": self.disk_dir,
                   "shared": self.shared_url, "settings": {"allow_model_mismatch": self.allow_model_mismatch, "offload": self.offload}}
        handle = self._remote.options(**opts).remote(name, options)
        self.slots.append(_Slot(name, handle, handle.info.remote()))

    def _lost(self, slot: _Slot, why: str, respawn: bool = True) -> None:
        """A worker died: forget it, start another while rows remain (not when it could not even
        start: the next one would fail the same way)."""
        self.slots.remove(slot)
        self.dead.append(slot)
        if slot.name in self.workers:
            self.workers[slot.name]["died"] = why
        try:
            self.ray.kill(slot.handle, no_restart=True)
        except Exception:
            pass
        if respawn and not self.cancel.is_set() and (self.pending or any(s.job is not None for s in self.slots)):
            self._spawn()

    def _close(self) -> None:
        """Let each worker flush and close its tiers (briefly), then end it."""
        closing = [s.handle.close.remote() for s in self.slots if s.info is not None]
        if closing:
            self.ray.wait(closing, num_returns=len(closing), timeout=10)
        for slot in self.slots:
            try:
                self.ray.kill(slot.handle, no_restart=True)
            except Exception:
                pass

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, t0: float) -> ClusterBatch:
        self.pending: list[int] = list(range(len(self.graphs)))
        for _ in range(self.n_workers):
            self._spawn()
        try:
            try:
                if self.batch.shared:
                    self._prepare()
                self._fan_out()
            except KeyboardInterrupt:
                self.cancel.set()
            if self.cancel.is_set():
                self._stop()
        finally:
            self._close()
            self.batch.seconds = time.perf_counter() - t0
        return self.batch

    def _job(self, index: int, targets: list[str] | None = None) -> dict[str, Any]:
        graph = self.graphs[0 if index < 0 else index]
        return {"row": index + 1 if index >= 0 else 0, "document": graph.resolved_document(), "seeds": dict(graph.seeds),
                "base_dir": str(self.base_dir), "source": self.source, "targets": targets}

    def _submit(self, slot: _Slot, index: int) -> None:
        targets = self.batch.shared if index < 0 else None
        slot.job, slot.ref = index, slot.handle.run.remote(self._job(index, targets))
        if index >= 0 and self.on_row_start is not None:
            self.on_row_start(self.rows[index])

    def _prepare(self) -> None:
        """Run the shared nodes once, on the first worker up, before any row."""
        tries = 0
        while True:
            slot = self._wait_for_idle()
            if slot is None:
                return  # cancelled, or no worker could start: the rows say so
            self._submit(slot, -1)
            while slot.job is not None and not self.cancel.is_set():
                self._step()
            prep = self.batch.prepare
            if prep is not None and prep.get("status") != "lost":
                return
            tries += 1
            if tries > self.retries or self.cancel.is_set():
                return

    def _wait_for_idle(self) -> _Slot | None:
        while not self.cancel.is_set():
            idle = [s for s in self.slots if s.info is not None and s.job is None]
            if idle:
                return idle[0]
            if not self._step():
                return None
        return None

    def _fan_out(self) -> None:
        while not self.cancel.is_set():
            stop = not self.keep_going and any(r.status == "failed" for r in self.rows)
            if not stop:
                for slot in self.slots:
                    if slot.info is not None and slot.job is None and self.pending:
                        self._submit(slot, self.pending.pop(0))
            busy = any(s.job is not None for s in self.slots)
            if not busy and (stop or not self.pending):
                return
            if not self._step():
                for index in self.pending:
                    self.rows[index].status, self.rows[index].error = "not run", self.start_error or "no worker could start on the cluster"
                return

    def _step(self) -> bool:
        """Wait up to poll_s for a worker to come up or a job to end, and handle it. False when no
        worker is alive or starting and none has been for NO_WORKER_WAIT_S."""
        ray = self.ray
        waiting = {s.ready: s for s in self.slots if s.info is None}
        running = {s.ref: s for s in self.slots if s.job is not None}
        refs = list(waiting) + list(running)
        if not refs:
            return False
        done, _ = ray.wait(refs, num_returns=1, timeout=self.poll_s)
        if not done or time.monotonic() - self.last_poll >= self.poll_s:
            # every poll_s, whether or not rows are finishing meanwhile: short rows ending more often
            # than that must not starve the progress display (or a test's hook) of statuses
            self._poll()
        if not done:
            if any(s.info is not None for s in self.slots):
                self.last_alive = time.monotonic()
            return time.monotonic() - self.last_alive < NO_WORKER_WAIT_S
        ref = done[0]
        if ref in waiting:
            slot = waiting[ref]
            try:
                slot.info = ray.get(ref)
            except ray.exceptions.RayError as exc:
                self.start_error = f"worker {slot.name} could not start: {_brief(exc)}"
                self._lost(slot, self.start_error, respawn=False)
                return True
            self.workers[slot.name] = {**slot.info, "start_s": round(time.perf_counter() - slot.spawned, 3), "rows": [], "node_runs": {}}
            self.last_alive = time.monotonic()
            return True
        slot = running[ref]
        index, slot.job, slot.ref = slot.job, None, None
        try:
            out = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError) as exc:
            self._died(slot, index, exc)
            return True
        except ray.exceptions.RayTaskError as exc:  # a bug in the worker, not a lost process: no retry
            out = {"status": "failed", "error": f"worker error: {_brief(exc)}", "nodes": {}, "files": {}, "seconds": 0.0, "worker": slot.name}
        self._finished(slot, index, out)
        return True

    def _died(self, slot: _Slot, index: int, exc: Exception) -> None:
        why = f"worker {slot.name} (pid {(slot.info or {}).get('pid')}) died: {_brief(exc)}"
        self._lost(slot, why)
        if index < 0:
            self.batch.prepare = {"worker": slot.name, "status": "lost", "error": why, "nodes": {}}
            return
        row = self.rows[index]
        row.attempts.append({"worker": slot.name, "error": why})
        if len(row.attempts) > self.retries:
            row.status, row.error, row.worker = "failed", f"{why}; tried {len(row.attempts)} times", slot.name
            self._row_done(row)
        else:
            self.pending.insert(0, index)  # next idle worker: never the dead one, it is gone

    def _finished(self, slot: _Slot, index: int, out: dict[str, Any]) -> None:
        stats = self.workers.setdefault(slot.name, {"worker": slot.name, "rows": [], "node_runs": {}})
        for nid, rec in out["nodes"].items():
            if rec["status"] == "ran":
                stats["node_runs"][nid] = stats["node_runs"].get(nid, 0) + 1
        for key in ("cache_errors", "rejected"):
            if out.get(key):
                stats.setdefault(key, []).extend(out[key])
        if index < 0:
            self.batch.prepare = {"worker": slot.name, "status": out["status"], "error": out["error"], "nodes": out["nodes"],
                                  "seconds": round(out["seconds"], 6), "requests": out.get("requests", {})}
            if out["status"] == "failed":  # every row needs these nodes: they would all fail the same way
                for i, row in enumerate(self.rows):
                    if i == 0 or self.keep_going:
                        row.status, row.error, row.worker, row.nodes = "failed", out["error"], slot.name, dict(out["nodes"])
                        self._row_done(row)
                self.pending.clear()
            return
        row = self.rows[index]
        stats["rows"].append(row.row)
        row.status, row.error, row.worker, row.nodes = out["status"], out["error"], slot.name, out["nodes"]
        row.seconds = out["seconds"]
        row.requests = out.get("requests", {})
        if out["status"] == "ok":
            row.outputs = [str(p) for p in _write_files(Path(row.out), out["files"])]
        self._row_done(row)

    def _row_done(self, row: ClusterRow) -> None:
        if self.on_row is not None:
            self.on_row(row, self.batch)

    def _poll(self) -> None:
        self.last_poll = time.monotonic()
        busy = [s for s in self.slots if s.job is not None]
        if not busy or self.on_status is None:
            return
        refs = [s.handle.status.remote() for s in busy]
        now: dict[str, dict[str, Any]] = {}
        for slot, ref in zip(busy, refs):
            try:
                now[slot.name] = {**self.ray.get(ref, timeout=5), "pid": (slot.info or {}).get("pid")}
            except Exception:
                continue  # dying or busy: the row's own result will say
        self.on_status(now)

    def _stop(self) -> None:
        """Ctrl-C / cancel: ask running rows to stop at their next node or step, collect them (a row
        that finishes meanwhile is kept), mark the rest cancelled or not run."""
        self.batch.cancelled = True
        busy = [s for s in self.slots if s.job is not None]
        for slot in busy:
            try:
                slot.handle.cancel.remote()
            except Exception:
                pass
        deadline = time.monotonic() + STOP_WAIT_S
        try:
            while any(s.job is not None for s in self.slots) and time.monotonic() < deadline:
                self._step()
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting
        for row in self.rows:
            if row.status == "not run" and any(s.job == row.row - 1 for s in self.slots):
                row.status, row.error = "cancelled", "cancelled"


def _write_files(out: Path, files: dict[str, bytes]) -> list[Path]:
    """A row's files into its folder; a name that would land outside it is refused."""
    root = out.resolve()
    written = []
    for name, data in files.items():
        dest = (root / name).resolve()
        if not dest.is_relative_to(root):
            raise EditgraphError(f"refusing to write {name!r} outside {root}")
        write_atomic(dest, data)
        written.append(dest)
    return written


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
