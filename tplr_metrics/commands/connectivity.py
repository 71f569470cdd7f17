"""The connectivity smoke check: one uniquely tagged point written through ``MetricsLogger`` with
the configured settings, read back, timed, or one precise reason why not.

The server is probed first with the same settings (name resolution, TCP, TLS, /ping, credentials)
because a logger never raises on a failed write: it retries, and the reason only shows up later
in ``stats()["last_error"]``. The write itself then goes through the real logger, so what is
checked is what a miner would do.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config.secrets import redact, secret_forms
from ..config.settings import ConfigurationError, ServerSettings, resolve_server

CHECK_MEASUREMENT = "tplr_metrics_check"
INFLUXDB = "InfluxDB"
VICTORIA_METRICS = "VictoriaMetrics"

#: Exit code per diagnosis: scripts can tell them apart without parsing text.
EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "error": 1,
    "configuration": 2,
    "name resolution": 3,
    "connection refused": 4,
    "tls": 5,
    "credentials": 6,
    "not found": 7,
    "timeout": 8,
    "read back": 9,
}


class CheckFailed(Exception):
    """One diagnosis: ``kind`` is a key of EXIT_CODES, the message says what to fix."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class CheckResult:
    ok: bool
    diagnosis: str
    message: str
    exit_code: int
    url: str = ""
    api: str = ""
    target: str = ""
    server: str = INFLUXDB
    server_version: str | None = None
    check_id: str = ""
    round_trip_ms: float | None = None
    write_ms: float | None = None
    read_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        if not self.ok:
            where = f" ({self.url}, {self.target})" if self.url else ""
            return f"FAILED [{self.diagnosis}]{where}: {self.message}"
        return (
            f"OK: wrote and read back 1 point in {self.round_trip_ms:.1f} ms "
            f"(write+flush {self.write_ms:.1f} ms, read {self.read_ms:.1f} ms)\n"
            f"server: {self.server} {self.server_version or 'version unknown'} at {self.url} "
            f"({self.api} API, {self.target})\n"
            f"point: {CHECK_MEASUREMENT} check_id={self.check_id}"
        )


# --- HTTP with the logger's TLS settings ----------------------------------------------------


