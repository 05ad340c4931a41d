"""Keep Python's cyclic garbage collector out of the way of a run, and of binding a document
(issue 16: 36-64 % of a 10,000-node run was the collector's, and runs did not scale linearly;
binding a 10,000-node document took 1.0-1.3 s with the collector on, 0.2-0.3 s with it off).

The collector scans every tracked object it has not frozen: each young collection the objects
made since the last, each older one everything that survived into its generation. A run keeps a
few objects per node (records, events, fingerprints), so on large graphs its collections grew with
everything alive, and after the run the next young collection scanned all it kept.

Both build many objects that live on (a bound graph's params; a run's records and events). During
a run: the objects alive when it started are frozen (out of the collector's sight) and
young collections wait for RUN_GC_THRESHOLD new objects, more than a 10,000-node run keeps, so
they happen only in runs that make a lot of garbage. At its end the run's survivors are frozen too
and then everything is unfrozen into the oldest generation: nothing the run kept is scanned by a
young collection right after it, and garbage cycles (rare in a run: exceptions, some libraries'
objects) are collected by the next full collection. A full collection is not triggered by this:
CPython starts one when enough objects have survived into the oldest generation through its own
collections.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# New tracked objects between young collections during a run (Python's default: 700). A cold
# 10,000-node chain keeps ~55,000; a run making more garbage than this is collected as it goes.
RUN_GC_THRESHOLD = 100_000

_lock = threading.Lock()
_depth = 0  # runs in progress (threads, nested runs): the outermost one pauses and restores
_saved: tuple[int, ...] | None = None


@contextmanager
def collector_paused() -> Iterator[None]:
    global _depth, _saved
    with _lock:
        _depth += 1
        if _depth == 1 and gc.isenabled():
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(RUN_GC_THRESHOLD, *_saved[1:])
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                gc.freeze()  # the run's survivors too (and the young count is reset) ...
                gc.unfreeze()  # ... then all of it goes to the oldest generation, unscanned
                _saved = None
