"""The shared tier when its backend misbehaves: a store that is down, objects that are damaged or
not ours. Each is a miss the run survives, recorded in `errors` or `rejected`; nothing raises."""

from __future__ import annotations

import blake3
import msgpack
import pytest

from editgraph.executor.objectstore import FileObjects, SharedStore, SharedStoreError, open_objects, pack_ref, unpack_ref
from editgraph.executor.store import MISSING
from editgraph.values.codec import encode


class DownObjects:
    """An Objects backend whose every call fails, as an unreachable bucket does."""

    url = "down://"

    def get(self, name):
        raise ConnectionError("store unreachable")

    def put(self, name, data):
        raise ConnectionError("store unreachable")

    def delete(self, name):
        raise ConnectionError("store unreachable")


class GarbageObjects(DownObjects):
    """Answers every read with bytes that are not what was asked for; deletes fail."""

    def get(self, name):
        return b"not what was stored"


def test_plain_paths_and_file_urls_name_a_folder_and_a_file_in_the_way_is_named(tmp_path):
    plain, url = open_objects(str(tmp_path / "a")), open_objects(f"file://{tmp_path / 'b'}")
    assert isinstance(plain, FileObjects) and plain.root == tmp_path / "a" and (tmp_path / "a").is_dir()
    assert isinstance(url, FileObjects) and url.root == tmp_path / "b"
    assert plain.get("blobs/00/nothing") is None  # a missing object is a miss
    (tmp_path / "file").write_text("x")
    with pytest.raises(SharedStoreError, match=f"shared cache {tmp_path / 'file' / 'cache'}: cannot create the folder"):
        FileObjects(tmp_path / "file" / "cache")


def test_an_unreachable_store_is_a_miss_and_its_errors_are_recorded():
    enc = encode(b"some bytes")
    fp = enc.fingerprint()
    name = f"blobs/{fp[:2]}/{fp}"
    reader = SharedStore(DownObjects())
    assert reader.get_blob(fp) is MISSING and reader.get_ref("k") is None
    reader.close()
    assert reader.errors[:2] == [f"read {name}: ConnectionError: store unreachable", "read refs/k/k: ConnectionError: store unreachable"]
    writer = SharedStore(DownObjects())  # nothing read first: a blob object, then the ref naming it
    writer.put_blob(fp, enc)
    writer.put_ref("k", {"out": fp})
    writer.close()
    assert writer.errors == [f"write {name}: ConnectionError: store unreachable", "write refs/k/k: ConnectionError: store unreachable"]
    assert reader.rejected == writer.rejected == []


def test_damaged_objects_are_rejected_even_when_they_cannot_be_deleted():
    store = SharedStore(GarbageObjects())
    fp = encode(b"x").fingerprint()
    assert store.get_blob(fp) is MISSING and store.get_ref("k") is None
    assert store.rejected == [f"blobs/{fp[:2]}/{fp}", "refs/k/k"] and store.errors == []


def test_a_blob_that_hashes_right_but_is_no_value_of_ours_is_rejected_and_removed(tmp_path):
    objects = FileObjects(tmp_path)
    data = b"hashes right, decodes to nothing"
    fp = blake3.blake3(data).hexdigest()
    objects.put(f"blobs/{fp[:2]}/{fp}", data)
    store = SharedStore(objects)
    assert store.get_blob(fp) is MISSING and store.rejected == [f"blobs/{fp[:2]}/{fp}"]
    assert objects.get(f"blobs/{fp[:2]}/{fp}") is None  # removed: the recomputed value goes in its place


def test_refs_are_read_only_when_whole_signed_and_for_their_own_key():
    assert unpack_ref("k", pack_ref("k", {"out": "ab12"})) == {"out": "ab12"}
    assert unpack_ref("k", pack_ref("other", {"out": "ab12"})) is None  # copied under another key
    assert unpack_ref("k", pack_ref("k", {"out": "ab12"})[:20]) is None  # truncated
    not_msgpack = b"\xc1"  # a byte msgpack never uses
    assert unpack_ref("k", blake3.blake3(not_msgpack).digest() + not_msgpack) is None
    not_a_map = msgpack.packb([1, 2])
    assert unpack_ref("k", blake3.blake3(not_a_map).digest() + not_a_map) is None
