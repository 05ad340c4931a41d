"""The disk tier's write-behind (DiskStore's half that writes): a queue, a writer thread, and the
commit that makes queued rows durable.

Blob files are written by the writer thread as they are queued, beside the run, and renamed into
place; rows (refs, inline blobs, the rows of written files) are committed together, in one
transaction, every COMMIT_S or when a flush wants them, by whoever gets there: the writer, or
the flushing caller itself, which waits anyway and so need not wake the writer and wait for it to
be scheduled. Files are renamed before the transaction that lists them, so a committed row never
names an unwritten file; a crash loses what was not committed yet, never leaves a torn entry.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import msgpack

from editgraph.atomic import TMP_SUFFIX, write_new
from editgraph.executor import keyfilter
from editgraph.values.codec import Encoded

# Rows (refs, inline blobs) wait up to this long for a commit, so a short run commits once, at its
# flush, and a long one every COMMIT_S. A writer committing beside the run competes with it for
# the GIL a few hundred times a batch (each SQLite step drops and retakes it): with a commit per
# blob file, a cold 500-node run paid 20-30 % for its index (issue 16).
COMMIT_S = 0.5
ROW_BYTES_COMMIT = 16 << 20  # inline bytes waiting for a commit past which the writer commits at once
MAX_PENDING_BYTES = 512 << 20  # blob bytes queued for the writer before producers wait
WRITER_IDLE_S = 2.0  # a writer thread with nothing to do for this long ends
MEASURED_FILE = 1 << 20  # files from this size time the disk's sustained write rate; below, fixed costs dominate
RATE_WEIGHT = 0.3  # each measured file's share of the running write rate: follows the disk within a few files
ROWS_A_STATEMENT = 128  # refs inserted by one statement (see _insert)
INLINE_ROWS = 16  # inline blobs (up to 16 KiB each) inserted by one statement
# Rows committed between checkpoints (SQLite copying the WAL's pages back into the index; its own
# default: every 1,000 pages, in the committing call). Keys are hashes, so each row of a big
# index dirties a page of its own; the writer thread checkpoints after this many, beside the
# runs, so a flush (a run's end) never waits for one: a checkpoint syncs the disk twice.
CHECKPOINT_ROWS = 1000
# Refs are committed as batches (store.py's `batches` table: one row holds up to MERGE_ROWS refs,
# packed), and moved into the big `refs` table by the writer thread once this many wait there,
# MERGE_ROWS or more a transaction (a flush waits for at most one such move). A batch row keeps a
# run's end cheap: 500 refs were 500 B-tree inserts (1.0-1.7 ms of a cold run of cheap nodes,
# into even an empty table), now one row. The move writes the big table's pages in bulk, beside
# the runs, each page once for all the rows that land on it.
STAGE_ROWS = 2000
MERGE_ROWS = 500


class WriteBehind:
    """Mixed into DiskStore, which provides root, tmp, _overlay_blobs, write_bps, the index
    estimates and _writer_connection()."""

    root: Any
    tmp: Any
    write_bps: float | None
    _overlay_blobs: dict[str, tuple[int, int, Any]]
    _bytes_estimate: int
    _refs_estimate: int

    def _init_writer(self, max_pending_bytes: int) -> None:
        self.max_pending_bytes = max_pending_bytes
        # The queue; _cv guards it and the counters below.
        self._cv = threading.Condition(threading.Lock())
        self._queue: list[tuple] = []
        self._queued_files = 0  # file items in _queue: the writer starts on them at once
        self._seq = 0  # last item queued
        self._taken = 0  # last item taken from the queue (its file written, its rows carried)
        self._committed = 0  # last item made durable
        self._queued_bytes = 0
        self._rows_due: float | None = None  # monotonic time by which queued or carried rows are committed
        self._row_bytes = 0  # inline bytes queued or carried, not committed yet
        self._carry: list[tuple] = []  # rows taken, not committed yet (and the rows of files written)
        self._drain = threading.Lock()  # one drainer at a time: the writer, or a flush in its caller's thread
        self._urgent = False  # someone waits: commit now
        self._packer = msgpack.Packer(use_bin_type=True)  # the drainer's (one at a time)
        self._writer: threading.Thread | None = None
        self._writer_db: sqlite3.Connection | None = None  # opened with the store: a run's first write does not pay for it
        self._writer_error: BaseException | None = None
        self._closing = False
        self._uncheckpointed = 0  # rows committed since the writer last checkpointed
        self._checkpoint_due = False
        self._staged = 0  # refs in batches, not merged yet (DiskStore counts them when it opens)
        self._merge_due = False
        self._subdirs: set[str] = set()  # blobs/<xx> folders made: one makedirs per folder, not per file
        self._blobs_dir, self._tmp_prefix = f"{self.root / 'blobs'}/", f"{self.tmp}/."
        self.write_failures = 0  # blob files the writer could not write (disk full ...): they stay memory-only

    def _measured(self, nbytes: int, seconds: float) -> None:
        """The writer wrote a large file in `seconds`: fold its rate into the running rate."""
        rate = nbytes / max(seconds, 1e-6)
        old = self.write_bps
        self.write_bps = rate if old is None else (1 - RATE_WEIGHT) * old + RATE_WEIGHT * rate

    def pending(self) -> int:
        """Queued writes (files and rows) not yet durable."""
        with self._cv:
            return self._seq - self._committed

    def queued_bytes(self) -> int:
        """Bytes of blob files queued or being written (a read of one int: no lock needed)."""
        return self._queued_bytes

    def _submit(self, item: tuple, nbytes: int, overlay: tuple | None = None, rows: int = 0) -> int:
        """Queue an item: a file (`nbytes` > 0), which the writer starts on at once, or a row,
        committed within COMMIT_S or by the next flush, whichever comes first (a short run's rows
        are committed once, by its flush). `rows`: inline bytes the row holds."""
        with self._cv:
            # Back-pressure: wait while the queued bytes would pass the bound (one item always fits).
            while nbytes and self._queued_bytes and self._queued_bytes + nbytes > self.max_pending_bytes and self._writer_error is None:
                self._urgent = True
                self._cv.notify_all()
                self._cv.wait()
            self._seq += 1
            if overlay is not None:  # before the writer can see the item: it swaps the Encoded out once written
                fp, size, encoded = overlay
                self._overlay_blobs[fp] = (self._seq, size, encoded)
            self._queue.append(item)
            if nbytes:
                self._queued_bytes += nbytes
                self._queued_files += 1
                self._start_writer()
                self._cv.notify_all()  # a file: start writing now, beside the next node
            else:
                self._rows_queued()
                if rows:
                    self._row_bytes += rows
                    if self._row_bytes > ROW_BYTES_COMMIT:
                        self._start_writer()
                        self._cv.notify_all()  # many inline bytes wait: commit them now
            return self._seq

    def _rows_queued(self) -> None:
        """Rows were queued (the caller holds self._cv): the writer commits them within COMMIT_S,
        unless a flush does first."""
        if self._rows_due is None:
            self._rows_due = time.monotonic() + COMMIT_S
            self._start_writer()  # it commits them by then (a no-op while it runs)
            self._cv.notify_all()  # an idle writer waits for the due time from now on

    def _start_writer(self) -> None:
        """Start the writer thread unless it runs (the caller holds self._cv)."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="editgraph-cache-writer", daemon=True)
            self._writer.start()

    def _write_loop(self) -> None:
        """The writer: blob files as they come, rows once they are due (or wanted, or too many)."""
        while True:
            with self._cv:
                while True:
                    if (self._queued_files or self._urgent or self._closing or self._row_bytes > ROW_BYTES_COMMIT
                            or self._checkpoint_due or self._merge_due):
                        break
                    due = self._rows_due
                    if due is None:  # nothing waits: the thread ends after WRITER_IDLE_S (the next write starts another),
                        if (not self._cv.wait(timeout=WRITER_IDLE_S) and self._rows_due is None and not self._queued_files
                                and not self._checkpoint_due and not self._merge_due):
                            self._writer = None  # so it does not keep a store nobody closed alive
                            return
                        continue
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(timeout=left)
                if self._closing and not self._queue and not self._carry:
                    self._writer = None
                    return
                due = self._rows_due
                commit = self._urgent or self._closing or self._row_bytes > ROW_BYTES_COMMIT or (due is not None and due <= time.monotonic())
            with self._drain:
                self._drain_queue(commit)
            if self._merge_due and not self._closing:  # closing: the next process merges what is staged
                self._merge()
            if self._checkpoint_due and not self._closing:  # closing: the last connection's close checkpoints
                self._checkpoint()

    def _merge(self) -> None:
        """Move batched refs into the big table, MERGE_ROWS or more a transaction, until none are left or
        someone waits for a commit (a flush): the rest move after it."""
        while True:
            with self._cv:
                if not self._merge_due or self._urgent or self._closing or self._queued_files:
                    return
            with self._drain:
                try:
                    db = self._writer_db
                    if db is None:
                        db = self._writer_db = self._writer_connection()
                    moved = merge_staged(db, MERGE_ROWS)
                except Exception:  # an SQLite error (or a bug): left staged, served from there, not the writer's end
                    moved = None
            with self._cv:
                if moved is None or moved < MERGE_ROWS:
                    self._merge_due, self._staged = False, 0
                    return
                self._staged = max(self._staged - moved, 0)
                self._committed_rows(moved)

    def _staged_found(self, n: int, filtered: bool = True) -> None:
        """`n` refs wait in batches as the store opens. Past STAGE_ROWS the writer (started with
        the store) merges them beside this process's first run: a process that commits only as
        it closes (a CLI run) never merges its own, and every process reads the unmerged batches
        into memory, so without this they would pile up, run after run. `filtered`: the index has
        a whole key filter; one made before them, or whose filter row is damaged, gets one from the
        same merge (keyfilter.fold)."""
        self._staged = n
        self._merge_due = n >= STAGE_ROWS or not filtered

    def _committed_rows(self, n: int) -> None:
        """`n` rows were committed into the WAL (the caller holds self._cv): past CHECKPOINT_ROWS,
        the writer checkpoints."""
        self._uncheckpointed += n
        if self._uncheckpointed >= CHECKPOINT_ROWS:
            self._checkpoint_due = True
            self._start_writer()

    def _checkpoint(self) -> None:
        """Copy committed pages from the WAL back into the index (the writer thread, beside the
        runs). On a connection of its own, opened for it: commits go on meanwhile, and a flush
        never waits for it. PASSIVE: it stops short of pages a reader's snapshot still needs."""
        with self._cv:
            self._checkpoint_due, self._uncheckpointed = False, 0
        try:
            # mode=rw: an index removed meanwhile (`cache clear`) is not made anew, empty, by this
            db = sqlite3.connect(f"{(self.root / 'index.sqlite').absolute().as_uri()}?mode=rw", uri=True, timeout=60, isolation_level=None)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            pass  # the next rows ask again; SQLite checkpoints when the last connection closes anyway

    def _drain_queue(self, commit: bool) -> None:
        """Take what is queued: write its blob files, carry its rows; if `commit`, commit every row
        carried in one transaction. The caller holds self._drain. Files are renamed into place
        before the transaction that lists them, so a committed row never names an unwritten file."""
        with self._cv:
            batch, self._queue, self._queued_files = self._queue, [], 0
            taken = self._taken = self._seq
            if commit:
                self._urgent = False
        file_bytes = sum(item[2] for item in batch if item[0] == "file")  # all of them leave the count, however this ends
        rows, error, done = self._carry, None, 0
        try:
            for item in batch:
                if item[0] == "file":
                    if self._write_file(item[1], item[2], item[3]):
                        rows.append(("file", item[1], item[2]))
                else:
                    rows.append(item)
                done += 1
            if commit and rows:
                db = self._writer_db  # None after an index failure: reopened here, on the new index
                if db is None:
                    db = self._writer_db = self._writer_connection()
                self._commit_rows(db, rows)
        except Exception as exc:  # raised again by the next flush, in the caller's thread
            error = exc
        except BaseException:
            # Ctrl-C in a flush that drains in the caller's thread: nothing is lost. What was not
            # taken goes back to the queue's head, what was is carried, and close() commits it.
            with self._cv:
                rest = batch[done:]
                self._queue[:0] = rest
                self._queued_files += sum(1 for item in rest if item[0] == "file")
                self._queued_bytes -= file_bytes - sum(item[2] for item in rest if item[0] == "file")
                self._carry = rows
                if rows and self._rows_due is None:
                    self._rows_due = time.monotonic() + COMMIT_S
                self._cv.notify_all()
            raise
        with self._cv:
            self._queued_bytes -= file_bytes
            if commit and error is None and rows:
                self._committed_rows(len(rows))  # the writer checkpoints after this (notified below)
            if commit or error is not None:  # an error drops what was carried, as a crash would
                self._carry, self._committed = [], taken
                self._row_bytes -= sum(item[2] for item in rows if item[0] == "inline")
                self._rows_due = time.monotonic() + COMMIT_S if self._queue else None  # rows queued meanwhile
            else:
                self._carry = rows
                if rows and self._rows_due is None:  # a written file's row: committed within COMMIT_S too
                    self._rows_due = time.monotonic() + COMMIT_S
            if error is not None:
                self._writer_error = error
            self._cv.notify_all()

    def _write_file(self, fp: str, size: int, encoded: Encoded) -> bool:
        """One blob file, renamed into place; False when it could not be written (disk full ...)."""
        path = f"{self._blobs_dir}{fp[:2]}/{fp}"  # strings: Path objects cost more than the syscalls here
        try:
            if fp[:2] not in self._subdirs:
                os.makedirs(f"{self._blobs_dir}{fp[:2]}", exist_ok=True)
                self._subdirs.add(fp[:2])
            try:  # there already (another process, an earlier run): made fresh, so a `cache gc`
                os.utime(path)  # elsewhere does not take it for an orphan before our row commits
            except FileNotFoundError:
                t0 = time.perf_counter()
                write_new(path, encoded.parts, f"{self._tmp_prefix}{fp}.{os.getpid()}-{threading.get_ident()}{TMP_SUFFIX}")
                if size >= MEASURED_FILE:
                    self._measured(size, time.perf_counter() - t0)
        except OSError:
            self.write_failures += 1
            self._overlay_blobs.pop(fp, None)
            return False
        entry = self._overlay_blobs.get(fp)
        if entry is not None and entry[2] is encoded:
            self._overlay_blobs[fp] = (entry[0], size, None)  # read from its file now; the memory is free
        return True

    def _commit_rows(self, db: sqlite3.Connection, rows: list[tuple]) -> None:
        """Every carried row in one transaction."""
        now = time.time()
        packb = self._packer.pack  # a Packer kept: packb() makes one per call (4x the time of 500 small dicts)
        blobs, refs, touched = [], [], []
        for item in rows:
            kind = item[0]
            if kind == "refs":
                refs += item[1]  # (key, fps) pairs: packed with their batch, in one call
            elif kind == "inline":
                blobs += (item[1], item[2], now, item[3])
            elif kind == "file":
                blobs += (item[1], item[2], now, None)
            else:
                touched.append((now, item[1]))
        nrefs = len(refs)
        # a batch is [key, fps, key, fps ...], at most MERGE_ROWS refs: a merge moves about that many a transaction
        batches = [(len(part), packb(list(chain.from_iterable(part))), now) for part in (refs[i:i + MERGE_ROWS] for i in range(0, nrefs, MERGE_ROWS))]
        rate = self.write_bps
        with immediate(db):
            _insert(db, "blobs", 4, blobs, INLINE_ROWS)
            if batches:
                db.executemany("INSERT INTO batches (n, refs, used) VALUES (?, ?, ?)", batches)
            # The index's bounds on its size (store.py: opening reads them instead of counting):
            # each commit adds what it inserted, in its own transaction, so no process's rows are
            # missed; a replaced row is added again, which only brings the next exact count sooner.
            db.execute(_ADD_TO_BOUNDS, (sum(blobs[1::4]), nrefs))
            if touched:
                db.executemany("UPDATE blobs SET used = ? WHERE fp = ?", touched)
            if rate is not None and rate != self._rate_saved:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('write_bps', ?)", (rate,))
        self._rate_saved = rate
        with self._cv:
            self._bytes_estimate += sum(blobs[1::4])
            self._refs_estimate += nrefs
            self._staged += nrefs
            if self._staged >= STAGE_ROWS and not self._merge_due:
                self._merge_due = True  # the writer's, after this commit (notified by the drain)
                self._start_writer()

    def _writer_connection(self) -> sqlite3.Connection:
        raise NotImplementedError


