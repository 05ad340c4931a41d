"""The shared cache tier: the same two maps as the local tiers (refs: key -> fingerprints, blobs:
fingerprint -> encoded value), kept as objects that every worker of a cluster reads and writes.

Two places hold them, behind one small `Objects` interface (get / put / delete of whole objects):

    s3://bucket/prefix      an S3-compatible object store, through boto3 (endpoint from
                            EDITGRAPH_S3_ENDPOINT, else AWS_ENDPOINT_URL, else AWS itself)
    /a/path, file:///a/path a folder on a filesystem every worker mounts (NFS, a shared disk)

Layout under the prefix:  blobs/<fp[:2]>/<fp>   refs/<key[:2]>/<key>

Why it is safe to share:
- Reads verify. A blob's name is the blake3 of its bytes; a ref object starts with the blake3 of
  the rest. A torn, altered or truncated object is deleted and reported as a miss, so the node
  that made it runs again and writes it anew: a corrupt object is recomputed, never served.
- Writes are atomic. An S3 PUT replaces a whole object or nothing; on a filesystem the bytes go to
  a temporary name that is then renamed. No reader sees half an object.
- Concurrent writers of the same key are harmless: blobs are content-addressed (both write the
  same bytes), and a ref under one key names the same fingerprints whoever computed it (keys are
  content hashes; a node that is not deterministic is never stored).

Writes go to a few background threads per store, so a node's caller does not wait for the
network and a row's last objects go up side by side rather than one round trip after another
(an object store's latency, not its bandwidth, bounds small objects: the row's end waited for
each of its last PUTs in turn). A ref's PUT starts only once the PUTs of the blobs it names have
ended, so a ref is never visible before its blobs. `flush()` waits for them all: the executor
flushes when a run ends or fails, so a finished row is in the shared tier when it reports.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import blake3
import msgpack

from editgraph.atomic import write_atomic
from editgraph.errors import EditgraphError
from editgraph.executor.store import MISSING
from editgraph.settings import Settings
from editgraph.values.codec import CorruptEntry, Encoded, decode

_DIGEST = 32  # bytes of blake3 at the head of a ref object
WRITERS = 4  # PUTs in flight at once per store (boto3's pool holds 8 connections)


class Store(Protocol):
    """What a cache tier behind the memory tier offers (DiskStore and SharedStore both do)."""

    def get_ref(self, key: str) -> dict[str, str] | None: ...
    def put_ref(self, key: str, fps: dict[str, str]) -> None: ...
    def get_blob(self, fp: str) -> Any: ...  # the value, or MISSING
    def put_blob(self, fp: str, encoded: Encoded) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class Objects(Protocol):
    """Whole-object storage: the only thing a backend must do."""

    url: str

    def get(self, name: str) -> bytes | None: ...  # None: no such object
    def put(self, name: str, data: bytes) -> None: ...  # atomic: all of data or nothing
    def delete(self, name: str) -> None: ...


class SharedStoreError(EditgraphError):
    """The shared tier cannot be opened (bad URL, unreachable bucket, missing boto3)."""


# --- backends -----------------------------------------------------------------------------------


class FileObjects:
    """Objects as files under a folder on a shared filesystem; written to a temp name, renamed."""

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SharedStoreError(f"shared cache {root}: cannot create the folder ({exc.strerror or exc})") from None

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> None:
        write_atomic(self.root / name, data)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class S3Objects:
    """Objects in an S3 bucket under a prefix, through boto3. A PUT is atomic per object."""

    def __init__(self, bucket: str, prefix: str, endpoint: str | None):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise SharedStoreError("an s3:// cache needs boto3: pip install 'editgraph[s3]' (or 'editgraph[ray]')") from None
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        # Retries in "standard" mode ride out a throttled or briefly unreachable endpoint.
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=8)
        self.client = boto3.client("s3", endpoint_url=endpoint, config=config)
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)
        try:
            self.client.head_bucket(Bucket=bucket)
        except self._errors as exc:
            where = f" at {endpoint}" if endpoint else ""
            raise SharedStoreError(f"shared cache {self.url}: bucket {bucket!r}{where} is not reachable: {exc}") from None

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def get(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except self._errors as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_objects(url: str, settings: Settings | None = None) -> Objects:
    """The backend a --cache URL names: s3://bucket/prefix, file:///path or a plain path."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise SharedStoreError(f"--cache {url!r}: an S3 URL names a bucket: s3://BUCKET/PREFIX")
        settings = settings or Settings.from_env()
        return S3Objects(parsed.netloc, parsed.path, settings.s3_endpoint)
    if parsed.scheme == "file":
        return FileObjects(Path(parsed.path))
    if parsed.scheme in ("", None) or (len(parsed.scheme) == 1 and os.name == "nt"):
        return FileObjects(Path(url).expanduser().resolve())
    raise SharedStoreError(f"--cache {url!r}: unknown scheme {parsed.scheme!r}; use s3://BUCKET/PREFIX, file:///PATH or a path")


