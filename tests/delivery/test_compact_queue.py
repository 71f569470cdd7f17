"""Records queued while a backlog builds are compact: a third of the memory, the same points."""

from __future__ import annotations

import gc
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.memory_sink import MemorySink
from tplr_metrics import MetricsLogger


@contextmanager
def encoder_paused(m: MetricsLogger) -> Iterator[None]:
    """While this holds the encoder's lock it takes nothing: the queue keeps every record (a
    backlog, so records are queued compact)."""
    lock = m._pipeline._encode_lock
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _calls(n: int) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    for i in range(n):
        kind = i % 10
        tags: Any = {"eval_uid": str(i % 7), "window": i // 7, "ok": True}
        fields: Any = {"score": i / 3, "count": i, "flag": i % 2 == 0, "note": f"n{i}", "none": None}
        measurement: Any = "validator_scores"
        timestamp: Any = 1_700_000_000_000_000_000 + i
        if kind == 1:
            fields = {"losses": [1.0, 2.0, float(i)]}  # a list: frozen in the call
        elif kind == 2:
            tags = {"pair": (i, i + 1)}  # a tuple tag value: its text, fixed in the call
        elif kind == 3:
            timestamp = "not a time"  # dropped, bad_timestamp
        elif kind == 4:
            fields = {}  # dropped, no_fields
        elif kind == 5:
            tags, measurement = {}, 42  # not a str: its text
        elif kind == 6:
            fields = {"nan": float("nan"), "v": 1e300 * 10, "w": -0.0}
        elif kind == 7:
            tags = {"uid": "theirs", "time": "t"}  # a standard tag's name, a reserved key
        calls.append((measurement, tags, fields, timestamp))
    return calls


def _log_all(calls: list[tuple[Any, ...]], backlog: bool) -> tuple[list[Any], dict[str, Any]]:
    sink = MemorySink()
    if backlog:
        sink.gate.clear()  # the one writer waits: the queue grows past two batches
    m = MetricsLogger(sink=sink, spool=False, runtime_id="same", uid=3, prefix="V", batch_size=10)
    for measurement, tags, fields, timestamp in calls:
        m.log(measurement, tags, fields, timestamp)
    if backlog:
        assert m.stats()["queue_depth"] > 100  # most of them were queued compact
    sink.gate.set()
    assert m.close(30) is not None
    return sink.points, m.stats()


def test_compact_records_become_the_same_points(isolated_env: Path) -> None:
    calls = _calls(400)
    plain_points, plain_stats = _log_all(calls, backlog=False)
    compact_points, compact_stats = _log_all(calls, backlog=True)
    assert compact_points == plain_points
    assert len(plain_points) == 320
    for key in ("logged", "written", "dropped", "sanitized"):
        assert compact_stats[key] == plain_stats[key], key


def test_a_queued_record_takes_at_most_300_bytes(isolated_env: Path) -> None:
    """Templar's validator_scores (3 caller tags, 6 float fields) behind a destination that does
    not answer: what the queue holds per point, the caller's values aside (the first two batches
    are queued as dict copies, the rest compact). (Two dict copies and a
    6-tuple: 590 B; the RSS at 600,000 queued was 406 MiB, now 160: benchmarks/bench_memory.py.)"""
    values = [float(i) / 7 for i in range(256)]
    sink = MemorySink()
    m = MetricsLogger(sink=sink, spool=False, uid=7, prefix="V", max_queue_size=30_000)  # batches of 1,000
    with encoder_paused(m):
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(25_000):
            v = values[i % 256]
            m.log(
                "validator_scores",
                {"eval_uid": str(i % 256), "window": i // 256, "global_step": (i // 256) * 20},
                {
                    "gradient_score": v,
                    "binary_indicator": v,
                    "binary_moving_avg": v,
                    "sync_score": v,
                    "final_score": v,
                    "weight": v,
                },
            )
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        depth = m.stats()["queue_depth"]
        assert depth == 25_000
        # The eval_uid strings and window ints are new objects per call (as in a training loop): 50-60 B.
        assert grown / depth < 300, f"{grown / depth:.0f} B per queued record"
    assert m.close(30)
    assert len(sink.points) == 25_000


def test_the_caller_may_change_its_dicts_after_a_compact_log(isolated_env: Path) -> None:
    sink = MemorySink()
    sink.gate.clear()
    m = MetricsLogger(sink=sink, spool=False, batch_size=10, runtime_id="r")
    tags = {"k": "a"}
    fields = {"v": 1.0}
    for i in range(100):
        tags["k"] = f"a{i}"
        fields["v"] = float(i)
        m.log("m", tags, fields, timestamp=i + 1)
    tags.clear()
    fields["v"] = -1.0
    sink.gate.set()
    assert m.close(30)
    assert [(p.tags["k"], p.fields["v"], p.time_ns) for p in sink.points] == [
        (f"a{i}", float(i), i + 1) for i in range(100)
    ]


def test_a_backlog_of_compact_records_is_not_walked_by_the_garbage_collector(isolated_env: Path) -> None:
    """A compact record holds only ints, floats and strings: after its first collection the
    garbage collector stops tracking it, so a full collection with a backlog queued does not
    walk it (it did while records held their shape object: the worst log() pause with 600,000
    queued was a full collection)."""
    sink = MemorySink()
    m = MetricsLogger(sink=sink, spool=False, uid=7, max_queue_size=30_000)  # batches of 1,000
    with encoder_paused(m):
        for i in range(10_000):
            m.log("m", {"eval_uid": str(i % 256), "window": i // 256}, {"score": i / 7, "n": i})
        gc.collect()
        queued = list(m._pipeline._queue)
        compact = [r for r in queued if type(r[1]) is int]
        assert len(compact) >= 7_000  # all but the first two batches
        assert not any(gc.is_tracked(r) for r in compact)
    assert m.close(30)
    assert len(sink.points) == 10_000


def test_a_dict_another_thread_reorders_is_never_stored_under_the_wrong_names(isolated_env: Path) -> None:
    """An attack: a thread popping and putting back a key of the dicts the caller logs (same keys,
    same values, new order). The compact path read the keys and the values in two steps, so a
    reorder between them paired values with the wrong names (13 of 200,000 points stored with a
    tag's text in a float field). Now it copies each dict in one C call first."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    sink = MemorySink()
    m = MetricsLogger(sink=sink, spool=False, batch_size=100, max_queue_size=200_000)
    fields = {"a": 1.0, "b": 2.0}
    tags = {"x": "1", "y": "2"}
    stop = threading.Event()

    def reorder() -> None:
        while not stop.is_set():
            fields["a"] = fields.pop("a")
            tags["x"] = tags.pop("x")

    thread = threading.Thread(target=reorder)
    with encoder_paused(m):
        thread.start()
        try:
            for i in range(60_000):
                m.log("m", tags, fields, timestamp=i + 1)
        finally:
            stop.set()
            thread.join()
            sys.setswitchinterval(switch)
    assert m.close(60)
    stats = m.stats()
    assert stats["logged"] == 60_000
    assert len(sink.points) + sum(stats["dropped"].values()) == 60_000  # a dict caught mid-change: encode_error
    # A snapshot between the pop and the put back lacks that key (a dict caught mid-change);
    # what is there must be under its own name.
    logged = {"a": 1.0, "b": 2.0, "x": "1", "y": "2"}
    wrong = [p for p in sink.points if any(logged.get(k, v) != v for k, v in [*p.fields.items(), *p.tags.items()])]
    assert not wrong, wrong[:3]
    assert sum(p.fields == {"a": 1.0, "b": 2.0} for p in sink.points) > 1_000


def test_keys_equal_as_numbers_keep_their_own_names_in_a_backlog(isolated_env: Path) -> None:
    """1, True and 1.0 are one key to a dict: a shape found by equality named them all ``1``
    while a backlog waited (``True`` and ``1.0`` otherwise). Only str keys are queued compact."""
    sink = MemorySink()
    m = MetricsLogger(sink=sink, spool=False, batch_size=10, max_queue_size=10_000)
    with encoder_paused(m):
        for i in range(30):
            m.log("m", {"t": "x"}, {"v": float(i)}, timestamp=i + 1)  # past two batches: compact
        m.log("m", {1: "a"}, {1: 1.0}, timestamp=100)
        m.log("m", {True: "a"}, {True: 2.0}, timestamp=101)
        m.log("m", {1.0: "a"}, {1.0: 3.0}, timestamp=102)
    assert m.close(30)
    assert len(sink.points) == m.stats()["logged"] == 33
    odd = [(list(p.tags)[0], list(p.fields)) for p in sink.points if p.time_ns >= 100]
    assert odd == [("1", ["1"]), ("True", ["True"]), ("1.0", ["1.0"])]


def test_shapes_are_shared_by_every_logger_of_the_process(isolated_env: Path, monkeypatch: Any) -> None:
    """An attack: once the process's bound on shapes was reached, a new logger queued even names
    logged before as plain records (each logger registered shapes of its own). Shapes are now
    one per set of names for the whole process: only names never seen take the plain path."""
    from tplr_metrics.encoding import points as points_module

    first = points_module.register_shape("shared_m", ("t",), ("v",))
    assert first is not None
    monkeypatch.setattr(points_module, "MAX_QUEUED_SHAPES", len(points_module._QUEUED_SHAPES))
    assert points_module.register_shape("shared_m", ("t",), ("v",)) is first
    assert points_module.register_shape("never_seen_m", ("t",), ("v",)) is None
    sink = MemorySink()
    m = MetricsLogger(sink=sink, spool=False, batch_size=10, max_queue_size=1_000)
    with encoder_paused(m):
        for i in range(40):
            m.log("shared_m", {"t": "x"}, {"v": float(i)}, timestamp=i + 1)
            m.log("never_seen_m", {"t": "x"}, {"v": float(i)}, timestamp=i + 1)
        kinds = [(r[0], type(r[1]) is int) for r in list(m._pipeline._queue)[20:]]  # past two batches
    assert m.close(30)
    assert (first.id, True) in kinds and ("never_seen_m", False) in kinds
    assert len(sink.points) == 80
