"""One batch worker: a process that keeps an Executor, its cache tiers and its loaded models across
the rows it is given. The Ray runner (batch/ray.py) makes each Ray actor one of these; nothing here
imports Ray, so the worker is plain Python a test or another scheduler can drive too.

A row arrives as JSON-able data (the resolved workflow document, its drawn seeds, the folder its
relative paths meant), is bound again here, and runs with out_dir set to a scratch folder; the
written files come back as bytes for the driver to put in the row's output folder, so outputs land
where the command was run whichever machine computed them.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from editgraph.atomic import scratch_dir, sweep_scratch
from editgraph.errors import Cancelled, EditgraphError, NodeFailed

# Where a row's outputs are written before they go back to the driver: one folder a row, this
# user's, locked while its worker lives (atomic.scratch_dir), so the next worker to start on the
# machine removes what a killed one left.
SCRATCH = Path(tempfile.gettempdir()) / f"editgraph-rows-{os.getuid()}"


class Worker:
    def __init__(self, name: str, options: dict[str, Any]):
        """options: threads (torch CPU threads: results are bit-identical only at equal counts),
        device (a --device name; None: CUDA when Ray gave this worker a GPU, else the CPU), disk_dir (local disk tier root; None: this machine's settings),
        shared (the shared tier's URL; None: local tiers only)."""
        import torch

        from editgraph.executor.cache import Cache, default_disk
        from editgraph.executor.devices import pick_device
        from editgraph.executor.objectstore import open_shared
        from editgraph.executor.run import Executor
        from editgraph.executor.store import MemoryStore
        from editgraph.nodes.registry import load_builtin_nodes
        from editgraph.settings import Settings

        if options.get("threads"):
            torch.set_num_threads(int(options["threads"]))
        load_builtin_nodes()  # import every node module now, not inside the first row's timing
        settings = Settings.from_env()
        shared = open_shared(options["shared"], settings) if options.get("shared") else None
        self.cache = Cache(MemoryStore(settings.memory_cache), default_disk(options.get("disk_dir"), settings), shared)
        self.device = pick_device(options.get("device") or "cpu")
        self.executor = Executor(self.cache, device=self.device, settings=settings.with_options(**(options.get("settings") or {})))
        self.name = name
        self.identity = {"worker": name, "pid": os.getpid(), "host": socket.gethostname(), "node": _ray_node(),
                         "device": str(self.device), "torch_threads": torch.get_num_threads()}
        self._cancel = threading.Event()
        self._now: dict[str, Any] = {}  # what status() reports: the row and node running now
        self.executor.listeners.append(self._on_event)
        self._nodes: dict[str, dict[str, Any]] | None = None
        sweep_scratch(SCRATCH)  # row folders of workers killed on this machine (a retried row's outputs)

    def info(self) -> dict[str, Any]:
        return dict(self.identity)

    # --- status and cancel (answered from a second thread while a row runs) --------------------

    def status(self) -> dict[str, Any]:
        return dict(self._now)

    def cancel(self) -> None:
        self._cancel.set()

    def _on_event(self, event) -> None:
        from editgraph.executor.events import NodeFailedEvent, NodeFinished, NodeProgress, NodeStarted

        if isinstance(event, NodeStarted):
            self._now.update(node=event.node_id, type=event.node_type, step=None)
        elif isinstance(event, NodeProgress):
            self._now.update(step=event.step, total=event.total)
        if self._nodes is None:
            return
        if isinstance(event, NodeFinished):
            self._nodes[event.node_id] = {"type": event.node_type, "status": event.status, "seconds": round(event.seconds, 6), "key": event.key}
        elif isinstance(event, NodeFailedEvent):
            self._nodes[event.node_id] = {"type": event.node_type, "status": "failed", "error": event.error}

    # --- running ------------------------------------------------------------------------------

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one job: {"row": n, "document": ..., "seeds": ..., "base_dir": ..., "targets": None | [...]}.
        A job with targets (the shared nodes, before rows fan out) writes no files.

        Returns {"status": ok | failed | cancelled, "nodes": {node: record}, "files": {name: bytes},
        "error": str | None, "seconds": float, **identity}. A node failing is a result, not an
        exception: only the death of this process makes the driver retry the row elsewhere."""
        from editgraph.executor.persist import ALWAYS
        from editgraph.graph.document import load_workflow
        from editgraph.graph.validate import bind
        from editgraph.sharing import provenance

        self._cancel.clear()
        self._nodes = nodes = {}
        self._now = {"row": job["row"]}
        out: dict[str, Any] = {"status": "ok", "nodes": nodes, "files": {}, "error": None, **self.identity}
        t0 = time.perf_counter()
        try:
            graph = bind(load_workflow(job["document"]), {}, base_dir=Path(job["base_dir"]), source=job.get("source"))
            graph.seeds.update(job.get("seeds") or {})  # drawn by the driver; provenance records them
            targets = job.get("targets")
            if targets is not None:
                # The shared nodes are made once for the whole cluster: each is stored (in the shared
                # tier too), however cheap, or every worker would make the cheap ones again.
                self.executor.run(graph, targets=targets, cancel=self._cancel, persistence=ALWAYS)
            else:
                with scratch_dir(SCRATCH) as scratch:
                    result = self.executor.run(graph, out_dir=scratch, stamp=provenance.stamp, cancel=self._cancel)
                    root = scratch.resolve()
                    out["files"] = {p.relative_to(root).as_posix(): p.read_bytes() for p in result.written}
        except NodeFailed as exc:
            out.update(status="failed", error=str(exc))
        except Cancelled:
            out.update(status="cancelled", error="cancelled")
        except EditgraphError as exc:  # e.g. the document no longer binds on this machine (a missing file)
            out.update(status="failed", error=str(exc))
        finally:
            self._nodes = None
            self._now = {}
        out["seconds"] = time.perf_counter() - t0
        shared = self.cache.shared
        if shared is not None and shared.errors:
            out["cache_errors"], shared.errors[:] = list(shared.errors), []
        if shared is not None and shared.rejected:
            out["rejected"], shared.rejected[:] = list(shared.rejected), []
        if shared is not None:  # this job's requests to the shared tier (its writes are flushed by now)
            out["requests"] = dict(shared.requests)
            shared.requests.clear()
        return out

    def close(self) -> None:
        self.cache.close()


def _ray_node() -> str | None:
    """The Ray node this worker runs on, when it runs inside Ray (Ray is imported by then)."""
    ray = sys.modules.get("ray")
    try:
        # imported is not running: outside a Ray worker, asking for the runtime context would try
        # to start or reach a cluster (a test process that imported Ray hung here)
        if ray is None or not ray.is_initialized():
            return None
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None
