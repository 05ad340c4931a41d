"""The server's worker thread in this process, on a real SQLite queue: what a job that cannot run
ends as, and the events a client sees for it. No HTTP: the queue is what the routes write."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from editgraph import workflows
from editgraph.serve import jobs, uploads
from editgraph.serve.config import ServeConfig
from editgraph.serve.queue import FINAL, JobQueue
from editgraph.serve.worker import Hub, Worker

ASSETS = workflows.HERE / "assets"


@pytest.fixture
def config(tmp_path: Path) -> ServeConfig:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    config = ServeConfig(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", allow_dirs=(allowed,))
    config.uploads_dir.mkdir(parents=True)
    return config


def _queue(config: ServeConfig) -> JobQueue:
    return JobQueue(config.data_dir / "jobs.sqlite")


def _run_until_finished(config: ServeConfig, queue: JobQueue, job_id: str, timeout: float = 120):
    """Start a worker on the queue, wait for the job to end, stop the worker: the job as stored."""
    worker = Worker(config, queue, Hub(), "cpu")
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while queue.get(job_id).state not in FINAL:
            assert time.monotonic() < deadline, f"job {job_id} did not finish within {timeout} s"
            time.sleep(0.05)
    finally:
        worker.stop()
        worker.join(30)
    assert not worker.is_alive()
    return queue.get(job_id)


def _submit(config: ServeConfig, queue: JobQueue, workflow, params: dict):
    sub = jobs.submission(workflow, params, config)
    job, _ = queue.submit(sub.label, sub.document, sub.base_dir, sub.params)
    return job


def test_a_job_whose_cancel_was_flagged_before_a_crash_is_cancelled_without_running(config):
    queue = _queue(config)
    job = _submit(config, queue, "look", {})
    assert queue.claim(timeout=0).id == job.id  # it was running ...
    assert queue.request_cancel(job.id) == "running"  # ... the client asked to cancel ...
    queue.close()  # ... and the server died before the worker saw the flag

    queue = _queue(config)
    assert queue.recover() == [job.id]
    done = _run_until_finished(config, queue, job.id)
    assert done.state == "cancelled" and done.error == {"message": "cancelled"} and done.result is None
    assert [e["event"] for e in queue.events(job.id)] == ["queued", "started", "finished"]
    assert queue.events(job.id)[1]["attempt"] == 2
    assert not config.output_dir(job.id).exists()  # nothing ran, nothing was written


def test_an_upload_removed_while_the_job_waited_fails_the_job_naming_the_path(config):
    queue = _queue(config)
    ref = uploads.store((ASSETS / "coffee.png").read_bytes(), config.uploads_dir, config.max_image_pixels)["ref"]
    job = _submit(config, queue, "look", {"image": ref})
    uploads.resolve(ref, config.uploads_dir).unlink()  # e.g. someone cleaned the uploads folder

    done = _run_until_finished(config, queue, job.id)
    assert done.state == "failed"
    [issue] = done.error["issues"]
    assert issue["path"] == "nodes.photo.params.path" and issue["node_id"] == "photo" and issue["node_type"] == "image.load"
    finished = queue.events(job.id)[-1]
    assert finished["event"] == "finished" and finished["state"] == "failed" and finished["error"] == done.error


def test_a_node_that_fails_while_running_fails_the_job_naming_the_node(config):
    broken = config.allow_dirs[0] / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)  # a PNG signature, then nothing decodable
    queue = _queue(config)
    job = _submit(config, queue, "look", {"image": str(broken)})  # the file exists: accepted at submit

    done = _run_until_finished(config, queue, job.id)
    assert done.state == "failed" and done.error["node_id"] == "photo" and done.error["node_type"] == "image.load"
    assert str(broken) in done.error["message"]
    events = queue.events(job.id)
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["queued", "started", "planned"] and kinds[-1] == "finished"
    assert [(e["node"], e["type"]) for e in events if e["event"] == "node_failed"] == [("photo", "image.load")]
    assert "node_finished" not in kinds  # nothing downstream of the photo ran


def test_cancelling_a_job_the_worker_is_not_running_changes_nothing(config):
    queue = _queue(config)
    job = _submit(config, queue, "look", {})
    worker = Worker(config, queue, Hub(), "cpu")  # not started
    assert worker.cancel(job.id) is False
    assert [e["event"] for e in queue.events(job.id)] == ["queued"]  # no cancel_requested event
    assert queue.get(job.id).state == "queued"
