"""The key filter (executor/keyfilter.py) answers "not in the index" without a query, and is never
wrong about a key that is there: after merges, folds, evictions, a clear, keys another version of
editgraph inserted without it, a damaged filter row, and in an index made before filters."""

from __future__ import annotations

import sqlite3
import time

import blake3
import numpy as np

from editgraph.executor import keyfilter
from editgraph.executor.keyfilter import KeyFilter
from editgraph.executor.store import DiskStore
from editgraph.executor.writer import merge_staged


def _keys(tag: str, n: int) -> list[str]:
    return [blake3.blake3(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]


def _filter(keys: list[str], log2: int) -> KeyFilter:
    bits = np.zeros(1 << (log2 - 3), dtype=np.uint8)
    keyfilter._set_bits(bits, keys, (1 << log2) - 1)
    return KeyFilter(log2, bits.tobytes(), set())


def _db(root):
    return sqlite3.connect(root / "index.sqlite", isolation_level=None)


def _merged(root, keys: list[str]) -> sqlite3.Connection:
    """An index holding `keys` in its refs table (merged as the writer does), and a connection to it."""
    store = DiskStore(root, 1 << 30)
    store.put_refs([(k, {"image": "x"}) for k in keys])
    store.close()
    db = _db(root)
    merge_staged(db, None)
    return db


def _rebuilt(db: sqlite3.Connection) -> tuple:
    """The filter's (n, bytes of bits) once a store's writer has made it whole again, beside the run."""
    deadline = time.monotonic() + 30
    while not keyfilter.whole(db) and time.monotonic() < deadline:
        time.sleep(0.01)
    return db.execute("SELECT n, length(bits) FROM filter").fetchone()


def test_a_filter_holds_every_key_added_and_few_others():
    held, others = _keys("in", 5000), _keys("out", 20000)
    h = held[0]
    # keys that are not 64 hex digits are hashed; so are 64-character ones that int() would read
    # as hex but bytes.fromhex does not (a reader parsing them another way missed them)
    odd = ["k1", "memo:" + h, "x" * 64, h.upper(), h[:48] + "-output-name-xyz", "0x" + h[2:], h[:8] + "_" + h[9:],
           h[:15] + " " + h[16:], "+" + h[1:], "\u0663" + h[1:]]
    f = _filter(held + odd, keyfilter.size_for(5000))
    assert f.may_hold(held) == held and f.may_hold(odd) == odd
    assert f.may_hold(["k2", "memo:" + held[1]]) == []
    maybe = len(f.may_hold(others))
    assert 0 < maybe < 0.03 * len(others)  # ~1 % at half the capacity (10 bits a key, 3 probes)
    assert _filter([], keyfilter.MIN_LOG2).may_hold(others) == []
    f.extra.add(others[0])  # inserted since the bits were made: held whatever they say
    assert f.may_hold(others[:1]) == others[:1]


def test_a_cold_lookup_asks_no_table_and_merged_keys_are_found_before_and_after_their_fold(tmp_path, monkeypatch):
    store = DiskStore(tmp_path, 1 << 30)
    asked: list[str] = []
    store._db.set_trace_callback(asked.append)
    absent = _keys("absent", 50)
    assert store.get_refs(absent) == {} and store.get_ref(absent[0]) is None
    assert not [sql for sql in asked if "FROM refs WHERE" in sql]  # answered by the filter
    store.close()

    def put_and_merge(keys):
        s = DiskStore(tmp_path, 1 << 30)
        s.put_refs([(k, {"image": k[::-1]}) for k in keys])
        s.close()
        db = _db(tmp_path)
        merge_staged(db, None)  # into `refs`, folded into the bits only once fold_at() keys wait
        state = db.execute("SELECT (SELECT n FROM filter), (SELECT COUNT(*) FROM refs_new)").fetchone()
        db.close()
        return state

    monkeypatch.setattr(keyfilter, "FOLD_MIN", 500)
    first, second = _keys("k", 300), _keys("l", 300)
    assert put_and_merge(first) == (0, 300)  # waiting in refs_new: a reader holds them aside
    reader = DiskStore(tmp_path, 1 << 30)
    assert reader.get_refs(first[:50] + absent) == {k: {"image": k[::-1]} for k in first[:50]}
    version = reader._filter_at[0]
    reader.flush()  # ends its snapshot
    assert put_and_merge(second) == (600, 0)  # 600 waiting: folded
    assert reader.get_refs(first + second + absent) == {k: {"image": k[::-1]} for k in first + second}
    assert reader._filter_at[0] == version + 1 and reader._filter.extra == set()
    assert reader.get_ref(second[299]) == {"image": second[299][::-1]}
    reader.close()


def test_a_reader_adds_keys_inserted_since_its_snapshot_without_reading_the_bits_again(tmp_path):
    reader, writer = DiskStore(tmp_path, 1 << 30), DiskStore(tmp_path, 1 << 30)
    assert reader.get_refs(_keys("x", 5)) == {}
    bits = reader._filter.bits
    for tag in ("a", "b"):
        keys = _keys(tag, 40)
        writer.put_refs([(k, {"image": tag}) for k in keys])
        writer.flush()
        db = _db(tmp_path)
        merge_staged(db, None)  # 40 keys: not folded
        db.close()
        reader.flush()
        assert reader.get_refs(keys) == {k: {"image": tag} for k in keys}
        assert reader._filter.bits is bits  # the same bits, the new keys held aside
    assert len(reader._filter.extra) == 80
    reader.close()
    writer.close()


def test_keys_inserted_by_an_editgraph_without_filters_are_found(tmp_path):
    """An older editgraph (or anything else) inserting into `refs` knows nothing of the filter: the
    trigger keeps its keys in refs_new, read as held, until a merge folds them in."""
    DiskStore(tmp_path, 1 << 30).close()
    key = _keys("older", 1)[0]
    db = _db(tmp_path)
    db.execute("INSERT INTO refs VALUES (?, ?, 0)", (key, b"\x81\xa5image\xa2fp"))
    db.close()
    store = DiskStore(tmp_path, 1 << 30)
    assert store.get_refs([key] + _keys("absent", 5)) == {key: {"image": "fp"}} and store.get_ref(key) == {"image": "fp"}
    assert store._filter.extra == {key}
    store.close()


def test_a_damaged_filter_row_is_no_filter_and_the_next_merge_rebuilds_it(tmp_path):
    keys = _keys("d", 100)
    db = _merged(tmp_path, keys)
    for damage in ("UPDATE filter SET bits = x'00'", "UPDATE filter SET bits = 0", "UPDATE filter SET log2_bits = 'seventeen'"):
        db.execute(damage)
        assert keyfilter.refresh(db, None, None, (2, None)) is None  # what a snapshot loads: no filter
        store = DiskStore(tmp_path, 1 << 30)  # finds it damaged: its writer rebuilds it
        assert store.get_refs(keys) == {k: {"image": "x"} for k in keys}  # with no filter or the new one
        assert _rebuilt(db) == (100, 1 << (keyfilter.MIN_LOG2 - 3))
        store.close()
    db.close()


def test_an_index_from_before_filters_asks_every_key_until_its_writer_builds_one(tmp_path):
    keys = _keys("old", 100)
    db = _merged(tmp_path, keys)
    db.execute("DELETE FROM filter")  # as an index made before filters has none
    store = DiskStore(tmp_path, 1 << 30)  # finds none: its writer builds one, beside the run
    assert store.get_refs(keys[:10]) == {k: {"image": "x"} for k in keys[:10]}
    assert _rebuilt(db) == (100, 1 << (keyfilter.MIN_LOG2 - 3))
    db.close()
    store.close()
    store = DiskStore(tmp_path, 1 << 30)
    assert store.get_refs(keys) == {k: {"image": "x"} for k in keys} and store._filter is not None
    store.close()


def test_eviction_and_clear_rebuild_the_filter_from_what_is_left(tmp_path):
    store = DiskStore(tmp_path, 1 << 30, max_refs=100)
    keys = _keys("e", 120)
    for k in keys:
        store.put_ref(k, {"image": "x"})
    store.flush()  # past the cap: merged, the oldest evicted down to 90, the filter rebuilt
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    assert db.execute("SELECT n FROM filter").fetchone() == (90,)
    left = {k for (k,) in db.execute("SELECT key FROM refs")}
    assert len(left) == 90
    store.close()
    again = DiskStore(tmp_path, 1 << 30, max_refs=100)
    assert set(again.get_refs(keys)) == left
    again.clear()
    assert db.execute("SELECT n, length(bits) FROM filter").fetchone() == (0, 1 << (keyfilter.MIN_LOG2 - 3))
    assert again.get_refs(keys) == {}
    again.put_ref(keys[0], {"image": "y"})
    again.flush()
    assert again.get_ref(keys[0]) == {"image": "y"}
    again.close()
    db.close()
