"""A model's content hash: blake3 over its files' relative names, sizes and bytes.

Reading 4 GB of weights takes tens of seconds, so each file's digest is remembered by
(absolute path, size, mtime) in memory and in a small JSON memo under the cache root
(`<cache>/models/hash-memo.json`): a later process pays one stat() per file, not a read.
A file whose size or mtime changed is read again, so editing weights changes the hash.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import blake3

from editgraph.atomic import write_atomic
from editgraph.filehash import file_digest

MEMO_NAME = "hash-memo.json"

_lock = threading.Lock()
_memo: dict[str, list] = {}  # abs path -> [size, mtime_ns, digest]
_loaded_from: Path | None = None


def memo_path() -> Path:
    from editgraph.settings import Settings

    return Settings.from_env().cache_dir / "models" / MEMO_NAME


def content_hash(root: Path, files: list[Path]) -> str:
    """Hash of `files` (all under `root`; a file root hashes itself): names relative to root, sizes,
    and bytes (through each file's memoized digest). Order-independent in `files`."""
    memo_file = memo_path()
    with _lock:
        _load_memo(memo_file)
        changed = False
        h = blake3.blake3()
        for path in sorted(files, key=lambda p: _rel(root, p)):
            st = path.stat()
            key = str(path.resolve())
            entry = _memo.get(key)
            if entry is None or entry[0] != st.st_size or entry[1] != st.st_mtime_ns:
                entry = _memo[key] = [st.st_size, st.st_mtime_ns, file_digest(path)]
                changed = True
            rel = _rel(root, path)
            h.update(f"{len(rel)}:{rel}:{st.st_size}:{entry[2]}\n".encode())
        if changed:
            _save_memo(memo_file)
        return h.hexdigest()


def combine(*digests: str) -> str:
    """One hash standing for several (a checkpoint and the config folder it loads with)."""
    return blake3.blake3("\n".join(digests).encode()).hexdigest()


def _rel(root: Path, path: Path) -> str:
    return path.name if root == path else path.relative_to(root).as_posix()


def _load_memo(memo_file: Path) -> None:
    """Merge the on-disk memo into memory the first time (and again if the cache root changed)."""
    global _loaded_from
    if _loaded_from == memo_file:
        return
    _loaded_from = memo_file
    _memo.clear()
    try:
        data = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no memo yet, or an unreadable one: hashes are recomputed and it is rewritten
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, list) and len(v) == 3 and isinstance(v[2], str):
                _memo[k] = v


def _save_memo(memo_file: Path) -> None:
    # Drop entries for files that no longer exist, so the memo does not grow without bound.
    live = {k: v for k, v in _memo.items() if os.path.exists(k)}
    try:
        write_atomic(memo_file, json.dumps(live, sort_keys=True).encode())
    except OSError:
        pass  # a read-only cache only costs speed
