"""Issue 16's scaling work keeps the cache's answers: a layer's keys asked of the disk tier in one
query find what another process stored, rows are durable at the run's end without a writer
thread and as a long run goes on, and a run leaves the garbage collector as it found it."""

from __future__ import annotations

import gc
import hashlib
import sqlite3
import time
import weakref

import msgpack
import pytest
import torch

from editgraph.collector import collector_paused
from editgraph.errors import NodeFailed
from editgraph.executor import writer
from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog, NodeFinished
from editgraph.executor.plan import Plan
from editgraph.executor.run import Executor
from editgraph.executor.store import DiskStore
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind

from . import indexrows, testnodes  # noqa: F401  (testnodes registers the test.* nodes)


def _wide(width: int = 4, depth: int = 3, change: tuple[str, float] | None = None) -> dict:
    """depth layers of width nodes; each node mixes the two above it (its column and the next)."""
    nodes: dict = {}
    for d in range(depth):
        for w in range(width):
            nid = f"d{d}w{w}"
            if d == 0:
                nodes[nid] = {"type": "test.source", "params": {"value": 0.1 * (w + 1)}}
            else:
                nodes[nid] = {"type": "test.mix", "inputs": {"a": f"d{d - 1}w{w}", "b": f"d{d - 1}w{(w + 1) % width}"}}
    if change is not None:
        nid, value = change
        nodes[nid]["params"] = {"value": value}
    return {"format": "editgraph/1", "name": "wide", "nodes": nodes}


def test_the_plan_groups_each_layer_of_a_wide_graph_and_nothing_of_a_chain():
    wide = bind(load_workflow(_wide()))
    assert Plan(wide, None).groups == {0: 4, 4: 8, 8: 12}
    chain = bind(load_workflow(testnodes.chain([0.1, 0.2, 0.3])))
    assert Plan(chain, None).groups == {}


def test_a_layer_asked_of_the_disk_in_one_query_finds_what_another_executor_stored(tmp_path):
    first = Executor(Cache.default(tmp_path))
    done = first.run(bind(load_workflow(_wide())))
    first.cache.close()

    log = EventLog()
    again = Executor(Cache.default(tmp_path), listeners=[log])  # memory tier empty: every key comes from disk
    result = again.run(bind(load_workflow(_wide())))
    assert log.ran() == [] and len(log.cached()) == 12
    assert torch.equal(result.value("d2w0"), done.value("d2w0"))

    log.clear()
    changed = again.run(bind(load_workflow(_wide(change=("d0w1", 0.9)))))
    # d0w1 feeds d1w0 and d1w1, which feed d2w0, d2w1 (both take d1w1) and d2w3 (takes d1w0)
    assert log.ran() == ["d0w1", "d1w0", "d1w1", "d2w0", "d2w1", "d2w3"]
    assert abs(changed.value("d1w0").flatten()[0].item() - (0.1 + 0.9) / 2) < 1e-6
    again.cache.close()


def test_a_layer_the_local_tiers_lack_is_still_asked_of_the_shared_tier(tmp_path):
    """The prefetch tells the run which keys of a layer no local tier holds, and the run skips their
    lookups, but not the shared tier's: a machine with empty tiers of its own finds every node
    that another computed, layer by layer."""
    from editgraph.executor.objectstore import FileObjects, SharedStore
    from editgraph.executor.persist import ALWAYS
    from editgraph.executor.store import MemoryStore

    def machine(name):
        log = EventLog()
        cache = Cache(MemoryStore(1 << 28), DiskStore(tmp_path / name, 1 << 30), SharedStore(FileObjects(tmp_path / "shared")))
        return Executor(cache, listeners=[log], persistence=ALWAYS), log

    (a, log_a), (b, log_b) = machine("a"), machine("b")
    done = a.run(bind(load_workflow(_wide())))
    a.cache.close()
    again = b.run(bind(load_workflow(_wide())))
    assert len(log_a.ran()) == 12 and log_b.ran() == [] and len(log_b.cached()) == 12
    assert torch.equal(again.value("d2w0"), done.value("d2w0"))  # read from the shared tier
    b.cache.close()


