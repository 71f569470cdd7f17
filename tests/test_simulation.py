"""``tplr-metrics simulate`` into a real InfluxDB 1.x: what the simulated nodes logged is what landed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tplr_metrics.catalog import BENCHMARK_TASKS
from tplr_metrics.cli import main

from .servers import InfluxDB1

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def influx_env(influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # The simulate command takes its destination from the environment, like any logger.
    monkeypatch.setenv("INFLUXDB_URL", influx1.url)
    monkeypatch.setenv("INFLUXDB_DATABASE", unique_db)
    monkeypatch.setenv("INFLUXDB_API", "v1")
    return unique_db


def test_simulate_lands_every_point_with_catalog_shapes(
    influx1: InfluxDB1, influx_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = influx_env
    argv = ["simulate", "--windows", "6", "--window-seconds", "0", "--miners", "2", "--validators", "1"]
    argv += ["--evaluators", "1", "--peers", "8", "--seed", "7", "--silent-miner-after", "3", "--slash-every", "2"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)

    assert summary["windows"] == 6
    assert summary["dropped"] == 0 and summary["rejected"] == 0
    assert summary["written"] == summary["logged"] > 0
    assert "127.0.0.1" in summary["destination"] and db in summary["destination"]
    runs = summary["runs"]
    assert [r["role"] for r in runs] == ["miner", "miner", "validator", "evaluator"]
    assert len({r["runtime_id"] for r in runs}) == 4  # each node is its own run

    # Everything logged is in the server.
    measurements = [m[0] for m in influx1.query("SHOW MEASUREMENTS", db=db)["results"][0]["series"][0]["values"]]
    # Every measurement of the catalog's roles is there (plus system and health).
    for name in (
        "Mtraining_step_v2",
        "Vvalidator_scores",
        "Vvalidator_window_v2",
        "Vvalidator_slash",
        "Vvalidator_inactivity",
        "Vvalidator_openskill",
        "Vvalidator_sync_score",
        "Vtiming",
        "Ebenchmark_task",
        "Ecustom_evaluation",
        "Msystem",
        "Vtplr_metrics_health",
    ):
        assert name in measurements, name

    # The silent miner (uid 0) stops after 3 windows; the other miner logs all 6.
    assert influx1.count("Mtraining_step_v2", "loss", db, "\"uid\" = '0'") == 3
    assert influx1.count("Mtraining_step_v2", "loss", db, "\"uid\" = '1'") == 6
    # ... and the validator marks it inactive (the caller's uid tag is kept as caller_uid).
    assert influx1.count("Vvalidator_inactivity", "score_after", db, "\"caller_uid\" = '0'") == 3
    # Slashes every 2 windows, with the catalog's tags.
    slashes = influx1.rows(
        'SELECT "score_after", "reason" FROM "Vvalidator_slash" GROUP BY "eval_uid", "reason_code"', db
    )
    assert len(slashes) == 3 and {r["reason_code"] for r in slashes} == {"sync_fail"}
    # Per-peer scores: one point per evaluated peer per window, tagged with the standard tags.
    scores = influx1.rows('SELECT "weight" FROM "Vvalidator_scores" GROUP BY "eval_uid", "role", "uid", "group"', db)
    assert {r["role"] for r in scores} == {"validator"} and {r["group"] for r in scores} == {"validator"}
    assert len({r["eval_uid"] for r in scores}) >= 5
    loss = [r["loss"] for r in influx1.rows('SELECT "loss" FROM "Mtraining_step_v2" WHERE "uid" = \'1\'', db)]
    assert len(loss) == 6 and all(1.0 < x < 12.0 for x in loss)
    tasks = influx1.rows('SELECT "score" FROM "Ebenchmark_task" GROUP BY "task"', db)
    n = len(BENCHMARK_TASKS)  # Templar's 7 lm-eval tasks, openbookqa included
    assert {r["task"] for r in tasks} == {t[0] for t in BENCHMARK_TASKS} and len(tasks) == n * 3  # every 2nd of 6


def test_simulate_text_summary_and_bad_arguments(
    influx1: InfluxDB1, influx_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "simulate",
                "--duration",
                "0.2",
                "--window-seconds",
                "0.1",
                "--miners",
                "1",
                "--validators",
                "0",
                "--evaluators",
                "0",
                "--no-health",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "simulated 2 windows" in out and "destination: InfluxV1Sink" in out
    assert influx1.count("Mtraining_step_v2", "loss", influx_env) == 2
    assert main(["simulate", "--peers", "0"]) == 2
    assert "--peers must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("role", ["miner", "validator", "evaluator"])
def test_role_scripts_use_the_same_engine(role: str, influx1: InfluxDB1, unique_db: str, tmp_path: Path) -> None:
    env = {
        "INFLUXDB_URL": influx1.url,
        "INFLUXDB_DATABASE": unique_db,
        "INFLUXDB_API": "v1",
        "TPLR_METRICS_HOME": str(tmp_path / "home"),
        "PATH": "/usr/bin:/bin",
    }
    script = REPO / "telemetry" / "simulator" / f"{role}.py"
    args = ["--count", "2", "--windows", "3", "--window-seconds", "0", "--peers", "4", "--json"]
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [r["role"] for r in summary["runs"]] == [role, role]
    assert summary["written"] == summary["logged"] > 0
    name = {"miner": "Mtraining_step_v2", "validator": "Vvalidator_window_v2", "evaluator": "Ecustom_evaluation"}[role]
    field = {"miner": "loss", "validator": "loss_own_before", "evaluator": "perplexity"}[role]
    expected = 2 * (3 if role != "evaluator" else 2)  # evaluators score every 2nd window
    assert influx1.count(name, field, unique_db) == expected
