"""What a disk tier's index holds, read on a connection of the test's own, as another process
sees it: refs merged into the `refs` table, and those still in batches (store.py)."""

from __future__ import annotations

import sqlite3

import msgpack


def batched(db: sqlite3.Connection) -> dict[str, dict]:
    """key -> fps of the refs in batches, a later batch's winning."""
    out = {}
    for (raw,) in db.execute("SELECT refs FROM batches ORDER BY seq"):
        flat = msgpack.unpackb(raw)
        out.update(zip(flat[::2], flat[1::2]))
    return out


def merged(db: sqlite3.Connection) -> dict[str, dict]:
    """key -> fps of the rows of the refs table."""
    return {key: msgpack.unpackb(fps) for key, fps in db.execute("SELECT key, fps FROM refs")}


def committed(db: sqlite3.Connection) -> int:
    """Refs committed, in either place (a key committed twice and not merged yet counts twice)."""
    return db.execute("SELECT (SELECT COUNT(*) FROM refs) + (SELECT COALESCE(SUM(n), 0) FROM batches)").fetchone()[0]