def test_identical_nodes_in_one_layer_run_once_though_the_layer_was_asked_for_at_once(tmp_path):
    doc = _wide(width=2, depth=1)
    doc["nodes"]["twin"] = {"type": "test.source", "params": {"value": 0.1}}  # same key as d0w0
    log = EventLog()
    ex = Executor(Cache.default(tmp_path), listeners=[log])
    ex.run(bind(load_workflow(doc)))
    assert log.ran() == ["d0w0", "d0w1"] and log.cached() == ["twin"]
    ex.cache.close()


def _rows(root, *, file_only: bool = False) -> int:
    """Refs committed, as another connection sees them; file_only: in index.sqlite itself, the
    WAL ignored (what checkpoints have copied there)."""
    path = root / "index.sqlite"
    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True) if file_only else sqlite3.connect(path)
    try:
        if db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'refs'").fetchone()[0] == 0:
            return 0  # even the schema is in the WAL still
        return indexrows.committed(db)
    except sqlite3.DatabaseError:
        if not file_only:
            raise
        return -1  # read while a checkpoint copies pages in (the reader assumed it would not change)
    finally:
        db.close()


def test_rows_are_committed_once_by_the_flush_of_a_short_run(tmp_path):
    store = DiskStore(tmp_path, 1 << 30)
    store.put_refs([(f"k{i}", {"image": f"fp{i}"}) for i in range(3)])
    store.put_ref("k3", {"image": "fp3"})
    assert _rows(tmp_path) == 0 and store.pending() == 4  # waiting for COMMIT_S (0.5 s) or a flush
    store.flush()
    assert _rows(tmp_path) == 4 and store.pending() == 0
    assert store.get_ref("k2") == {"image": "fp2"}
    store.close()


def test_rows_are_committed_within_commit_s_without_a_flush_or_more_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "COMMIT_S", 0.05)
    store = DiskStore(tmp_path, 1 << 30)
    store.put_ref("k0", {"image": "fp0"})  # then nothing: a long node runs
    deadline = time.monotonic() + 30
    while _rows(tmp_path) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _rows(tmp_path) == 1
    store.close()


