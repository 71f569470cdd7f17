"""A spool is delivered only to the destination it was written for. Before: a logger for database
team_a (server down) left 5 points, and the next logger on the same TPLR_METRICS_HOME adopted
them whatever its destination: a JSONL-only run wrote them into its metrics.jsonl, a logger for
team_b wrote them into team_b, and `tplr-metrics check` picked the file up and then failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tplr_metrics import MetricsLogger

from ..servers import InfluxDB1

REPO = Path(__file__).resolve().parents[2]


def leave_spooled(url: str, database: str, points: int) -> None:
    """A logger whose server is down closes with its points in the default spool."""
    m = MetricsLogger(url=url, database=database, api="v1", retry_interval=60_000)
    for i in range(points):
        m.log("left", {"i": str(i)}, {"v": float(i)})
    assert m.close(timeout=0.5) is False
    assert m.stats()["spooled"] == points


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tplr_metrics.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def spool_listing(home: Path) -> dict[str, Any]:
    listed = cli("replay", "--spool", str(home / "spool"), "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {d["meant_for"]["database"]: d["points"] for d in json.loads(listed.stdout)["destinations"]}


def test_a_spool_is_adopted_only_by_a_logger_for_its_destination(isolated_env: Path, tmp_path: Path) -> None:
    server = InfluxDB1(tmp_path / "influx")  # its port is chosen; it is not running yet
    try:
        leave_spooled(server.url, "team_a", 5)
        server.start()
        server.create_database("team_a")  # so that check has a database to write into
        logs = tmp_path / "logs"
        jsonl_only = MetricsLogger(sinks=[{"kind": "jsonl", "params": {"log_dir": str(logs)}}])
        jsonl_only.log("own", {}, {"v": 1.0})
        assert jsonl_only.close(timeout=10)
        rows = [json.loads(line) for path in logs.rglob("metrics.jsonl") for line in path.read_text().splitlines()]
        assert [r["measurement"] for r in rows] == ["own"] and jsonl_only.stats()["adopted"] == 0

        team_b = MetricsLogger(url=server.url, database="team_b", api="v1")
        team_b.log("own", {}, {"v": 1.0})
        assert team_b.close(timeout=10) and team_b.stats()["adopted"] == 0
        assert server.count("own", "v", "team_b") == 1 and server.count("left", "v", "team_b") == 0

        checked = cli("check", env={"INFLUXDB_URL": server.url, "INFLUXDB_API": "v1", "INFLUXDB_DATABASE": "team_a"})
        assert spool_listing(isolated_env) == {"team_a": 5}, checked.stdout + checked.stderr  # check adopts nothing
        assert server.count("left", "v", "team_a") == 0

        team_a = MetricsLogger(url=server.url, database="team_a", api="v1")
        assert team_a.close(timeout=30)
        assert team_a.stats()["adopted"] == 5 and server.count("left", "v", "team_a") == 5
        assert spool_listing(isolated_env) == {}
    finally:
        server.cleanup()


def test_replay_spool_lists_and_delivers_each_spool_where_it_was_meant(isolated_env: Path, tmp_path: Path) -> None:
    """`replay --spool --list` shows each destination's points; `replay --spool` sends each into the
    database it was meant for; `--to` another one needs `--yes` for points meant elsewhere."""
    server = InfluxDB1(tmp_path / "influx")
    try:
        leave_spooled(server.url, "team_a", 5)
        leave_spooled(server.url, "team_b", 7)
        assert spool_listing(isolated_env) == {"team_a": 5, "team_b": 7}
        server.start()
        server.create_database("team_c")
        spool = str(isolated_env / "spool")

        refused = cli("replay", "--spool", spool, "--to", server.url, "--api", "v1", "--database", "team_c", "--json")
        assert refused.returncode == 1 and "--yes" in refused.stderr
        assert json.loads(refused.stdout)["left_for_other_destinations"] == 12
        assert server.count("left", "v", "team_c") == 0 and spool_listing(isolated_env) == {"team_a": 5, "team_b": 7}

        delivered = cli("replay", "--spool", spool, "--json")
        assert delivered.returncode == 0, delivered.stderr
        summary = json.loads(delivered.stdout)
        assert summary["written"] == summary["picked_up"] == 12 and summary["left_in_spool"] == 0
        assert server.count("left", "v", "team_a") == 5 and server.count("left", "v", "team_b") == 7
        assert spool_listing(isolated_env) == {}
    finally:
        server.cleanup()


def test_replay_spool_stops_at_an_answer_no_retry_can_fix(isolated_env: Path, tmp_path: Path) -> None:
    """A v2 spool replayed into an InfluxDB 1.6 (no /api/v2/write: 404, and /ping names the
    version): `replay --spool` says what to change and returns at once, the points still
    spooled. (Before: it retried until --retry-seconds ran out, 21.6 s of 20 here.)"""
    server = InfluxDB1(tmp_path / "influx")
    try:
        m = MetricsLogger(url=server.url, database="b", org="o", api="v2", token="a-test-token-0123")
        for i in range(5):
            m.log("left", {}, {"v": float(i)})
        assert m.close(timeout=0.5) is False and m.stats()["spooled"] == 5
        server.start()
        env = {"INFLUXDB_URL": server.url, "INFLUXDB_API": "v2", "INFLUXDB_ORG": "o"}
        env["INFLUXDB_TOKEN"] = "a-test-token-0123"
        started = time.monotonic()
        replayed = cli("replay", "--spool", str(isolated_env / "spool"), "--json", "--retry-seconds", "600", env=env)
        assert time.monotonic() - started < 60, "waited for --retry-seconds"
        assert replayed.returncode == 1, replayed.stderr
        summary = json.loads(replayed.stdout)
        assert summary["left_in_spool"] == 5 and summary["written"] == 0
        assert "INFLUXDB_API=v1" in summary["destinations"][0]["last_error"]
        listed = cli("replay", "--spool", str(isolated_env / "spool"), "--list", "--json")
        assert [d["points"] for d in json.loads(listed.stdout)["destinations"]] == [5]
    finally:
        server.cleanup()


def test_replay_spool_keeps_what_the_server_refuses_as_dead_letters(isolated_env: Path, tmp_path: Path) -> None:
    """5 spooled points, 2 of them with a field whose type the database already holds
    differently: `replay --spool` stores 3, counts 2 rejected, and writes both to its own
    dead-letter file with the server's reason, as a logger does. (Before: `rejected: 2` and no
    record of which points or why.)"""
    server = InfluxDB1(tmp_path / "influx")
    try:
        m = MetricsLogger(url=server.url, database="team_a", api="v1", retry_interval=60_000)
        for i in range(5):
            m.log("left", {}, {"v": float(i), "kind": 1.0 if i in (1, 3) else "x"})
        assert m.close(timeout=0.5) is False and m.stats()["spooled"] == 5
        server.start()
        server.create_database("team_a")
        assert server.write("team_a", b'left kind="already a string",v=-1 1')[0] == 204
        replayed = cli("replay", "--spool", str(isolated_env / "spool"), "--json")
        summary = json.loads(replayed.stdout)
        assert summary["written"] == 3 and summary["rejected"] == 2, replayed.stdout + replayed.stderr
        letters = [
            json.loads(line)
            for path in (isolated_env / "dead_letter").glob("replay-*.jsonl")
            for line in path.read_text().splitlines()
        ]
        assert sorted(d["point"][2]["v"] for d in letters) == [1.0, 3.0]
        assert all("field type conflict" in d["reason"] for d in letters)
        assert server.count("left", "v", "team_a") == 1 + 3
    finally:
        server.cleanup()
