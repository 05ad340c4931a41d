"""A Bloom filter of the keys in the disk tier's `refs` table, so that a lookup of a key the index
does not hold (every key of a cold run) is answered in memory instead of by a B-tree search.

Measured on a cold run of 500 cheap nodes (issue 16): the index was asked ten times, a layer of
50 keys each, 60-100 us a query against an empty table, 350 us against 200,000 entries in a
process that had not read them before (a page read per key); the filter answers a layer in ~20 us.

It lives in the index itself (table `filter`, one row) so that a read snapshot sees the filter
that matches its `refs`. A filter may say "maybe" of a key that is not there (about 1.7 % of
absent keys at 10 bits a key, 3 probes: they are asked of the table); it must never say "no" of a
key that is there. So every insert into `refs`, by any process and any editgraph version, also
lands in `refs_new` (a trigger in the schema), and a reader takes the keys there as held. The
writer folds `refs_new` into the bits when it merges batches into `refs` (writer.py), and
rebuilds the bits from the table when they fill up or after eviction (which leaves stale bits:
only more "maybe"s). An index without a filter row (made before it) is asked every key until its
writer builds one.

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
    """The bits (2^log2 of them), and the keys inserted since they were last folded in: held,
    whatever the bits say. Probe i of a key is its hash's bytes [8i, 8i + 8), big-endian, masked."""

    __slots__ = ("bits", "extra", "log2", "mask")

    def __init__(self, log2: int, bits: bytes | None = None, extra: frozenset[str] = frozenset()):
        self.log2 = log2
        self.mask = (1 << log2) - 1
        self.bits = bytes(1 << (log2 - 3)) if bits is None else bytes(bits)
        if len(self.bits) != 1 << (log2 - 3):
            raise ValueError(f"a filter of 2^{log2} bits holds {len(self.bits)} bytes")
        self.extra = extra

    def may_hold(self, keys: list[str]) -> list[str]:
        """The keys the table may hold (the others it does not), in order. Plain Python: a hash
        key's probes are read straight from its hex digits, and a clear bit ends a key (most
        absent keys end at the first); numpy's per-call costs made 50 keys take 41 us, this 20."""
        bits, mask, extra = self.bits, self.mask, self.extra
        out = []
        for key in keys:
            if key not in extra and len(key) == 64:
                try:  # PROBES (3) probes, unrolled: int() of 16 hex digits is the word _key_bytes gives
                    at = int(key[:16], 16) & mask
                    if not bits[at >> 3] >> (at & 7) & 1:
                        continue
                    at = int(key[16:32], 16) & mask
                    if not bits[at >> 3] >> (at & 7) & 1:
                        continue
                    at = int(key[32:48], 16) & mask
                    if not bits[at >> 3] >> (at & 7) & 1:
                        continue
                    out.append(key)
                    continue
                except ValueError:
                    pass  # not hex digits: hashed, below
            if key in extra or self._held(key):
                out.append(key)
        return out

    def _held(self, key: str) -> bool:
        raw, bits, mask = _key_bytes(key), self.bits, self.mask
        for i in range(PROBES):
            at = int.from_bytes(raw[8 * i:8 * i + 8], "big") & mask
            if not bits[at >> 3] >> (at & 7) & 1:
                return False
        return True

    def add(self, keys: list[str]) -> bytes:
        """The bits with the keys' set (numpy: a rebuild adds millions)."""
        bits = np.frombuffer(bytearray(self.bits), dtype=np.uint8)
        mask = np.uint64(self.mask)
        for i in range(0, len(keys), 100_000):
            part = keys[i:i + 100_000]
            try:
                raw = bytes.fromhex("".join(part)) if all(len(key) == 64 for key in part) else b""
            except ValueError:
                raw = b""
            if len(raw) != 32 * len(part):
                raw = b"".join(_key_bytes(key) for key in part)
            at = (np.frombuffer(raw, dtype=">u8").reshape(-1, 4)[:, :PROBES] & mask).ravel()
            np.bitwise_or.at(bits, (at >> np.uint64(3)).astype(np.intp), np.uint8(1) << (at & np.uint64(7)).astype(np.uint8))
        self.bits = bits.tobytes()
        return self.bits


def size_for(n: int) -> int:
    """log2 of the bits a filter of `n` keys gets: room for twice as many at BITS_PER_KEY."""
    return min(max(MIN_LOG2, (2 * n * BITS_PER_KEY - 1).bit_length()), MAX_LOG2)


def ensure(db: sqlite3.Connection) -> None:
    """Give a new index its (empty) filter. An index that holds refs from before filters gets
    none here: its writer builds one (fold), and until then every key is asked of the table."""
    if db.execute("SELECT 1 FROM filter").fetchone() is None:
        db.execute("INSERT OR IGNORE INTO filter SELECT 0, ?, 0, 1, zeroblob(?) WHERE NOT EXISTS (SELECT 1 FROM refs)",
                   (MIN_LOG2, 1 << (MIN_LOG2 - 3)))


def load(db: sqlite3.Connection, inserted: bool) -> KeyFilter | None:
    """The index's filter as this snapshot sees it, or None: there is none (every key is asked).
    `inserted`: refs_new holds keys (inserted by something that did not fold them in)."""
    row = db.execute("SELECT log2_bits, bits FROM filter").fetchone()
    if row is None:
        return None
    extra = frozenset(key for (key,) in db.execute("SELECT key FROM refs_new")) if inserted else frozenset()
    try:
        return KeyFilter(row[0], row[1], extra)
    except (ValueError, TypeError):
        return None  # a damaged row: no filter, every key asked (the next rebuild replaces it)


def fold(db: sqlite3.Connection) -> None:
    """Set the bits of the keys inserted since the last fold, or rebuild the filter when there is
    none or these would fill it. Inside the caller's write transaction (the merge's)."""
    row = db.execute("SELECT log2_bits, n FROM filter").fetchone()
    new = [key for (key,) in db.execute("SELECT key FROM refs_new")]
    if row is None or (row[1] + len(new) > (1 << row[0]) // BITS_PER_KEY and row[0] < MAX_LOG2):
        rebuild(db)  # (at MAX_LOG2 the keys go on being added: more "maybe"s, not a scan a merge)
        return
    if new:
        (bits,) = db.execute("SELECT bits FROM filter").fetchone()
        db.execute("UPDATE filter SET n = n + ?, version = version + 1, bits = ?", (len(new), KeyFilter(row[0], bits).add(new)))
        db.execute("DELETE FROM refs_new")


def rebuild(db: sqlite3.Connection) -> None:
    """The filter made anew from every key in `refs` (inside the caller's write transaction)."""
    keys = [key for (key,) in db.execute("SELECT key FROM refs")]
    log2 = size_for(len(keys))
    db.execute("INSERT OR REPLACE INTO filter VALUES (0, ?, ?, COALESCE((SELECT version FROM filter), 0) + 1, ?)",
               (log2, len(keys), KeyFilter(log2).add(keys)))
    db.execute("DELETE FROM refs_new")
