"""InfluxDB 2.x through testcontainers (image influxdb:2.7), where a Docker engine is reachable."""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator

import pytest

from tplr_metrics import MetricsLogger

from ..influx2_container import Influx2, influx2_container

pytestmark = pytest.mark.docker


def flux_count(server: Influx2, measurement: str, field: str, runtime_id: str) -> int:
    flux = (
        f'from(bucket: "{server.bucket}") |> range(start: 0)'
        f' |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}"'
        f' and r.runtime_id == "{runtime_id}") |> group() |> count()'
    )
    request = urllib.request.Request(
        f"{server.url}/api/v2/query?org={server.org}",
        data=json.dumps({"query": flux, "dialect": {"header": False}}).encode(),
        headers={"Authorization": f"Token {server.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        rows = [line for line in response.read().decode().splitlines() if line.strip()]
    return int(rows[0].split(",")[-1]) if rows else 0  # CSV: ,result,table,_value


@pytest.fixture(scope="module")
def influx2() -> Iterator[Influx2]:
    with influx2_container() as server:
        yield server


def test_v2_write_api_reads_back_exactly(influx2: Influx2) -> None:
    m = MetricsLogger(
        url=influx2.url, token=influx2.token, org=influx2.org, database=influx2.bucket, role="miner", flush_interval=100
    )
    for i in range(5_000):
        m.log("training_step_v2", {"window": i}, {"loss": 1.0 / (i + 1), "n_gather_peers": i % 7})
    assert m.close(timeout=60)
    assert flux_count(influx2, "training_step_v2", "loss", m.runtime_id) == 5_000


def test_v1_compatibility_endpoint_with_a_token(influx2: Influx2) -> None:
    m = MetricsLogger(url=influx2.url, token=influx2.token, database=influx2.bucket, api="v1", flush_interval=100)
    for i in range(1_000):
        m.log("compat", {"window": i}, {"loss": 0.5})
    assert m.close(timeout=60)
    assert flux_count(influx2, "compat", "loss", m.runtime_id) == 1_000


def test_a_wrong_token_is_reported_without_leaking_it(influx2: Influx2) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    m = MetricsLogger(
        url=influx2.url, token=wrong, org=influx2.org, database=influx2.bucket, max_retry_time=500, retry_interval=100
    )
    m.log("x", {}, {"f": 1.0})
    m.close(timeout=3)
    stats = m.stats()
    assert "401" in (stats["last_error"] or "") and wrong not in str(stats)
