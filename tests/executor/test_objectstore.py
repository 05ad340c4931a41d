"""The shared cache tier (executor/objectstore.py) on a local S3 (moto server) and on a folder:
verified reads, atomic writes, harmless concurrent writers, and a Cache that finds in it what
another process computed."""

from __future__ import annotations

import threading

import blake3
import pytest
import torch

from editgraph.executor.cache import Cache
from editgraph.executor.events import EventLog
from editgraph.executor.objectstore import FileObjects, SharedStore, SharedStoreError, open_objects, open_shared, pack_ref
from editgraph.executor.run import Executor
from editgraph.executor.store import MISSING, DiskStore, MemoryStore
from editgraph.graph.document import load_workflow
from editgraph.graph.validate import bind
from editgraph.values.codec import encode


def latent(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_s3_round_trip_and_a_corrupt_blob_is_refused_and_removed(s3_bucket):
    import boto3

    store = open_shared(f"s3://{s3_bucket}/team/cache")
    enc = encode(latent())
    fp = enc.fingerprint()
    store.put_blob(fp, enc)
    store.put_ref("k1", {"latent": fp})
    store.flush()
    assert store.get_ref("k1") == {"latent": fp}
    assert torch.equal(store.get_blob(fp), latent())
    s3 = boto3.client("s3")
    names = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert names == [f"team/cache/blobs/{fp[:2]}/{fp}", "team/cache/refs/k1/k1"]

    # flip one byte of the stored tensor: the hash no longer matches its name
    key = f"team/cache/blobs/{fp[:2]}/{fp}"
    data = bytearray(s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    data[-1] ^= 0xFF
    s3.put_object(Bucket=s3_bucket, Key=key, Body=bytes(data))
    assert store.get_blob(fp) is MISSING
    assert store.rejected == [f"blobs/{fp[:2]}/{fp}"]
    assert "Contents" not in s3.list_objects_v2(Bucket=s3_bucket, Prefix=key)  # deleted: the next writer repairs it
    store.close()


def test_a_ref_that_is_damaged_or_copied_under_another_key_is_a_miss(tmp_path):
    store = SharedStore(FileObjects(tmp_path))
    store.put_ref("a" * 64, {"out": "f" * 64})
    store.flush()
    path = tmp_path / "refs" / "aa" / ("a" * 64)
    assert store.get_ref("a" * 64) == {"out": "f" * 64}
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    store = SharedStore(FileObjects(tmp_path))  # another process (this one remembers what it read)
    assert store.get_ref("a" * 64) is None and not path.exists()
    other = tmp_path / "refs" / "bb" / ("b" * 64)
    other.parent.mkdir(parents=True)
    other.write_bytes(pack_ref("a" * 64, {"out": "f" * 64}))  # a valid ref, but for another key
    assert store.get_ref("b" * 64) is None


def test_file_tier_writes_atomically_and_concurrent_writers_are_harmless(tmp_path):
    stores = [SharedStore(FileObjects(tmp_path)) for _ in range(4)]
    enc = encode(latent(1))
    fp = enc.fingerprint()

    def write(store):
        for _ in range(20):
            store.put_blob(fp, enc)
            store.put_ref("k", {"x": fp})
        store.flush()

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [f"blobs/{fp[:2]}/{fp}", "refs/k/k"]  # no temp files left behind
    blob = (tmp_path / "blobs" / fp[:2] / fp).read_bytes()
    assert blake3.blake3(blob).hexdigest() == fp
    assert torch.equal(stores[0].get_blob(fp), latent(1)) and stores[3].get_ref("k") == {"x": fp}


def test_bad_urls_and_unreachable_buckets_are_named(s3_server):
    with pytest.raises(SharedStoreError, match=r"unknown scheme 'gs'; use s3://BUCKET/PREFIX"):
        open_objects("gs://bucket/x")
    with pytest.raises(SharedStoreError, match=r"an S3 URL names a bucket"):
        open_objects("s3:///x")
    with pytest.raises(SharedStoreError, match=r"s3://no-such-bucket-here/p: bucket 'no-such-bucket-here' at http://127\.0\.0\.1:\d+ is not reachable"):
        open_objects("s3://no-such-bucket-here/p")


DOC = {
    "name": "shared",
    "nodes": {
        "photo": {"type": "image.load", "params": {"path": "PHOTO"}},
        "small": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": 48}},
        "warm": {"type": "grade", "inputs": {"image": "small"}, "params": {"exposure": 0.3}},
    },
}


def test_what_one_machine_computed_another_reads_from_the_shared_tier(s3_bucket, tmp_path, photo_path):
    doc = {**DOC, "nodes": {**DOC["nodes"], "photo": {"type": "image.load", "params": {"path": str(photo_path)}}}}
    url = f"s3://{s3_bucket}/c"
    machines = []
    for name in ("a", "b"):  # each with its own memory and disk tiers: only the shared one is common
        log = EventLog()
        cache = Cache(MemoryStore(1 << 28), DiskStore(tmp_path / name, 1 << 30), open_shared(url))
        machines.append((Executor(cache, listeners=[log]), log))
    (ex_a, log_a), (ex_b, log_b) = machines
    ra = ex_a.run(bind(load_workflow(doc)), targets=["warm"])
    ex_a.cache.flush()
    rb = ex_b.run(bind(load_workflow(doc)), targets=["warm"])
    assert log_a.ran() == ["photo", "small", "warm"]
    assert log_b.ran() == [] and log_b.cached() == ["photo", "small", "warm"]
    assert torch.equal(ra.value("warm"), rb.value("warm"))  # b's value came from the shared tier
    for ex, _ in machines:
        ex.cache.close()


class _SlowObjects:
    """An Objects backend whose blob PUTs take a while (a far object store): it records when each
    PUT started and ended and how many were in flight at once."""

    url = "slow://"

    def __init__(self, blob_s: float = 0.2):
        self.blob_s = blob_s
        self.objects: dict[str, bytes] = {}
        self.log: list[tuple[str, str]] = []  # ("start" | "end", name), in order
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def get(self, name):
        return self.objects.get(name)

    def put(self, name, data):
        import time

        with self._lock:
            self.log.append(("start", name))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if name.startswith("blobs/"):
            time.sleep(self.blob_s)
        with self._lock:
            self.objects[name] = data
            self.in_flight -= 1
            self.log.append(("end", name))

    def delete(self, name):
        self.objects.pop(name, None)


def test_shared_writes_go_up_side_by_side_and_a_ref_only_after_its_blobs():
    objects = _SlowObjects()
    store = SharedStore(objects)
    encs = [encode(latent(i)) for i in range(4)]
    fps = [e.fingerprint() for e in encs]
    for i, enc in enumerate(encs):  # four nodes, each a blob then its ref, as the executor writes them
        store.put_blob(fps[i], enc)
        store.put_ref(f"k{i}", {"latent": fps[i]})
    store.put_ref("both", {"a": fps[0], "b": fps[3]})
    store.flush()
    assert objects.most_in_flight > 1  # not one PUT after another
    for key, named in [(f"k{i}", [fps[i]]) for i in range(4)] + [("both", [fps[0], fps[3]])]:
        ref_start = objects.log.index(("start", f"refs/{key[:2]}/{key}"))
        for fp in named:
            assert objects.log.index(("end", f"blobs/{fp[:2]}/{fp}")) < ref_start, key
    assert {store.get_ref(f"k{i}")["latent"] for i in range(4)} == set(fps)
    assert all(torch.equal(store.get_blob(fps[i]), latent(i)) for i in range(4))
    store.close()


def test_a_run_stores_one_bundle_under_the_key_it_missed_and_another_machine_reads_it_with_one_request(s3_bucket, tmp_path, photo_path):
    from editgraph.executor.persist import ALWAYS

    doc = {**DOC, "nodes": {**DOC["nodes"], "photo": {"type": "image.load", "params": {"path": str(photo_path)}}}}
    url = f"s3://{s3_bucket}/b"
    machines = []
    for name in ("a", "b"):
        log = EventLog()
        cache = Cache(MemoryStore(1 << 28), DiskStore(tmp_path / name, 1 << 30), open_shared(url))
        machines.append((Executor(cache, listeners=[log], persistence=ALWAYS), log))
    (ex_a, log_a), (ex_b, log_b) = machines
    ra = ex_a.run(bind(load_workflow(doc)), targets=["warm"])
    # only the photo's key was asked for: small and warm are made from what this run computed
    assert ex_a.cache.shared.requests == {"GET miss": 1, "PUT": 2}
    import boto3

    s3 = boto3.client("s3")
    names = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="b/")["Contents"])
    photo_fp = ra.fingerprints[("photo", "image")]
    photo_key = ra.records["photo"].key
    # the 600x400 photo (2.9 MB) is an object of its own; the rest rides in one bundle under the photo's key
    assert names == [f"b/blobs/{photo_fp[:2]}/{photo_fp}", f"b/refs/{photo_key[:2]}/{photo_key}"]
    from editgraph.executor.objectstore import unpack_bundle

    refs, blobs = unpack_bundle(photo_key, s3.get_object(Bucket=s3_bucket, Key=names[1])["Body"].read())
    assert refs == {rec.key: {out: fp for (n, out), fp in ra.fingerprints.items() if n == nid} for nid, rec in ra.records.items()}
    assert len(refs) == 3
    # every blob up to 1 MiB inline: the photo's alpha (600x400 floats), the small copy and its grade
    assert sorted(blobs) == sorted(fp for fp in ra.fingerprints.values() if fp != photo_fp) and len(blobs) == 3

    rb = ex_b.run(bind(load_workflow(doc)), targets=["warm"])
    assert log_b.ran() == [] and log_b.cached() == ["photo", "small", "warm"]
    assert torch.equal(ra.value("warm"), rb.value("warm"))  # the inline blob, verified
    assert ex_b.cache.shared.requests == {"GET hit": 1}  # the bundle answered every lookup and the load
    for ex, _ in machines:
        ex.cache.close()


