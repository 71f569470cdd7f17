"""Arguments and environment variables into one validated description of where points go.

Read when a logger is built, never at import. No endpoint or credential is built in: with
nothing configured there is no server, and the caller is told so.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..sinks.influxdb import InfluxSink, is_loopback_host
from .errors import ConfigurationError as ConfigurationError  # re-exported: its long-standing home
from .secrets import clean_secret

API_VERSIONS = ("v2", "v1")

#: Templar's own defaults for the database/bucket and org names (names only: never a host or token).
DEFAULT_DATABASE = "tplr"
DEFAULT_ORG = "tplr"


@dataclass(frozen=True)
class ServerSettings:
    """Where and how to reach InfluxDB. ``repr()`` never shows a secret."""

    url: str
    api: str
    database: str
    org: str | None = None
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify_ssl: bool = True
    ssl_ca_cert: str | None = None
    timeout_ms: int = 10_000
    gzip: bool = False
    create_database: bool = True


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _bool(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={text!r} is not a boolean (use true or false)")


def server_configured(url: str | None, host: str | None, environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return bool(url or host or _env(environ, "INFLUXDB_URL") or _env(environ, "INFLUXDB_HOST"))


def resolve_server(
    *,
    url: str | None = None,
    host: str | None = None,
    port: int | str | None = None,
    database: str | None = None,
    token: str | None = None,
    org: str | None = None,
    api: str | None = None,
    username: str | None = None,
    password: str | None = None,
    verify_ssl: bool | None = None,
    ssl_ca_cert: str | None = None,
    timeout_ms: int | None = None,
    gzip: bool | None = None,
    create_database: bool = True,
    environ: Mapping[str, str] | None = None,
) -> ServerSettings:
    """Combine arguments with INFLUXDB_* variables (arguments win)."""
    environ = os.environ if environ is None else environ
    url = url or _env(environ, "INFLUXDB_URL")
    if not url:
        host = host or _env(environ, "INFLUXDB_HOST")
        if not host:
            raise ConfigurationError(
                "no InfluxDB server configured: pass url= (or host=), or set INFLUXDB_URL "
                "(or INFLUXDB_HOST and INFLUXDB_PORT)"
            )
        port = port or _env(environ, "INFLUXDB_PORT") or 8086
        scheme = _env(environ, "INFLUXDB_SCHEME") or ("http" if is_loopback_host(host) else "https")
        if "://" in host:
            raise ConfigurationError(f"host={host!r} looks like a URL; pass it as url= or INFLUXDB_URL")
        try:
            port_number = int(port)
        except (TypeError, ValueError):
            raise ConfigurationError(f"port {port!r} is not a number") from None
        url = f"{scheme}://{host}:{port_number}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"InfluxDB URL must look like https://host:8086, not {url!r}")
    if parsed.username or parsed.password:
        raise ConfigurationError("put credentials in token= or username=/password=, not in the URL")

    api = (api or _env(environ, "INFLUXDB_API") or "v2").lower()
    if api not in API_VERSIONS:
        raise ConfigurationError(f"api must be one of {API_VERSIONS}, not {api!r}")

    if token is None:
        token = _env(environ, "INFLUXDB_TOKEN")
    if token is None:
        token_file = _env(environ, "INFLUXDB_TOKEN_FILE")
        if token_file:
            try:
                with open(token_file, encoding="utf-8") as handle:
                    token = handle.read().strip() or None
            except OSError as exc:
                # The value is not shown: a token pasted there by mistake would be printed.
                raise ConfigurationError(f"cannot read the file INFLUXDB_TOKEN_FILE names: {exc.strerror}") from None
    org = org or _env(environ, "INFLUXDB_ORG") or DEFAULT_ORG
    database = database or _env(environ, "INFLUXDB_DATABASE") or _env(environ, "INFLUXDB_BUCKET") or DEFAULT_DATABASE
    username = clean_secret(username or _env(environ, "INFLUXDB_USERNAME"))
    password = clean_secret(password or _env(environ, "INFLUXDB_PASSWORD"))
    token = clean_secret(token)

    if verify_ssl is None:
        env_verify = _env(environ, "INFLUXDB_VERIFY_SSL")
        verify_ssl = _bool(env_verify, "INFLUXDB_VERIFY_SSL") if env_verify else True
    ssl_ca_cert = ssl_ca_cert or _env(environ, "INFLUXDB_SSL_CA_CERT")
    if gzip is None:
        env_gzip = _env(environ, "INFLUXDB_GZIP")
        gzip = _bool(env_gzip, "INFLUXDB_GZIP") if env_gzip else False
    if timeout_ms is None:
        env_timeout = _env(environ, "INFLUXDB_TIMEOUT_MS")
        timeout_ms = int(env_timeout) if env_timeout else 10_000

    return ServerSettings(
        url=url.rstrip("/"),
        api=api,
        database=database,
        org=org,
        token=token,
        username=username,
        password=password,
        verify_ssl=verify_ssl,
        ssl_ca_cert=ssl_ca_cert,
        timeout_ms=timeout_ms,
        gzip=gzip,
        create_database=create_database,
    )


def build_influx_sink(server: ServerSettings) -> InfluxSink:
    """The sink for a resolved server: v2 or v1 write API."""
    from ..sinks.influxdb import InfluxV1Sink, InfluxV2Sink

    if server.api == "v1":
        return InfluxV1Sink(
            server.url,
            database=server.database,
            create_database=server.create_database,
            token=server.token,
            username=server.username,
            password=server.password,
            timeout_ms=server.timeout_ms,
            verify_ssl=server.verify_ssl,
            ssl_ca_cert=server.ssl_ca_cert,
            gzip_body=server.gzip,
        )
    token = server.token
    if not token and (server.username or server.password):
        # InfluxDB 1.8's /api/v2/write takes "username:password" as its token.
        token = f"{server.username or ''}:{server.password or ''}"
    return InfluxV2Sink(
        server.url,
        bucket=server.database,
        org=server.org,
        token=token,
        timeout_ms=server.timeout_ms,
        verify_ssl=server.verify_ssl,
        ssl_ca_cert=server.ssl_ca_cert,
        gzip_body=server.gzip,
    )
