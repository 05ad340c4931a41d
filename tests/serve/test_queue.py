"""The SQLite job queue on its own: order, persistence across a reopen, recovery, cancel, limits."""

from __future__ import annotations

import pytest

from editgraph.serve.queue import JobQueue, QueueFull


def _submit(q: JobQueue, label: str, **kw):
    return q.submit(label, {"nodes": {}}, "/base", {"p": label}, **kw)


def test_jobs_run_in_submission_order_and_survive_a_reopen(tmp_path):
    q = JobQueue(tmp_path / "jobs.sqlite")
    (a, pa), (b, pb), (c, pc) = (_submit(q, x) for x in "abc")
    assert (pa, pb, pc) == (1, 2, 3)
    assert q.events(a.id) == [{"event": "queued", "position": 1, "t": q.events(a.id)[0]["t"], "n": 1}]
    running = q.claim(timeout=0)
    assert running.id == a.id and running.state == "running" and running.attempts == 1
    assert q.position(b.id) == 1 and q.position(c.id) == 2 and q.position(a.id) is None
    q.close()  # as after kill -9: nothing else is written

    q = JobQueue(tmp_path / "jobs.sqlite")
    assert q.recover() == [a.id]
    order = [q.claim(timeout=0).id for _ in range(3)]
    assert order == [a.id, b.id, c.id]  # the interrupted job keeps its place at the head
    assert q.get(a.id).attempts == 2 and q.get(b.id).attempts == 1
    assert q.claim(timeout=0) is None


def test_finishing_records_the_finished_event_in_the_same_transaction(tmp_path):
    q = JobQueue(tmp_path / "jobs.sqlite")
    job, _ = _submit(q, "a")
    q.claim(timeout=0)
    q.add_event(job.id, {"event": "started"})
    q.finish(job.id, "done", result={"outputs": [{"name": "x.png"}]})
    events = q.events(job.id)
    assert [e["event"] for e in events] == ["queued", "started", "finished"] and [e["n"] for e in events] == [1, 2, 3]
    assert events[-1]["state"] == "done" and events[-1]["outputs"] == [{"name": "x.png"}]
    assert q.events(job.id, after=2) == events[2:]
    assert q.get(job.id).result == {"outputs": [{"name": "x.png"}]}


def test_cancel_ends_a_queued_job_at_once_and_flags_a_running_one(tmp_path):
    q = JobQueue(tmp_path / "jobs.sqlite")
    (run, _), (wait, _) = _submit(q, "run"), _submit(q, "wait")
    q.claim(timeout=0)
    assert q.request_cancel(wait.id) == "cancelled"
    assert [e["event"] for e in q.events(wait.id)] == ["queued", "finished"]
    assert q.request_cancel(run.id) == "running" and q.get(run.id).cancel_requested
    assert q.request_cancel("nope") is None
    assert q.claim(timeout=0) is None  # the cancelled one is never handed out


def test_max_queued_counts_unfinished_jobs(tmp_path):
    q = JobQueue(tmp_path / "jobs.sqlite")
    _submit(q, "a", max_queued=2)
    _submit(q, "b", max_queued=2)
    with pytest.raises(QueueFull, match="--max-queue 2"):
        _submit(q, "c", max_queued=2)
    job = q.claim(timeout=0)
    q.finish(job.id, "done")
    _submit(q, "c", max_queued=2)
    assert q.counts() == {"queued": 2, "running": 0, "done": 1, "failed": 0, "cancelled": 0}
