"""The generated alert rules, evaluated on real data.

Each rule's InfluxQL query runs in a real InfluxDB 1.x with ``$timeFilter`` set to the rule's
range ending at the evaluation time; each series is reduced to its last non-null value and
compared with the threshold, as Grafana's reduce (last, drop non-numeric) and threshold
expressions do. On simulator data (one miner going silent) only the silent-miner rule fires,
for that miner alone; on faults logged through a MetricsLogger, each rule fires for exactly the
faulty uid and not for a healthy one next to it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.cli import main
from tplr_metrics.dashboards.alerts import ALERTS_FILE, AlertParams, AlertRule, alert_rules, build_alerts, provisioning

from ..servers import InfluxDB1
from .test_dashboards import _simulate_into

REPO = Path(__file__).resolve().parents[2]
WINDOW = 0.25
PARAMS = AlertParams(
    window_seconds=WINDOW,
    silent_windows=4,
    stuck_windows=4,
    lookback_windows=60,
    loss_windows=12,
    gather_windows=6,
    pipeline_range_s=60,
    gpu_range_s=60,
)
RULES = {rule.uid: rule for rule in alert_rules(PARAMS)}
SIMULATE = ["--windows", "16", "--window-seconds", str(WINDOW), "--peers", "8", "--seed", "5"]


def evaluate(server: InfluxDB1, db: str, rule: AlertRule, to_ms: int) -> dict[str, float]:
    """uid (or role/uid/gpu) -> reduced value, for every series the rule fires on."""
    from_ms = to_ms - rule.range_s * 1000
    text = rule.query.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    result = server.query(text, db=db, epoch="ms")
    firing: dict[str, float] = {}
    for answer in result.get("results", []):
        assert "error" not in answer, (answer, text)
        for series in answer.get("series", []) or []:
            values = [row[1] for row in series["values"] if row[1] is not None]
            last = values[-1] if values else None
            if rule.fires(last):
                tags = series.get("tags", {})
                key = tags.get("uid", "")
                if tags.get("config_netuid"):
                    key += "@" + tags["config_netuid"]
                if "gpu_id" in tags:
                    key += "/gpu" + tags["gpu_id"]
                firing[key] = last
    return firing


def last_point_ms(server: InfluxDB1, db: str) -> int:
    result = server.query('SELECT last("loss") FROM "Mtraining_step_v2"', db=db, epoch="ms")
    return int(result["results"][0]["series"][0]["values"][0][0]) + 1


@pytest.fixture(scope="module")
def silent_run(influx1: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """Simulator data where miner 0 stops after 6 of 16 windows; evaluated at the last point."""
    db = "t_alert_" + uuid.uuid4().hex[:10]
    home = tmp_path_factory.mktemp("tplr_home_alerts")
    env = {"INFLUXDB_URL": influx1.url, "INFLUXDB_DATABASE": db, "INFLUXDB_API": "v1"}
    _simulate_into(env, home, ["simulate", *SIMULATE, "--silent-miner-after", "6"])
    yield db, last_point_ms(influx1, db)


def test_silent_miner_rule_fires_for_exactly_the_silent_miner(influx1: InfluxDB1, silent_run: tuple[str, int]) -> None:
    db, to_ms = silent_run
    assert set(evaluate(influx1, db, RULES["tplr-miner-silent"], to_ms)) == {"0@3"}
    # Before miner 0 went quiet (window 6 of 16), the rule is quiet for every miner.
    earlier = to_ms - int(8.5 * WINDOW * 1000)
    assert evaluate(influx1, db, RULES["tplr-miner-silent"], earlier) == {}


def test_other_rules_stay_quiet_on_healthy_simulator_data(influx1: InfluxDB1, silent_run: tuple[str, int]) -> None:
    db, to_ms = silent_run
    for uid, rule in RULES.items():
        if uid == "tplr-miner-silent":
            continue
        # Every rule's query returns series on this data: quiet because healthy, not because empty.
        text = rule.query.replace("$timeFilter", f"time >= {to_ms - rule.range_s * 1000}ms and time <= {to_ms}ms")
        answered = server_series(influx1, db, text)
        assert answered, f"{uid} has no data to judge"
        assert evaluate(influx1, db, rule, to_ms) == {}, uid


def server_series(server: InfluxDB1, db: str, text: str) -> list[dict[str, Any]]:
    result = server.query(text, db=db)
    return [s for r in result.get("results", []) for s in r.get("series", []) or []]


@pytest.fixture(scope="module")
def faults(influx1: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """Twelve windows of healthy and faulty nodes side by side, logged through MetricsLoggers."""
    db = "t_fault_" + uuid.uuid4().hex[:10]
    home = tmp_path_factory.mktemp("tplr_home_faults")
    end_s = time.time()
    windows = 12
    step = WINDOW

    def at(i: int) -> float:
        return end_s - (windows - 1 - i) * step

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TPLR_METRICS_HOME", str(home))

        def logger(uid: int, role: str, prefix: str, netuid: int = 3) -> MetricsLogger:
            config = {"netuid": netuid}
            return MetricsLogger(
                url=influx1.url, database=db, api="v1", uid=uid, role=role, prefix=prefix, config=config
            )

        # 4 healthy; 5 NaN loss at the end, drops, full GPU; 6 loss jump, rejects; 7 low gather,
        # spools; 10 every loss NaN (not silent); 11 loss falling fast (no jump); 12 a flood of
        # drops before its first health point; 13 a full GPU on its own points (with_gpu_metrics);
        # uid 0 of subnet 3 silent after window 4 while uid 0 of subnet 5 lives.
        miners = {(uid, 3): logger(uid, "miner", "M") for uid in (0, 4, 5, 6, 7, 10, 11, 12, 13)}
        miners[(0, 5)] = logger(0, "miner", "M", netuid=5)
        validators = {uid: logger(uid, "validator", "V") for uid in (8, 9)}
        lost_before: dict[tuple[int, int], int] = {}
        try:
            for i in range(windows):
                for (uid, netuid), m in miners.items():
                    if (uid, netuid) == (0, 3) and i > 4:
                        continue
                    loss = 3.0 - 0.01 * i
                    if (uid == 5 and i >= windows - 2) or uid == 10:
                        loss = float("nan")  # dropped by the logger: the point has no loss
                    if uid == 6 and i >= windows - 3:
                        loss = 9.5  # a 3x jump
                    if uid == 11:
                        loss = 5.2 - 0.3 * i  # 5.2 -> 1.9: a healthy run, max/min 2.7
                    gather = 15.0 if uid == 7 else 90.0
                    fields = {"loss": loss, "n_gather_peers": 12, "tokens_per_sec": 5e3, "gather_success_rate": gather}
                    step_tags: dict[str, Any] = {"window": 100 + i}
                    if uid == 13:  # what with_gpu_metrics=True adds to the caller's point
                        step_tags["gpu_id"] = "1"
                        fields.update(gpu_mem_used_mb=81_000.0, gpu_mem_capacity_mb=81_559.0)
                    m.log("training_step_v2", step_tags, fields, timestamp=at(i))
                    dropped = 3 if uid == 5 and i >= windows - 2 else 19_950 if uid == 12 else 0
                    rejected = 1 if uid == 6 and i >= windows - 2 else 0
                    spooled = 40 if uid == 7 and i >= windows - 2 else 0
                    lost = dropped + rejected + spooled
                    since = lost - lost_before.get((uid, netuid), 0)  # as health_fields counts it
                    lost_before[(uid, netuid)] = lost
                    health = {
                        "queue_depth": 0,
                        "dropped": dropped,
                        "rejected": rejected,
                        "spooled": spooled,
                        "lost_since_last": since,
                    }
                    m.log("tplr_metrics_health", {}, health, timestamp=at(i))
                    used = 80_000.0 if uid == 5 else 40_000.0
                    system = {"gpu_mem_used_mb": used, "gpu_mem_capacity_mb": 81_559.0}
                    m.log("system", {"gpu_id": "0"}, system, timestamp=at(i))
                for uid, v in validators.items():
                    block = 5_000_000 + 60 * (min(i, 5) if uid == 8 else i)  # validator 8 stuck from window 5
                    v.log("validator_window_v2", {"window": 100 + i}, {"current_block": block}, timestamp=at(i))
        finally:
            for each in [*miners.values(), *validators.values()]:
                each.close()
    yield db, int(end_s * 1000) + 1


@pytest.mark.parametrize(
    ("rule_uid", "expected"),
    [
        ("tplr-miner-silent", {"0@3"}),
        ("tplr-validator-window-stuck", {"8@3"}),
        ("tplr-loss-not-finite", {"5@3", "10@3"}),
        ("tplr-loss-jump", {"6@3"}),
        ("tplr-gather-low", {"7@3"}),
        ("tplr-pipeline-losing-points", {"5", "6", "7", "12"}),
        ("tplr-gpu-memory-full", {"5/gpu0", "13/gpu1"}),
    ],
)
def test_each_rule_fires_for_exactly_the_faulty_uid(
    rule_uid: str, expected: set[str], influx1: InfluxDB1, faults: tuple[str, int]
) -> None:
    db, to_ms = faults
    assert set(evaluate(influx1, db, RULES[rule_uid], to_ms)) == expected


def test_thresholds_are_parameters() -> None:
    strict = {r.uid: r for r in alert_rules(AlertParams(loss_jump_factor=1.5, gather_floor_percent=95))}
    assert strict["tplr-loss-jump"].threshold == 1.5 and strict["tplr-gather-low"].threshold == 95
    defaults = {r.uid: r for r in alert_rules()}
    assert defaults["tplr-loss-jump"].threshold == 2.0 and defaults["tplr-gpu-memory-full"].threshold == 97.0
    assert "GROUP BY time(84s)" in defaults["tplr-miner-silent"].query


def test_provisioning_file_shape_and_committed_copy_is_current() -> None:
    document = provisioning()
    assert document["apiVersion"] == 1
    rules = document["groups"][0]["rules"]
    assert {r["uid"] for r in rules} == set(RULES)
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["uid"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["uid"]
        assert rule["condition"] == "C"
        query = rule["data"][0]
        assert query["datasourceUid"] == "tplr-influxql" and "$timeFilter" in query["model"]["query"]
        assert [d["model"]["type"] for d in rule["data"][1:]] == ["reduce", "threshold"]
    committed = REPO / "telemetry" / "grafana" / "provisioning" / "alerting" / ALERTS_FILE
    assert committed.read_text(encoding="utf-8") == build_alerts()[ALERTS_FILE], "run: tplr-metrics dashboards build"
    json.loads(committed.read_text(encoding="utf-8"))


def test_build_command_writes_and_checks_the_alerts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "alerting"
    args = ["dashboards", "build", "--out", str(tmp_path / "dash"), "--alerts-out", str(out)]
    assert main(args) == 0
    assert (out / ALERTS_FILE).is_file()
    assert main([*args, "--check"]) == 0
    (out / ALERTS_FILE).write_text("{}")
    assert main([*args, "--check"]) == 1
    assert ALERTS_FILE in capsys.readouterr().err