def test_ctrl_c_in_a_flush_loses_no_row(tmp_path, monkeypatch):
    """The flush commits in the caller's thread: an interrupt there keeps what it had taken, and
    close() commits it."""
    store = DiskStore(tmp_path, 1 << 30)
    store.put_refs([(f"k{i}", {"image": f"fp{i}"}) for i in range(3)])
    real = store._commit_rows

    def interrupted(db, rows):
        monkeypatch.setattr(store, "_commit_rows", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_commit_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.flush()
    assert _rows(tmp_path) == 0
    store.close()
    assert _rows(tmp_path) == 3


def test_quick_nodes_refs_reach_the_disk_by_the_end_of_the_run(tmp_path):
    doc = testnodes.chain([0.01] * 5)
    for node in doc["nodes"].values():
        node["type"] = "test.quick" if node["type"] == "test.add" else node["type"]
    ex = Executor(Cache.default(tmp_path))
    ex.run(bind(load_workflow(doc)))
    assert _rows(tmp_path) == 6  # every node's ref, persisted or not
    ex.cache.close()


def test_a_flush_commits_into_the_wal_and_the_writer_checkpoints_beside_the_runs(tmp_path, monkeypatch):
    """The commit a run's end waits for never copies the WAL back into the index (two disk syncs
    on a big index): past CHECKPOINT_ROWS committed rows the writer thread does, on its own."""
    monkeypatch.setattr(writer, "CHECKPOINT_ROWS", 10**9)
    store = DiskStore(tmp_path / "a", 1 << 30)
    # hash-like keys, as the executor's: ~1,500 pages, past SQLite's own checkpoint (1,000)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(40_000)]
    store.put_refs([(key, {"image": key}) for key in keys])
    store.flush()
    assert _rows(tmp_path / "a") == 40_000 and _rows(tmp_path / "a", file_only=True) == 0
    store.close()  # the last connection's close checkpoints
    assert _rows(tmp_path / "a", file_only=True) == 40_000

    monkeypatch.setattr(writer, "CHECKPOINT_ROWS", 500)
    store = DiskStore(tmp_path / "b", 1 << 30)
    store.put_refs([(f"k{i}", {"image": f"fp{i}"}) for i in range(2000)])
    store.flush()
    deadline = time.monotonic() + 30
    while _rows(tmp_path / "b", file_only=True) < 2000 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _rows(tmp_path / "b", file_only=True) == 2000  # copied while the store is still open
    assert store.get_ref("k1999") == {"image": "fp1999"}
    store.close()


def test_refs_committed_together_keep_the_last_value_of_a_key(tmp_path):
    """A commit inserts its refs in key order: of two rows for one key, the later still wins."""
    store = DiskStore(tmp_path, 1 << 30)
    store.put_refs([("b", {"image": "old"}), ("a", {"image": "x"}), ("b", {"image": "new"}), ("c", {"image": "y"})])
    store.flush()
    store.close()
    again = DiskStore(tmp_path, 1 << 30)
    assert [again.get_ref(k) for k in "abc"] == [{"image": "x"}, {"image": "new"}, {"image": "y"}]
    again.close()


def _tables(root) -> dict[str, dict[str, dict]]:
    """The refs in batches ("staged") and in the refs table, key -> fps, as another connection sees them."""
    with sqlite3.connect(root / "index.sqlite") as db:
        return {"staged": indexrows.batched(db), "refs": indexrows.merged(db)}


def test_refs_are_staged_then_merged_by_the_writer_the_newer_row_winning(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "STAGE_ROWS", 50)
    monkeypatch.setattr(writer, "MERGE_ROWS", 20)
    store = DiskStore(tmp_path, 1 << 30)
    store.put_refs([(f"k{i:02}", {"image": "v1"}) for i in range(30)])
    store.flush()
    assert len(_tables(tmp_path)["staged"]) == 30 and not _tables(tmp_path)["refs"]  # a commit goes to the small table
    # Ten keys again with new values, thirty new: 70 staged, past STAGE_ROWS: the writer moves them
    # all, 20 a transaction, beside whatever runs.
    store.put_refs([(f"k{i:02}", {"image": "v2"}) for i in range(10)] + [(f"k{i:02}", {"image": "v1"}) for i in range(30, 60)])
    store.flush()
    deadline = time.monotonic() + 30
    while _tables(tmp_path)["staged"] and time.monotonic() < deadline:
        time.sleep(0.01)
    tables = _tables(tmp_path)
    assert tables["staged"] == {} and tables["refs"] == {f"k{i:02}": {"image": "v2" if i < 10 else "v1"} for i in range(60)}
    # A key staged again is served from there, ahead of its merged row, one key at a time and in groups.
    store.put_ref("k00", {"image": "v3"})
    store.close()
    assert _tables(tmp_path)["staged"] == {"k00": {"image": "v3"}}
    again = DiskStore(tmp_path, 1 << 30)
    assert again.get_ref("k00") == {"image": "v3"} and again.get_ref("k01") == {"image": "v2"}
    assert again.get_refs(["k00", "k01", "k59", "nope"]) == {"k00": {"image": "v3"}, "k01": {"image": "v2"}, "k59": {"image": "v1"}}
    assert again.info()["entries"] == 60
    again.close()


def test_a_run_leaves_the_collector_as_it_found_it(tmp_path):
    before = gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()
    ex = Executor(Cache.default(tmp_path))
    ex.run(bind(load_workflow(testnodes.chain([0.1, 0.2]))))
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before
    doc = testnodes.chain([0.1])
    doc["nodes"]["boom"] = {"type": "test.fail", "inputs": {"image": "n1"}, "params": {"fail": True}}
    with pytest.raises(NodeFailed):
        ex.run(bind(load_workflow(doc)))
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before
    ex.cache.close()


def test_garbage_cycles_made_during_a_pause_are_freed_when_it_ends():
    """A failed node's traceback or a library's self-referencing object can hold tensors: the
    pause must not hide such cycles from the collector past the run (moving them, unscanned, into
    the oldest generation left them alive until a full collection that may never come)."""

    class Cycle:
        pass

    with collector_paused():
        c = Cycle()
        c.me = c
        c.payload = bytearray(1 << 20)
        gone = weakref.ref(c)
        del c
    assert gone() is None


def test_a_pause_leaves_what_the_application_froze_frozen():
    kept = [object() for _ in range(10)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collector_paused():
            pass
        # Still frozen (unfreezing would empty the permanent generation: 0). Not an exact count:
        # frozen objects whose last reference goes meanwhile leave it (as under coverage).
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()
    assert kept



def _collections_of_generation(generation: int, body) -> int:
    """How many collections of `generation` start while body() runs (1: the end-of-pause scan;
    0: young collections)."""
    seen = []

    def note(phase, info):
        if phase == "start" and info["generation"] == generation:
            seen.append(1)

    assert gc.get_freeze_count() == 0  # else pauses leave freezing (and skipping scans) alone
    gc.callbacks.append(note)
    try:
        body()
    finally:
        gc.callbacks.remove(note)
    return len(seen)


def _collections_of_generation_1(body) -> int:
    return _collections_of_generation(1, body)


def test_only_a_pause_that_may_have_made_garbage_cycles_is_scanned():
    def clean():
        with collector_paused() as pause:
            pause.clean = True

    def dirty():
        with collector_paused():
            pass

    def nested():  # one body that does not say it is clean makes the whole pause scanned
        with collector_paused() as outer:
            with collector_paused():
                pass
            outer.clean = True

    assert _collections_of_generation_1(clean) == 0
    assert _collections_of_generation_1(dirty) == 1
    assert _collections_of_generation_1(nested) == 1


def test_a_pause_waits_for_the_objects_its_body_expects_before_collecting():
    """A cold 10,000-node run keeps ~195,000 objects: told so, the collector does not scan them
    mid-run; objects past what was expected are collected as they come."""
    from editgraph.collector import RUN_GC_THRESHOLD

    def make(n, expect):
        with collector_paused(expect=expect):
            kept = [[] for _ in range(n)]  # tracked objects that live on, as a run's records do
        return kept

    n = RUN_GC_THRESHOLD + 50_000
    assert _collections_of_generation(0, lambda: make(n, 0)) >= 1
    assert _collections_of_generation(0, lambda: make(n, 60_000)) == 0
    assert _collections_of_generation(0, lambda: make(n + 200_000, 60_000)) >= 1


def test_an_identical_rerun_skips_the_scan_a_run_that_ran_a_node_does_not(tmp_path):
    ex = Executor(Cache.default(tmp_path))
    graph = bind(load_workflow(testnodes.chain([0.1, 0.2])))  # binding is a pause of its own
    assert _collections_of_generation_1(lambda: ex.run(graph)) == 1
    log = EventLog()
    ex.listeners = [log]
    result = []
    assert _collections_of_generation_1(lambda: result.append(ex.run(graph))) == 0
    assert log.cached() == list(result[0].records)
    # a node's record is the event its listeners got: one object a node
    assert all(result[0].records[e.node_id] is e for e in log if isinstance(e, NodeFinished))
    ex.cache.close()


def test_a_rerun_that_recomputes_a_value_for_an_output_file_is_scanned(tmp_path):
    """Every node a cache hit, but writing the output file needs a value no tier kept: the node
    that makes it runs again, and what it made may hold cycles, so the pause is scanned."""
    from editgraph.executor.persist import Persistence

    doc = testnodes.chain([0.1])
    doc["nodes"]["save"] = {"type": "image.save", "inputs": {"image": "n1"}, "params": {"path": "out.png"}}
    graph = bind(load_workflow(doc))
    first = Executor(Cache.default(tmp_path / "cache")).run(graph, out_dir=tmp_path / "a", persistence=Persistence(factor=1e12))
    assert first.records["save"].persisted is False  # only its ref reached the disk
    log = EventLog()
    ex = Executor(Cache.default(tmp_path / "cache"), listeners=[log])  # a new memory tier: as in a new process
    assert _collections_of_generation_1(lambda: ex.run(graph, out_dir=tmp_path / "b")) == 1
    assert [e.status for e in log if isinstance(e, NodeFinished)][:3] == ["cached"] * 3
    assert "save" in log.ran()  # run again to write out.png
    assert (tmp_path / "b" / "out.png").read_bytes() == (tmp_path / "a" / "out.png").read_bytes()
    ex.cache.close()


def test_a_commit_is_one_batch_row_and_another_process_sees_it_and_its_merge(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "MERGE_ROWS", 20)
    reader, other = DiskStore(tmp_path, 1 << 30), DiskStore(tmp_path, 1 << 30)
    assert reader.get_ref("k00") is None  # the reader's snapshot starts: no batch yet
    other.put_refs([(f"k{i:02}", {"image": "v1"}) for i in range(50)])
    other.flush()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:  # 50 refs: three rows of at most MERGE_ROWS
        assert [n for (n,) in db.execute("SELECT n FROM batches ORDER BY seq")] == [20, 20, 10]
    assert reader.get_ref("k00") is None  # its snapshot is older than the commit
    reader.flush()
    assert reader.get_ref("k00") == {"image": "v1"} and reader.get_refs(["k49", "nope"]) == {"k49": {"image": "v1"}}
    # The other process commits k00 again and merges every batch into the refs table: the reader's
    # next snapshot drops the batches it held and finds both keys there, k00 with its newer value.
    other.put_ref("k00", {"image": "v2"})
    other.flush()
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    writer.merge_staged(db, None)
    assert indexrows.batched(db) == {} and len(indexrows.merged(db)) == 50
    db.close()
    reader.flush()
    assert reader.get_ref("k00") == {"image": "v2"} and reader.get_refs(["k00", "k01"]) == {"k00": {"image": "v2"}, "k01": {"image": "v1"}}
    assert reader._staged_map == {} and reader._staged_batches == {}
    reader.close(), other.close()


def test_a_damaged_batch_is_a_miss_and_an_index_from_before_batches_keeps_its_staged_refs(tmp_path):
    store = DiskStore(tmp_path, 1 << 30)
    store.put_refs([("a", {"image": "fa"}), ("b", {"image": "fb"})])
    store.close()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("UPDATE batches SET refs = x'c1c1c1'")  # not msgpack
        # the refs table of editgraph before batches: one row a ref in `staged`
        db.execute("CREATE TABLE staged (key TEXT PRIMARY KEY, fps BLOB NOT NULL, used REAL NOT NULL) WITHOUT ROWID")
        db.execute("INSERT INTO staged VALUES ('old', ?, 0)", (msgpack.packb({"image": "fo"}),))
    store = DiskStore(tmp_path, 1 << 30)
    assert store.get_ref("a") is None and store.get_refs(["a", "b"]) == {}  # misses, recomputed: never an error
    assert store.get_ref("old") == {"image": "fo"}  # moved into refs when opened
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM staged").fetchone() == (0,) and indexrows.merged(db) == {"old": {"image": "fo"}}
    store.put_ref("a", {"image": "fa2"})
    store.flush()
    assert store.get_ref("a") == {"image": "fa2"} and store.problems == []
    store.close()


def test_batches_left_by_processes_that_commit_as_they_close_are_merged_by_the_next_to_open(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "STAGE_ROWS", 70)
    monkeypatch.setattr(writer, "MERGE_ROWS", 20)
    for run in range(3):  # three CLI runs: each commits its refs in its close, too late to merge them
        # (the third closes with 90 waiting, past STAGE_ROWS; each opened with fewer)
        store = DiskStore(tmp_path, 1 << 30)
        store.put_refs([(f"r{run}-{i:02}", {"image": f"v{run}"}) for i in range(30)])
        store.close()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        assert len(indexrows.batched(db)) == 90 and not indexrows.merged(db)
    store = DiskStore(tmp_path, 1 << 30)  # 90 waiting, past STAGE_ROWS: its writer merges them
    deadline = time.monotonic() + 30
    while _tables(tmp_path)["staged"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _tables(tmp_path)["staged"] == {} and len(_tables(tmp_path)["refs"]) == 90
    assert store.get_refs(["r0-00", "r2-29"]) == {"r0-00": {"image": "v0"}, "r2-29": {"image": "v2"}}
    store.close()


def test_a_ctrl_c_while_a_snapshot_reads_the_batches_leaves_no_stale_entry(tmp_path, monkeypatch):
    from editgraph.executor import store as store_module

    reader, other = DiskStore(tmp_path, 1 << 30), DiskStore(tmp_path, 1 << 30)
    other.put_ref("k", {"image": "v1"})
    other.flush()
    assert reader.get_ref("k") == {"image": "v1"}  # held in the reader's map
    reader.flush()
    other.put_ref("k", {"image": "v2"})
    other.flush()
    real, calls = store_module.unpack_batch, []

    def interrupted(raw):
        calls.append(raw)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the new batch is read
        return real(raw)

    monkeypatch.setattr(store_module, "unpack_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reader.get_ref("k")
    assert not reader._db.in_transaction  # the half-read snapshot is over
    assert reader.get_ref("k") == {"image": "v2"} and reader.get_refs(["k"]) == {"k": {"image": "v2"}}
    reader.close(), other.close()
