"""The server's job queue, persisted in SQLite so a restart or a crash loses no job.

A job moves queued -> running -> done | failed | cancelled. Every transition is one committed
transaction before anyone is told about it, so after `kill -9`:

- queued jobs are still queued and run in submission order;
- a job that was running is put back at the head of the queue (`attempts` counts the tries); its
  finished upstream nodes are in the executor's disk cache, so the re-run picks up where it stopped;
- finished jobs keep their report, outputs and events (history survives restarts).

Events (node started / finished / progress / failed ...) are appended to an `events` table in the
order the worker saw them, numbered per job, so a client that connects late replays the run.
Denoise preview images are not stored here: they are large and only useful live.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- submission order; a re-queued job keeps its place
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    label TEXT NOT NULL,                     -- the library name, or the document's own name
    workflow TEXT NOT NULL,                  -- the document as submitted (JSON)
    base_dir TEXT NOT NULL,                  -- where its relative paths resolve
    params TEXT NOT NULL,                    -- the params the client set (JSON)
    client TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,                              -- JSON: {"message", "node_id", "node_type"}
    result TEXT                              -- JSON: the run report with outputs
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
"""


@dataclass(frozen=True)
class Job:
    id: str
    seq: int
    state: str
    label: str
    workflow: dict[str, Any]
    base_dir: str
    params: dict[str, Any]
    created: float
    started: float | None
    finished: float | None
    attempts: int
    cancel_requested: bool
    error: dict[str, Any] | None
    result: dict[str, Any] | None

    def summary(self) -> dict[str, Any]:
        """What the API shows for a job (the document itself is a separate download)."""
        return {
            "id": self.id,
            "state": self.state,
            "workflow": self.label,
            "params": self.params,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "attempts": self.attempts,
            "error": self.error,
            "outputs": (self.result or {}).get("outputs", []),
        }


class QueueFull(Exception):
    """More jobs are waiting than the server was started to hold."""


class JobQueue:
    """Thread-safe: one connection, one lock (a few small statements per job; no contention worth more)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a job acknowledged to a client is on disk even if the machine loses power.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)

    # --- submitting ----------------------------------------------------------------------------

    def submit(
        self, label: str, workflow: dict[str, Any], base_dir: str, params: dict[str, Any], *, client: str = "", max_queued: int | None = None
    ) -> tuple[Job, int]:
        """Queue a job; returns it and its place in the queue (1 = next). Its first event,
        "queued", is written in the same transaction, so it precedes anything the worker records."""
        job_id = uuid.uuid4().hex
        now = time.time()
        with self._lock:
            if max_queued is not None:
                (waiting,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued','running')").fetchone()
                if waiting >= max_queued:
                    raise QueueFull(f"the queue holds {waiting} unfinished jobs, the most this server takes (--max-queue {max_queued}); try again later")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO jobs (id, state, label, workflow, base_dir, params, client, created) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (job_id, label, json.dumps(workflow), base_dir, json.dumps(params), client, now),
                )
                (ahead,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq < ?", (cur.lastrowid,)).fetchone()
                event = {"event": "queued", "position": ahead + 1, "t": round(now, 3), "n": 1}
                self._db.execute("INSERT INTO events (job_id, n, body) VALUES (?, 1, ?)", (job_id, json.dumps(event)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._wake.notify_all()
        job = self.get(job_id)
        assert job is not None
        return job, ahead + 1

    # --- the worker's side --------------------------------------------------------------------

    def recover(self) -> list[str]:
        """At start-up: jobs left running by a crash go back to the queue (at their old place)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()
            self._db.execute("UPDATE jobs SET state = 'queued', started = NULL WHERE state = 'running'")
        return [r[0] for r in rows]

    def claim(self, timeout: float) -> Job | None:
        """The oldest queued job, now marked running; None if none arrived within `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                row = self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
                if row is not None:
                    self._db.execute(
                        "UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1 WHERE id = ?", (time.time(), row[0])
                    )
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._wake.wait(left)
        return self.get(row[0])

    def finish(self, job_id: str, state: str, *, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> None:
        """End a job, and record its "finished" event in the same transaction: a crash can
        leave neither a finished job whose watchers wait forever nor an event for an unfinished one."""
        assert state in FINAL, state
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "UPDATE jobs SET state = ?, finished = ?, result = ?, error = ? WHERE id = ?",
                    (state, time.time(), None if result is None else json.dumps(result), None if error is None else json.dumps(error), job_id),
                )
                self._finished_event(job_id, state, error, (result or {}).get("outputs", []))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._wake.notify_all()

    def _finished_event(self, job_id: str, state: str, error: dict[str, Any] | None, outputs: list) -> None:
        (n,) = self._db.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM events WHERE job_id = ?", (job_id,)).fetchone()
        body = {"event": "finished", "state": state, "error": error, "outputs": outputs, "t": round(time.time(), 3), "n": n}
        self._db.execute("INSERT INTO events (job_id, n, body) VALUES (?, ?, ?)", (job_id, n, json.dumps(body)))

    def request_cancel(self, job_id: str) -> str | None:
        """Cancel a job: a queued one ends at once; a running one is flagged (the worker stops it
        between steps). Returns its state afterwards, or None for an unknown id."""
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            state = row[0]
            if state == "queued":
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ?", (time.time(), job_id))
                self._finished_event(job_id, "cancelled", {"message": "cancelled before it started"}, [])
                self._db.execute("COMMIT")
                state = "cancelled"
            elif state == "running":
                self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            self._wake.notify_all()
            return state

    # --- events --------------------------------------------------------------------------------

    def add_event(self, job_id: str, body: dict[str, Any]) -> int:
        """Append an event; returns its number within the job (1, 2, ...)."""
        with self._lock:
            (n,) = self._db.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM events WHERE job_id = ?", (job_id,)).fetchone()
            self._db.execute("INSERT INTO events (job_id, n, body) VALUES (?, ?, ?)", (job_id, n, json.dumps({**body, "n": n})))
        return n

    def events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM events WHERE job_id = ? AND n > ? ORDER BY n", (job_id, after)).fetchall()
        return [json.loads(r[0]) for r in rows]

    # --- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def position(self, job_id: str) -> int | None:
        """1 = next to run; None when the job is not queued."""
        with self._lock:
            row = self._db.execute("SELECT seq, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[1] != "queued":
                return None
            (ahead,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq < ?", (row[0],)).fetchone()
        return ahead + 1

    def history(self, limit: int = 50, before_seq: int | None = None) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE seq < ? ORDER BY seq DESC LIMIT ?", (before_seq or 2**62, limit)
            ).fetchall()
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | dict(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


_COLUMNS = "id, seq, state, label, workflow, base_dir, params, created, started, finished, attempts, cancel_requested, error, result"


def _job(row: tuple) -> Job:
    (job_id, seq, state, label, workflow, base_dir, params, created, started, finished, attempts, cancel, error, result) = row
    return Job(
        job_id, seq, state, label, json.loads(workflow), base_dir, json.loads(params), created, started, finished, attempts,
        bool(cancel), None if error is None else json.loads(error), None if result is None else json.loads(result),
    )
