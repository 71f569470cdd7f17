"""InfluxDB 2.x in a throwaway container (testcontainers), for the tests that need one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from .docker_engine import docker_unavailable
from .servers import http

IMAGE = "influxdb:2.7"


@dataclass(frozen=True)
class Influx2:
    url: str
    org: str
    bucket: str
    token: str  # a throwaway admin token, generated per container: no credential is built in


@contextmanager
def influx2_container(bucket: str = "tplr", org: str = "tplr") -> Iterator[Influx2]:
    """Start influxdb:2.7 set up with an org, a bucket and a fresh token; skip without Docker."""
    reason = docker_unavailable()
    if reason:
        pytest.skip(f"InfluxDB 2.x runs in Docker: {reason}")
    from testcontainers.core.container import DockerContainer

    token = uuid.uuid4().hex + uuid.uuid4().hex
    container = (
        DockerContainer(IMAGE)
        .with_env("DOCKER_INFLUXDB_INIT_MODE", "setup")
        .with_env("DOCKER_INFLUXDB_INIT_USERNAME", "tplr-admin")
        .with_env("DOCKER_INFLUXDB_INIT_PASSWORD", uuid.uuid4().hex)
        .with_env("DOCKER_INFLUXDB_INIT_ORG", org)
        .with_env("DOCKER_INFLUXDB_INIT_BUCKET", bucket)
        .with_env("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN", token)
        .with_exposed_ports(8086)
    )
    container.start()
    try:
        url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(8086)}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                status, body = http("GET", url + "/health", timeout=2)
                if status == 200 and b'"pass"' in body:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"InfluxDB 2.x did not become healthy:\n{container.get_logs()}")
        yield Influx2(url=url, org=org, bucket=bucket, token=token)
    finally:
        container.stop()
