"""Counters the caller's path bumps without taking a lock.

``log()`` may run in a signal handler that interrupted the same thread inside ``log()``: a lock
held by the interrupted frame would then never be released. ``next()`` on an
``itertools.count`` is one C call under the GIL, so it is atomic against other threads and
against a signal handler (which runs between bytecodes) alike; no increment is ever lost.
"""

from __future__ import annotations

import itertools


class AtomicCounter:
    """A count that many threads (and a signal handler) may bump at once, exactly."""

    __slots__ = ("_count", "incr")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.incr = self._count.__next__  # bound once: the caller's cost is one C call

    @property
    def value(self) -> int:
        # repr is "count(N)", N being the number of increments so far.
        return int(repr(self._count)[6:-1])


class ReasonCounters:
    """Atomic counters keyed by a reason (``queue_full``, ``after_close``, ...)."""

    __slots__ = ("_counters",)

    def __init__(self) -> None:
        self._counters: dict[str, AtomicCounter] = {}

    def add(self, reason: str) -> None:
        counter = self._counters.get(reason)
        if counter is None:
            counter = self._counters.setdefault(reason, AtomicCounter())  # setdefault is atomic
        counter.incr()

    def snapshot(self) -> dict[str, int]:
        return {reason: c.value for reason, c in list(self._counters.items()) if c.value}

    def total(self) -> int:
        return sum(self.snapshot().values())
