"""The key filter (executor/keyfilter.py) answers "not in the index" without a query, and is never
wrong about a key that is there: after merges, evictions, a clear, keys another version of
editgraph inserted without it, and in an index made before filters."""

from __future__ import annotations

import sqlite3
import time

import blake3

from editgraph.executor import keyfilter
from editgraph.executor.keyfilter import KeyFilter
from editgraph.executor.store import DiskStore
from editgraph.executor.writer import merge_staged


def _keys(tag: str, n: int) -> list[str]:
    return [blake3.blake3(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]


def test_a_filter_holds_every_key_added_and_few_others():
    f = KeyFilter(keyfilter.size_for(5000))
    held, others = _keys("in", 5000), _keys("out", 20000)
    f.add(held + ["k1", "memo:" + held[0], "x" * 64])  # keys that are not 64 hex digits are hashed
    assert f.may_hold(held) == held
    assert f.may_hold(["k1", "k2", "memo:" + held[0], "x" * 64]) == ["k1", "memo:" + held[0], "x" * 64]
    # the hex fast path and the hashed slow path read the same probes
    assert [k for k in others if f._held(k)] == f.may_hold(others)
    maybe = len(f.may_hold(others))
    assert 0 < maybe < 0.03 * len(others)  # ~1 % at half the capacity (10 bits a key, 3 probes)
    assert KeyFilter(keyfilter.MIN_LOG2).may_hold(others) == []


def test_a_cold_lookup_asks_no_table_and_a_merged_key_is_found_by_a_new_process(tmp_path):
    store = DiskStore(tmp_path, 1 << 30)
    asked: list[str] = []
    store._db.set_trace_callback(asked.append)
    absent = _keys("absent", 50)
    assert store.get_refs(absent) == {} and store.get_ref(absent[0]) is None
    assert not [sql for sql in asked if "FROM refs WHERE" in sql]  # answered by the filter
    keys = _keys("k", 300)
    store.put_refs([(k, {"image": k[::-1]}) for k in keys])
    store.close()
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    merge_staged(db, None)  # into `refs`, the filter folded in the same transaction
    assert db.execute("SELECT n FROM filter").fetchone() == (300,)
    assert db.execute("SELECT COUNT(*) FROM refs_new").fetchone() == (0,)
    db.close()
    again = DiskStore(tmp_path, 1 << 30)
    assert again.get_refs(keys[:50] + absent) == {k: {"image": k[::-1]} for k in keys[:50]}
    assert again.get_ref(keys[299]) == {"image": keys[299][::-1]}
    again.close()


def test_keys_inserted_by_an_editgraph_without_filters_are_found(tmp_path):
    """An older editgraph (or anything else) inserting into `refs` knows nothing of the filter: the
    trigger keeps its keys in refs_new, read as held, until the next merge folds them in."""
    DiskStore(tmp_path, 1 << 30).close()
    key = _keys("older", 1)[0]
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    db.execute("INSERT INTO refs VALUES (?, ?, 0)", (key, b"\x81\xa5image\xa2fp"))
    db.close()
    store = DiskStore(tmp_path, 1 << 30)
    assert store.get_refs([key] + _keys("absent", 5)) == {key: {"image": "fp"}} and store.get_ref(key) == {"image": "fp"}
    store.close()
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    merge_staged(db, None)  # nothing staged: it still folds refs_new in
    assert db.execute("SELECT COUNT(*) FROM refs_new").fetchone() == (0,)
    db.close()
    store = DiskStore(tmp_path, 1 << 30)
    assert store.get_ref(key) == {"image": "fp"} and not store._filter.extra
    store.close()


def test_an_index_from_before_filters_asks_every_key_until_its_writer_builds_one(tmp_path):
    keys = _keys("old", 100)
    store = DiskStore(tmp_path, 1 << 30)
    store.put_refs([(k, {"image": "x"}) for k in keys])
    store.close()
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    merge_staged(db, None)
    db.execute("DELETE FROM filter")  # as an index made before filters has none
    db.close()
    store = DiskStore(tmp_path, 1 << 30)  # finds none: its writer builds one, beside the run
    assert store.get_refs(keys[:10]) == {k: {"image": "x"} for k in keys[:10]}
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    deadline = time.monotonic() + 30
    while db.execute("SELECT n FROM filter").fetchone() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert db.execute("SELECT n FROM filter").fetchone() == (100,)
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
