"""The two cache tiers. Each holds two maps (as Hamilton does):

    refs:  content key  -> {output name: fingerprint}     (small; says what a node produced)
    blobs: fingerprint  -> encoded value                  (large; shared by every key that made it)

so a node that reruns and produces the same bytes leaves its descendants' keys unchanged.

MemoryStore is an LRU bounded in bytes. DiskStore keeps an SQLite index (WAL mode, so two
processes can share it) and content-addressed blob files named by their fingerprint. A blob file
is written to a temporary name and renamed; it is listed in the index only after the rename; and
when read it is hashed and compared with its name, so a torn or altered file is never served.
Small blobs live in the index itself: a no-op node's output is a row, not a file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import blake3
import msgpack

from editgraph.atomic import write_atomic
from editgraph.values.codec import CorruptEntry, Encoded, decode, value_nbytes

MISSING: Any = object()

INLINE_LIMIT = 16 * 1024  # blobs up to this size live in the index: one row beats a file for tiny values
FLUSH_AFTER_S = 0.25  # cheap outputs are batched into one transaction at most this long


class MemoryStore:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.refs: dict[str, dict[str, str]] = {}
        self._blobs: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0

    def get_ref(self, key: str) -> dict[str, str] | None:
        return self.refs.get(key)

    def put_ref(self, key: str, fps: dict[str, str]) -> None:
        self.refs[key] = fps

    def get_blob(self, fp: str) -> Any:
        entry = self._blobs.get(fp)
        if entry is None:
            return MISSING
        self._blobs.move_to_end(fp)
        return entry[0]

    def put_blob(self, fp: str, value: Any) -> None:
        size = value_nbytes(value)
        if size > self.max_bytes or fp in self._blobs:
            return
        self._blobs[fp] = (value, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, (_, evicted) = self._blobs.popitem(last=False)
            self.nbytes -= evicted

    def clear(self) -> None:
        self.refs.clear()
        self._blobs.clear()
        self.nbytes = 0


# One B-tree per table on the write path: refs are small rows clustered on their key (WITHOUT
# ROWID); blobs keep a rowid because inline values reach 16 KiB. No index on `used`: eviction
# sorts a scan, rarely, instead of every insert paying for an index it seldom reads.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS refs  (key TEXT PRIMARY KEY, fps BLOB NOT NULL, used REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (fp TEXT PRIMARY KEY, size INTEGER NOT NULL, used REAL NOT NULL, inline BLOB);
"""


def _connect(path: Path) -> sqlite3.Connection:
    """An index connection (WAL, so processes share it) with the schema in place, or
    sqlite3.DatabaseError if the file is not a readable index."""
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute("SELECT COUNT(*) FROM refs").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


