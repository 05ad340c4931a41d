"""Memory tier in front of disk tier, behind one small interface the executor uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editgraph.values.codec import Encoded
from editgraph.executor.store import MISSING, DiskStore, MemoryStore
from editgraph.settings import Settings, parse_size

DEFAULT_MEMORY = "2G"  # holds a few dozen 1024 px images or SD latents; the rest comes from disk
DEFAULT_DISK = "20G"  # room for a working week of latents at 512-1024 px


def default_disk(root: str | Path | None = None, settings: Settings | None = None) -> DiskStore:
    """The disk tier at `root`, else the settings' cache_dir, sized by their cache_size."""
    settings = settings or Settings.from_env()
    return DiskStore(Path(root) if root else settings.cache_dir, settings.cache_size)


class Cache:
    def __init__(self, memory: MemoryStore | None = None, disk: DiskStore | None = None):
        self.memory = memory or MemoryStore(parse_size(DEFAULT_MEMORY))
        self.disk = disk

    @classmethod
    def default(cls, root: str | Path | None = None, settings: Settings | None = None) -> "Cache":
        """Memory + disk, sized by the settings (EDITGRAPH_MEMORY_CACHE / EDITGRAPH_CACHE_SIZE),
        rooted at `root`, else the settings' cache_dir."""
        settings = settings or Settings.from_env()
        return cls(MemoryStore(settings.memory_cache), default_disk(root, settings))

    def lookup(self, key: str) -> dict[str, str] | None:
        fps = self.memory.get_ref(key)
        if fps is None and self.disk is not None:
            fps = self.disk.get_ref(key)
            if fps is not None:
                self.memory.put_ref(key, fps)
        return fps

    def load(self, fp: str) -> Any:
        value = self.memory.get_blob(fp)
        if value is MISSING and self.disk is not None:
            value = self.disk.get_blob(fp)
            if value is not MISSING:
                self.memory.put_blob(fp, value)
        return value

    def store_blob(self, fp: str, value: Any, encoded: Encoded | None) -> None:
        self.memory.put_blob(fp, value)
        if self.disk is not None and encoded is not None:
            self.disk.put_blob(fp, encoded)

    def store_ref(self, key: str, fps: dict[str, str]) -> None:
        self.memory.put_ref(key, fps)
        if self.disk is not None:
            self.disk.put_ref(key, fps)

    def flush(self) -> None:
        if self.disk is not None:
            self.disk.flush()

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()
