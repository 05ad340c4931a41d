"""editgraph/allocator.py: a tuned process keeps freed memory for its next allocation instead of
giving it back to the kernel and faulting it in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from editgraph.errors import EditgraphError
from editgraph.settings import Settings

REPO = Path(__file__).resolve().parents[1]

# A node chain's pattern: 40 blocks of 100 KiB (each under glibc's starting mmap threshold, so from
# the heap) written, then all freed; five rounds more, their page faults counted.
_SCRIPT = textwrap.dedent(
    f"""
    import ctypes, json, resource, sys
    sys.path.insert(0, {str(REPO)!r})
    from editgraph import allocator
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    tuned = allocator.tune(sys.argv[1])

    def chain():
        blocks = [libc.malloc(100 << 10) for _ in range(40)]
        for block in blocks:
            ctypes.memset(block, 1, 100 << 10)
        for block in reversed(blocks):
            libc.free(block)

    chain()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        chain()
    print(json.dumps({{"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}}))
    """
)


GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_a_tuned_process_reuses_freed_memory_without_faulting_it_in_again():
    def run(mode: str) -> dict:
        return json.loads(subprocess.check_output([sys.executable, "-c", _SCRIPT, mode], text=True))

    system, tuned = run("system"), run("tuned")
    assert system["tuned"] is None
    if not GLIBC:  # no mallopt: tuning leaves malloc alone, and says so
        assert tuned["tuned"] is None
        return
    # glibc as it starts: the freed 4 MB at the heap's top goes back to the kernel each round, and
    # each round faults ~1,000 pages in again
    assert system["faults"] > 2500, system
    assert tuned["tuned"] == {"mmap_threshold": 32 << 20, "trim_threshold": 64 << 20}
    assert tuned["faults"] < 100, tuned


def test_the_allocator_setting_is_checked():
    assert Settings.from_env({"EDITGRAPH_ALLOCATOR": "system"}).allocator == "system"
    assert Settings.from_env({}).allocator == "tuned"
    with pytest.raises(EditgraphError, match=r"allocator \(EDITGRAPH_ALLOCATOR\) must be one of tuned, system, got 'jemalloc'"):
        Settings.from_env({"EDITGRAPH_ALLOCATOR": "jemalloc"})
