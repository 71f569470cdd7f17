"""Arguments and environment into settings; secrets never leak; TLS on by default."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tplr_metrics import ConfigurationError, MetricsLogger
from tplr_metrics.config.settings import resolve_server

from .servers import free_port

SECRET = "s3cr3t-token-value-XYZ"


def test_environment_is_read_when_the_logger_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUXDB_HOST", "influx.example.org")
    monkeypatch.setenv("INFLUXDB_PORT", "8443")
    monkeypatch.setenv("INFLUXDB_BUCKET", "tplr")
    monkeypatch.setenv("INFLUXDB_ORG", "org")
    monkeypatch.setenv("INFLUXDB_TOKEN", SECRET)
    server = resolve_server()
    assert server.url == "https://influx.example.org:8443"  # https unless loopback
    assert (server.database, server.org, server.token, server.api) == ("tplr", "org", SECRET, "v2")
    assert server.verify_ssl is True


def test_database_and_org_default_to_templars_names_but_never_a_server() -> None:
    server = resolve_server(url="https://x.example.org")
    assert (server.database, server.org, server.token) == ("tplr", "tplr", None)
    with pytest.raises(ConfigurationError, match="no InfluxDB server configured"):
        resolve_server(database="d")


def test_loopback_hosts_default_to_http_and_the_scheme_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_server(host="127.0.0.1", database="d").url == "http://127.0.0.1:8086"
    assert resolve_server(host="localhost", port=9999, database="d").url == "http://localhost:9999"
    monkeypatch.setenv("INFLUXDB_SCHEME", "https")
    assert resolve_server(host="localhost", database="d").url == "https://localhost:8086"


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUXDB_URL", "https://env.example.org:8086")
    monkeypatch.setenv("INFLUXDB_DATABASE", "envdb")
    monkeypatch.setenv("INFLUXDB_API", "v1")
    server = resolve_server(url="https://arg.example.org", database="argdb", api="v2")
    assert (server.url, server.database, server.api) == ("https://arg.example.org", "argdb", "v2")


def test_token_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    monkeypatch.setenv("INFLUXDB_TOKEN_FILE", str(token_file))
    assert resolve_server(url="https://x.example.org", database="d").token == SECRET
    monkeypatch.setenv("INFLUXDB_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="INFLUXDB_TOKEN_FILE"):
        resolve_server(url="https://x.example.org", database="d")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no InfluxDB server configured"),
        ({"url": "ftp://x", "database": "d"}, "must look like"),
        ({"url": "https://user:pw@x.example.org", "database": "d"}, "not in the URL"),
        ({"url": "https://x.example.org", "database": "d", "api": "v3"}, "api must be"),
        ({"host": "x.example.org", "port": "abc", "database": "d"}, "not a number"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve_server(**kwargs)  # type: ignore[arg-type]


def test_no_endpoint_or_credential_is_built_in() -> None:
    root = Path(__file__).resolve().parents[1] / "tplr_metrics"
    source = "\n".join(p.read_text() for p in root.rglob("*.py"))
    for needle in ("timestream", "on.aws", "FALLBACK", "sikfH"):
        assert needle not in source


def test_the_token_never_appears_in_repr_stats_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    closed_port = free_port()
    with caplog.at_level(logging.DEBUG, logger="tplr_metrics"):
        m = MetricsLogger(
            url=f"http://127.0.0.1:{closed_port}",
            database="d",
            token=SECRET,
            max_retry_time=300,
            retry_interval=50,
        )
        m.log("x", {}, {"f": 1.0})
        m.flush(timeout=5)
        m.close(timeout=1)
        v1 = MetricsLogger(
            url=f"http://127.0.0.1:{closed_port}",
            database="d",
            api="v1",
            username="u",
            password=SECRET,
            max_retry_time=300,
            retry_interval=50,
        )
        v1.log("x", {}, {"f": 1.0})
        v1.close(timeout=2)
    for logger in (m, v1):
        assert SECRET not in repr(logger)
        assert SECRET not in repr(logger.server)
        assert SECRET not in str(logger.stats())
    assert (
        "Connection refused" in (m.stats()["last_error"] or "") or "connect" in (m.stats()["last_error"] or "").lower()
    )
    assert SECRET not in caplog.text


def test_warnings_for_plain_http_credentials_and_disabled_tls(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tplr_metrics"):
        MetricsLogger(url="http://influx.example.org:8086", database="d", token=SECRET).close(timeout=0.1)
        MetricsLogger(url="https://influx.example.org", database="d", verify_ssl=False).close(timeout=0.1)
        MetricsLogger(url="http://127.0.0.1:1", database="d", token=SECRET).close(timeout=0.1)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("plain http" in text for text in messages) == 1  # not for loopback
    assert sum("verification is turned off" in text for text in messages) == 1
    assert SECRET not in caplog.text


def test_importing_the_package_has_no_side_effects() -> None:
    import subprocess
    import sys

    code = (
        "import logging, threading, os\n"
        "before = threading.active_count()\n"
        "import tplr_metrics\n"
        "assert threading.active_count() == before, 'a thread started at import'\n"
        "assert not logging.getLogger().handlers, 'root logging configured at import'\n"
        "assert 'influxdb_client' not in __import__('sys').modules, 'heavy import at import time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