# --- the store ----------------------------------------------------------------------------------


def _blob_name(fp: str) -> str:
    return f"blobs/{fp[:2]}/{fp}"


def _ref_name(key: str) -> str:
    return f"refs/{key[:2]}/{key}"


def pack_ref(key: str, fps: dict[str, str]) -> bytes:
    """A ref object: blake3(body) + body, the body naming its own key (a ref copied under another
    key is refused too)."""
    body = msgpack.packb({"key": key, "fps": fps}, use_bin_type=True)
    return blake3.blake3(body).digest() + body


def unpack_ref(key: str, data: bytes) -> dict[str, str] | None:
    body = data[_DIGEST:]
    if len(data) <= _DIGEST or blake3.blake3(body).digest() != data[:_DIGEST]:
        return None
    try:
        doc = msgpack.unpackb(body, raw=False)
    except Exception:
        return None
    if not isinstance(doc, dict) or doc.get("key") != key or not isinstance(doc.get("fps"), dict):
        return None
    return doc["fps"]


class SharedStore:
    """The Store protocol over an Objects backend: verified reads, background writes (a ref after
    the blobs it names)."""

    def __init__(self, objects: Objects):
        self.objects = objects
        self.url = objects.url
        self.rejected: list[str] = []  # objects that failed verification (deleted, recomputed)
        self.errors: list[str] = []  # reads and writes that failed: misses to the cache; the run goes on
        self._pool: ThreadPoolExecutor | None = None
        self._writes: list[Future] = []  # not yet known to be done; flush() waits for them
        self._blob_writes: dict[str, Future] = {}  # fp -> its PUT, while in flight: refs naming it wait
        self._lock = threading.Lock()

    # --- reads: verify, or it is a miss ---------------------------------------------------------

    def get_ref(self, key: str) -> dict[str, str] | None:
        data = self._get(_ref_name(key))
        if data is None:
            return None
        fps = unpack_ref(key, data)
        if fps is None:
            self._reject(_ref_name(key))
        return fps

    def get_blob(self, fp: str) -> Any:
        data = self._get(_blob_name(fp))
        if data is None:
            return MISSING
        if blake3.blake3(data).hexdigest() != fp:
            self._reject(_blob_name(fp))
            return MISSING
        try:
            return decode(data)
        except CorruptEntry:  # hashes right but is no value of ours: refuse it all the same
            self._reject(_blob_name(fp))
            return MISSING

    def _get(self, name: str) -> bytes | None:
        try:
            return self.objects.get(name)
        except Exception as exc:  # an unreachable store is a miss, never a failed node
            self.errors.append(f"read {name}: {type(exc).__name__}: {exc}")
            return None

    def _reject(self, name: str) -> None:
        self.rejected.append(name)
        try:
            self.objects.delete(name)  # the recomputed value is written in its place
        except Exception:
            pass

    # --- writes: in the background, a ref after its blobs -----------------------------------------

    def put_blob(self, fp: str, encoded: Encoded) -> None:
        future = self._submit(self._put, _blob_name(fp), encoded.tobytes())
        with self._lock:
            self._blob_writes[fp] = future
        future.add_done_callback(lambda done, fp=fp: self._blob_written(fp, done))

    def put_ref(self, key: str, fps: dict[str, str]) -> None:
        with self._lock:
            blobs = [f for f in (self._blob_writes.get(fp) for fp in fps.values()) if f is not None]
        self._submit(self._put_after, blobs, _ref_name(key), pack_ref(key, fps))

    def _blob_written(self, fp: str, done: Future) -> None:
        with self._lock:
            if self._blob_writes.get(fp) is done:
                del self._blob_writes[fp]

    def _submit(self, fn, *args) -> Future:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="editgraph-shared-writer")
            future = self._pool.submit(fn, *args)
            self._writes.append(future)
        return future

    def _put(self, name: str, data: bytes) -> None:
        try:
            self.objects.put(name, data)
        except Exception as exc:
            self.errors.append(f"write {name}: {type(exc).__name__}: {exc}")

    def _put_after(self, blobs: list[Future], name: str, data: bytes) -> None:
        # The pool starts tasks in the order they were submitted, and a blob's PUT is submitted
        # before any ref naming it: those PUTs are running or done by now, never queued behind us.
        wait(blobs)
        self._put(name, data)

    def flush(self) -> None:
        """Return once every write so far has reached the store (or failed and been recorded)."""
        with self._lock:
            self._writes = pending = [f for f in self._writes if not f.done()]
        wait(pending)

    def close(self) -> None:
        self.flush()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def open_shared(url: str, settings: Settings | None = None) -> SharedStore:
    return SharedStore(open_objects(url, settings))
