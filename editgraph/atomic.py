"""Write a file so that readers see the old version or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _file_mode() -> int:
    """What open() would give a new file: 0o666 less the umask (mkstemp's own 0o600 would make
    outputs unreadable to the rest of a team sharing a folder)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


TMP_SUFFIX = ".tmp"
STALE_AFTER_S = 10.0  # a temp file unlocked and untouched this long has no writer left


def write_atomic(path: Path, data: bytes | list, *, fsync: bool = False, tmp_dir: Path | None = None) -> None:
    """Write `data` (bytes, or a list of buffers written in order) to a temp file, then rename it
    to `path`. The temp file sits beside `path`, or in `tmp_dir` (same file system), and is
    flock-ed while written, so sweep_temporaries() can tell a dead writer's leftover from a
    live one's work by lock, not by a guess at how long a write may take."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    where = tmp_dir if tmp_dir is not None else path.parent
    where.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=where)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until close; the kernel drops it if we die
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            for part in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(part)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_new(path: str, parts: list, tmp: str) -> None:
    """write_atomic for a writer that made the folders and owns the temp name `tmp` (the cache's
    writer thread puts its pid and thread in it): no mkdir, no mkstemp, no fchmod per file, which
    were most of the 150-1,200 us a 48 KiB cache blob cost (issue 16). Parts go to write(2)
    unbuffered, so a 200 MB tensor is not copied on its way. The temp file is flock-ed while
    written and named like write_atomic's, so sweep_temporaries() treats both alike."""
    import fcntl

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o666)  # less the umask, as open() gives
    except FileExistsError:  # left by a dead writer whose pid and thread ours reuse: never locked now
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until close; the kernel drops it if we die
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                view = view[os.write(fd, view):]
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sweep_temporaries(folder: Path, *, grace_s: float = STALE_AFTER_S) -> int:
    """Delete write_atomic temp files in `folder` whose writer is gone: not locked, and untouched
    for `grace_s` (covers the instant between creating a file and locking it, and between
    closing it and the rename). Returns how many were removed."""
    import fcntl
    import time

    removed = 0
    cutoff = time.time() - grace_s
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX)):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue  # renamed into place or removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass  # BlockingIOError: a live writer holds it
        finally:
            os.close(fd)
    return removed


SCRATCH_LOCK = ".lock"


@contextlib.contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """A new folder under `parent` (made if absent, this user's alone), removed on exit. While in
    use it holds an flock on its SCRATCH_LOCK file, which the kernel drops when the process dies,
    so sweep_scratch can tell a killed process's folder (a batch worker SIGKILLed mid-row left its
    row's outputs in /tmp) from a live one."""
    import fcntl
    import shutil

    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=parent))
    fd = os.open(path / SCRATCH_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def sweep_scratch(parent: Path, *, grace_s: float = STALE_AFTER_S) -> int:
    """Remove the folders under `parent` that scratch_dir made for processes now dead: their lock
    is free, and they are older than `grace_s` (covers the instant between making a folder and
    locking it). Returns how many were removed."""
    import fcntl
    import shutil
    import time

    removed, cutoff = 0, time.time() - grace_s
    try:
        entries = [entry for entry in os.scandir(parent) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
            fd = os.open(os.path.join(entry.path, SCRATCH_LOCK), os.O_RDONLY)
        except FileNotFoundError:  # no lock file: made, never locked (a process killed at once)
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # BlockingIOError: its process is alive
        finally:
            os.close(fd)  # (a lock taken is dropped here: the folder goes next)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed
