"""A Bloom filter of the keys in the disk tier's `refs` table, so that a lookup of a key the index
does not hold (every key of a cold run) is answered in memory instead of by a B-tree search.

Measured on a cold run of 500 cheap nodes (issue 16): the index was asked ten times, a layer of
50 keys each, 60-100 us a query against an empty table, 350 us against 200,000 entries in a
process that had not read them before (a page read per key); the filter answers a layer in ~25 us.

It lives in the index itself (table `filter`, one row) so that a read snapshot sees the filter
that matches its `refs`. A filter may say "maybe" of a key that is not there (about 1.7 % of
absent keys at 10 bits a key, 3 probes: they are asked of the table); it must never say "no" of a
key that is there. So every insert into `refs`, by any process and any editgraph version, also
lands in `refs_new` (a trigger in the schema), and a reader takes the keys there as held (a
reader whose bits are current reads only the rows added since). The writer's merges (writer.py)
fold `refs_new` into the bits once a few thousand keys wait there, and rebuild the bits from the
table when they fill up or after eviction (which leaves stale bits: only more "maybe"s). An
index without a filter row (made before it), or with a damaged one, is asked every key until its
writer's next merge builds one.

Keys are hashes (64 hex digits): their bytes are the filter's hash functions. Any other key is
hashed first.
"""

from __future__ import annotations

import sqlite3

import blake3
import numpy as np

PROBES = 3  # bits a key sets, each from 8 bytes of its hash (KeyFilter.may_hold unrolls the 3)
BITS_PER_KEY = 10  # a filter is rebuilt bigger once it holds 1/10 of its bits in keys
MIN_LOG2 = 17  # 16 KiB of bits: 13,107 keys
MAX_LOG2 = 28  # 32 MiB: past 26 million keys the "maybe"s grow instead (the index caps at 2 million)
FOLD_MIN = 2048  # keys that wait in refs_new (read as held) before a merge folds them in; see fold_at

SCHEMA = """
CREATE TABLE IF NOT EXISTS filter (id INTEGER PRIMARY KEY CHECK (id = 0), log2_bits INTEGER NOT NULL,
                                   n INTEGER NOT NULL, version INTEGER NOT NULL, bits BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS refs_new (key TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS refs_new_key AFTER INSERT ON refs BEGIN INSERT INTO refs_new (key) VALUES (NEW.key); END;
"""


def _key_bytes(key: str) -> bytes:
    """The 32 bytes a key's probes come from: its own (64 hex digits: a hash already), else its hash."""
    if len(key) == 64:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) == 32:
            return raw
    return blake3.blake3(key.encode()).digest()


class KeyFilter:
    """The bits (2^log2 of them), and the keys inserted since they were last folded in (`extra`:
    held, whatever the bits say). Probe i of a key is bytes [8i, 8i + 8) of _key_bytes, big-endian,
    masked to the bits."""

    __slots__ = ("bits", "extra", "mask")

    def __init__(self, log2: int, bits: bytes, extra: set[str]):
        self.mask, self.bits, self.extra = (1 << log2) - 1, bits, extra

    def may_hold(self, keys: list[str]) -> list[str]:
        """The keys the table may hold (the others it does not), in order. Plain Python, a clear
        bit ending a key (most absent keys end at the first probe): numpy's per-call costs made
        50 keys take 41 us, this ~25."""
        bits, mask, extra = self.bits, self.mask, self.extra
        raw = _all_key_bytes(keys)
        out = []
        for o, key in zip(range(0, len(raw), 32), keys):
            if key not in extra:
                at = int.from_bytes(raw[o:o + 8], "big") & mask
                if not bits[at >> 3] >> (at & 7) & 1:
                    continue
                at = int.from_bytes(raw[o + 8:o + 16], "big") & mask
                if not bits[at >> 3] >> (at & 7) & 1:
                    continue
                at = int.from_bytes(raw[o + 16:o + 24], "big") & mask  # PROBES (3), unrolled
                if not bits[at >> 3] >> (at & 7) & 1:
                    continue
            out.append(key)
        return out


def _all_key_bytes(keys: list[str]) -> bytes:
    """_key_bytes of each key, joined (32 bytes a key): one fromhex for all when every key is 64
    hex digits, which gives what it gives each (a key with anything else in it makes it fail or
    come up short, and then each key is read alone)."""
    if all(len(key) == 64 for key in keys):
        try:
            raw = bytes.fromhex("".join(keys))
        except ValueError:
            raw = b""
        if len(raw) == 32 * len(keys):
            return raw
    return b"".join(_key_bytes(key) for key in keys)


def _set_bits(bits: np.ndarray, keys: list[str], mask: int) -> None:
    """Set the keys' bits in a writable uint8 array (numpy: a rebuild sets millions)."""
    at = (np.frombuffer(_all_key_bytes(keys), dtype=">u8").reshape(-1, 4)[:, :PROBES] & np.uint64(mask)).ravel()
    np.bitwise_or.at(bits, (at >> np.uint64(3)).astype(np.intp), np.uint8(1) << (at & np.uint64(7)).astype(np.uint8))


def size_for(n: int) -> int:
    """log2 of the bits a filter of `n` keys gets: room for twice as many at BITS_PER_KEY."""
    return min(max(MIN_LOG2, (2 * n * BITS_PER_KEY - 1).bit_length()), MAX_LOG2)


def fold_at(log2: int) -> int:
    """Keys waiting in refs_new before a merge folds them into the bits: a fold rewrites the whole
    row (8 MiB for 2 million keys) and every process reads it again, while a reader adds the keys
    waiting to its `extra` a merge's worth at a time."""
    return max(FOLD_MIN, (1 << log2) // BITS_PER_KEY // 64)


def ensure(db: sqlite3.Connection) -> None:
    """Give a new index its (empty) filter. An index that holds refs from before filters gets
    none here: its writer builds one (fold), and until then every key is asked of the table."""
    if db.execute("SELECT 1 FROM filter").fetchone() is None:
        db.execute("INSERT OR IGNORE INTO filter SELECT 0, ?, 0, 1, zeroblob(?) WHERE NOT EXISTS (SELECT 1 FROM refs)",
                   (MIN_LOG2, 1 << (MIN_LOG2 - 3)))


def whole(db: sqlite3.Connection) -> bool:
    """Whether the index has a filter row and it is whole (else its writer's next merge makes one)."""
    return db.execute(_VALID_ROW_META, (MIN_LOG2, MAX_LOG2)).fetchone() is not None


def refresh(db: sqlite3.Connection, current: KeyFilter | None, seen: tuple | None, state: tuple) -> KeyFilter | None:
    """The filter a new snapshot should use: `state` is (version, last refs_new rowid) as the
    snapshot sees them, `seen` what `current` was loaded at. The same version with more rows in
    refs_new: only those rows are read (the bits are the same; rows leave refs_new only with a
    new version). Else the filter row is read again: None where there is none or it is damaged."""
    version, last = state
    if version is None:
        return None
    if current is not None and seen is not None and seen[0] == version:
        if last is not None:
            current.extra.update(key for (key,) in db.execute("SELECT key FROM refs_new WHERE rowid > ?", (seen[1] or 0,)))
        return current
    row = db.execute(_VALID_ROW, (MIN_LOG2, MAX_LOG2)).fetchone()
    if row is None:
        return None  # damaged: every key asked until the writer's next fold rebuilds it
    extra = {key for (key,) in db.execute("SELECT key FROM refs_new")} if last is not None else set()
    return KeyFilter(row[0], row[2], extra)


def fold(db: sqlite3.Connection) -> None:
    """Inside the caller's write transaction (a merge's): fold the keys waiting in refs_new into
    the bits once there are fold_at() of them; rebuild the filter where there is none (an index
    from before filters), it is damaged, or the keys would fill it."""
    row = db.execute(_VALID_ROW_META, (MIN_LOG2, MAX_LOG2)).fetchone()
    (waiting,) = db.execute("SELECT COUNT(*) FROM refs_new").fetchone()
    if row is None or (row[1] + waiting > (1 << row[0]) // BITS_PER_KEY and row[0] < MAX_LOG2):
        rebuild(db)  # (at MAX_LOG2 keys go on being folded in: more "maybe"s, not a scan a merge)
        return
    if waiting < fold_at(row[0]):
        return
    (raw,) = db.execute("SELECT bits FROM filter").fetchone()
    bits = np.frombuffer(bytearray(raw), dtype=np.uint8)
    _set_bits(bits, [key for (key,) in db.execute("SELECT key FROM refs_new")], (1 << row[0]) - 1)
    db.execute("UPDATE filter SET n = n + ?, version = version + 1, bits = ?", (waiting, bits.tobytes()))
    db.execute("DELETE FROM refs_new")


def rebuild(db: sqlite3.Connection) -> None:
    """The filter made anew from every key in `refs` (inside the caller's write transaction),
    read 100,000 keys at a time."""
    (n,) = db.execute("SELECT COUNT(*) FROM refs").fetchone()
    log2 = size_for(n)
    bits = np.zeros(1 << (log2 - 3), dtype=np.uint8)
    rows = db.execute("SELECT key FROM refs")
    while part := rows.fetchmany(100_000):
        _set_bits(bits, [key for (key,) in part], (1 << log2) - 1)
    db.execute("INSERT OR REPLACE INTO filter VALUES (0, ?, ?, COALESCE((SELECT version FROM filter), 0) + 1, ?)",
               (log2, n, bits.tobytes()))
    db.execute("DELETE FROM refs_new")


# The filter row, only if it is whole (a damaged row is no filter: every key is asked, and the
# next fold rebuilds it); bound to MIN_LOG2, MAX_LOG2.
_WHOLE = ("typeof(log2_bits) = 'integer' AND log2_bits BETWEEN ?1 AND ?2 AND typeof(n) = 'integer' "
          "AND typeof(bits) = 'blob' AND length(bits) = 1 << (log2_bits - 3)")
_VALID_ROW = f"SELECT log2_bits, n, bits FROM filter WHERE {_WHOLE}"
_VALID_ROW_META = f"SELECT log2_bits, n FROM filter WHERE {_WHOLE}"
