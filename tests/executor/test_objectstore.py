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
