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
they happen only in runs that make a lot of garbage. At its end one collection of the young
generations scans what the run made, once (linear in the run's size): its garbage cycles (a failed
node's traceback holding tensors, some libraries' objects) are freed now, and its survivors move to
the oldest generation the usual way, so they count toward the next full collection. Then what was
frozen is unfrozen. A pause whose body says it made no garbage cycles (Pause.clean: a run in which
every node was a cache hit ran no node code and made only records and fingerprints) skips that
scan: what it made moves, unscanned, into the oldest generation with what was frozen (on 10,000
nodes the scan was a tenth of an identical re-run, and its misses grew faster than the graph).
An application that froze objects itself (before forking workers, say) keeps
them frozen: runs then leave freezing alone.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# New tracked objects between young collections during a pause (Python's default: 700), beyond
# those the pause's body says it expects to make and keep (collector_paused's `expect`): what a
# run makes past its graph's share is garbage, collected as it goes.
RUN_GC_THRESHOLD = 100_000

_lock = threading.Lock()
_depth = 0  # runs in progress (threads, nested runs): the outermost one pauses and restores
_saved: tuple[int, ...] | None = None
_froze = False  # the outermost pause froze the heap (nothing was frozen before it)
_dirty = False  # a pause since the outermost began may have made garbage cycles


class Pause:
    """What a pause's body says of itself: `clean` (set it at the end, when true) means it made
    no garbage cycles, so what it made need not be scanned when the pause ends."""

    __slots__ = ("clean",)

    def __init__(self) -> None:
        self.clean = False


@contextmanager
def collector_paused(expect: int = 0) -> Iterator[Pause]:
    """`expect`: about how many tracked objects the body will make that live on (a run's plan
    steps, records and fingerprints: ~20 a node on a cold run). Young collections wait for them on
    top of RUN_GC_THRESHOLD. A cold 10,000-node chain makes ~195,000; with collections every
    100,000 it scanned twice, mid-run, objects spread over a heap past the CPU's caches, and ran
    10.5-13x the 1,000-node one, which never collected (issue 16). A nested pause raises the
    outermost's threshold, never lowers it."""
    global _depth, _saved, _froze, _dirty
    pause = Pause()
    with _lock:
        _depth += 1
        if _depth == 1:
            _dirty = False
        if _depth == 1 and gc.isenabled():
            _saved = gc.get_threshold()
            _froze = gc.get_freeze_count() == 0  # unfreezing would also thaw what the application froze
            if _froze:
                gc.freeze()
            gc.set_threshold(RUN_GC_THRESHOLD + expect, *_saved[1:])
        elif _saved is not None and expect:
            gc.set_threshold(max(gc.get_threshold()[0], RUN_GC_THRESHOLD + expect), *_saved[1:])
    try:
        yield pause
    finally:
        with _lock:
            _depth -= 1
            _dirty = _dirty or not pause.clean
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                if _dirty or not _froze:
                    gc.collect(1)  # what the run made, once: garbage cycles freed, survivors aged as usual
                else:  # nothing to free: what the pause made joins the oldest generation unscanned
                    gc.freeze()
                if _froze:
                    gc.unfreeze()
                _saved = None
