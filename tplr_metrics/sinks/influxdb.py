"""InfluxDB sinks: the v2 write API (/api/v2/write) and the v1 write API (/write?db=).

Both reuse influxdb-client's ``InfluxDBClient`` for the HTTP connection pool, TLS, auth headers,
gzip and its ``ApiException`` error type, and send bodies this package encoded itself. They do
not use influxdb-client's batching ``WriteApi``: delivery, retries and accounting belong to the
pipeline, which needs to know what happened to every point.

What a response means:

* 2xx: every point stored.
* 400/422 "partial write ... dropped=N": the server kept the rest; the N are rejected, and the
  ones the message names are pinned to their lines (a line it quotes; the points of a field
  type conflict).
* 400/413/422 that is not partial (the server refused the whole body, e.g. a type conflict
  between two points of the same batch): the batch is split in halves and each half written
  again, down to the single points that are really bad. One bad point never takes its batch.
* 401/403/404, 429, 5xx, timeouts and connection errors: not the data's fault; every point is
  handed back for retry, with the server's Retry-After. A v1 "database not found" creates the
  database first, as Telegraf does, unless ``create_database=False``.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any

from ..encoding.line_protocol import encode_line
from ..encoding.points import Point
from .base import Rejection, WriteResult

logger = logging.getLogger("tplr_metrics")

_PARTIAL_DROPPED = re.compile(r"dropped=(\d+)")
_UNABLE_TO_PARSE = re.compile(r"unable to parse '((?:[^'\\]|\\.)*)'")
_TYPE_CONFLICT = re.compile(
    r'input field \\?"(?P<field>.+?)\\?" on measurement \\?"(?P<measurement>.+?)\\?" is type (?P<type>\w+)'
)
_TYPE_NAMES = {"float": float, "integer": int, "string": str, "boolean": bool}
_RETRY_STATUSES = {401, 403, 404, 408, 425, 429}


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact(text: str, secrets: Sequence[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _server_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    text = str(body)
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:2000]
    if isinstance(data, dict):
        for key in ("error", "message"):
            if data.get(key):
                return str(data[key])[:2000]
    return text.strip()[:2000]


def _cause_of(message: str) -> str:
    lowered = message.lower()
    if "field type conflict" in lowered:
        return "field_type_conflict"
    if "unable to parse" in lowered or "cannot parse" in lowered:
        return "bad_line"
    if "outside retention" in lowered or "points beyond retention" in lowered:
        return "outside_retention"
    if "max-values-per-tag" in lowered or "max-series-per-database" in lowered:
        return "series_limit"
    return "bad_request"


def _conflicting_points(points: Sequence[Point], message: str) -> list[int]:
    """The points a field-type-conflict message is about: same measurement, field and type."""
    match = _TYPE_CONFLICT.search(message)
    if not match:
        return []
    measurement, field, type_name = match["measurement"], match["field"], match["type"]
    kind = _TYPE_NAMES.get(type_name)
    if kind is None:
        return []
    return [
        i
        for i, p in enumerate(points)
        if p.measurement == measurement and field in p.fields and type(p.fields[field]) is kind
    ]


class InfluxSink:
    """Shared HTTP path of the v1 and v2 sinks; subclasses name the endpoint and its params."""

    name = "influxdb"
    path = "/api/v2/write"
    accepts_lines = True

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_ms: int = 10_000,
        verify_ssl: bool = True,
        ssl_ca_cert: str | None = None,
        gzip_body: bool = False,
    ) -> None:
        # influxdb-client is heavy to import: only when a sink is built, never at package import.
        from influxdb_client.client.influxdb_client import InfluxDBClient

        self.url = url.rstrip("/")
        self._secrets = [token, password]
        self._gzip = gzip_body
        parsed = urllib.parse.urlsplit(self.url)
        if not verify_ssl:
            logger.warning("TLS certificate verification is turned off for %s", self.url)
        if (token or password) and parsed.scheme == "http" and not is_loopback_host(parsed.hostname):
            logger.warning("credentials for %s will travel over plain http; use https outside loopback", self.url)
        client_kwargs: dict[str, Any] = {
            "url": self.url,
            "timeout": timeout_ms,
            "verify_ssl": verify_ssl,
            "ssl_ca_cert": ssl_ca_cert,
            "retries": False,  # the pipeline retries, with backoff and accounting
        }
        if username is not None or password is not None:
            client_kwargs["token"] = f"{username or ''}:{password or ''}"
            client_kwargs["auth_basic"] = True
        elif token:
            client_kwargs["token"] = token
        self._client = InfluxDBClient(**client_kwargs)
        self._api = self._client.api_client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, {self.describe_target()})"

    kind = "influxdb"

    def destination(self) -> dict[str, str | None]:
        """Where points go, for spool fingerprints and messages (no credentials)."""
        parsed = urllib.parse.urlsplit(self.url)
        netloc = parsed.hostname or ""
        if parsed.port:
            netloc += f":{parsed.port}"
        return {
            "kind": self.kind,
            "url": urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", "")),
            **self.target(),
        }

    def target(self) -> dict[str, str | None]:
        raise NotImplementedError

    def describe_target(self) -> str:
        raise NotImplementedError

    def query_params(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def handle_not_found(self, message: str) -> bool:
        """Called on a 404; True when the condition was fixed and the write can be repeated."""
        return False

    # --- HTTP ---------------------------------------------------------------------------

    def post(
        self, path: str, body: bytes, params: list[tuple[str, str]], content_type: str
    ) -> tuple[int, str, dict[str, str]]:
        """POST and return (status, server message, headers); transport errors raise."""
        from influxdb_client.rest import ApiException

        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self._gzip and path != "/api/v2/write":  # influxdb-client gzips /api/v2/write itself
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        try:
            response = self._api.call_api(  # type: ignore[no-untyped-call]
                path,
                "POST",
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=[],
                _return_http_data_only=False,
                _preload_content=False,
            )
        except ApiException as exc:
            return exc.status or 0, _server_message(exc.body), dict(exc.headers or {})
        http_response = response[0]
        data = http_response.data if hasattr(http_response, "data") else b""
        return response[1], _server_message(data), dict(response[2] or {})

    def _transport_error(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return redact(text, self._secrets)[:500]

    # --- Sink protocol ------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> WriteResult:
        try:
            return self._write(points, list(range(len(points))))
        except Exception as exc:  # never raise into the pipeline
            return WriteResult.all_retry(len(points), self._transport_error(exc))

    def _write(self, points: Sequence[Point], indices: list[int]) -> WriteResult:
        batch = [points[i] for i in indices]
        lines = getattr(points, "lines", None)  # encoded by the pipeline's encoder thread
        encoded = [lines[i] for i in indices] if lines is not None else [encode_line(*p) for p in batch]
        body = "\n".join(encoded).encode("utf-8", "replace")
        try:
            status, message, headers = self.post(self.path, body, self.query_params(), "text/plain; charset=utf-8")
        except Exception as exc:
            return WriteResult(retry=indices, error=self._transport_error(exc), nbytes=len(body))
        message = redact(message, self._secrets)
        if 200 <= status < 300:
            return WriteResult(stored=len(batch), nbytes=len(body))
        if status == 404 and self.handle_not_found(message):
            return self._write(points, indices)
        if status in _RETRY_STATUSES or status >= 500 or status == 0:
            return WriteResult(
                retry=indices,
                error=f"HTTP {status} from {self.url}: {message}",
                retry_after=_retry_after(headers),
                nbytes=len(body),
            )
        return self._refused(points, indices, batch, status, message, len(body))

    def _refused(
        self, points: Sequence[Point], indices: list[int], batch: list[Point], status: int, message: str, nbytes: int
    ) -> WriteResult:
        cause = _cause_of(message)
        reason = f"HTTP {status}: {message}"
        if "partial write" in message:
            dropped_match = _PARTIAL_DROPPED.search(message)
            dropped = int(dropped_match.group(1)) if dropped_match else 1
            named = _named_lines(batch, message)[:dropped]
            float_field = _float_field(message)
            rejected = [Rejection(indices[i], cause, reason, float_field) for i in named]
            rejected += [Rejection(None, cause, reason, float_field)] * (dropped - len(named))
            return WriteResult(stored=len(batch) - dropped, rejected=rejected, nbytes=nbytes)
        if len(indices) == 1:
            return WriteResult(rejected=[Rejection(indices[0], cause, reason, _float_field(message))], nbytes=nbytes)
        # The server refused the whole body: find the bad points by halves.
        half = len(indices) // 2
        first = self._write(points, indices[:half])
        second = self._write(points, indices[half:])
        return WriteResult(
            stored=first.stored + second.stored,
            rejected=first.rejected + second.rejected,
            retry=list(first.retry) + list(second.retry),
            retry_after=first.retry_after or second.retry_after,
            error=second.error or first.error,
            nbytes=nbytes + first.nbytes + second.nbytes,
        )

    def flush(self) -> None:
        return None

    def after_fork(self) -> None:
        """In a forked child: never share the parent's pooled sockets."""
        try:
            self._api.rest_client.pool_manager.clear()
        except Exception:
            pass
        self._lock = threading.Lock()

    def close(self) -> None:
        try:
            self._client.close()  # type: ignore[no-untyped-call]
        except Exception:
            pass


