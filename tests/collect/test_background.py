"""Background measurements: ``system`` and ``tplr_metrics_health`` land at their interval in a
real InfluxDB 1.x without any log() call, and stop when the logger closes."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tplr_metrics import ConfigurationError, MetricsLogger
from tplr_metrics.collect.background import HEALTH_FIELDS, health_fields, start_background

from ..servers import InfluxDB1


def background_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tplr-metrics-background"]


def gaps_s(rows: list[dict[str, Any]]) -> list[float]:
    times = sorted(row["time"] for row in rows)
    return [(b - a) / 1e9 for a, b in itertools.pairwise(times)]


def test_system_and_health_land_at_their_interval_without_any_log_call(influx1: InfluxDB1, unique_db: str) -> None:
    m = MetricsLogger(
        url=influx1.url,
        api="v1",
        database=unique_db,
        flush_interval=100,
        host_metrics_interval=0.25,
        system_metrics_every=0.5,
        health_every=0.5,
    )
    assert len(background_threads()) == 1
    time.sleep(2.3)  # ticks at 0.5, 1.0, 1.5 and 2.0 s
    assert m.close(timeout=30)
    assert not background_threads()
    where = f"runtime_id = '{m.runtime_id}'"

    system = influx1.rows(f"SELECT * FROM \"system\" WHERE {where} AND gpu_id = ''", unique_db)
    assert 3 <= len(system) <= 5
    assert all(0.3 <= gap <= 0.8 for gap in gaps_s(system)), gaps_s(system)
    total = psutil.virtual_memory().total / 1024.0**2
    for row in system:
        assert 0.0 <= row["sys_cpu_usage"] <= 100.0
        assert row["sys_mem_total"] == pytest.approx(total, rel=0.01)
        assert 0.0 < row["sys_mem_used"] <= row["sys_mem_total"]
        assert row["sys_proc_rss_mb"] > 1.0

    health = influx1.rows(f'SELECT * FROM "tplr_metrics_health" WHERE {where}', unique_db)
    assert 3 <= len(health) <= 5
    assert all(0.3 <= gap <= 0.8 for gap in gaps_s(health)), gaps_s(health)
    keys = influx1.rows('SHOW FIELD KEYS FROM "tplr_metrics_health"', unique_db)
    assert {(k["fieldKey"], k["fieldType"]) for k in keys} == {
        ("queue_depth", "integer"),
        ("written_per_s", "float"),
        ("dropped", "integer"),
        ("retried", "integer"),
        ("rejected", "integer"),
        ("write_latency_s", "float"),
        ("spooled", "integer"),
        ("lost_since_last", "integer"),
    }
    for row in health:
        assert row["dropped"] == 0 and row["rejected"] == 0 and row["retried"] == 0 and row["spooled"] == 0
        assert row["lost_since_last"] == 0
        assert 0 <= row["queue_depth"] < 100
        assert 0.0 <= row["written_per_s"] < 1000.0
        assert 0.0 <= row["write_latency_s"] < 5.0
    # The background's own points were written in between: telemetry shows itself working.
    assert max(row["written_per_s"] for row in health) > 0.0
    stats = m.stats()
    assert stats["dropped_total"] == 0 and stats["written"] == len(system) + len(health)


def test_they_stop_at_close_and_take_the_loggers_prefix(influx1: InfluxDB1, unique_db: str) -> None:
    m = MetricsLogger(url=influx1.url, api="v1", database=unique_db, prefix="V", flush_interval=100, health_every=0.3)
    time.sleep(0.8)
    assert m.close(timeout=30)
    assert not background_threads()
    landed = influx1.count("Vtplr_metrics_health", "queue_depth", unique_db, f"runtime_id = '{m.runtime_id}'")
    assert landed >= 1
    time.sleep(0.5)  # no tick after close: nothing refused as logged-after-close
    assert m.stats()["dropped"].get("after_close", 0) == 0
    assert m.stats()["logged"] == landed


def test_no_thread_unless_asked(influx1: InfluxDB1, unique_db: str, isolated_env: Path) -> None:
    """Both off: no thread. (health_every left unset is on with an InfluxDB destination.)"""
    with MetricsLogger(url=influx1.url, api="v1", database=unique_db, system_metrics_every=0, health_every=0):
        assert not background_threads()
    with MetricsLogger():  # the local store: health is off by default there
        assert not background_threads()


def test_periods_must_be_positive_seconds() -> None:
    bad: Any
    for bad in (-1, float("inf"), float("nan"), True, "5"):
        with pytest.raises(ConfigurationError):
            start_background(object(), bad, None)
        with pytest.raises(ConfigurationError):
            start_background(object(), None, bad)


def test_health_fields_from_two_snapshots() -> None:
    before = {"written": 100, "batches": 2, "write_seconds_total": 0.5, "last_write_seconds": 0.3}
    after = {
        "written": 400,
        "batches": 5,
        "write_seconds_total": 1.1,
        "last_write_seconds": 0.1,
        "queue_depth": 12,
        "dropped_total": 3,
        "retried": 4,
        "rejected_total": 1,
    }
    fields = health_fields(before, after, 2.0)
    assert tuple(fields) == HEALTH_FIELDS
    assert fields == {
        "queue_depth": 12,
        "written_per_s": 150.0,
        "dropped": 3,
        "retried": 4,
        "rejected": 1,
        "write_latency_s": pytest.approx(0.2),
        "spooled": 0,
        "lost_since_last": 4,
    }
    idle = health_fields(after, {**after, "spooled": {"outage": 5, "overflow": 2}}, 1.0)
    assert idle["written_per_s"] == 0.0 and idle["write_latency_s"] == 0.1 and idle["spooled"] == 7
    assert idle["lost_since_last"] == 7
    assert health_fields(after, {**after, "spooled": 9}, 0.0)["spooled"] == 9


def test_the_first_health_point_counts_losses_since_the_logger_started(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drops before the first health point: its lost_since_last says so (the alert rule sums
    it; a rule on the totals' spread saw 0 for a logger whose first point already had them)."""
    m = MetricsLogger(sinks=[], health_every=3600)
    flood = {**m.stats(), "dropped_total": 5}  # a full queue's drops, as stats() counts them
    health: list[dict[str, Any]] = []
    monkeypatch.setattr(m, "stats", lambda: flood)
    monkeypatch.setattr(m, "log", lambda measurement, tags, fields, **_: health.append(fields))
    m._background._log_health()
    m._background._log_health()
    m.close(timeout=5)
    assert [h["lost_since_last"] for h in health] == [5, 0] and health[0]["dropped"] == 5
