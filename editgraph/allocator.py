"""Keep the C allocator from handing a run's working memory back to the kernel between nodes.

Node outputs are arrays and tensors allocated with malloc (numpy, torch's CPU allocator). glibc
returns the top of its heap to the kernel whenever more than M_TRIM_THRESHOLD of it is free
(128 KiB at start), and serves blocks from M_MMAP_THRESHOLD (128 KiB at start) with fresh mmaps;
both thresholds grow only once a large mmapped block has been freed. Until then, a run whose
values are freed as it goes gives its pages back and takes them again, a page fault each (and
the kernel zeroing each page): ~3.5 us a fault on this project's CI machine. Which runs paid
depended on heap layout, not on the work: a cold run of 500 64 px nodes took 0 faults alone, and
300-600 with an SQLite connection open beside it (the disk tier's), 5 % of its time (issue 16).

tune() starts glibc where its own adjustment ends up in a process that has freed a large block:
blocks under 32 MiB (its largest mmap threshold) come from the heap, and the heap keeps up to
64 MiB free at its top (twice that, as glibc sets it). The cost is resident memory: up to 64 MiB
more than is live, kept for the next node. Larger blocks (a 4096 px float image is 200 MB) are
mmapped as before, and unmapped when freed.

Settings.allocator (EDITGRAPH_ALLOCATOR) "system" leaves the allocator as the process found it.
Other C libraries (musl, macOS) have no mallopt: tune() then does nothing.
"""

from __future__ import annotations

import sys
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the largest it accepts
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc's dynamic adjustment pairs with it

_lock = threading.Lock()
_tuned: dict[str, int] | None = None


def tune(mode: str = "tuned") -> dict[str, int] | None:
    """Set glibc's thresholds once per process (the first call that asks decides); return what
    was set, or None when nothing was (mode "system", or no glibc)."""
    global _tuned
    if mode != "tuned":
        return _tuned
    with _lock:
        if _tuned is None and sys.platform.startswith("linux"):
            import ctypes  # here: a process that never runs a graph does not import it

            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):  # not glibc
                return None
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
                _tuned = {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
        return _tuned