_ADD_TO_BOUNDS = ("UPDATE meta SET value = value + CASE name WHEN 'bytes_bound' THEN ?1 ELSE ?2 END "
                  "WHERE name IN ('bytes_bound', 'refs_bound')")


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction taken at once (BEGIN IMMEDIATE: no other writer can slip in between
    what it reads and what it writes), committed at the end, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def merge_staged(db: sqlite3.Connection, rows: int | None) -> int:
    """Move the oldest batches, holding at least `rows` refs in all (None: every batch), into the
    refs table in one transaction, and return how many refs they held. A batch's ref replaces the row
    in refs (it is the newer), and of two batches the later wins. A batch that cannot be unpacked
    (a damaged row) is dropped: its refs are misses, recomputed."""
    with immediate(db):
        if rows is None:
            (last,) = db.execute("SELECT MAX(seq) FROM batches").fetchone()
        else:
            last, total = None, 0
            for seq, n in db.execute("SELECT seq, n FROM batches ORDER BY seq"):
                total, last = total + n, seq
                if total >= rows:
                    break
        moved = 0 if last is None else _move_batches(db, last)
        # the keys just inserted (the trigger put them in refs_new); with nothing moved, an index
        # from before filters, or with a damaged one, gets its filter here all the same
        keyfilter.fold(db)
    return moved


def _move_batches(db: sqlite3.Connection, last: int) -> int:
    """merge_staged's move of the batches up to seq `last` (in its transaction); the refs they held."""
    found = db.execute("SELECT n, refs, used FROM batches WHERE seq <= ? ORDER BY seq", (last,)).fetchall()
    merged: dict[str, tuple] = {}
    packb = msgpack.Packer(use_bin_type=True).pack  # the refs table holds each ref's fps packed
    for _, raw, used in found:
        for key, fps in unpack_batch(raw):
            merged[key] = (key, packb(fps), used)
    values = []
    for key in sorted(merged):  # in key order, so the inserts walk the big table's pages in order
        values += merged[key]
    _insert(db, "refs", 3, values, ROWS_A_STATEMENT)
    db.execute("DELETE FROM batches WHERE seq <= ?", (last,))
    return sum(n for n, _, _ in found)


def unpack_batch(raw: bytes) -> list[tuple[str, dict[str, str]]]:
    """A batch row's refs, (key, fps) each; none from a row that is not a batch (damaged): its
    refs are misses, recomputed."""
    try:
        flat = msgpack.unpackb(raw, raw=False)
    except Exception:
        return []
    if not isinstance(flat, list):
        return []
    return [(key, fps) for key, fps in zip(flat[::2], flat[1::2]) if isinstance(key, str) and isinstance(fps, dict)]


def _insert(db: sqlite3.Connection, table: str, ncols: int, values: list, per: int) -> None:
    """INSERT OR REPLACE rows given flat (ncols values a row), `per` rows a statement. SQLite
    drops the GIL for each statement it steps: executemany() steps once a row, so a commit beside
    a running graph handed the GIL back and forth with it per row (a 0.9 s cold run of 10,000
    cheap nodes lost 100-170 ms to its one commit of 5,000 rows, issue 16); a multi-row statement
    inserts `per` rows with the GIL dropped once."""
    one = f"({','.join('?' * ncols)})"
    step = per * ncols
    full = len(values) - len(values) % step
    if full:
        sql = f"INSERT OR REPLACE INTO {table} VALUES {','.join([one] * per)}"  # the same text: prepared once
        for i in range(0, full, step):
            db.execute(sql, values[i:i + step])
    if full < len(values):
        db.execute(f"INSERT OR REPLACE INTO {table} VALUES {','.join([one] * ((len(values) - full) // ncols))}", values[full:])
