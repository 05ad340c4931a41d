"""The memory tier: an LRU of values bounded in bytes, and the refs this process knows (see
store.py for the two maps and the disk tier behind it)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from editgraph.values.codec import value_nbytes

MISSING: Any = object()


class MemoryStore:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.refs: dict[str, dict[str, str]] = {}
        self._blobs: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0

    def get_ref(self, key: str) -> dict[str, str] | None:
        return self.refs.get(key)

    def put_ref(self, key: str, fps: dict[str, str]) -> None:
        self.refs[key] = fps

    def get_blob(self, fp: str) -> Any:
        entry = self._blobs.get(fp)
        if entry is None:
            return MISSING
        self._blobs.move_to_end(fp)
        return entry[0]

    def put_blob(self, fp: str, value: Any) -> None:
        size = value_nbytes(value)
        if size > self.max_bytes or fp in self._blobs:
            return
        self._blobs[fp] = (value, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, (_, evicted) = self._blobs.popitem(last=False)
            self.nbytes -= evicted

    def clear(self) -> None:
        self.refs.clear()
        self._blobs.clear()
        self.nbytes = 0
