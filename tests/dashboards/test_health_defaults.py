"""A logger at its defaults feeds the pipeline-health dashboard (real InfluxDB 1.x, read back)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.dashboards import all_dashboards, panel_targets
from tplr_metrics.logger import DEFAULT_HEALTH_EVERY

from ..servers import InfluxDB1
from .test_dashboards import ALL_SELECTED, _expand, _rows, _run_influxql


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("INFLUXDB_URL", "INFLUXDB_DATABASE", "INFLUXDB_API", "TPLR_METRICS_SINKS", "TPLR_METRICS_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TPLR_METRICS_HOME", str(tmp_path))
    return tmp_path


def test_a_logger_at_defaults_feeds_the_pipeline_health_dashboard_within_15s(influx1: InfluxDB1, home: Path) -> None:
    db = "t_health_" + uuid.uuid4().hex[:10]
    started = time.monotonic()
    # As Templar builds it: server arguments, role tags, no health_every, no system_metrics_every.
    m = MetricsLogger(url=influx1.url, database=db, api="v1", prefix="V", uid=7, role="validator")
    try:
        m.log("validator_window_v2", {"window": 1}, {"loss_own_before": 3.0})
        seen = 0
        while time.monotonic() - started < 15 and not seen:
            time.sleep(0.5)
            m.flush(timeout=2)
            seen = influx1.count("Vtplr_metrics_health", "queue_depth", db) if _exists(influx1, db) else 0
        took = time.monotonic() - started
        assert seen >= 1, "no tplr_metrics_health point within 15 s"
        assert took >= DEFAULT_HEALTH_EVERY - 1  # every 10 s, not at once
        to_ms = int(time.time() * 1000) + 1000
        rng = (db, to_ms - 5 * 60 * 1000, to_ms)
        health = next(d for d in all_dashboards() if d.slug == "pipeline-health")
        empty = [
            panel.title
            for panel in health.panels()
            for target in panel_targets(panel, "influxql")
            if not _rows(_run_influxql(influx1, db, _expand(target["query"], rng, ALL_SELECTED)))
        ]
        assert not empty, f"pipeline-health panels without data at defaults: {empty}"
    finally:
        m.close()


def _exists(server: InfluxDB1, db: str) -> bool:
    names = server.query("SHOW DATABASES")["results"][0].get("series", [{}])[0].get("values", [])
    return [db] in names


def test_health_is_off_for_the_local_store_and_with_zero(influx1: InfluxDB1, home: Path) -> None:
    """The default is for a server the dashboard reads; the local store (tests count its points) and
    health_every=0 start no background measurement."""
    local = MetricsLogger()  # no server configured: the local store
    off = MetricsLogger(url=influx1.url, database="t_off", api="v1", health_every=0)
    on = MetricsLogger(url=influx1.url, database="t_on", api="v1")
    try:
        assert local.server is None and not local._background._subscriptions
        assert not off._background._subscriptions
        assert len(on._background._subscriptions) == 1 and on._background.running
    finally:
        for logger in (local, off, on):
            logger.close()
    assert not on._background.running
