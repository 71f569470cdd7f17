"""MetricsLogger's contract with its caller: never raise, never mutate, never lose count."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math
import threading
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tplr_metrics import ConfigurationError, MetricsLogger

from .memory_sink import MemorySink


def make_logger(sink: MemorySink | None = None, **kwargs: Any) -> MetricsLogger:
    kwargs.setdefault("flush_interval", 50)
    return MetricsLogger(sink=sink or MemorySink(), **kwargs)


def test_standard_and_config_tags_are_applied_after_the_callers() -> None:
    sink = MemorySink()
    config = types.SimpleNamespace(netuid=3, lr=0.5)
    with make_logger(sink, prefix="V", uid=7, role="validator", group="g", job_type="validation", config=config) as m:
        m.log("validator_scores", {"eval_uid": 12, "window": 5, "uid": 99}, {"score": 0.5})
    (point,) = sink.points
    assert point.measurement == "Vvalidator_scores"
    assert point.tags["uid"] == "7"  # the logger's own uid, as Templar's dashboards expect
    assert point.tags["caller_uid"] == "99"  # the caller's is kept, renamed
    assert point.tags["eval_uid"] == "12" and point.tags["window"] == "5"
    assert point.tags["role"] == "validator" and point.tags["prefix"] == "V"
    assert point.tags["config_netuid"] == "3" and point.tags["config_lr"] == "0.5"
    assert point.tags["runtime_id"] == m.runtime_id


def test_caller_tag_named_like_an_unset_standard_tag_is_kept_as_is() -> None:
    sink = MemorySink()
    with make_logger(sink) as m:  # no uid set on the logger
        m.log("x", {"uid": 5}, {"f": 1})
    assert sink.points[0].tags["uid"] == "5"


def test_callers_dicts_are_never_mutated() -> None:
    sink = MemorySink()
    tags = {"uid": 1, "window": 2, "nested": [1, 2]}
    fields = {"a": [1.0, 2.0], "b": None, "c": math.nan, "d": True, "e": {"k": 1}}
    before = (copy.deepcopy(tags), copy.deepcopy(fields))
    with make_logger(sink, uid=3) as m:
        m.log("x", tags, fields, with_system_metrics=True, with_gpu_metrics=True)
        assert m.flush(10)
    assert (tags, fields) == before or math.isnan(fields["c"])  # NaN != NaN, compare the rest
    assert tags == before[0]
    assert {k: v for k, v in fields.items() if k != "c"} == {k: v for k, v in before[1].items() if k != "c"}


def test_timestamp_is_taken_in_the_call() -> None:
    sink = MemorySink()
    sink.gate.clear()
    with make_logger(sink) as m:
        m.log("x", {}, {"f": 1.0})
        logged_at = dt.datetime.now(dt.timezone.utc).timestamp()
        threading.Event().wait(0.3)
        sink.gate.set()
    assert abs(sink.points[0].time_ns / 1e9 - logged_at) < 0.25


def test_explicit_timestamps() -> None:
    sink = MemorySink()
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 600_000, tzinfo=dt.timezone.utc)
    with make_logger(sink) as m:
        m.log("x", {}, {"f": 1.0}, timestamp=123_456_789)
        m.log("x", {}, {"f": 1.0}, timestamp=when)
        m.log("x", {}, {"f": 1.0}, timestamp=when.replace(tzinfo=None))  # naive = UTC
        m.log("x", {}, {"f": 1.0}, timestamp=1_700_000_000.5)  # float = seconds
    times = [p.time_ns for p in sink.points]
    assert times == [123_456_789, 1_704_164_645_600_000_000, 1_704_164_645_600_000_000, 1_700_000_000_500_000_000]


def test_flush_waits_for_everything_logged_before_it() -> None:
    sink = MemorySink(delay=0.05)
    with make_logger(sink, batch_size=100, flush_interval=60_000) as m:
        for i in range(1234):
            m.log("x", {"i": i}, {"f": float(i)})
        assert m.flush(timeout=30)
        assert len(sink.points) == 1234


def test_flush_times_out_when_the_sink_is_stuck() -> None:
    sink = MemorySink()
    sink.gate.clear()
    m = make_logger(sink)
    m.log("x", {}, {"f": 1.0})
    assert m.flush(timeout=0.3) is False
    sink.gate.set()
    assert m.flush(timeout=10) is True
    m.close()


def test_close_is_idempotent_and_later_logs_are_counted_no_ops() -> None:
    sink = MemorySink()
    m = make_logger(sink)
    m.log("x", {}, {"f": 1.0})
    assert m.close() is True
    assert m.close() is True
    m.log("x", {}, {"f": 2.0})
    assert len(sink.points) == 1 and sink.closed
    assert m.stats()["dropped"] == {"after_close": 1}
    assert sink.ended == ["ok"]


def test_eight_threads_at_once_lose_nothing() -> None:
    sink = MemorySink()
    with make_logger(sink, batch_size=500) as m:

        def work(t: int) -> None:
            for i in range(5000):
                m.log("x", {"thread": t}, {"i": i})

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(sink.points) == 40_000
    assert len({(p.tags["thread"], p.fields["i"]) for p in sink.points}) == 40_000
    stats = m.stats()
    assert stats["logged"] == stats["written"] == 40_000


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_new"])
def test_overflow_is_counted(policy: str) -> None:
    sink = MemorySink()
    sink.gate.clear()  # the writer is stuck: the queue must fill
    m = make_logger(sink, max_queue_size=100, batch_size=10, overflow=policy)
    for i in range(5000):
        m.log("x", {}, {"i": i})
    sink.gate.set()
    m.close()
    stats = m.stats()
    assert stats["dropped"].get("queue_full", 0) > 0
    assert stats["logged"] == 5000 == stats["written"] + stats["dropped"]["queue_full"]
    assert stats["written"] == len(sink.points) >= 100
    kept = [p.fields["i"] for p in sink.points]
    if policy == "drop_oldest":
        assert 4999 in kept
    else:
        assert 0 in kept


def test_block_overflow_waits_up_to_its_bound_then_drops() -> None:
    sink = MemorySink()
    sink.gate.clear()
    m = make_logger(sink, max_queue_size=5, batch_size=1, overflow="block", block_timeout=0.05)
    for i in range(200):
        m.log("x", {}, {"i": i})
    sink.gate.set()
    m.close()
    stats = m.stats()
    assert stats["logged"] == 200 == stats["written"] + stats["dropped"].get("queue_full", 0)


def test_sampling_is_counted() -> None:
    sink = MemorySink()
    with make_logger(sink) as m:
        for _ in range(2000):
            m.log("x", {}, {"f": 1.0}, sample_rate=0.25)
    stats = m.stats()
    assert stats["sampled_out"] + stats["logged"] == 2000 and stats["written"] == stats["logged"]
    assert 300 < stats["logged"] < 700


def test_bad_parts_are_dropped_counted_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    with caplog.at_level(logging.WARNING, logger="tplr_metrics"), make_logger(sink) as m:
        for _ in range(3):
            m.log("x", {}, {"good": 1.0, "bad": math.nan})
        m.log("x", {}, {"only_bad": math.inf})
        m.log("x", {}, {})
    assert [p.fields for p in sink.points] == [{"good": 1.0}] * 3
    stats = m.stats()
    assert stats["sanitized"]["non_finite"] == 4
    assert stats["dropped"]["no_fields"] == 2
    assert sum("non_finite" in r.getMessage() or "cannot be stored" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("measurement", "fields", "needle"),
    [
        ("loss_curve", {"loss": math.nan}, "field 'loss'"),
        ("loss_curve", {"loss": 2**70}, "field 'big'".replace("big", "loss")),
        ("loss_curve", {}, "no storable field"),
        ("", {"loss": 1.0}, "measurement name"),
        ("loss_curve", {"time": 1.0}, "field 'time'"),
    ],
)
def test_strict_mode_raises_naming_measurement_field_and_reason(
    measurement: str, fields: dict[str, Any], needle: str
) -> None:
    with make_logger(strict=True) as m, pytest.raises(ValueError) as info:
        m.log(measurement, {}, fields)
    message = str(info.value)
    assert needle in message
    if measurement:
        assert repr(measurement) in message


def test_strict_mode_accepts_good_points() -> None:
    sink = MemorySink()
    with make_logger(sink, strict=True, uid=1) as m:
        m.log("x", {"uid": 4}, {"f": 1.0, "l": [1.0, 2.0], "n": None})
    assert len(sink.points) == 1


def test_validator_gets_templar_batch_size() -> None:
    assert make_logger(role="validator")._pipeline.options.batch_size == 10_000
    assert make_logger(role="miner")._pipeline.options.batch_size == 1_000


def test_a_misconfigured_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUXDB_URL", "influx.example.org:8086")  # no scheme
    with pytest.raises(ConfigurationError, match="must look like"):
        MetricsLogger(database="d")


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ConfigurationError, match="overflow"):
        make_logger(overflow="explode")
    with pytest.raises(ConfigurationError, match="max_queue_size"):
        make_logger(max_queue_size=0)
    with pytest.raises(ConfigurationError, match="runtime_id is not valid text: a lone surrogate at position 1"):
        make_logger(runtime_id="a\udc80b")  # was a UnicodeEncodeError from deep in the spool


@pytest.mark.parametrize("name", ["prefix", "uid", "version", "role", "group", "job_type"])
def test_a_standard_tag_with_a_lone_surrogate_is_a_clear_error(name: str) -> None:
    """An attack: each was a raw TypeError from orjson writing the spool's header."""
    with pytest.raises(ConfigurationError, match=f"{name} is not valid text: a lone surrogate at position 1"):
        make_logger(**{name: "a\ud800"})