class _Client:
    def __init__(self, server: ServerSettings, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.secrets = secret_forms(server.token, server.password, username=server.username)
        context: ssl.SSLContext | None = None
        if server.url.startswith("https"):
            context = ssl.create_default_context(cafile=server.ssl_ca_cert)
            if not server.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def auth_headers(self) -> dict[str, str]:
        s = self.server
        if s.api == "v2" and s.token:
            return {"Authorization": f"Token {s.token}"}
        if s.username is not None or s.password is not None:
            import base64

            pair = f"{s.username or ''}:{s.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        if s.token:
            return {"Authorization": f"Token {s.token}"}
        return {}

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        url = self.server.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(
            url, data=body, method=method, headers={**self.auth_headers(), **(headers or {})}
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return response.status, response.read(), dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers.items()) if exc.headers else {}
        except (urllib.error.URLError, OSError) as exc:
            raise self.transport_failure(exc) from None

    def transport_failure(self, exc: BaseException) -> CheckFailed:
        reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        parsed = urllib.parse.urlsplit(self.server.url)
        where = f"{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
        if isinstance(reason, socket.gaierror):
            return CheckFailed("name resolution", f"cannot resolve host {parsed.hostname!r}: {reason.strerror}")
        if isinstance(reason, ConnectionRefusedError):
            return CheckFailed(
                "connection refused",
                f"nothing accepts connections at {where}: is InfluxDB running and listening there?",
            )
        if isinstance(reason, ssl.SSLCertVerificationError):
            return CheckFailed(
                "tls",
                f"TLS certificate of {where} not trusted: {reason.verify_message} "
                "(set INFLUXDB_SSL_CA_CERT to the CA file, or fix the certificate)",
            )
        if isinstance(reason, ssl.SSLError):
            hint = (
                " (is the server plain http? then use an http:// URL)" if "WRONG_VERSION" in str(reason).upper() else ""
            )
            return CheckFailed("tls", f"TLS handshake with {where} failed: {reason.reason or reason}{hint}")
        if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
            return CheckFailed("timeout", f"{where} did not answer within {self.timeout_s:g}s")
        if isinstance(reason, ConnectionResetError) or "RemoteDisconnected" in type(reason).__name__:
            hint = " (is it an https server? then use an https:// URL)" if parsed.scheme == "http" else ""
            return CheckFailed("error", f"{where} closed the connection without an HTTP answer{hint}")
        text = redact(f"{type(reason).__name__}: {reason}", self.secrets)
        return CheckFailed("error", f"cannot reach {where}: {text}")


def _message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        for key in ("error", "message"):
            if data.get(key):
                return str(data[key])[:300]
        results = data.get("results")
        if isinstance(results, list) and results and isinstance(results[0], dict) and results[0].get("error"):
            return str(results[0]["error"])[:300]
    return text[:300]


# --- the steps -------------------------------------------------------------------------------


def _target(server: ServerSettings) -> str:
    if server.api == "v1":
        return f"database {server.database!r}"
    return f"org {server.org or ''!r}, bucket {server.database!r}"


def _auth_failure(server: ServerSettings, status: int, detail: str) -> CheckFailed:
    if server.api == "v2" and server.token:
        what = "the token (INFLUXDB_TOKEN) was rejected" if status == 401 else "the token may not write to this bucket"
    elif server.username is not None or server.password is not None:
        what = (
            "the username/password (INFLUXDB_USERNAME / INFLUXDB_PASSWORD) were rejected"
            if status == 401
            else "this user has no write permission here"
        )
    else:
        what = "the server wants credentials and none are configured (INFLUXDB_TOKEN or INFLUXDB_USERNAME/PASSWORD)"
    return CheckFailed("credentials", f"HTTP {status}: {what} ({detail})")


def _not_found(server: ServerSettings, detail: str) -> CheckFailed:
    lowered = detail.lower()
    if server.api == "v1" or "database" in lowered:
        return CheckFailed(
            "not found",
            f"HTTP 404: database {server.database!r} does not exist ({detail}); create it, or fix INFLUXDB_DATABASE",
        )
    if "organization" in lowered or "org " in lowered:
        return CheckFailed(
            "not found", f"HTTP 404: organization {server.org!r} does not exist ({detail}); fix INFLUXDB_ORG"
        )
    return CheckFailed(
        "not found",
        f"HTTP 404: bucket {server.database!r} does not exist in org {server.org!r} ({detail}); fix INFLUXDB_BUCKET",
    )


def _version_tuple(version: str) -> tuple[int, ...]:
    digits = []
    for part in version.lstrip("v").split(".")[:2]:
        number = "".join(c for c in part if c.isdigit()) or "0"
        digits.append(int(number))
    return tuple(digits)


def _is_victoria_metrics(client: _Client) -> bool:
    """VictoriaMetrics takes InfluxDB writes but sends no X-Influxdb-Version on /ping; its
    health endpoint names it."""
    status, body, _ = client.request("GET", "/-/healthy")
    return status == 200 and body.startswith(b"VictoriaMetrics")


def probe(client: _Client) -> tuple[str, str | None]:
    """Name, connection, TLS, /ping and credentials; returns the server's product and version."""
    server = client.server
    parsed = urllib.parse.urlsplit(server.url)
    try:
        socket.getaddrinfo(parsed.hostname, parsed.port or 8086, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CheckFailed("name resolution", f"cannot resolve host {parsed.hostname!r}: {exc.strerror}") from None
    status, body, headers = client.request("GET", "/ping")
    version = next((v for k, v in headers.items() if k.lower() == "x-influxdb-version"), None)
    if status in (401, 403):
        raise _auth_failure(server, status, _message(body))
    if status >= 500:
        raise CheckFailed("error", f"HTTP {status} from /ping: {_message(body)}")
    if version is None and _is_victoria_metrics(client):
        return VICTORIA_METRICS, None  # no databases, buckets or orgs to check: any name is written
    if server.api == "v2" and version and version.startswith("1.") and _version_tuple(version) < (1, 8):
        # It would answer the v2 write with a bare 404, read as "no such bucket": name the real fix.
        raise CheckFailed(
            "configuration",
            f"the server is InfluxDB {version}, which has no v2 API (it came with 1.8): set INFLUXDB_API=v1",
        )
    if server.api == "v1":
        status, body, _ = client.request("GET", "/query", {"q": "SHOW DATABASES"})
        if status in (401, 403):
            raise _auth_failure(server, status, _message(body))
    elif not server.org and (version or "").lstrip("v").startswith("2."):
        raise CheckFailed("configuration", "InfluxDB 2.x needs an organization: set INFLUXDB_ORG")
    elif server.org:
        status, body, _ = client.request("GET", "/api/v2/buckets", {"org": server.org, "name": server.database})
        if status in (401, 403):
            raise _auth_failure(server, status, _message(body))
        detail = _message(body)
        if status == 404 and ("organization" in detail.lower() or "bucket" in detail.lower()):
            raise _not_found(server, detail)
        if status == 200:
            try:
                buckets = json.loads(body).get("buckets")
            except ValueError:
                buckets = None
            if buckets == []:
                raise _not_found(server, f'bucket "{server.database}" not found')
    return INFLUXDB, version


def _diagnose_write(server: ServerSettings, error: str | None) -> CheckFailed:
    error = error or "no error recorded"
    if error.startswith("HTTP "):
        try:
            status = int(error.split()[1])
        except (IndexError, ValueError):
            status = 0
        detail = error.split(": ", 1)[-1]
        if status in (401, 403):
            return _auth_failure(server, status, detail)
        if status == 404:
            return _not_found(server, detail)
        return CheckFailed("error", f"the write failed: {error}")
    lowered = error.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return CheckFailed("timeout", f"the write timed out: {error}")
    if "refused" in lowered:
        return CheckFailed("connection refused", f"the write could not connect: {error}")
    if "ssl" in lowered or "certificate" in lowered:
        return CheckFailed("tls", f"the write failed in TLS: {error}")
    if "name or service" in lowered or "resolve" in lowered:
        return CheckFailed("name resolution", f"the write could not resolve the host: {error}")
    return CheckFailed("error", f"the write failed: {error}")


def write_point(server: ServerSettings, check_id: str, timeout_s: float) -> float:
    """Log one point through MetricsLogger (no database created) and flush; returns milliseconds."""
    from ..logger import MetricsLogger

    started = time.perf_counter()
    metrics = MetricsLogger(
        role="check",
        url=server.url,
        api=server.api,
        database=server.database,
        org=server.org,
        token=server.token,
        username=server.username,
        password=server.password,
        verify_ssl=server.verify_ssl,
        ssl_ca_cert=server.ssl_ca_cert,
        gzip=server.gzip,
        create_database=False,  # a missing database is the answer, not something to fix silently
        spool=False,  # a check never adopts (or leaves) spooled points
        flush_interval=50,
        retry_interval=100,
        max_retry_delay=500,
        max_retry_time=int(min(max(timeout_s, 1.0), 3.0) * 1000),  # a 404 or 401 will not heal
        timeout=int(timeout_s * 1000),
        close_timeout=timeout_s + 5,
    )
    try:
        metrics.log(CHECK_MEASUREMENT, {"check_id": check_id}, {"ok": 1, "sent_at_ns": time.time_ns()})
        metrics.flush(timeout_s * 2 + 5)
        stats = metrics.stats()
    finally:
        metrics.close(timeout=1.0)
    elapsed = (time.perf_counter() - started) * 1000
    if stats["written"] != 1:
        secrets = secret_forms(server.token, server.password, username=server.username)
        raise _diagnose_write(server, redact(str(stats.get("last_error") or ""), secrets) or None)
    return elapsed


def _read_influxql(client: _Client, check_id: str) -> int:
    q = f'SELECT "ok" FROM "{CHECK_MEASUREMENT}" WHERE "check_id" = \'{check_id}\' AND time > now() - 1h'
    status, body, _ = client.request("GET", "/query", {"db": client.server.database, "q": q})
    if status != 200:
        raise CheckFailed("read back", f"InfluxQL read failed: HTTP {status} {_message(body)}")
    data = json.loads(body or b"{}")
    return sum(len(s.get("values") or []) for r in data.get("results", []) for s in r.get("series", []) or [])


def _read_flux(client: _Client, check_id: str) -> int | None:
    """Rows found, or None when the server has no Flux endpoint (InfluxDB 3.x, 1.x compat)."""
    flux = (
        f"from(bucket: {json.dumps(client.server.database)}) |> range(start: -1h) "
        f"|> filter(fn: (r) => r._measurement == {json.dumps(CHECK_MEASUREMENT)}"
        f" and r.check_id == {json.dumps(check_id)})"
    )
    params = {"org": client.server.org} if client.server.org else {}
    status, body, _ = client.request(
        "POST",
        "/api/v2/query",
        params,
        json.dumps({"query": flux, "type": "flux"}).encode(),
        {"Content-Type": "application/json", "Accept": "application/csv"},
    )
    if status in (404, 405, 501) or (status == 400 and b"unsupported path" in body):
        return None
    if status != 200:
        raise CheckFailed("read back", f"Flux read failed: HTTP {status} {_message(body)}")
    rows = [row for row in csv.reader(io.StringIO(body.decode("utf-8", "replace"))) if row and check_id in row]
    return len(rows)


def _read_victoria_metrics(client: _Client, check_id: str, attempt: int) -> int:
    """Samples through /api/v1/export: VictoriaMetrics has no Flux, and its /query only answers
    SHOW DATABASES. A field is the series <measurement>_<field>, tags are labels."""
    # VictoriaMetrics caches a selector's (empty) answer: the no-op matcher on a label no point
    # has makes each poll a new selector, so a point written a moment ago is found.
    match = f'{{__name__="{CHECK_MEASUREMENT}_ok",check_id="{check_id}",tplr_poll!="{attempt}"}}'
    params = {"match[]": match, "start": str(int(time.time()) - 3600)}
    status, body, _ = client.request("GET", "/api/v1/export", params)
    if status != 200:
        raise CheckFailed("read back", f"VictoriaMetrics export failed: HTTP {status} {_message(body)}")
    found = 0
    for line in body.splitlines():
        if line.strip():
            found += len(json.loads(line).get("values") or [])
    return found


def read_back(client: _Client, check_id: str, timeout_s: float, server: str = INFLUXDB) -> float:
    """Poll until the point is visible, through the API the server has (VictoriaMetrics: its
    export; InfluxDB: Flux on v2, else InfluxQL); returns milliseconds."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        found: int | None = None
        if server == VICTORIA_METRICS:
            found = _read_victoria_metrics(client, check_id, attempt)
        elif client.server.api == "v2":
            found = _read_flux(client, check_id)
        if found is None:
            found = _read_influxql(client, check_id)
        if found:
            return (time.perf_counter() - started) * 1000
        if time.monotonic() > deadline:
            raise CheckFailed(
                "read back", f"the write was accepted but the point was not readable within {timeout_s:g}s"
            )
        time.sleep(0.1)


def run_check(timeout_s: float = 10.0, environ: Mapping[str, str] | None = None) -> CheckResult:
    """The whole check, never raising: a CheckResult with ok or the diagnosis."""
    check_id = uuid.uuid4().hex
    try:
        server = resolve_server(environ=environ, create_database=False)
    except ConfigurationError as exc:
        return CheckResult(False, "configuration", str(exc), EXIT_CODES["configuration"])
    client = _Client(server, timeout_s)
    result = CheckResult(
        False, "error", "", 1, url=server.url, api=server.api, target=_target(server), check_id=check_id
    )
    try:
        result.server, result.server_version = probe(client)
        if result.server == VICTORIA_METRICS:
            result.target = "no database needed"
        started = time.perf_counter()
        result.write_ms = round(write_point(server, check_id, timeout_s), 2)
        result.read_ms = round(read_back(client, check_id, timeout_s, result.server), 2)
        result.round_trip_ms = round((time.perf_counter() - started) * 1000, 2)
    except CheckFailed as exc:
        result.diagnosis = exc.kind
        result.message = redact(str(exc), client.secrets)
        result.exit_code = EXIT_CODES.get(exc.kind, 1)
        return result
    result.ok, result.diagnosis, result.exit_code = True, "ok", 0
    result.message = "wrote and read back one point"
    return result
