"""The local stack: docker-compose.yml, Grafana provisioning and .env.example.

The static tests run everywhere. Where a Docker engine (with the compose plugin) exists, the
stack is brought up for real: the simulator writes into its InfluxDB, and Grafana's HTTP API
must serve every generated dashboard and return data for one panel of each dialect.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tplr_metrics.cli import main
from tplr_metrics.dashboards import DATASOURCES, VARIABLES, all_dashboards, panel_targets
from tplr_metrics.dashboards.model import VERSION_KIND, VERSION_KINDS

from ..docker_engine import compose_unavailable
from ..grafana_macros import ALL, expand_variables
from ..servers import free_port, http

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "telemetry" / "grafana" / "provisioning"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _container_to_host(service: dict[str, Any], container_path: str) -> Path:
    """The repo directory a bind mount puts at ``container_path`` (or a parent of it)."""
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./") and (container_path == target or container_path.startswith(target + "/")):
            return REPO / source[2:] / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"nothing mounted at {container_path}")


def test_compose_file_names_both_services_with_healthchecks_and_named_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"influxdb", "grafana"} <= set(services)
    for name in ("influxdb", "grafana"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["interval"] and check["retries"], name
    assert services["influxdb"]["image"].startswith("influxdb:2.7")
    assert services["grafana"]["depends_on"]["influxdb"]["condition"] == "service_healthy"
    named = set(compose["volumes"])
    assert {"influxdb-data", "influxdb-config", "grafana-data"} <= named
    for service in services.values():
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            assert source.startswith("./") or source in named, volume
            if source.startswith("./"):
                assert (REPO / source[2:]).exists(), volume
        for port in service["ports"]:
            assert port.startswith("${STACK_BIND:-127.0.0.1}:"), "listen on loopback unless told otherwise"


def test_no_default_password_or_token_anywhere() -> None:
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    secret_vars = ("INFLUXDB_ADMIN_PASSWORD", "INFLUXDB_TOKEN", "GRAFANA_ADMIN_PASSWORD")
    for var in secret_vars:
        uses = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert uses, var
        assert all(use.startswith(":?") for use in uses), f"{var} must be required (${{{var}:?...}}), not defaulted"
    env = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    for var in secret_vars:
        assert env[var] == "", f".env.example must leave {var} empty"
    # Every variable the compose file requires is listed in .env.example.
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required <= set(env), required - set(env)
    assert ".env" in (REPO / ".gitignore").read_text(encoding="utf-8").split()
    for path in PROVISIONING.rglob("*.yaml"):
        content = path.read_text(encoding="utf-8")
        assert "$INFLUXDB_TOKEN" in content or "token" not in content.lower(), path


def test_provisioning_references_the_generated_dashboards_and_datasources() -> None:
    grafana = _compose()["services"]["grafana"]
    provisioning_dir = _container_to_host(grafana, "/etc/grafana/provisioning")
    assert provisioning_dir == PROVISIONING
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "tplr-metrics.yaml").read_text(encoding="utf-8"))
    paths = {p["name"]: p["options"]["path"] for p in providers["providers"]}
    expected = {d.slug + ".json" for d in all_dashboards()}
    for dialect in ("influxql", "flux"):
        (path,) = [v for k, v in paths.items() if k.endswith(dialect)]
        host_dir = _container_to_host(grafana, path)
        assert host_dir == REPO / "dashboards" / dialect
        assert {p.name for p in host_dir.glob("*.json")} == expected
        for file in host_dir.glob("*.json"):
            dashboard = json.loads(file.read_text(encoding="utf-8"))
            (datasource,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
            assert datasource["current"]["value"] == DATASOURCES[dialect]["uid"]
    sources = yaml.safe_load((PROVISIONING / "datasources" / "influxdb.yaml").read_text(encoding="utf-8"))
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    assert set(by_uid) == {DATASOURCES["influxql"]["uid"], DATASOURCES["flux"]["uid"]}
    assert by_uid["tplr-flux"]["jsonData"]["version"] == "Flux"
    assert by_uid["tplr-influxql"]["jsonData"]["dbName"] == "$INFLUXDB_BUCKET"
    # The bucket gets a DBRP mapping, so the InfluxQL data source can query it.
    influxdb = _compose()["services"]["influxdb"]
    init = _container_to_host(influxdb, "/docker-entrypoint-initdb.d")
    script = (init / "10-dbrp.sh").read_text(encoding="utf-8")
    assert "influx v1 dbrp create" in script and os.access(init / "10-dbrp.sh", os.X_OK)


# --- the real stack (Docker) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    reason = compose_unavailable()
    if reason:
        pytest.skip(f"the compose stack needs Docker: {reason}")
    from testcontainers.compose import DockerCompose

    settings = {
        "INFLUXDB_ADMIN_USER": "tplr-admin",
        "INFLUXDB_ADMIN_PASSWORD": secrets.token_hex(16),
        "INFLUXDB_ORG": "templar",
        "INFLUXDB_BUCKET": "tplr",
        "INFLUXDB_TOKEN": secrets.token_hex(32),
        "GRAFANA_ADMIN_USER": "admin",
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "GRAFANA_ANONYMOUS_VIEWER": "false",
        "STACK_BIND": "127.0.0.1",
        "STACK_INFLUXDB_PORT": str(free_port()),
        "STACK_GRAFANA_PORT": str(free_port()),
    }
    env_file = tmp_path_factory.mktemp("stack") / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()), encoding="utf-8")
    env_file.chmod(0o600)
    with pytest.MonkeyPatch.context() as mp:
        # A project of its own: never touches a stack the user runs from this checkout.
        mp.setenv("COMPOSE_PROJECT_NAME", "tplr-metrics-test-" + secrets.token_hex(4))
        compose = DockerCompose(REPO, compose_file_name="docker-compose.yml", env_file=str(env_file), wait=True)
        compose.start()
        try:
            yield settings
        finally:
            compose.stop()  # down, with the test's volumes


def _grafana(stack: dict[str, str], method: str, path: str, body: Any = None) -> tuple[int, Any]:
    credentials = f"{stack['GRAFANA_ADMIN_USER']}:{stack['GRAFANA_ADMIN_PASSWORD']}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode(), "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{stack['STACK_GRAFANA_PORT']}{path}"
    status, raw = http(method, url, json.dumps(body).encode() if body is not None else None, headers)
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw


def _frame_rows(result: dict[str, Any]) -> int:
    return sum(len((frame.get("data") or {}).get("values", [[]])[0] or []) for frame in result.get("frames", []))


@pytest.mark.docker
def test_stack_serves_dashboards_and_panel_data(
    stack: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    influx_url = f"http://127.0.0.1:{stack['STACK_INFLUXDB_PORT']}"
    for name in ("INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET"):
        monkeypatch.setenv(name, stack[name])
    monkeypatch.setenv("INFLUXDB_URL", influx_url)
    monkeypatch.setenv("INFLUXDB_API", "v2")
    assert main(["check"]) == 0
    assert main(["simulate", "--windows", "12", "--window-seconds", "0.25", "--peers", "8", "--json"]) == 0
    monkeypatch.setenv("INFLUXDB_API", "v1")  # the DBRP mapping: v1 writes and InfluxQL reads
    assert main(["check"]) == 0
    capsys.readouterr()

    for uid in ("tplr-influxql", "tplr-flux"):
        status, health = _grafana(stack, "GET", f"/api/datasources/uid/{uid}/health")
        assert status == 200 and health.get("status") == "OK", (uid, health)
    for definition in all_dashboards():
        for dialect in ("influxql", "flux"):
            status, data = _grafana(stack, "GET", f"/api/dashboards/uid/tplr-{definition.slug}-{dialect}")
            assert status == 200, (definition.slug, dialect, data)
            assert data["dashboard"]["title"].startswith(definition.title)

    # One panel per dialect through Grafana's own query path: it expands the macros itself.
    loss = next(d for d in all_dashboards() if d.slug == "miners").panels()[0]
    selected: dict[str, str] = {**dict.fromkeys(VARIABLES, ALL), VERSION_KIND: VERSION_KINDS["all"]}
    for dialect, target in (("influxql", panel_targets(loss, "influxql")[0]), ("flux", panel_targets(loss, "flux")[0])):
        query = {
            "refId": "A",
            "datasource": {"type": "influxdb", "uid": DATASOURCES[dialect]["uid"]},
            "query": expand_variables(target["query"], selected),
            "rawQuery": True,
            "resultFormat": "time_series",
            "intervalMs": 200,
            "maxDataPoints": 900,
        }
        body = {"queries": [query], "from": "now-5m", "to": "now"}
        status, data = _grafana(stack, "POST", "/api/ds/query", body)
        assert status == 200, (dialect, data)
        rows = _frame_rows(data["results"]["A"])
        assert rows > 0, (dialect, data)
        with capsys.disabled():
            print(f"\n  Grafana {dialect}: '{loss.title}' returned {rows} rows")