def test_a_config_value_with_a_lone_surrogate_becomes_a_tag_with_a_question_mark() -> None:
    """argv holds undecodable bytes as lone surrogates: a config made from it still starts."""
    m = make_logger(config={"data": "run\udcff.bin"})
    try:
        assert m.standard_tags()["config_data"] == "run?.bin"
    finally:
        m.close()


garbage = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.integers() | st.floats() | st.text(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.floats() | st.none() | st.text(), max_size=3),
    st.builds(object),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    measurement=garbage,
    tags=st.dictionaries(st.text(max_size=8) | st.integers(), garbage, max_size=4) | garbage,
    fields=st.dictionaries(st.text(max_size=8) | st.integers(), garbage, max_size=4) | garbage,
    timestamp=garbage | st.datetimes(),
    sample_rate=st.floats() | st.integers(),
)
def test_no_generated_input_makes_log_raise(
    shared_logger: MetricsLogger, measurement: Any, tags: Any, fields: Any, timestamp: Any, sample_rate: Any
) -> None:
    shared_logger.log(measurement, tags, fields, timestamp=timestamp, sample_rate=sample_rate)


@pytest.fixture(scope="module")
def shared_logger() -> Any:
    m = make_logger(MemorySink())
    yield m
    assert m.close()


@pytest.mark.parametrize(("error", "status"), [(RuntimeError, "failed"), (KeyboardInterrupt, "cancelled")])
def test_a_with_block_that_raises_ends_its_run_accordingly(error: type[BaseException], status: str) -> None:
    sink = MemorySink()
    with pytest.raises(error), make_logger(sink) as m:
        m.log("x", {}, {"f": 1.0})
        raise error()
    assert sink.ended == [status] and len(sink.points) == 1


def test_logging_never_draws_from_the_global_random_generator() -> None:
    import random

    random.seed(1234)
    expected = [random.random() for _ in range(3)]
    random.seed(1234)
    with make_logger(MemorySink(), flush_jitter=5) as m:
        for _ in range(500):
            m.log("x", {}, {"f": 1.0}, sample_rate=0.5)
        m.flush(5)
    assert [random.random() for _ in range(3)] == expected  # a seeded training loop stays reproducible