class DiskStore:
    def __init__(self, root: str | Path, max_bytes: int, max_refs: int = 2_000_000):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_refs = max_refs
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.recovered_from: Path | None = None  # a damaged index this store set aside
        self._db = self._open_index()
        self._cursor = self._db.cursor()  # reused: the hot lookups skip making a cursor each time
        self._lock = threading.Lock()
        self._pending_refs: dict[str, bytes] = {}
        self._pending_blobs: dict[str, tuple[int, bytes | None]] = {}
        self._pending_touch: set[str] = set()
        self._pending_since: float | None = None
        # Running estimates of the index's size, so a flush does not scan the tables; they are
        # re-read from SQLite (other processes write too) only when they cross a budget.
        self._bytes_estimate = self.total_bytes()
        self._refs_estimate = self._count_refs()

    def _open_index(self) -> sqlite3.Connection:
        """The index, created if absent. A file that is not a readable SQLite index (a disk fault,
        a stray write) is renamed aside and a fresh one started: the cache forgets, never lies,
        and the blob files it no longer lists are swept by `editgraph cache gc`."""
        path = self.root / "index.sqlite"
        try:
            return _connect(path)
        except sqlite3.DatabaseError:
            self.recovered_from = path.with_name(f"index.sqlite.damaged-{int(time.time())}")
            path.rename(self.recovered_from)
            for suffix in ("-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            return _connect(path)

    # --- refs ---------------------------------------------------------------------------------

    def get_ref(self, key: str) -> dict[str, str] | None:
        raw = self._pending_refs.get(key)
        if raw is None:
            row = self._read("SELECT fps FROM refs WHERE key = ?", key)
            if row is None:
                return None
            raw = row[0]
        try:
            fps = msgpack.unpackb(raw, raw=False)
        except Exception:
            return None  # an unreadable row is a miss, recomputed and overwritten
        return fps if isinstance(fps, dict) else None

    def put_ref(self, key: str, fps: dict[str, str]) -> None:
        self._pending_refs[key] = msgpack.packb(fps, use_bin_type=True)
        self._mark_pending()

    # --- blobs --------------------------------------------------------------------------------

    def _blob_path(self, fp: str) -> Path:
        return self.root / "blobs" / fp[:2] / fp

    def get_blob(self, fp: str) -> Any:
        """The value stored under fp, or MISSING. Verifies the bytes against fp before decoding."""
        pending = self._pending_blobs.get(fp)
        if pending is not None and pending[1] is not None:
            data = pending[1]
        else:
            row = self._read("SELECT inline FROM blobs WHERE fp = ?", fp)
            if row is None and pending is None:
                return MISSING
            data = row[0] if row is not None else None
            if data is None:
                try:
                    data = self._blob_path(fp).read_bytes()
                except OSError:
                    self._forget(fp)
                    return MISSING
        if blake3.blake3(data).hexdigest() != fp:
            self._forget(fp)
            return MISSING
        try:
            value = decode(data)
        except CorruptEntry:
            self._forget(fp)
            return MISSING
        self._pending_touch.add(fp)
        self._mark_pending()
        return value

    def put_blob(self, fp: str, encoded: Encoded) -> None:
        size = encoded.nbytes
        if size <= INLINE_LIMIT:
            self._pending_blobs[fp] = (size, encoded.tobytes())
        else:
            path = self._blob_path(fp)
            if not path.exists():
                write_atomic(path, encoded.parts)
            self._pending_blobs[fp] = (size, None)
        self._mark_pending()

    def _forget(self, fp: str) -> None:
        self._pending_blobs.pop(fp, None)
        with self._lock:
            self._end_read()
            self._db.execute("DELETE FROM blobs WHERE fp = ?", (fp,))
        try:
            self._blob_path(fp).unlink()
        except OSError:
            pass

    # --- reads --------------------------------------------------------------------------------

    def _read(self, sql: str, arg: str) -> tuple | None:
        """One row, read inside a snapshot that lasts until the next flush or write.

        An SQLite statement outside a transaction takes and drops WAL read locks each time (about
        10 us of a no-op node's budget); inside one it costs about 1.5 us. The snapshot may miss
        rows another process commits meanwhile, for at most one batch (FLUSH_AFTER_S, or the end
        of the run): a miss only means a node recomputes what the other process also made.
        """
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
        return self._cursor.execute(sql, (arg,)).fetchone()

    def _end_read(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    # --- batching, eviction -------------------------------------------------------------------

    def _mark_pending(self) -> None:
        now = time.monotonic()
        if self._pending_since is None:
            self._pending_since = now
        elif now - self._pending_since > FLUSH_AFTER_S:
            self.flush()

    def flush(self) -> None:
        """Commit pending index rows in one short transaction, then evict if over budget."""
        with self._lock:
            self._end_read()  # never hold a snapshot while idle: it keeps the WAL from checkpointing
            if self._pending_since is None:
                return
            now = time.time()
            refs = [(k, v, now) for k, v in self._pending_refs.items()]
            blobs = [(fp, size, now, inline) for fp, (size, inline) in self._pending_blobs.items()]
            touched = [(now, fp) for fp in self._pending_touch]
            self._pending_refs, self._pending_blobs, self._pending_touch = {}, {}, set()
            self._pending_since = None
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?)", blobs)
                self._db.executemany("INSERT OR REPLACE INTO refs VALUES (?, ?, ?)", refs)
                self._db.executemany("UPDATE blobs SET used = ? WHERE fp = ?", touched)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._bytes_estimate += sum(size for _, size, _, _ in blobs)
        self._refs_estimate += len(refs)
        if self._bytes_estimate > self.max_bytes or self._refs_estimate > self.max_refs:
            self.evict()

    def evict(self) -> None:
        """Drop least-recently-used blobs until under the byte budget, and old refs past the count cap."""
        with self._lock:
            self._end_read()
        total = self.total_bytes()
        if total > self.max_bytes:
            target = int(self.max_bytes * 0.9)  # evict a margin so the next writes do not evict again
            doomed = []
            for fp, size in self._db.execute("SELECT fp, size FROM blobs ORDER BY used ASC"):
                if total <= target:
                    break
                doomed.append(fp)
                total -= size
            with self._lock:
                self._db.executemany("DELETE FROM blobs WHERE fp = ?", [(fp,) for fp in doomed])
            for fp in doomed:
                try:
                    self._blob_path(fp).unlink()
                except OSError:
                    pass
        nrefs = self._count_refs()
        if nrefs > self.max_refs:
            with self._lock:
                self._db.execute(
                    "DELETE FROM refs WHERE key IN (SELECT key FROM refs ORDER BY used ASC LIMIT ?)",
                    (nrefs - int(self.max_refs * 0.9),),
                )
            nrefs = self._count_refs()
        self._bytes_estimate, self._refs_estimate = total, nrefs

    def _count_refs(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM refs").fetchone()
        return int(n)

    def total_bytes(self) -> int:
        (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()
        return int(total)

    def info(self) -> dict[str, Any]:
        self.flush()
        (nblobs,) = self._db.execute("SELECT COUNT(*) FROM blobs").fetchone()
        (nrefs,) = self._db.execute("SELECT COUNT(*) FROM refs").fetchone()
        return {"root": str(self.root), "entries": nrefs, "blobs": nblobs, "bytes": self.total_bytes(), "max_bytes": self.max_bytes}

    def clear(self) -> None:
        with self._lock:
            self._end_read()
            self._pending_refs, self._pending_blobs, self._pending_touch = {}, {}, set()
            self._pending_since = None
            self._db.execute("DELETE FROM refs")
            self._db.execute("DELETE FROM blobs")
        for sub in (self.root / "blobs").iterdir():
            for f in sub.iterdir():
                f.unlink(missing_ok=True)

    def sweep_orphans(self, older_than_s: float = 3600) -> int:
        """Delete blob files no index row names (left by a process killed between write and commit)."""
        self.flush()
        known = {fp for (fp,) in self._db.execute("SELECT fp FROM blobs WHERE inline IS NULL")}
        cutoff = time.time() - older_than_s
        removed = 0
        for sub in (self.root / "blobs").iterdir():
            for f in sub.iterdir():
                if f.name not in known and f.stat().st_mtime < cutoff:
                    f.unlink(missing_ok=True)
                    removed += 1
        return removed

    def close(self) -> None:
        self.flush()
        self._db.close()
