"""The disk tier never serves a damaged entry, survives a killed writer, and stays in budget."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from editgraph.values.codec import CorruptEntry, decode, encode, fingerprint
from editgraph.executor.store import MISSING, DiskStore, MemoryStore
from editgraph.settings import parse_size
from editgraph.values.sockets import Latent

from .testnodes import chain

REPO = Path(__file__).resolve().parents[2]


def _big(value: float) -> torch.Tensor:
    return torch.full((1, 3, 64, 64), value)  # 48 KiB encoded: stored as a file, not inline


def test_codec_round_trip_keeps_dtype_shape_and_structure():
    value = Latent(torch.arange(24, dtype=torch.bfloat16).reshape(1, 4, 2, 3), "sd1")
    back = decode(b"".join(bytes(p) for p in encode(value).parts))
    assert isinstance(back, Latent) and back.family == "sd1"
    assert back.samples.dtype == torch.bfloat16 and back.samples.shape == (1, 4, 2, 3)
    assert torch.equal(back.samples, value.samples)


def test_fingerprint_includes_dtype_and_shape():
    t = torch.zeros(16, dtype=torch.float32)
    assert fingerprint(t) != fingerprint(t.reshape(4, 4))
    assert fingerprint(t) != fingerprint(t.view(torch.int32))
    assert fingerprint(t) == fingerprint(torch.zeros(16))


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_damaged_blob_is_detected_and_recomputed(tmp_path, damage, runner):
    doc = chain([0.1])
    doc["nodes"]["n0"]["params"]["size"] = 64
    result = runner(doc)
    fp = result.fingerprints[("n1", "image")]
    runner.executor.cache.close()
    path = tmp_path / "cache" / "blobs" / fp[:2] / fp
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-5] ^= 0xFF  # one pixel's byte
    else:
        data[6] ^= 0x01  # header length
    path.write_bytes(bytes(data))
    runner.executor = None
    doc["nodes"]["n2"] = {"type": "test.add", "inputs": {"image": "n1"}, "params": {"amount": 0.2}}
    result = runner(doc, fresh=True)
    assert runner.log.ran() == ["n1", "n2"]  # n1's entry was damaged: recomputed, never served
    from editgraph.executor.events import NodeFinished

    reran = [e.again for e in runner.log if isinstance(e, NodeFinished) and e.node_id == "n1"]
    assert reran == [None, "its stored value was damaged or missing"]  # not "not stored" (issue 10)
    assert torch.allclose(result.value("n2"), torch.full((1, 3, 64, 64), 0.8))
    assert path.read_bytes() != bytes(data)  # rewritten whole


def test_disk_store_rejects_garbage_without_executing_anything(tmp_path):
    with pytest.raises(CorruptEntry):
        decode(b"EGV1" + (5).to_bytes(4, "little") + b"\xc1\xc1\xc1\xc1\xc1")
    with pytest.raises(CorruptEntry):
        decode(b"\x80\x04pickle")


def test_blob_file_without_index_row_is_not_served(tmp_path):
    store = DiskStore(tmp_path, max_bytes=1 << 30)
    enc = encode(_big(0.3))
    fp = enc.fingerprint()
    path = tmp_path / "blobs" / fp[:2] / fp
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(bytes(p) for p in enc.parts))
    assert store.get_blob(fp) is MISSING


def test_killed_writer_leaves_nothing_read_as_valid(tmp_path):
    """SIGKILL a process in the middle of writing a large blob; a new store sees no entry."""
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        sys.path.insert(0, {str(REPO)!r})
        import editgraph.atomic as atomic
        from editgraph.values.codec import encode
        from editgraph.executor.store import DiskStore
        real_write = atomic.os.write
        def slow(fd, b):  # the blob writer's write(2): half the bytes, then the kill comes
            n = real_write(fd, bytes(b)[: len(b) // 2])
            print("writing", flush=True); time.sleep(60)
            return n
        atomic.os.write = slow
        store = DiskStore({str(tmp_path)!r}, 1 << 30)
        enc = encode(torch.full((1, 3, 64, 64), 0.3))
        store.put_blob(enc.fingerprint(), enc)
        store.put_ref("k", {{"image": enc.fingerprint()}})
        store.flush()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    (temp,) = (tmp_path / "tmp").glob("*.tmp")
    os.utime(temp, (time.time() - 7200,) * 2)
    DiskStore(tmp_path, 1 << 30).close()
    assert temp.exists()  # its writer is alive (it holds the file's lock): opening keeps it
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    fp = encode(_big(0.3)).fingerprint()
    store = DiskStore(tmp_path, 1 << 30)  # the writer is dead: its temp goes on open, not after an hour
    assert not temp.exists() and not list(tmp_path.rglob("*.tmp"))
    assert store.get_ref("k") is None
    assert store.get_blob(fp) is MISSING
    assert not (tmp_path / "blobs" / fp[:2] / fp).exists()  # never the final name


def test_two_processes_share_one_cache(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(REPO)!r})
        from editgraph.values.codec import encode
        from editgraph.executor import writer
        from editgraph.executor.store import DiskStore
        writer.STAGE_ROWS, writer.MERGE_ROWS = 40, 16  # both move staged refs while the other commits
        store = DiskStore({str(tmp_path)!r}, 1 << 30)
        which = int(sys.argv[1])
        for i in range(200):
            enc = encode(torch.full((1, 3, 64, 64), float(i % 50)))  # both write the same 50 blobs
            store.put_blob(enc.fingerprint(), enc)
            store.put_ref(f"k{{which}}-{{i}}", {{"image": enc.fingerprint()}})
            if i % 7 == 0:
                store.flush()
        store.close()
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)]) for w in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = DiskStore(tmp_path, 1 << 30)
    assert store.info()["entries"] == 400 and store.info()["blobs"] == 50
    # The index's bounds on its size, which opening reads instead of counting: every commit of
    # both processes added to them (none lost to the other), so they cover what is there.
    bounds = _meta(tmp_path)
    assert bounds["refs_bound"] == 400 and bounds["bytes_bound"] >= store.total_bytes() > 0
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM refs").fetchone()[0] > 0  # merges ran (and lost no row: 400 above)
    made = [encode(torch.full((1, 3, 64, 64), float(v))).fingerprint() for v in range(50)]
    for w in (0, 1):  # every entry names the right blob, whichever table it ended in
        assert [store.get_ref(f"k{w}-{i}") for i in range(200)] == [{"image": made[i % 50]} for i in range(200)]
        fps = store.get_ref(f"k{w}-123")
        assert torch.equal(store.get_blob(fps["image"]), torch.full((1, 3, 64, 64), 23.0))


def test_disk_eviction_keeps_recently_used(tmp_path):
    one = encode(_big(0.0)).nbytes
    store = DiskStore(tmp_path, max_bytes=int(one * 3.5))
    fps = []
    for i in range(3):
        enc = encode(_big(i / 10))
        store.put_blob(enc.fingerprint(), enc)
        fps.append(enc.fingerprint())
        store.flush()
        time.sleep(0.01)
    assert store.get_blob(fps[0]) is not MISSING  # touch the oldest: now most recently used
    store.flush()
    enc = encode(_big(0.9))
    store.put_blob(enc.fingerprint(), enc)
    store.flush()
    assert store.total_bytes() <= store.max_bytes
    assert store.get_blob(fps[1]) is MISSING  # least recently used went first
    assert store.get_blob(fps[0]) is not MISSING


def _meta(root: Path) -> dict:
    with sqlite3.connect(root / "index.sqlite") as db:
        return dict(db.execute("SELECT name, value FROM meta"))


def _set_meta(root: Path, sql: str) -> None:
    db = sqlite3.connect(root / "index.sqlite")
    db.execute(sql)
    db.commit()
    db.close()


def test_opening_trusts_the_index_bounds_and_the_flush_past_them_counts_and_evicts(tmp_path):
    store = DiskStore(tmp_path, 1 << 30, max_refs=100)
    for i in range(80):
        store.put_ref(f"k{i}", {"image": "x"})
    store.close()
    assert _meta(tmp_path)["refs_bound"] == 80
    # Opening reads the bound, counts nothing: one too high (as a replaced row makes it) is kept
    # until a flush finds it past the cap; then the refs are counted (81: under the cap, none
    # evicted) and the bound is made exact.
    _set_meta(tmp_path, "UPDATE meta SET value = 1000 WHERE name = 'refs_bound'")
    store = DiskStore(tmp_path, 1 << 30, max_refs=100)
    store.put_ref("k80", {"image": "x"})
    store.flush()
    assert _meta(tmp_path)["refs_bound"] == 81 and store.get_ref("k0") == {"image": "x"}
    for i in range(81, 111):  # past the cap: the oldest go, down to 90 % of it
        store.put_ref(f"k{i}", {"image": "x"})
    store.close()
    assert _meta(tmp_path)["refs_bound"] == 90 and DiskStore(tmp_path, 1 << 30).info()["entries"] == 90
    # An index from before the bounds is counted once, when opened, and given them.
    _set_meta(tmp_path, "DELETE FROM meta WHERE name IN ('refs_bound', 'bytes_bound')")
    DiskStore(tmp_path, 1 << 30).close()
    assert _meta(tmp_path)["refs_bound"] == 90 and _meta(tmp_path)["bytes_bound"] == 0


def test_a_key_both_merged_and_staged_again_counts_once_against_the_cap(tmp_path):
    from editgraph.executor.writer import merge_staged

    store = DiskStore(tmp_path, 1 << 30, max_refs=100)
    store.put_refs([(f"k{i}", {"image": "old"}) for i in range(80)])
    store.close()
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    merge_staged(db, None)  # as the writer does past STAGE_ROWS
    db.close()
    # 20 keys again and 5 new: the bound says 105 (past the cap), but 85 keys are there, so the
    # flush that counts evicts nothing.
    store = DiskStore(tmp_path, 1 << 30, max_refs=100)
    store.put_refs([(f"k{i}", {"image": "new"}) for i in range(20)] + [(f"n{i}", {"image": "x"}) for i in range(5)])
    store.flush()
    assert _meta(tmp_path)["refs_bound"] == 85
    assert store.info()["entries"] == 85 and store.get_ref("k0") == {"image": "new"} and store.get_ref("k79") == {"image": "old"}
    store.close()


def test_reads_share_a_snapshot_that_each_flush_renews(tmp_path):
    """Lookups run inside one read transaction until the next flush (cheaper than a lock per
    statement); a flush ends it, so rows another process committed meanwhile become visible."""
    reader, writer = DiskStore(tmp_path, 1 << 30), DiskStore(tmp_path, 1 << 30)
    assert reader.get_ref("k") is None  # opens the snapshot
    writer.put_ref("k", {"image": "f" * 64})
    writer.flush()
    assert reader.get_ref("k") is None  # still the old snapshot: a miss costs a recompute, never a wrong value
    reader.flush()
    assert reader.get_ref("k") == {"image": "f" * 64}


def test_a_damaged_blob_is_dropped_while_a_snapshot_is_open(tmp_path):
    """Dropping a row ends the read snapshot first: a stale snapshot cannot be upgraded to write."""
    store, other = DiskStore(tmp_path, 1 << 30), DiskStore(tmp_path, 1 << 30)
    enc = encode(_big(0.4))
    fp = enc.fingerprint()
    store.put_blob(fp, enc)
    store.flush()
    assert store.get_ref("any") is None  # snapshot open
    other.put_ref("other", {"image": fp})
    other.flush()  # the snapshot is now stale
    path = tmp_path / "blobs" / fp[:2] / fp
    path.write_bytes(path.read_bytes()[:-1])
    assert store.get_blob(fp) is MISSING  # detected, and its row deleted without SQLITE_BUSY
    store.flush()
    assert other.get_blob(fp) is MISSING and not path.exists()


def test_memory_tier_is_bounded_in_bytes():
    mem = MemoryStore(max_bytes=3 * 64 * 64 * 3 * 4)
    for i in range(5):
        mem.put_blob(f"fp{i}", _big(i))
    assert mem.nbytes <= mem.max_bytes
    assert mem.get_blob("fp0") is MISSING and mem.get_blob("fp4") is not MISSING


def test_parse_size():
    assert parse_size("10G") == 10 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("2048") == 2048


def _fill_index(root: Path, n: int = 40) -> list[str]:
    """n inline blobs of 12 KiB (each spills into overflow pages) and a ref per blob."""
    store = DiskStore(root, 1 << 30)
    fps = []
    for i in range(n):
        enc = encode(torch.full((1, 3, 32, 32), float(i + 1)))
        fps.append(enc.fingerprint())
        store.put_blob(fps[-1], enc)
        store.put_ref(f"k{i}", {"image": fps[-1]})
    store.close()
    return fps


_BTREE_PAGE = {2, 5, 10, 13}  # the first byte of a B-tree page (an empty table's is nearly all zeros)


def _damage_pages(db: Path, which: str) -> None:
    """Overwrite pages past the header: the second half of the file ("half", B-tree pages among
    them), or only the overflow pages holding inline values ("overflow", read first when a lookup
    fetches that value, mid-run)."""
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    pages = range(len(data) // size // 2, len(data) // size) if which == "half" else [
        p for p in range(1, len(data) // size)
        if data[p * size] not in _BTREE_PAGE and 0 < len(set(data[p * size + 4 : (p + 1) * size])) <= 4
    ]
    assert len(pages) > 4
    for p in pages:
        data[p * size : (p + 1) * size] = b"\xa5" * size
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["half", "overflow"])
def test_page_level_damage_in_the_index_makes_the_cache_forget_not_fail(tmp_path, which):
    fps = _fill_index(tmp_path)
    _damage_pages(tmp_path / "index.sqlite", which)
    store = DiskStore(tmp_path, 1 << 30)  # before the fix: "database disk image is malformed"
    got = [store.get_blob(fp) for fp in fps]
    # Opening reads no more than a page of each table, so values on pages before the damage are
    # still served (whole and right); once a query meets the damage, the index is forgotten.
    met = next(i for i, v in enumerate(got) if v is MISSING)
    assert all(torch.equal(v, torch.full((1, 3, 32, 32), float(i + 1))) for i, v in enumerate(got[:met]))
    assert all(v is MISSING for v in got[met:])
    assert store.problems and "SQLITE_CORRUPT" in store.problems[0]
    assert store.recovered_from is not None and store.recovered_from.exists()  # set aside, kept for a post-mortem
    enc = encode(_big(0.7))
    store.put_blob(enc.fingerprint(), enc)  # the fresh index works: it stores and serves again
    store.put_ref("new", {"image": enc.fingerprint()})
    store.close()
    again = DiskStore(tmp_path, 1 << 30)
    assert again.problems == [] and again.get_ref("new") == {"image": enc.fingerprint()}
    assert torch.equal(again.get_blob(enc.fingerprint()), _big(0.7))
    again.clear()  # clear takes the damaged copy too: everything the cache owns
    assert not list(tmp_path.glob("index.sqlite.damaged-*"))
    again.close()


def test_a_run_over_a_damaged_index_recomputes_and_says_so(tmp_path, runner):
    doc = chain([0.1, 0.2])
    doc["nodes"]["n0"]["params"]["size"] = 32  # 12 KiB values: inline rows spilling into overflow pages
    runner(doc)
    runner.executor.cache.close()
    _damage_pages(tmp_path / "cache" / "index.sqlite", "overflow")  # met only when a value is read
    runner.executor = None
    result = runner(doc, fresh=True)  # before the fix: sqlite3.DatabaseError out of the run (exit 5)
    assert torch.allclose(result.value("n2"), torch.full((1, 3, 32, 32), 0.8))  # recomputed
    assert "n2" in runner.log.ran()  # its stored value was forgotten
    disk = runner.executor.cache.disk
    assert "SQLITE_CORRUPT" in disk.problems[0] and disk.recovered_from.exists()  # said, and set aside