def _named_lines(batch: list[Point], message: str) -> list[int]:
    quoted = _UNABLE_TO_PARSE.search(message)
    if quoted:
        line = quoted.group(1).replace("\\'", "'")
        for i, p in enumerate(batch):
            if encode_line(*p) == line:
                return [i]
        return []
    return _conflicting_points(batch, message)


def _float_field(message: str) -> tuple[str, str] | None:
    """(measurement, field) when a type conflict says the server holds the field as float."""
    match = _TYPE_CONFLICT.search(message)
    if match and "already exists as type float" in message:
        return match["measurement"], match["field"]
    return None


def _retry_after(headers: dict[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


class InfluxV2Sink(InfluxSink):
    """POST /api/v2/write with token, org and bucket: InfluxDB 2.x/3.x/Cloud, 1.8+, VictoriaMetrics."""

    name = "influxdb"
    path = "/api/v2/write"

    def __init__(self, url: str, *, bucket: str, org: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.bucket = bucket
        self.org = org or ""

    kind = "influxdb-v2"

    def target(self) -> dict[str, str | None]:
        return {"org": self.org, "bucket": self.bucket}

    def describe_target(self) -> str:
        return f"org={self.org!r}, bucket={self.bucket!r}"

    def query_params(self) -> list[tuple[str, str]]:
        params = [("bucket", self.bucket), ("precision", "ns")]
        if self.org:
            params.append(("org", self.org))
        return params


class InfluxV1Sink(InfluxSink):
    """POST /write?db=: InfluxDB 1.x, and the compatibility endpoint of 2.x/3.x."""

    name = "influxdb-v1"
    path = "/write"

    def __init__(
        self,
        url: str,
        *,
        database: str,
        retention_policy: str | None = None,
        create_database: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        self.database = database
        self.retention_policy = retention_policy
        self.create_database = create_database
        self._created = False

    kind = "influxdb-v1"

    def target(self) -> dict[str, str | None]:
        return {"database": self.database}

    def describe_target(self) -> str:
        return f"database={self.database!r}"

    def query_params(self) -> list[tuple[str, str]]:
        params = [("db", self.database), ("precision", "ns")]
        if self.retention_policy:
            params.append(("rp", self.retention_policy))
        return params

    def handle_not_found(self, message: str) -> bool:
        if not self.create_database or "database not found" not in message:
            return False
        with self._lock:
            if self._created:
                return False
            query = "CREATE DATABASE " + _quote_identifier(self.database)
            status, reply, _ = self.post("/query", b"", [("q", query)], "application/x-www-form-urlencoded")
            if 200 <= status < 300 and '"error"' not in reply:
                logger.info("created InfluxDB database %r at %s", self.database, self.url)
                self._created = True
                return True
            logger.error(
                "database %r does not exist at %s and could not be created: HTTP %s %s",
                self.database,
                self.url,
                status,
                redact(reply, self._secrets),
            )
            self._created = True  # do not ask again on every batch
            return False


def _quote_identifier(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
