"""The encoder thread's step from the queue to a batch, for line-protocol destinations.

``take(queue, batch, room, control)`` moves records from the left of ``queue`` to the end of
``batch`` until ``room`` were moved, the queue is empty, or an item whose type is in ``control``
(flush and WAL markers) is met, which is popped and returned: ``(that item or None, room left)``.
In C (``_queue_take.c``) where the install found a compiler: the Python loop below costs about
100-190 ns a record, a tenth of the encoder thread's time; the C one a tenth of that.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


def take_py(queue: deque[Any], batch: list[Any], room: int, control: tuple[type, ...]) -> tuple[Any, int]:
    popleft = queue.popleft
    append = batch.append
    while room > 0:
        try:
            item = popleft()
        except IndexError:
            break
        if type(item) in control:
            return item, room
        append(item)
        room -= 1
    return None, room


take: Callable[[deque[Any], list[Any], int, tuple[type, ...]], tuple[Any, int]]
try:
    from ._queue_take import take as _take_c  # type: ignore[import-not-found]
except ImportError:  # no C compiler at install (or a free-threaded Python): the same loop in Python
    take = take_py
else:
    take = _take_c
