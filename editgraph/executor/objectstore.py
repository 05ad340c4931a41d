"""The shared cache tier: the same two maps as the local tiers (refs: key -> fingerprints, blobs:
fingerprint -> encoded value), kept as objects that every worker of a cluster reads and writes.

Two places hold them, behind one small `Objects` interface (get / put / delete of whole objects):

    s3://bucket/prefix      an S3-compatible object store, through boto3 (endpoint from
                            EDITGRAPH_S3_ENDPOINT, else AWS_ENDPOINT_URL, else AWS itself)
    /a/path, file:///a/path a folder on a filesystem every worker mounts (NFS, a shared disk)

Layout under the prefix:  blobs/<fp[:2]>/<fp>   refs/<key[:2]>/<key>
A ref object may be a bundle: the refs a run stored (its own key's among them) and its small
blobs inline, so that a batch row costs one GET and one PUT, not one per node (SharedStore).

Why it is safe to share:
- Reads verify. A blob's name is the blake3 of its bytes (inline ones too); a ref object starts
  with the blake3 of the rest. A torn, altered or truncated object is deleted and reported as a miss, so the node
  that made it runs again and writes it anew: a corrupt object is recomputed, never served.
- Writes are atomic. An S3 PUT replaces a whole object or nothing; on a filesystem the bytes go to
  a temporary name that is then renamed. No reader sees half an object.
- Concurrent writers of the same key are harmless: blobs are content-addressed (both write the
  same bytes), and a ref under one key names the same fingerprints whoever computed it (keys are
  content hashes; a node that is not deterministic is never stored); two bundles under one key
  hold refs that agree, and each holds that key's.

Writes go to a few background threads per store, so a node's caller does not wait for the
network and a run's objects go up side by side rather than one round trip after another
(an object store's latency, not its bandwidth, bounds small objects: the row's end waited for
each of its last PUTs in turn). A ref's (or bundle's) PUT starts only once the PUTs of the blobs
it names have ended, so a ref is never visible before its blobs. `flush()` waits for them all: the executor
flushes when a run ends or fails, so a finished row is in the shared tier when it reports.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, OrderedDict
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
INLINE_MAX = 1 << 20  # blobs up to this size go inside their run's bundle, not in an object each
CHECKPOINT_S = 5.0  # a run that stores for longer sends its bundle so far every this often
KNOWN_REFS = 100_000  # refs read from bundles, kept to answer lookups without a request
KNOWN_BYTES = 64 << 20  # inline blobs read from bundles, kept (the oldest go first) to serve the loads that follow


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
        options: dict[str, Any] = {"retries": {"max_attempts": 5, "mode": "standard"}, "max_pool_connections": 8}
        # Every object is verified against its blake3 on read (SharedStore): a CRC of each body on
        # the way up and again on the way down (botocore's default since 1.36) is work done twice.
        checksums = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
        try:
            config = Config(**options, **checksums)
        except TypeError:  # a botocore from before those options: it computes no such checksums anyway
            config = Config(**options)
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
    """A ref object holding one ref: blake3(body) + body, the body naming its own key (a ref
    copied under another key is refused too)."""
    return pack_bundle({key: fps}, {})


def pack_bundle(refs: dict[str, dict[str, str]], blobs: dict[str, bytes]) -> bytes:
    """A ref object holding a run's refs and its small blobs: blake3(body) + body. Stored under
    each key the run looked up and missed; it names every key it answers for."""
    body = msgpack.packb({"refs": refs, "blobs": blobs}, use_bin_type=True)
    return blake3.blake3(body).digest() + body


def unpack_bundle(key: str, data: bytes) -> tuple[dict[str, dict[str, str]], dict[str, bytes]] | None:
    """(refs, blobs) of a ref object read under `key`, or None: torn, altered, not ours, or not
    naming `key` (a copy under another key). Objects of one ref ({"key", "fps"}) read as well."""
    body = data[_DIGEST:]
    if len(data) <= _DIGEST or blake3.blake3(body).digest() != data[:_DIGEST]:
        return None
    try:
        doc = msgpack.unpackb(body, raw=False)
    except Exception:
        return None
    if not isinstance(doc, dict):
        return None
    if "key" in doc:  # one ref, as this tier wrote them before bundles
        refs, blobs = {doc["key"]: doc.get("fps")}, {}
    else:
        refs, blobs = doc.get("refs"), doc.get("blobs", {})
    if not isinstance(refs, dict) or not isinstance(blobs, dict) or not isinstance(refs.get(key), dict):
        return None
    if not all(isinstance(f, dict) for f in refs.values()) or not all(isinstance(b, bytes) for b in blobs.values()):
        return None
    return refs, blobs


def unpack_ref(key: str, data: bytes) -> dict[str, str] | None:
    """The fingerprints a ref object gives for `key`, or None (see unpack_bundle)."""
    got = unpack_bundle(key, data)
    return None if got is None else got[0][key]


class SharedStore:
    """The Store protocol over an Objects backend: verified reads, writes in the background (a
    ref after the blobs it names), a run's writes gathered into one object where they can be.

    Bundles: every request costs the worker (and the object store) a few ms of CPU whatever its
    size, and a batch row computed ~5 nodes: 5 lookups that missed and 10 PUTs per row. So a key
    the executor looks up here and misses is an *entry*: its node runs, and so, in a row, do the
    nodes downstream of it, which do not ask this tier at all (executor/run.py: a key made from a
    value this run computed is one only a process that computed the same value could have
    stored). What the run then stores is held back, and at flush() goes up as ONE object under
    each entry key: every ref stored since, with every blob up to INLINE_MAX inline. A later run
    of the same graph asks for the entry key first, gets the whole bundle, and answers the
    lookups and small loads that follow from it. Larger blobs still go up at once, each an
    object of its own, and a bundle is written only after the blobs it names. A run that stores
    without having missed (direct use, a recomputed value) writes each ref and blob as before.

    A run that takes long sends its bundle so far every CHECKPOINT_S (the final one replaces it),
    so a worker killed late in a long row leaves most of its work in the shared tier."""

    def __init__(self, objects: Objects):
        self.objects = objects
        self.url = objects.url
        self.rejected: list[str] = []  # objects that failed verification (deleted, recomputed)
        self.errors: list[str] = []  # reads and writes that failed: misses to the cache; the run goes on
        self.requests: Counter[str] = Counter()  # GET hit / GET miss / PUT / DELETE: what the bench reports
        self._pool: ThreadPoolExecutor | None = None
        self._writes: list[Future] = []  # not yet known to be done; flush() waits for them
        self._blob_writes: dict[str, Future] = {}  # fp -> its PUT, while in flight: refs naming it wait
        self._lock = threading.Lock()
        # the bundle being gathered
        self._entries: list[str] = []  # keys looked up here and missed since the last flush
        self._refs: dict[str, dict[str, str]] = {}  # held back for the bundle
        self._inline: dict[str, bytes] = {}
        self._since = 0.0  # when the first held-back write came
        self._bundles: dict[str, Future] = {}  # entry key -> its last bundle's PUT: a newer one waits for it
        # what this tier is known to hold: read from bundles, so later lookups and loads need no request
        self._known_refs: dict[str, tuple[dict[str, str], str]] = {}  # key -> (fps, the object they came in)
        self._known_blobs: OrderedDict[str, tuple[bytes, str]] = OrderedDict()  # fp -> (bytes, the object they came in)
        self._known_bytes = 0

    # --- reads: verify, or it is a miss ---------------------------------------------------------

    def get_ref(self, key: str) -> dict[str, str] | None:
        known = self._known_refs.get(key)
        if known is not None:
            return known[0]
        name = _ref_name(key)
        data = self._get(name)
        got = None if data is None else unpack_bundle(key, data)
        if got is None:
            if data is not None:
                self._reject(name)
            with self._lock:
                if not self._entries:
                    self._since = time.monotonic()
                self._entries.append(key)
            return None
        refs, blobs = got
        self._learn(name, refs, blobs)
        return refs[key]

    def _learn(self, name: str, refs: dict[str, dict[str, str]], blobs: dict[str, bytes]) -> None:
        with self._lock:
            if len(self._known_refs) + len(refs) > KNOWN_REFS:
                self._known_refs.clear()
            self._known_refs.update((key, (fps, name)) for key, fps in refs.items())
            for fp, data in blobs.items():
                if fp not in self._known_blobs:
                    self._known_blobs[fp] = (data, name)
                    self._known_bytes += len(data)
            while self._known_bytes > KNOWN_BYTES and self._known_blobs:
                _, (old, _) = self._known_blobs.popitem(last=False)
                self._known_bytes -= len(old)

    def get_blob(self, fp: str) -> Any:
        with self._lock:
            known = self._known_blobs.get(fp)
        if known is not None:
            data, name = known
        else:
            name = _blob_name(fp)
            data = self._get(name)
        if data is None:
            return MISSING
        if blake3.blake3(data).hexdigest() != fp:
            self._reject(name)
            return MISSING
        try:
            return decode(data)
        except CorruptEntry:  # hashes right but is no value of ours: refuse it all the same
            self._reject(name)
            return MISSING

    def _get(self, name: str) -> bytes | None:
        try:
            data = self.objects.get(name)
        except Exception as exc:  # an unreachable store is a miss, never a failed node
            self.errors.append(f"read {name}: {type(exc).__name__}: {exc}")
            return None
        with self._lock:
            self.requests["GET hit" if data is not None else "GET miss"] += 1
        return data

    def _reject(self, name: str) -> None:
        self.rejected.append(name)
        with self._lock:  # what it brought is gone from the store: not to be served, nor assumed stored
            for fp in [fp for fp, (_, came) in self._known_blobs.items() if came == name]:
                self._known_bytes -= len(self._known_blobs.pop(fp)[0])
            for key in [key for key, (_, came) in self._known_refs.items() if came == name]:
                del self._known_refs[key]
            self.requests["DELETE"] += 1
        try:
            self.objects.delete(name)  # the recomputed value is written in its place
        except Exception:
            pass

    # --- writes: in the background, a ref after its blobs -----------------------------------------

    def put_blob(self, fp: str, encoded: Encoded) -> None:
        with self._lock:
            if fp in self._known_blobs or fp in self._inline:
                return  # it is there: it came in a bundle
            if self._entries and encoded.nbytes <= INLINE_MAX:
                if not self._refs and not self._inline:
                    self._since = time.monotonic()
                self._inline[fp] = encoded.tobytes()
                return
        self._put_blob_object(fp, encoded.tobytes())

    def _put_blob_object(self, fp: str, data: bytes) -> None:
        future = self._submit(self._put, _blob_name(fp), data)
        with self._lock:
            self._blob_writes[fp] = future
        future.add_done_callback(lambda done, fp=fp: self._blob_written(fp, done))

    def put_ref(self, key: str, fps: dict[str, str]) -> None:
        with self._lock:
            known = self._known_refs.get(key)
            if known is not None and known[0] == fps:
                return  # read from this tier: a value recomputed here stores the same ref again
            if self._entries:
                self._refs[key] = fps
                checkpoint = time.monotonic() - self._since >= CHECKPOINT_S
            else:
                checkpoint = None
        if checkpoint is None:
            self._put_ref_object(key, fps)
        elif checkpoint:
            self._send(final=False)

    def _put_ref_object(self, key: str, fps: dict[str, str]) -> None:
        """A ref as an object of its own, sent once the blobs it names are up."""
        self._submit(self._put_after, self._blobs_named(fps), _ref_name(key), pack_ref(key, fps))

    def _blobs_named(self, fps: dict[str, str]) -> list[Future]:
        with self._lock:
            return [f for f in (self._blob_writes.get(fp) for fp in fps.values()) if f is not None]

    def _send(self, final: bool = True) -> None:
        """Write the bundle gathered so far under each entry key it holds the ref of (final: and
        start a new one). Held-back refs and blobs that no entry covers go up one by one."""
        with self._lock:
            refs, inline = dict(self._refs), dict(self._inline)
            entries = [k for k in dict.fromkeys(self._entries) if k in refs]
            if final:
                self._refs, self._inline, self._entries = {}, {}, []
            self._since = time.monotonic()
        if not entries:
            if not final:
                return
            for fp, data in inline.items():
                self._put_blob_object(fp, data)
            for key, fps in refs.items():
                self._put_ref_object(key, fps)
            return
        data = pack_bundle(refs, inline)
        blobs = [f for fps in refs.values() for f in self._blobs_named(fps)]
        for key in entries:
            with self._lock:
                before = self._bundles.get(key)
            future = self._submit(self._put_after, blobs + ([before] if before is not None else []), _ref_name(key), data)
            with self._lock:
                self._bundles[key] = future
            future.add_done_callback(lambda done, key=key: self._bundle_written(key, done))

    def _blob_written(self, fp: str, done: Future) -> None:
        with self._lock:
            if self._blob_writes.get(fp) is done:
                del self._blob_writes[fp]

    def _bundle_written(self, key: str, done: Future) -> None:
        with self._lock:
            if self._bundles.get(key) is done:
                del self._bundles[key]

    def _submit(self, fn, *args) -> Future:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="editgraph-shared-writer")
            future = self._pool.submit(fn, *args)
            self._writes.append(future)
        return future

    def _put(self, name: str, data: bytes) -> None:
        with self._lock:
            self.requests["PUT"] += 1
        try:
            self.objects.put(name, data)
        except Exception as exc:
            self.errors.append(f"write {name}: {type(exc).__name__}: {exc}")

    def _put_after(self, before: list[Future], name: str, data: bytes) -> None:
        # The pool starts tasks in the order they were submitted, and what a write waits for (the
        # blobs a ref names, an earlier bundle under the same key) was submitted before it: those
        # are running or done by now, never queued behind us.
        wait(before)
        self._put(name, data)

    def flush(self) -> None:
        """Send the bundle gathered so far; return once every write so far has reached the store
        (or failed and been recorded)."""
        self._send()
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
