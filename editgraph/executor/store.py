"""The two cache tiers. Each holds two maps (as Hamilton does):

    refs:  content key  -> {output name: fingerprint}     (small; says what a node produced)
    blobs: fingerprint  -> encoded value                  (large; shared by every key that made it)

so a node that reruns and produces the same bytes leaves its descendants' keys unchanged.

MemoryStore is an LRU bounded in bytes. DiskStore keeps an SQLite index (WAL mode, so two
processes can share it) and content-addressed blob files named by their fingerprint. A blob file
is written to a temporary name and renamed; it is listed in the index only after the rename; and
when read it is hashed and compared with its name, so a torn or altered file is never served.
Small blobs live in the index itself: a no-op node's output is a row, not a file.

DiskStore writes behind (writer.py): a writer thread writes blob files while the run goes on and
commits rows every COMMIT_S; flush() is the barrier that makes everything queued so far durable
(the executor calls it at the end of each run), committing what is left in the caller's thread.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import blake3
import msgpack

from editgraph.atomic import sweep_temporaries
from editgraph.executor import keyfilter
from editgraph.executor.memory import MISSING, MemoryStore  # noqa: F401  (the tiers' one import)
from editgraph.executor.writer import MAX_PENDING_BYTES, WriteBehind, immediate, merge_staged, unpack_batch
from editgraph.values.codec import CorruptEntry, Encoded, decode

INLINE_LIMIT = 16 * 1024  # blobs up to this size live in the index: one row beats a file for tiny values
# Pages each index connection may keep in memory (SQLite's default: 2 MiB; this is at most 64 MiB
# a store, for its two connections). Keys are hashes, so a run's new rows land on pages all over
# a big index; with 2 MiB most inserts read their page back from the OS (500 rows into 200,000
# on this project's CI machine: 22 ms with 64 MiB, 32 ms with the default; issue 16).
CACHE_KIB = 32 * 1024

# One B-tree per table on the write path: refs are small rows clustered on their key (WITHOUT
# ROWID); blobs keep a rowid because inline values reach 16 KiB. No index on `used`: eviction
# sorts a scan, rarely, instead of every insert paying for an index it seldom reads.
#
# New refs are committed as batches: one row of `batches` holds a commit's refs (up to MERGE_ROWS
# of them, packed in one: key, fps, key, fps ...), and the writer moves them into `refs` in bulk, beside
# the runs (writer.py's merge). Keys are hashes: a commit into a big table dirtied a page of it per
# row, so a run's end waited for 500 page writes (17 ms into 200,000 entries); into a small table
# of rows still 500 inserts (1-1.7 ms); a batch is one row. Each process keeps the batches its
# read snapshot holds unpacked in memory (a few thousand refs at most: DiskStore._staged_map),
# refreshed by one query when a snapshot starts, and asks them before `refs`: a key in both has
# its newer entry there. AUTOINCREMENT: a batch's seq is never reused, so "seq > the last one
# seen" finds every batch committed since.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS refs  (key TEXT PRIMARY KEY, fps BLOB NOT NULL, used REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, refs BLOB NOT NULL, used REAL NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (fp TEXT PRIMARY KEY, size INTEGER NOT NULL, used REAL NOT NULL, inline BLOB);
CREATE TABLE IF NOT EXISTS meta  (name TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID;
""" + keyfilter.SCHEMA  # a Bloom filter of the keys in `refs`: a lookup of a key not there asks no table


