"""The worker: takes the oldest queued job, runs it with the project's Executor, records events.

One worker per device (a second denoise on the same CPU only slows the first). It owns one
executor Cache (memory + disk) for the life of the server, and models stay loaded in the process
model cache, so consecutive jobs share everything the CLI's repeated runs would share.

Events flow: executor listener (this thread) -> the job's `events` rows in SQLite -> Hub wakes
the event loop -> every socket watching the job sends the new rows. Denoise previews skip SQLite:
the Hub keeps only the latest per job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from editgraph.errors import Cancelled, EditgraphError, NodeFailed, WorkflowInvalid
from editgraph.serve.config import ServeConfig
from editgraph.serve.queue import Job, JobQueue

log = logging.getLogger("editgraph.serve")


class Hub:
    """Wakes the sockets watching a job when the worker thread records something for it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond: asyncio.Condition | None = None
        self._version: dict[str, int] = {}
        self.previews: dict[str, dict[str, Any]] = {}  # job id -> latest {"node", "step", "image"}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cond = asyncio.Condition()

    def publish(self, job_id: str) -> None:
        """From any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._bump, job_id)

    def _bump(self, job_id: str) -> None:
        self._version[job_id] = self._version.get(job_id, 0) + 1

        async def notify() -> None:
            assert self._cond is not None
            async with self._cond:
                self._cond.notify_all()

        asyncio.ensure_future(notify())

    def version(self, job_id: str) -> int:
        return self._version.get(job_id, 0)

    async def wait(self, job_id: str, seen: int, timeout: float) -> None:
        assert self._cond is not None
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self._version.get(job_id, 0) != seen), timeout)
            except TimeoutError:
                pass


class Worker(threading.Thread):
    def __init__(self, config: ServeConfig, queue: JobQueue, hub: Hub, device: str | None = None):
        super().__init__(name=f"editgraph-worker-{device or 'auto'}", daemon=True)
        self.config = config
        self.queue = queue
        self.hub = hub
        self.device = device
        self._stop_flag = threading.Event()
        self._running: dict[str, tuple[threading.Event, dict[str, Any]]] = {}  # job id -> (cancel, live state)
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stop_flag.set()
        with self._lock:
            for cancel, _ in self._running.values():
                cancel.set()

    def cancel(self, job_id: str) -> bool:
        """Stop a running job at its next step. The `cancel_requested` event is recorded before the
        flag is set, so at most one more step event can follow it."""
        with self._lock:
            entry = self._running.get(job_id)
        if entry is None:
            return False
        cancel, live = entry
        self.emit(job_id, {"event": "cancel_requested", "node": live.get("node"), "step": live.get("step")})
        cancel.set()
        return True

    def emit(self, job_id: str, body: dict[str, Any]) -> None:
        self.queue.add_event(job_id, {**body, "t": round(time.time(), 3)})
        self.hub.publish(job_id)

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        from editgraph.executor.cache import Cache
        from editgraph.settings import Settings

        settings = Settings.from_env()  # read once for the life of the server
        cache = Cache.default(self.config.cache_dir, settings)  # opened in this thread: SQLite connections stay in theirs
        try:
            while not self._stop_flag.is_set():
                job = self.queue.claim(timeout=0.5)
                if job is not None:
                    self._run_job(job, cache, settings)
        finally:
            cache.close()

    def _run_job(self, job: Job, cache, settings) -> None:
        from editgraph.api import Workflow, execute
        from editgraph.serve.jobs import prepare

        self.emit(job.id, {"event": "started", "attempt": job.attempts})
        if job.cancel_requested:  # flagged just before a crash: honour it
            return self._end(job.id, "cancelled", error={"message": "cancelled"})
        try:
            graph = prepare(job.workflow, job.base_dir, job.params, self.config, job.label)
        except WorkflowInvalid as exc:  # e.g. an upload or allowed folder removed while it waited
            return self._end(job.id, "failed", error=invalid_error(exc))
        cancel = threading.Event()
        live: dict[str, Any] = {}
        with self._lock:
            self._running[job.id] = (cancel, live)
        fresh = self.queue.get(job.id)
        if fresh is not None and fresh.cancel_requested:  # cancelled between claim and now
            cancel.set()
        relay = _Relay(self, job.id, cache, live)
        out_dir = self.config.output_dir(job.id)
        try:  # the same call as `editgraph run`: same planning, cache, provenance, report
            result = execute(
                Workflow(graph.workflow, Path(job.base_dir), job.label), graph, out=out_dir, cache=cache, device=self.device,
                listeners=[relay], cancel=cancel, settings=settings,
            )
        except Cancelled:
            if self._stop_flag.is_set():  # the server is shutting down: the job stays "running" and
                return None  # is re-queued at the next start, exactly as after a crash
            return self._end(job.id, "cancelled", error={"message": "cancelled (finished nodes are cached)"})
        except NodeFailed as exc:
            return self._end(job.id, "failed", error={"message": str(exc), "node_id": exc.node_id, "node_type": exc.node_type})
        except EditgraphError as exc:
            return self._end(job.id, "failed", error={"message": str(exc)})
        except Exception as exc:  # a bug of ours: the client gets a sentence, the log the traceback
            log.exception("job %s failed", job.id)
            return self._end(job.id, "failed", error={"message": f"internal error ({type(exc).__name__}); see the server log"})
        finally:
            with self._lock:
                self._running.pop(job.id, None)
            self.hub.previews.pop(job.id, None)
        self._end(job.id, "done", result=report(job, result, out_dir))

    def _end(self, job_id: str, state: str, *, result: dict | None = None, error: dict | None = None) -> None:
        self.queue.finish(job_id, state, result=result, error=error)  # records the "finished" event too
        self.hub.publish(job_id)


class _Relay:
    """Executor events -> job events (JSON), in the order the executor emitted them."""

    def __init__(self, worker: Worker, job_id: str, cache, live: dict[str, Any]):
        self.worker = worker
        self.job_id = job_id
        self.cache = cache
        self.live = live

    def __call__(self, event) -> None:
        from editgraph.executor import events as ev

        w, jid = self.worker, self.job_id
        if isinstance(event, ev.RunPlanned):
            w.emit(jid, {"event": "planned", "nodes": list(event.nodes)})
        elif isinstance(event, ev.NodeStarted):
            # What finished before this node is committed to the disk cache now: a crash during a
            # long denoise must not lose the cheap nodes batched before it.
            self.cache.flush()
            self.live.update(node=event.node_id, step=0)
            w.emit(jid, {"event": "node_started", "node": event.node_id, "type": event.node_type})
        elif isinstance(event, ev.NodeProgress):
            self.live.update(node=event.node_id, step=event.step)
            body = {"event": "progress", "node": event.node_id, "step": event.step, "total": event.total}
            latents = getattr(event, "preview", None)
            if latents is not None:
                from editgraph.serve.preview import preview_png

                w.hub.previews[jid] = {"node": event.node_id, "step": event.step, "image": preview_png(latents)}
                body["preview"] = True
            w.emit(jid, body)
        elif isinstance(event, ev.NodeFinished):
            w.emit(jid, {"event": "node_finished", "node": event.node_id, "type": event.node_type, "status": event.status, "seconds": round(event.seconds, 4)})
        elif isinstance(event, ev.NodeFailedEvent):
            w.emit(jid, {"event": "node_failed", "node": event.node_id, "type": event.node_type, "error": event.error})
        elif isinstance(event, ev.ArtifactWritten):
            name = Path(event.path).relative_to(w.config.output_dir(jid).resolve()).as_posix()
            w.emit(jid, {"event": "output", "node": event.node_id, "name": name, "url": output_url(jid, name)})


def output_url(job_id: str, name: str) -> str:
    return f"/api/jobs/{job_id}/outputs/{name}"


def invalid_error(exc: WorkflowInvalid) -> dict[str, Any]:
    return {
        "message": str(exc),
        "issues": [{"path": i.path, "message": i.message, "node_id": i.node_id, "node_type": i.node_type} for i in exc.issues],
    }


def report(job: Job, result, out_dir: Path) -> dict[str, Any]:
    """The run report (as `editgraph run --report` writes it), outputs given as server URLs:
    the client never learns where the server keeps files."""
    root = out_dir.resolve()
    outputs = []
    for path in result.written:
        name = Path(path).resolve().relative_to(root).as_posix()
        outputs.append({"name": name, "url": output_url(job.id, name), "bytes": Path(path).stat().st_size})
    return {**result.report, "outputs": outputs}
