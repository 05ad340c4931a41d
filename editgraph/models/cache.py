"""In-process model cache: a model loads once per process however many nodes use it.

Keyed by (resolved path, content hash, device, dtype), so an edited model file loads afresh and
the same files on CPU and in float16 are two entries. `release` drops a model by the name or path
a workflow used (or its resolved path); `release_all` drops everything. Dropping the last
reference frees the memory; nothing else here holds on to components.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import NamedTuple

from editgraph.models.handle import DiffusionModel


class CacheKey(NamedTuple):
    path: str  # resolved folder or checkpoint file
    content_hash: str
    device: str
    dtype: str


_lock = threading.RLock()
_models: dict[CacheKey, DiffusionModel] = {}
# The loader's record: the key of every model actually loaded (not served from this cache), in order.
LOADS: list[CacheKey] = []


def get_or_load(key: CacheKey, load: Callable[[], DiffusionModel]) -> DiffusionModel:
    """The model under `key`, loading it with `load()` the first time. Loads are serialized so two
    threads asking for the same model do not load it twice."""
    with _lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = load()
            LOADS.append(key)
        return model


def loaded() -> list[CacheKey]:
    """Keys of the models held now, oldest first."""
    with _lock:
        return list(_models)


def release(name_or_path: str) -> int:
    """Drop every loaded model whose workflow name, path or resolved path is `name_or_path`.
    Returns how many were dropped."""
    with _lock:
        doomed = [k for k, m in _models.items() if name_or_path in (m.name, m.path, k.path)]
        for k in doomed:
            del _models[k]
    if doomed:
        gc.collect()
    return len(doomed)


def release_all() -> int:
    """Drop every loaded model. Returns how many were dropped."""
    with _lock:
        n = len(_models)
        _models.clear()
    if n:
        gc.collect()
    return n
