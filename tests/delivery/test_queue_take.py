"""The encoder thread's step from the queue to a batch (delivery/queue_take.py): the C loop
gives what the Python loop gives, and a pipeline on either delivers every record in order."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tplr_metrics.delivery.pipeline as pipeline_module
from tests.memory_sink import MemorySink
from tplr_metrics import MetricsLogger
from tplr_metrics.delivery import queue_take


class _Marker:
    pass


class _OtherMarker:
    pass


_CONTROL = (_Marker, _OtherMarker)
_TAKES = [pytest.param(queue_take.take_py, id="python")]
if queue_take.take is not queue_take.take_py:
    _TAKES.append(pytest.param(queue_take.take, id="c"))


def _items(kinds: list[int]) -> list[Any]:
    # 0: a record (a tuple, as queued compact), 1 and 2: the two kinds of marker
    return [(k, "r") if kind == 0 else (_Marker() if kind == 1 else _OtherMarker()) for k, kind in enumerate(kinds)]


@given(kinds=st.lists(st.sampled_from([0, 0, 0, 1, 2]), max_size=40), room=st.integers(-2, 45), held=st.integers(0, 3))
def test_the_c_loop_takes_what_the_python_loop_takes(kinds: list[int], room: int, held: int) -> None:
    if queue_take.take is queue_take.take_py:
        pytest.skip("the C loop was not built (no compiler at install)")
    items = _items(kinds)
    results = []
    for take in (queue_take.take_py, queue_take.take):
        queue, batch = deque(items), [("held", j) for j in range(held)]
        met, left = take(queue, batch, room, _CONTROL)
        results.append((met, left, batch, list(queue)))
    assert results[0] == results[1]


@pytest.mark.parametrize("take", _TAKES)
def test_take_stops_at_the_room_at_a_marker_and_at_the_end(take: Any) -> None:
    marker = _Marker()
    queue: deque[Any] = deque([(1,), (2,), marker, (3,)])
    batch: list[Any] = []
    assert take(queue, batch, 1, _CONTROL) == (None, 0)  # the room: the next record stays queued
    assert take(queue, batch, 5, _CONTROL) == (marker, 4)  # popped and returned, not batched
    assert batch == [(1,), (2,)] and list(queue) == [(3,)]
    assert take(queue, batch, 5, _CONTROL) == (None, 4)  # the queue ran empty
    assert take(queue, batch, 0, _CONTROL) == (None, 0) and batch == [(1,), (2,), (3,)]


class _LineSink(MemorySink):
    accepts_lines = True  # as InfluxDB's sinks: the lines-only encoder loop, which takes with queue_take


@pytest.mark.parametrize("take", _TAKES)
def test_every_record_arrives_in_order_through_flushes_from_many_threads(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, take: Any
) -> None:
    monkeypatch.setattr(pipeline_module, "take", take)
    sink = _LineSink()
    m = MetricsLogger(sink=sink, batch_size=97, flush_interval=20)
    flushed: list[bool] = []

    def flusher() -> None:
        for _ in range(20):
            flushed.append(m.flush(30))

    threads = [threading.Thread(target=flusher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(20_000):
        m.log("m", {"k": str(i % 7)}, {"i": i})
    for thread in threads:
        thread.join()
    assert m.close(30)
    assert all(flushed) and len(flushed) == 60
    assert [p.fields["i"] for p in sink.points] == list(range(20_000))
    assert m.stats()["written"] == 20_000
