"""``tplr-metrics check`` against real servers: OK on a live one, one precise diagnosis otherwise."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tplr_metrics.cli import main
from tplr_metrics.commands.connectivity import CHECK_MEASUREMENT, EXIT_CODES

from ..influx2_container import influx2_container
from ..servers import InfluxDB1, VictoriaMetrics

REPO = Path(__file__).resolve().parents[2]
SECRET = "tok-" + uuid.uuid4().hex  # must never be printed


def check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str) -> tuple[int, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["check", "--timeout", "3"])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert SECRET not in output
    return code, output


@pytest.fixture(scope="module")
def influx1_auth() -> Iterator[InfluxDB1]:
    try:
        server = InfluxDB1(auth=True)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    server.start()
    yield server
    server.cleanup()


def test_live_server_round_trip(
    influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    influx1.create_database(unique_db)
    code, out = check(
        monkeypatch,
        capsys,
        INFLUXDB_URL=influx1.url,
        INFLUXDB_DATABASE=unique_db,
        INFLUXDB_API="v1",
        INFLUXDB_TOKEN=SECRET,  # ignored by an open 1.x server, and never shown
    )
    assert code == 0, out
    assert "OK: wrote and read back 1 point in" in out and "InfluxDB 1." in out
    check_id = out.split("check_id=")[1].split()[0]
    # The point is really there, with its unique tag.
    assert influx1.count(CHECK_MEASUREMENT, "ok", unique_db, f"\"check_id\" = '{check_id}'") == 1


def test_json_output(
    influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    influx1.create_database(unique_db)
    monkeypatch.setenv("INFLUXDB_URL", influx1.url)
    monkeypatch.setenv("INFLUXDB_DATABASE", unique_db)
    monkeypatch.setenv("INFLUXDB_API", "v1")
    assert main(["check", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["server_version"].startswith("1.") and result["round_trip_ms"] > 0


def test_closed_port_is_connection_refused(
    unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        code, out = check(
            monkeypatch,
            capsys,
            INFLUXDB_URL=f"http://127.0.0.1:{port}",
            INFLUXDB_DATABASE=unique_db,
            INFLUXDB_API="v1",
            INFLUXDB_TOKEN=SECRET,
        )
    assert code == EXIT_CODES["connection refused"], out
    assert "[connection refused]" in out and f"127.0.0.1:{port}" in out


def test_missing_database_is_reported_not_created(
    influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = check(monkeypatch, capsys, INFLUXDB_URL=influx1.url, INFLUXDB_DATABASE=unique_db, INFLUXDB_API="v1")
    assert code == EXIT_CODES["not found"], out
    assert "[not found]" in out and f"database '{unique_db}' does not exist" in out
    databases = [row[0] for row in influx1.query("SHOW DATABASES")["results"][0]["series"][0]["values"]]
    assert unique_db not in databases


def test_after_create_database_the_next_check_passes(
    influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"INFLUXDB_URL": influx1.url, "INFLUXDB_DATABASE": unique_db, "INFLUXDB_API": "v1"}
    code, out = check(monkeypatch, capsys, **base)
    assert code == EXIT_CODES["not found"] and "create it" in out, out
    influx1.create_database(unique_db)
    code, out = check(monkeypatch, capsys, **base)
    assert code == 0, out
    check_id = out.split("check_id=")[1].split()[0]
    assert influx1.count(CHECK_MEASUREMENT, "ok", unique_db, f"\"check_id\" = '{check_id}'") == 1
    assert influx1.count(CHECK_MEASUREMENT, "ok", unique_db) == 1  # the failed check's point was not kept


def test_the_default_v2_api_against_influxdb_1_6_names_the_fix(
    influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    influx1.create_database(unique_db)
    code, out = check(monkeypatch, capsys, INFLUXDB_URL=influx1.url, INFLUXDB_DATABASE=unique_db)
    assert code == EXIT_CODES["configuration"], out
    assert "InfluxDB 1.6" in out and "INFLUXDB_API=v1" in out and "does not exist" not in out, out


@pytest.mark.parametrize("api", ["v2", "v1"])
def test_victoria_metrics_round_trip(
    victoria: VictoriaMetrics, api: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = check(monkeypatch, capsys, INFLUXDB_URL=victoria.url, INFLUXDB_API=api)
    assert code == 0, out
    assert "VictoriaMetrics" in out, out
    check_id = out.split("check_id=")[1].split()[0]
    series = victoria.export_when_visible(f'{{__name__="{CHECK_MEASUREMENT}_ok", check_id="{check_id}"}}')
    assert sum(len(s["values"]) for s in series) == 1


def test_wrong_and_missing_credentials(
    influx1_auth: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    influx1_auth.create_database(unique_db)
    base = {"INFLUXDB_URL": influx1_auth.url, "INFLUXDB_DATABASE": unique_db, "INFLUXDB_API": "v1"}
    code, out = check(monkeypatch, capsys, **base, INFLUXDB_USERNAME="admin", INFLUXDB_PASSWORD=SECRET)
    assert code == EXIT_CODES["credentials"], out
    assert "[credentials] " in out and "HTTP 401" in out and "username/password" in out
    monkeypatch.delenv("INFLUXDB_USERNAME")
    monkeypatch.delenv("INFLUXDB_PASSWORD")
    code, out = check(monkeypatch, capsys, **base)
    assert code == EXIT_CODES["credentials"] and "none are configured" in out, out
    # The right credentials pass, and the point lands.
    code, out = check(
        monkeypatch, capsys, **base, INFLUXDB_USERNAME=influx1_auth.admin[0], INFLUXDB_PASSWORD=influx1_auth.admin[1]
    )
    assert code == 0, out
    assert influx1_auth.admin[1] not in out
    assert influx1_auth.count(CHECK_MEASUREMENT, "ok", unique_db) == 1


def test_name_resolution_tls_timeout_and_configuration(
    influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFLUXDB_API", "v1")
    monkeypatch.setenv("INFLUXDB_DATABASE", unique_db)
    code, out = check(monkeypatch, capsys)  # nothing configured
    assert code == EXIT_CODES["configuration"] and "no InfluxDB server configured" in out, out
    code, out = check(monkeypatch, capsys, INFLUXDB_URL="http://no-such-host.invalid:8086")  # RFC 2606: never resolves
    assert code == EXIT_CODES["name resolution"] and "no-such-host.invalid" in out, out
    code, out = check(monkeypatch, capsys, INFLUXDB_URL=influx1.url.replace("http://", "https://"))
    assert code == EXIT_CODES["tls"] and "TLS handshake" in out and "plain http" in out, out
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        code, out = check(monkeypatch, capsys, INFLUXDB_URL=f"http://127.0.0.1:{silent.getsockname()[1]}")
        assert time.monotonic() - started < 15
    assert code == EXIT_CODES["timeout"] and "did not answer within 3s" in out, out


def test_testing_metrics_script(influx1: InfluxDB1, unique_db: str, tmp_path: Path) -> None:
    influx1.create_database(unique_db)
    env = {
        "INFLUXDB_URL": influx1.url, "INFLUXDB_DATABASE": unique_db, "INFLUXDB_API": "v1",
        "TPLR_METRICS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    script = REPO / "telemetry" / "simulator" / "testing_metrics.py"
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "round trip" in done.stdout or "OK: wrote and read back" in done.stdout


# --- InfluxDB 2.x (Docker) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def influx2() -> Iterator[dict[str, str]]:
    with influx2_container(bucket="check") as server:
        yield dataclasses.asdict(server)


@pytest.mark.docker
def test_influxdb2_ok_and_each_diagnosis(
    influx2: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {
        "INFLUXDB_URL": influx2["url"], "INFLUXDB_ORG": influx2["org"], "INFLUXDB_BUCKET": influx2["bucket"],
        "INFLUXDB_TOKEN": influx2["token"], "INFLUXDB_API": "v2",
    }  # fmt: skip
    code, out = check(monkeypatch, capsys, **base)
    assert code == 0, out
    assert "InfluxDB v2." in out or "InfluxDB 2." in out, out
    assert influx2["token"] not in out
    code, out = check(monkeypatch, capsys, **{**base, "INFLUXDB_TOKEN": SECRET})
    assert code == EXIT_CODES["credentials"] and "token" in out, out
    code, out = check(monkeypatch, capsys, **{**base, "INFLUXDB_BUCKET": "no-such-bucket"})
    assert code == EXIT_CODES["not found"] and "bucket 'no-such-bucket'" in out, out
    assert influx2["token"] not in out
    code, out = check(monkeypatch, capsys, **{**base, "INFLUXDB_ORG": "no-such-org"})
    assert code == EXIT_CODES["not found"] and "organization 'no-such-org'" in out, out
