"""Memory tier in front of disk tier, and optionally a shared tier behind both (a cluster's object
store, see objectstore.py), behind one small interface the executor uses.

Reads go memory -> disk -> shared; what a lower tier has is promoted to the memory tier. Writes go
to every tier. The shared tier only ever sees encodable values: a loaded model stays in memory.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from editgraph.values.codec import Encoded
from editgraph.executor.store import MISSING, DiskStore, MemoryStore
from editgraph.executor.objectstore import Store, open_shared
from editgraph.settings import Settings, parse_size

DEFAULT_MEMORY = "2G"  # holds a few dozen 1024 px images or SD latents; the rest comes from disk
DEFAULT_DISK = "20G"  # room for a working week of latents at 512-1024 px
REF_BATCH_S = 0.05  # entries of nodes quicker than this go to the disk tier's queue in batches ...
REF_BATCH = 64  # ... of this many


def default_disk(root: str | Path | None = None, settings: Settings | None = None) -> DiskStore:
    """The disk tier at `root`, else the settings' cache_dir, sized by their cache_size."""
    settings = settings or Settings.from_env()
    return DiskStore(Path(root) if root else settings.cache_dir, settings.cache_size)


class Cache:
    def __init__(self, memory: MemoryStore | None = None, disk: DiskStore | None = None, shared: Store | None = None):
        self.memory = memory or MemoryStore(parse_size(DEFAULT_MEMORY))
        self.disk = disk
        self.shared = shared
        self._refs: deque[tuple[str, dict[str, str]]] = deque()  # entries not handed to the disk tier yet (store_ref)

    @classmethod
    def default(cls, root: str | Path | None = None, settings: Settings | None = None) -> "Cache":
        """Memory + disk, sized by the settings (EDITGRAPH_MEMORY_CACHE / EDITGRAPH_CACHE_SIZE),
        rooted at `root`, else the settings' cache_dir; and the shared tier when the settings name
        one (EDITGRAPH_SHARED_CACHE, --cache)."""
        settings = settings or Settings.from_env()
        shared = open_shared(settings.shared_cache, settings) if settings.shared_cache else None
        return cls(MemoryStore(settings.memory_cache), default_disk(root, settings), shared)

    def lookup(self, key: str, shared: bool = True) -> dict[str, str] | None:
        """The fingerprints stored under key, or None. shared=False asks the local tiers only (the
        executor's choice for a key made from a value this run computed: see run.py)."""
        fps = self.memory.get_ref(key)
        if fps is None and self.disk is not None:
            fps = self.disk.get_ref(key)
            if fps is not None:
                self.memory.put_ref(key, fps)
        if fps is None and shared and self.shared is not None:
            fps = self.shared.get_ref(key)
            if fps is not None:
                self.memory.put_ref(key, fps)
        return fps

    def prefetch(self, keys: list[str]) -> set[str]:
        """Ask the disk tier in one query for the keys the memory tier lacks (a layer of a wide
        graph, whose keys are known at once), and bring what it has into the memory tier. Returns
        the keys neither local tier holds: the caller skips their lookups (a cold run's every key)
        unless it would ask the shared tier. A key another node of the group stores meanwhile is
        in the memory tier, which the caller asks first."""
        refs = self.memory.refs
        ask = [key for key in keys if key not in refs]
        if self.disk is None or not ask:
            return set(ask)
        found = self.disk.get_refs(ask)
        if found is None:  # the index failed (and was reopened empty): the lookups ask again
            return set()
        refs.update(found)
        return set(ask).difference(found)

    def load(self, fp: str) -> Any:
        value = self.memory.get_blob(fp)
        if value is MISSING and self.disk is not None:
            value = self.disk.get_blob(fp)
            if value is not MISSING:
                self.memory.put_blob(fp, value)
        if value is MISSING and self.shared is not None:
            value = self.shared.get_blob(fp)
            if value is not MISSING:
                self.memory.put_blob(fp, value)
        return value

    def store_blob(self, fp: str, value: Any, encoded: Encoded | None, shared: bool = True) -> None:
        """encoded None: memory only; shared=False: not to the shared tier (too big to be worth
        its transfer, persist.py)."""
        self.memory.put_blob(fp, value)
        if self.disk is not None and encoded is not None:
            self.disk.put_blob(fp, encoded)
        if shared and self.shared is not None and encoded is not None:
            self.shared.put_blob(fp, encoded)

    def store_ref(self, key: str, fps: dict[str, str], seconds: float = float("inf")) -> None:
        """`seconds`: what making the entry took. Entries made in less than REF_BATCH_S reach the
        disk tier's queue in batches of REF_BATCH (a cold run of cheap nodes makes one per node;
        queueing each alone was a tenth of what the disk tier cost such a run), with the next
        slower entry, or at the flush; a slower entry is queued at once, so a crash can lose the
        entries of at most REF_BATCH quick nodes. The memory tier, which lookups ask first, has
        every entry at once."""
        self.memory.refs[key] = fps  # MemoryStore.put_ref, inline: once per node
        if self.disk is not None:
            refs = self._refs
            refs.append((key, fps))  # a deque: appends and the hand-over's pops are atomic (batch rows run in threads)
            if seconds >= REF_BATCH_S or len(refs) >= REF_BATCH:
                self._hand_refs()
        if self.shared is not None:
            self.shared.put_ref(key, fps)

    def _hand_refs(self) -> None:
        refs = self._refs
        batch = [refs.popleft() for _ in range(len(refs))]
        if batch:
            self.disk.put_refs(batch)

    def flush(self) -> None:
        if self.disk is not None:
            self._hand_refs()
            self.disk.flush()
        if self.shared is not None:
            self.shared.flush()

    def close(self) -> None:
        if self.disk is not None:
            self._hand_refs()
            self.disk.close()
        if self.shared is not None:
            self.shared.close()