# SQLite's result codes for "this file is damaged" (as opposed to busy, read-only or full).
_DAMAGED = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def _forgets(on_error: Any = None):
    """Run an index method so that any SQLite error degrades to the cache forgetting: the index is
    reopened (set aside first when damaged), queued rows are dropped, and the method answers
    `on_error` (a miss, nothing written) instead of failing the run (issue 10)."""

    def wrap(method):
        @functools.wraps(method)
        def guarded(self: "DiskStore", *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                self._index_failed(exc)
                return on_error

        return guarded

    return wrap


# What a snapshot reads first: the batches' range (see _load_batches) and whether the key filter
# changed (its version; the last key inserted into `refs` since it was folded).
_SNAPSHOT_STATE = ("SELECT (SELECT MIN(seq) FROM batches), (SELECT MAX(seq) FROM batches), "
                   "(SELECT version FROM filter), (SELECT MAX(rowid) FROM refs_new)")

# Refs of an index written by editgraph before batches (one row a ref in a table `staged`): moved
# into `refs` when a store opens the index.
_OLD_STAGED = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'staged'"


def _fps(raw: bytes) -> dict[str, str] | None:
    """A refs row's fingerprints; None for an unreadable row (a miss, recomputed and overwritten)."""
    try:
        fps = msgpack.unpackb(raw, raw=False)
    except Exception:
        return None
    return fps if isinstance(fps, dict) else None


def _connect(path: Path) -> sqlite3.Connection:
    """An index connection (WAL, so processes share it) with the schema in place, or
    sqlite3.DatabaseError if the file is not a readable index."""
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.executescript(_SCHEMA)
        keyfilter.ensure(db)
        # One page read, not a scan: a file that is not an index fails above; damage deeper in it
        # is met by the query that reads it, and forgotten then (_forgets). A COUNT(*) here read
        # every page of the refs at each open, per connection: 37 ms for 200,000 entries.
        db.execute("SELECT 1 FROM refs LIMIT 1").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


class DiskStore(WriteBehind):
    """The disk tier. Writes are behind (writer.py): put_ref/put_blob queue work (files for the
    writer thread, rows for the next commit, on the writer's own SQLite connection) and return;
    until rows are committed, entries are served from an overlay in this process. flush() is the
    barrier: it returns once everything queued so far is durable (blob files renamed into place,
    index rows committed). Pending blob bytes are bounded by `max_pending_bytes`: a producer that
    gets ahead of the disk waits (back-pressure).

    Ordering makes a crash safe: blob files are renamed into place before the transaction that
    lists them, and commits take rows in queue order, so a committed row never names an
    unwritten file. A SIGKILL loses what was not committed, never leaves a torn or wrong entry.
    """

    def __init__(self, root: str | Path, max_bytes: int, max_refs: int = 2_000_000, max_pending_bytes: int = MAX_PENDING_BYTES):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_refs = max_refs
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / "tmp"  # blob files being written; one folder, so opening sweeps it cheaply
        self.tmp.mkdir(exist_ok=True)
        sweep_temporaries(self.tmp)  # what writers killed mid-write left (their locks are gone)
        self.recovered_from: Path | None = None  # a damaged index this store set aside
        self.problems: list[str] = []  # index errors met mid-run, each survived by forgetting
        self.lost: set[str] = set()  # blobs found damaged or missing when read, and forgotten
        self._db = self._open_index()
        self._cursor = self._db.cursor()  # reused: the hot lookups skip making a cursor each time
        self._lock = threading.Lock()  # the reading connection: lookups, forget, evict
        # Queued, maybe not yet visible to this process's read snapshot: entries carry the queue
        # seq that wrote them and leave once a snapshot newer than their commit is possible.
        self._overlay_refs: dict[str, tuple[int, dict[str, str]]] = {}
        self._overlay_blobs: dict[str, tuple[int, int, Any]] = {}  # fp -> (seq, size, bytes | Encoded | None: in its file)
        self._pending_touch: set[str] = set()
        self._init_writer(max_pending_bytes)
        # The batches this process's read snapshot holds (seq -> [(key, fps), ...]), and what they
        # say, the later batch winning (key -> fps); loaded when a snapshot starts.
        self._staged_batches: dict[int, list] = {}
        self._staged_map: dict[str, dict[str, str]] = {}
        # The filter of the keys in `refs` as the snapshot sees it (None: none, ask every key), and
        # the (version, last refs_new row) it was loaded at; checked when a snapshot starts.
        self._filter: keyfilter.KeyFilter | None = None
        self._filter_at: tuple | None = None
        self._staged_found(self._count_staged(), self._has_filter())  # refs in batches: the writer merges them past STAGE_ROWS
        # The disk's sustained write rate (bytes/s) as the writer measures it on large files, kept
        # in the index so a new process starts from what the last one saw; None until measured.
        # The persistence decision prices a file with it: a disk whose dirty-page writeback
        # throttles writers to 250 MB/s (this project's CI disk) is not the 1 GB/s of a laptop SSD.
        # Running estimates of the index's size, so a flush does not scan the tables: upper bounds
        # kept in its meta table (bytes_bound, refs_bound: each commit adds to them, writer.py), so
        # that opening does not scan them either. Counted exactly (evict) only past a budget.
        self.write_bps: float | None
        self.write_bps, self._bytes_estimate, self._refs_estimate = self._read_meta()
        self._rate_saved = self.write_bps  # the rate the index holds: a commit writes it when it changed
        try:
            self._writer_db = self._writer_connection()
        except sqlite3.Error:
            self._writer_db = None  # the writer connects on its first batch (and fails into flush)
        with self._cv:  # started with the store, like its connection: a run's first write does not wait for it
            self._start_writer()

    @_forgets((None, 0, 0))
    def _read_meta(self) -> tuple[float | None, int, int]:
        """The write rate (None until measured) and the index's bounds on its blob bytes and refs.
        An index from before the bounds is counted once, and its bounds written."""
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        rate = meta.get("write_bps")
        if "bytes_bound" not in meta or "refs_bound" not in meta:
            with self._lock:
                meta["bytes_bound"], meta["refs_bound"] = self._recount()
        return (float(rate) if rate else None), int(meta["bytes_bound"]), int(meta["refs_bound"])

    @_forgets(0)
    def _count_staged(self) -> int:
        """Refs in batches (a few thousand at most: merged past STAGE_ROWS). An index written by
        editgraph before batches has its staged rows moved into `refs` first."""
        db = self._db
        if db.execute(_OLD_STAGED).fetchone() is not None and db.execute("SELECT 1 FROM staged LIMIT 1").fetchone() is not None:
            with self._lock, immediate(db):
                db.execute("INSERT OR REPLACE INTO refs SELECT key, fps, used FROM staged")
                db.execute("DELETE FROM staged")
        (n,) = db.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()
        return int(n)

    @_forgets(True)
    def _has_filter(self) -> bool:
        return keyfilter.whole(self._db)

    def _recount(self) -> tuple[int, int]:
        """Count the blob bytes and refs, and make the counts the index's bounds: in one write
        transaction, so no other process's commit lands between count and bound (and is lost from
        it). The caller holds self._lock."""
        db = self._db
        self._end_read()
        with immediate(db):
            (total,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()
            (nrefs,) = db.execute("SELECT (SELECT COUNT(*) FROM refs) + (SELECT COALESCE(SUM(n), 0) FROM batches)").fetchone()
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("bytes_bound", total), ("refs_bound", nrefs)])
        return int(total), int(nrefs)

    def _writer_connection(self) -> sqlite3.Connection:
        """The connection that commits rows. It never checkpoints (copies the WAL back into the
        index) as it commits: the writer thread does, beside the runs (writer.py)."""
        db = _connect(self.root / "index.sqlite")
        db.execute("PRAGMA wal_autocheckpoint=0")
        return db

    def _open_index(self) -> sqlite3.Connection:
        """The index, created if absent. A file that is not a readable SQLite index (a disk fault,
        a stray write) is renamed aside and a fresh one started: the cache forgets, never lies,
        and the blob files it no longer lists are swept by `editgraph cache gc`."""
        path = self.root / "index.sqlite"
        try:
            return _connect(path)
        except sqlite3.DatabaseError:
            self._set_aside(path)
            return _connect(path)

    def _set_aside(self, path: Path) -> None:
        self.recovered_from = path.with_name(f"index.sqlite.damaged-{time.time_ns()}")
        try:
            path.rename(self.recovered_from)
        except FileNotFoundError:
            pass  # another process set it aside first
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)

    def _index_failed(self, exc: sqlite3.Error) -> None:
        """An index query failed mid-run (page-level damage shows only when a page is read, a full
        disk only when one is written). Drop what was queued, set a damaged file aside, and carry
        on with a fresh index; if even that cannot be opened, with one in memory, so the run
        finishes uncached rather than failing."""
        name = getattr(exc, "sqlite_errorname", "") or ""
        self.problems.append(f"cache index error ({name or type(exc).__name__}: {exc}); entries it held are forgotten")
        with self._drain, self._cv:  # not in the middle of a batch: its counts would go wrong
            # The writer drops its connection and opens the new index with its next batch.
            self._queue, self._queued_bytes, self._queued_files, self._committed = [], 0, 0, self._seq
            self._carry, self._row_bytes, self._rows_due, self._taken = [], 0, None, self._seq
            self._writer_error, self._writer_db = None, None
            self._staged, self._merge_due = 0, False  # the new index stages from nothing
            self._cv.notify_all()
        self._overlay_refs, self._overlay_blobs, self._pending_touch = {}, {}, set()
        self._staged_batches, self._staged_map = {}, {}
        self._filter, self._filter_at = None, None
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        path = self.root / "index.sqlite"
        try:
            if name in _DAMAGED or type(exc) is sqlite3.DatabaseError:
                self._set_aside(path)
            self._db = self._open_index()
        except (sqlite3.Error, OSError):
            self._db = _connect(Path(":memory:"))
        self._cursor = self._db.cursor()

    # --- refs ---------------------------------------------------------------------------------

    @_forgets(None)
    def get_ref(self, key: str) -> dict[str, str] | None:
        pending = self._overlay_refs.get(key)
        if pending is not None:
            return pending[1]
        self._snapshot()
        staged = self._staged_map.get(key)
        if staged is not None:
            return staged
        if self._filter is not None and not self._filter.may_hold([key]):
            return None
        row = self._cursor.execute("SELECT fps FROM refs WHERE key = ?", (key,)).fetchone()
        return None if row is None else _fps(row[0])

    def put_ref(self, key: str, fps: dict[str, str]) -> None:
        """Queue a ref (the drainer packs it). The caller must not change `fps` afterwards."""
        self.put_refs([(key, fps)])

    def put_refs(self, refs: list[tuple[str, dict[str, str]]]) -> None:
        """Queue refs, (key, fps) each, under one lock and as one item (the executor hands over
        those of quick nodes in batches: see Cache.store_ref). The caller must not change the list
        or the fps afterwards."""
        if not refs:
            return
        with self._cv:
            seq = self._seq = self._seq + len(refs)  # one seq for all: they are committed together
            self._queue.append(("refs", refs))
            self._rows_queued()
        overlay = self._overlay_refs
        for key, fps in refs:
            overlay[key] = (seq, fps)

    @_forgets(None)
    def get_refs(self, keys: list[str]) -> dict[str, dict[str, str]]:
        """The refs stored under any of `keys`, as get_ref answers each (one query per 500 keys:
        the executor asks for a group of nodes whose keys it knows at once)."""
        self._snapshot()  # see _read: one snapshot until the next flush
        found, ask, rows = {}, keys, []
        overlay, staged = self._overlay_refs, self._staged_map
        if overlay or staged:  # else (a cold run into a merged index) every key is asked of the table
            ask = []
            for key in keys:
                pending = overlay.get(key)
                if pending is None:
                    pending = staged.get(key)
                    if pending is None:
                        ask.append(key)
                    else:
                        found[key] = pending
                else:
                    found[key] = pending[1]
        if self._filter is not None:
            ask = self._filter.may_hold(ask)
        for i in range(0, len(ask), 500):
            part = ask[i:i + 500]
            marks = ",".join("?" * len(part))
            rows += self._cursor.execute(f"SELECT key, fps FROM refs WHERE key IN ({marks})", part).fetchall()
        for key, raw in rows:
            fps = _fps(raw)
            if fps is not None:
                found[key] = fps
        return found

    # --- blobs --------------------------------------------------------------------------------

    def _blob_path(self, fp: str) -> Path:
        return self.root / "blobs" / fp[:2] / fp

    @_forgets(False)
    def has_blob(self, fp: str) -> bool:
        """Whether fp is stored or queued (no read, no verification)."""
        return fp in self._overlay_blobs or self._read("SELECT 1 FROM blobs WHERE fp = ?", fp) is not None

    @_forgets(MISSING)
    def get_blob(self, fp: str) -> Any:
        """The value stored under fp, or MISSING. Verifies the bytes against fp before decoding."""
        pending = self._overlay_blobs.get(fp)
        data = pending[2] if pending is not None else None
        if data is not None:
            if isinstance(data, Encoded):  # still queued: its parts are the bytes the file will hold
                data = data.tobytes()
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
        return value

    def put_blob(self, fp: str, encoded: Encoded) -> None:
        """Queue a blob. Returns at once, unless more than max_pending_bytes are queued already."""
        if fp in self._overlay_blobs:
            return
        size = encoded.nbytes
        if size <= INLINE_LIMIT:
            data = encoded.tobytes()
            self._overlay_blobs[fp] = (self._submit(("inline", fp, size, data), 0, rows=size), size, data)
        else:
            self._submit(("file", fp, size, encoded), size, overlay=(fp, size, encoded))

    @_forgets(None)
    def _forget(self, fp: str) -> None:
        self.lost.add(fp)
        self._overlay_blobs.pop(fp, None)
        with self._lock:
            self._end_read()
            self._db.execute("DELETE FROM blobs WHERE fp = ?", (fp,))
        try:
            self._blob_path(fp).unlink()
        except OSError:
            pass

    # --- reads --------------------------------------------------------------------------------

    def _read(self, sql: str, arg: str) -> tuple | None:
        """One row, read inside a snapshot that lasts until the next flush or delete.

        An SQLite statement outside a transaction takes and drops WAL read locks each time (about
        10 us of a no-op node's budget); inside one it costs about 1.5 us. The snapshot may miss
        rows another process commits meanwhile, until this process's next flush (the end of a
        run): a miss only means a node recomputes what the other process also made. This
        process's own writes are in the overlay until a snapshot that holds them is possible.
        """
        self._snapshot()
        return self._cursor.execute(sql, (arg,)).fetchone()

    def _snapshot(self) -> None:
        """Start a read snapshot unless one is open, and bring the batches it holds into
        _staged_map: the ones committed since the last snapshot are read, those merged into `refs`
        meanwhile dropped (one query when nothing changed; the map is rebuilt, in memory, after a
        merge). Anything that stops it half way (Ctrl-C, an SQLite error) ends the snapshot and
        empties the map, so the next snapshot reads every batch again: never a map that misses a
        newer entry."""
        db = self._db
        if db.in_transaction:
            return
        db.execute("BEGIN")
        try:
            self._load_batches()
        except BaseException:
            self._staged_batches, self._staged_map = {}, {}
            self._filter, self._filter_at = None, None
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def _load_batches(self) -> None:
        batches = self._staged_batches
        first, last, *state = self._cursor.execute(_SNAPSHOT_STATE).fetchone()  # the snapshot starts here
        filter_at = tuple(state)
        if filter_at != self._filter_at:  # the filter changed (a fold, keys inserted into refs)
            self._filter = keyfilter.refresh(self._db, self._filter, self._filter_at, filter_at)
            self._filter_at = filter_at
        if first is None:
            if batches:
                self._staged_batches, self._staged_map = {}, {}
            return
        if batches and next(iter(batches)) < first:  # merged into refs (or cleared) since: they are read from there
            for seq in [seq for seq in batches if seq < first]:
                del batches[seq]
            self._staged_map = {}
            for refs in batches.values():
                self._staged_map.update(refs)  # the later batch wins
        seen = next(reversed(batches)) if batches else 0
        if last > seen:
            for seq, raw in self._cursor.execute("SELECT seq, refs FROM batches WHERE seq > ? ORDER BY seq", (seen,)).fetchall():
                batches[seq] = refs = unpack_batch(raw)
                self._staged_map.update(refs)

    def _end_read(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    # --- durability, eviction -----------------------------------------------------------------

    @_forgets(None)
    def flush(self) -> None:
        """Return once everything queued so far is durable (files in place, rows committed); then
        evict if over budget. Ends this process's read snapshot too, so the next lookup sees what
        other processes committed meanwhile. Raises what the writer hit (an SQLite error) since
        the last flush."""
        if self._pending_touch:
            touched, self._pending_touch = self._pending_touch, set()
            for fp in touched:
                self._submit(("touch", fp), 0)
        with self._cv:
            target = self._seq
        # The caller waits anyway: it commits what is left itself (after the writer's file in hand,
        # if any) rather than waking the writer and waiting for it to be scheduled.
        while True:
            with self._cv:
                if self._committed >= target or self._writer_error is not None:
                    error, self._writer_error = self._writer_error, None
                    break
            with self._drain:
                self._drain_queue(True)
        with self._lock:
            self._end_read()  # never hold a snapshot while idle: it keeps the WAL from checkpointing
        self._prune_overlay(target)
        if error is not None:
            raise error
        if self._bytes_estimate > self.max_bytes or self._refs_estimate > self.max_refs:
            self.evict()

    def _prune_overlay(self, done: int) -> None:
        """Drop overlay entries committed at or before `done`: the next snapshot holds them."""
        if self._overlay_refs:
            if done >= self._seq:  # everything queued is committed (a run's end): no entry to keep
                self._overlay_refs = {}
            else:
                self._overlay_refs = {k: v for k, v in self._overlay_refs.items() if v[0] > done}
        if self._overlay_blobs:
            self._overlay_blobs = {k: v for k, v in self._overlay_blobs.items() if v[0] > done}

    @_forgets(None)
    def evict(self) -> None:
        """Drop least-recently-used blobs until under the byte budget, and old refs past the count
        cap. Called when a bound crosses its budget: the bounds are made exact counts first (they
        only grow between counts: a replaced row counts again), and again after any eviction."""
        with self._lock:
            total, nrefs = self._recount()
        evicted = False
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
            evicted = True
        if nrefs > self.max_refs:
            with self._lock:
                merge_staged(self._db, None)  # every ref in one table, so the oldest go wherever they were
                # exact: the bound counted twice a key committed twice
                (nrefs,) = self._db.execute("SELECT COUNT(*) FROM refs").fetchone()
                if nrefs > self.max_refs:
                    with immediate(self._db) as db:
                        db.execute(
                            "DELETE FROM refs WHERE key IN (SELECT key FROM refs ORDER BY used ASC LIMIT ?)",
                            (nrefs - int(self.max_refs * 0.9),),
                        )
                        keyfilter.rebuild(db)  # the evicted keys' bits would only be "maybe"s
            evicted = True
        if evicted:
            with self._lock:
                total, nrefs = self._recount()
        self._bytes_estimate, self._refs_estimate = total, nrefs

    @_forgets(0)
    def total_bytes(self) -> int:
        (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()
        return int(total)

    def info(self) -> dict[str, Any]:
        info = self._info()
        if info is None:  # the index failed while counting: it starts empty now
            info = self._info() or {}
        return info

    @_forgets(None)
    def _info(self) -> dict[str, Any] | None:
        """Counts: entries (refs), blobs, bytes; and of the outputs the entries name, how many are
        stored and how many were not worth storing (a run that needs one re-runs its node)."""
        self.flush()
        stored = {fp for (fp,) in self._db.execute("SELECT fp FROM blobs")}
        batched: dict[str, dict[str, str]] = {}  # a few thousand at most: the batches not merged yet
        for (raw,) in self._db.execute("SELECT refs FROM batches ORDER BY seq"):
            batched.update(unpack_batch(raw))  # the later batch wins
        nrefs, outputs = len(batched), set()
        for fps in batched.values():
            outputs.update(fps.values())
        for key, raw in self._db.execute("SELECT key, fps FROM refs"):
            if key in batched:
                continue  # the batched entry is the newer, counted above
            nrefs += 1
            fps = _fps(raw)
            if fps is not None:  # else an unreadable row: a miss when looked up
                outputs.update(fps.values())
        kept = len(outputs & stored)
        return {
            "root": str(self.root), "entries": nrefs, "blobs": len(stored), "bytes": self.total_bytes(), "max_bytes": self.max_bytes,
            "outputs": len(outputs), "outputs_stored": kept, "outputs_recompute": len(outputs) - kept,
        }

    @_forgets(None)
    def clear(self) -> None:
        self.flush()
        with self._lock:
            self._end_read()
            self._overlay_refs, self._overlay_blobs, self._pending_touch = {}, {}, set()
            with immediate(self._db) as db:
                db.execute("DELETE FROM refs")
                keyfilter.rebuild(db)  # empty
                db.execute("DELETE FROM batches")
                db.execute("DELETE FROM blobs")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('bytes_bound', 0), ('refs_bound', 0)")
            self._bytes_estimate = self._refs_estimate = 0
        for sub in (self.root / "blobs").iterdir():
            for f in sub.iterdir():
                f.unlink(missing_ok=True)
        sweep_temporaries(self.tmp, grace_s=0)  # a live writer's is locked and stays
        for damaged in self.root.glob("index.sqlite.damaged-*"):
            damaged.unlink(missing_ok=True)

    @_forgets(0)
    def sweep_orphans(self, older_than_s: float = 3600) -> int:
        """Delete blob files no index row names (left by a process killed between write and
        commit, or an index set aside) and dead writers' temporaries."""
        self.flush()
        known = {fp for (fp,) in self._db.execute("SELECT fp FROM blobs WHERE inline IS NULL")}
        cutoff = time.time() - older_than_s
        removed = sweep_temporaries(self.tmp)
        for sub in (self.root / "blobs").iterdir():
            removed += sweep_temporaries(sub)  # temp files from before blobs were written via tmp/
            for f in sub.iterdir():
                if f.name not in known and not f.name.startswith(".") and f.stat().st_mtime < cutoff:
                    f.unlink(missing_ok=True)
                    removed += 1
        return removed

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._cv:
                self._closing = True
                self._cv.notify_all()
                writer = self._writer
            if writer is not None:
                writer.join()
            for db in (self._writer_db, self._db):
                try:
                    if db is not None:
                        db.close()
                except sqlite3.Error:
                    pass  # nothing is queued after the flush: a failed close loses nothing