def test_a_long_run_sends_its_bundle_so_far_and_the_last_one_lands_last(monkeypatch):
    from editgraph.executor import objectstore

    monkeypatch.setattr(objectstore, "CHECKPOINT_S", 0.0)  # every stored ref is "long enough"
    objects = _SlowObjects(blob_s=0.0)
    store = SharedStore(objects)
    assert store.get_ref("e1") is None  # a miss: the run's entry key
    encs = [encode(latent(i)) for i in range(2)]
    fps = [e.fingerprint() for e in encs]
    store.put_blob(fps[0], encs[0])
    store.put_ref("e1", {"latent": fps[0]})
    store.put_blob(fps[1], encs[1])
    store.put_ref("k2", {"latent": fps[1]})
    store.flush()
    puts = [name for what, name in objects.log if what == "start"]
    assert puts == ["refs/e1/e1"] * 3  # two checkpoints and the final bundle; nothing else
    ends = [i for i, (what, _) in enumerate(objects.log) if what == "end"]
    starts = [i for i, (what, _) in enumerate(objects.log) if what == "start"]
    assert all(e < s for e, s in zip(ends, starts[1:]))  # one after another: the newest is what stays
    refs, blobs = objectstore.unpack_bundle("e1", objects.objects["refs/e1/e1"])
    assert refs == {"e1": {"latent": fps[0]}, "k2": {"latent": fps[1]}} and sorted(blobs) == sorted(fps)
    other = SharedStore(objects)  # another process: k2 answered from e1's bundle, no request of its own
    assert other.get_ref("e1") == {"latent": fps[0]} and other.get_ref("k2") == {"latent": fps[1]}
    assert torch.equal(other.get_blob(fps[1]), latent(1)) and other.requests == {"GET hit": 1}
    store.close()


def test_the_shared_tier_prices_a_transfer_not_a_disk_write():
    from editgraph.executor.persist import ALWAYS, DEFAULT

    photo = 600 * 400 * 3 * 4
    # a paste-back of a 600x400 photo (21 ms) keeps its disk entry but stays off the network
    assert DEFAULT.why_not("measured", 0.021, photo) is None
    assert "to the shared tier and back" in DEFAULT.why_not_shared("measured", 0.021, photo)
    assert DEFAULT.why_not_shared("measured", 0.2, photo) is None  # a 200 ms node: worth sending
    assert DEFAULT.why_not_shared("measured", 0.02, 460_000) is None  # inline in the bundle: no request of its own
    assert DEFAULT.why_not_shared("expensive", 0.0, 50 << 20) is None and ALWAYS.why_not_shared("measured", 0.0, 50 << 20) is None
