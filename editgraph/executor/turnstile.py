"""Rows of a batch in flight together, with local work still one node at a time.

A batch row holds the turnstile while it runs: its local nodes, cache reads and writes, events.
A hosted call steps out of it while it waits on the network (RunContext.waiting), so another
row's local nodes run, or its own call goes out, meanwhile; the provider's concurrency limit
(engines/credentials.limiter) bounds how many calls are out at once. The executor therefore
never runs two nodes' Python at the same time, and needs no locks of its own: the cache, the
event listeners and torch see one thread at a time, as in a plain run. When several rows want
it back, the lowest row number goes first, so local work keeps the batch's order.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Turnstile:
    def __init__(self, on_enter: Callable[[Any], None] | None = None):
        self._cond = threading.Condition()
        self._busy = False
        self._queue: list[tuple[int, int]] = []  # (priority, ticket)
        self._tickets = 0
        self._mine = threading.local()
        self._on_enter = on_enter

    def _acquire(self, priority: int, tag: Any) -> None:
        with self._cond:
            self._tickets += 1
            me = (priority, self._tickets)
            heapq.heappush(self._queue, me)
            while self._busy or self._queue[0] != me:
                self._cond.wait()
            heapq.heappop(self._queue)
            self._busy = True
        if self._on_enter is not None:
            self._on_enter(tag)

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    @contextmanager
    def hold(self, priority: int, tag: Any = None) -> Iterator[None]:
        """Run the body as the one thread doing local work (lower priority numbers first)."""
        self._acquire(priority, tag)
        self._mine.slot = (priority, tag)
        try:
            yield
        finally:
            self._mine.slot = None
            self._release()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Step out while blocked on I/O; step back in (in priority order) afterwards. A thread
        that does not hold the turnstile (a plain run) just runs the body."""
        slot = getattr(self._mine, "slot", None)
        if slot is None:
            yield
            return
        self._release()
        try:
            yield
        finally:
            self._acquire(*slot)
