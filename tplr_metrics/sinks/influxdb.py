"""InfluxDB sinks: the v2 write API (/api/v2/write) and the v1 write API (/write?db=).

Both reuse influxdb-client's ``InfluxDBClient`` for the HTTP connection pool, TLS settings and
auth headers, and send bodies this package encoded itself (gzipped here when asked). They do
not use influxdb-client's batching ``WriteApi``: delivery, retries and accounting belong to the
pipeline, which needs to know what happened to every point.

What a response means (``answers.py`` reads the refusals of each server family):

* 2xx: every point stored.
* 400/422 naming refused lines (a partial write): each named point is rejected with the
  server's reason for it. The rest is sent again until a 2xx answers it: InfluxDB 1.x leaves
  refusals out of its answer (``points beyond retention policy`` beside a type conflict, a parse
  error beside one, ``dropped=1`` for two conflicts), and InfluxDB overwrites a point with itself,
  so a point stored twice is stored once. An answer that names nothing new splits the rest in
  halves. ``written`` only counts points a 2xx answer proves stored. (For a server that keeps
  duplicates, ``overwrites_duplicates = False``, a complete list is trusted and an incomplete
  one rejects the unnamed rest as ``refused_unidentified``.)
* 400/413/422 that is not partial (the server refused the whole body, e.g. a type conflict
  between two points of the same batch): the batch is split in halves and each half written
  again, down to the single points that are really bad. One bad point never takes its batch.
* 3xx: followed to the same server (scheme, host and port) at most 3 times; anywhere else it is
  a destination error like a 5xx, never the data's fault.
* 401/403/404, 429, 5xx, timeouts and connection errors: not the data's fault; every point is
  handed back for retry, with the server's Retry-After. A v1 "database not found" creates the
  database first, as Telegraf does, unless ``create_database=False``. A TLS failure names its
  cause (certificate verify failed, hostname mismatch).
"""

from __future__ import annotations

import gzip
import ipaddress
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from ..config.secrets import clean_secret, redact, secret_forms
from ..encoding.line_protocol import encode_line, encode_lines, reads_as_one_line
from ..encoding.points import Point
from .answers import cause_of, float_field, int_field, read_refusal, server_message
from .base import Rejection, WriteResult

logger = logging.getLogger("tplr_metrics")

_RETRY_STATUSES = {401, 403, 404, 408, 425, 429}
#: A missing database is created again (it was dropped, or a fresh server took the address) at most
#: this often, in seconds.
CREATE_AGAIN_S = 10.0
_AGAIN = WriteResult()  # _not_stored: the condition was fixed (a database created), write again
MAX_REDIRECTS = 3


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        token, username, password = clean_secret(token), clean_secret(username), clean_secret(password)
        self._secrets = secret_forms(token, password, username=username)
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
        self._timeout_s = timeout_ms / 1000.0
        self._api = self._client.api_client
        self._lock = threading.Lock()
        self._line_splitting: bool | None = None  # asked of the server when it matters

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

    def not_found_hint(self, headers: dict[str, str]) -> str | None:
        """On a 404 that no retry can fix: what to change (the write is then not retried)."""
        return None

    # --- HTTP ---------------------------------------------------------------------------

    def post(
        self, path: str, body: bytes, params: list[tuple[str, str]], content_type: str
    ) -> tuple[int, str, dict[str, str]]:
        """POST and return (status, the answer's body as text, headers); transport errors raise.

        Through influxdb-client's connection pool (its TLS settings, proxies, auth header), but
        not its request path: that one logs an answer it cannot read as JSON, a 401 echoing the
        token included, to the root logger at DEBUG."""
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self._gzip:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if params:
            path += "?" + urllib.parse.urlencode(params)
        response = self._request("POST", path, body, headers)
        return response.status, _decoded(response.data), dict(response.headers)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One request on the client's pool, with its auth header; no retry, no redirect
        followed (the pipeline retries with backoff and accounting; ``_write`` follows redirects
        to the same server only)."""
        import urllib3

        api = self._api
        return api.rest_client.pool_manager.request(
            method,
            api.configuration.host.rstrip("/") + path,
            body=body,
            headers={**api.default_headers, **(headers or {})},
            timeout=urllib3.Timeout(total=self._timeout_s if timeout_s is None else timeout_s),
            retries=False,
            redirect=False,
            preload_content=True,
        )

    def _transport_error(self, exc: BaseException) -> str:
        return redact(describe_transport_error(exc), self._secrets)[:500]

    # --- Sink protocol ------------------------------------------------------------------

    #: InfluxDB keeps one point per series and time: a point sent twice is stored once, so the
    #: points of a partial write it did not name can be sent again to find the refused ones.
    overwrites_duplicates = True

    def write(self, points: Sequence[Point]) -> WriteResult:
        try:
            return self._write(points, list(range(len(points))))
        except Exception as exc:  # never raise into the pipeline
            return WriteResult.all_retry(len(points), self._transport_error(exc))

    def _write(self, points: Sequence[Point], indices: list[int]) -> WriteResult:
        lines = getattr(points, "lines", None)  # encoded by the pipeline's encoder thread
        whole = len(indices) == len(points)
        # A LineBatch builds a Point only when asked for one: not for a batch sent whole.
        batch: Sequence[Point] = points if whole else [points[i] for i in indices]
        checked = self._splits_lines() and not (whole and getattr(points, "plain_lines", False))
        if lines is None:
            encoded = encode_lines(batch)
        elif not whole:
            encoded = [lines[i] for i in indices]
        else:  # a copy only where a line may be changed below: the batch keeps its own lines
            encoded = list(lines) if checked else lines
        sanitized = 0
        if checked:
            # VictoriaMetrics (any server that does not say it is InfluxDB) ends a line at a raw
            # newline, even in a quoted string value (what follows would be a point of its own),
            # and drops a whole line whose field key holds a '"'. Names are cleaned already.
            for k, point in enumerate(batch):
                line = encoded[k]
                if not reads_as_one_line(line, point.fields):
                    encoded[k] = encode_line(*_for_line_splitting_server(point))
                    sanitized += 1
        body = "\n".join(encoded).encode("utf-8", "replace")
        try:
            status, answer, headers = self._post_body(body)
        except Exception as exc:
            return WriteResult(
                retry=indices,
                error=self._transport_error(exc),
                nbytes=len(body),
                unanswered=_maybe_sent(exc),
                unreachable=_refused_connection(exc),
            )
        answer = redact(answer, self._secrets)
        if 200 <= status < 300:
            changed = {"changed_for_victoriametrics": sanitized} if sanitized else {}
            return WriteResult(stored=len(batch), nbytes=len(body), sanitized=changed)
        unstored = self._not_stored(status, answer, headers, indices, len(body))
        if unstored is not None:
            return self._write(points, indices) if unstored is _AGAIN else unstored
        refused = self._refused(points, indices, batch, encoded, status, answer, len(body))
        return self._sent_as_held(points, refused)

    def write_body(self, body: bytes, count: int) -> WriteResult | None:
        """POST a body of ``count`` lines encoded earlier (a spool file's, as it was written):
        what the answer says of all of them, or None when it refused some of them (a 4xx): the
        caller then sends them through ``write``, which finds out which. Never raises."""
        try:
            try:
                status, answer, headers = self._post_body(body)
            except Exception as exc:
                return WriteResult(
                    retry=range(count),
                    error=self._transport_error(exc),
                    nbytes=len(body),
                    unanswered=_maybe_sent(exc),
                    unreachable=_refused_connection(exc),
                )
            if 200 <= status < 300:
                return WriteResult(stored=count, nbytes=len(body))
            unstored = self._not_stored(status, redact(answer, self._secrets), headers, range(count), len(body))
            if unstored is _AGAIN:
                return self.write_body(body, count)
            return unstored
        except Exception as exc:  # never raise into the pipeline
            return WriteResult.all_retry(count, self._transport_error(exc))

    def reachable(self, timeout_s: float = 1.0) -> bool:
        """Whether the server answers at all now (``GET /ping``, any answer): a replay waiting
        out its backoff after a refused connection sends at once when it does."""
        try:
            self._request("GET", "/ping", timeout_s=min(timeout_s, self._timeout_s))
        except Exception:
            return False
        return True

    def _post_body(self, body: bytes) -> tuple[int, str, dict[str, str]]:
        """POST a body to the write endpoint, following redirects to the same server."""
        path, params = self.path, self.query_params()
        for _ in range(MAX_REDIRECTS + 1):
            status, answer, headers = self.post(path, body, params, "text/plain; charset=utf-8")
            if not 300 <= status < 400:
                break
            followed = self._same_server_location(headers)
            if followed is None:
                break
            path, params = followed
        return status, answer, headers

    def _not_stored(
        self, status: int, answer: str, headers: dict[str, str], indices: Sequence[int], nbytes: int
    ) -> WriteResult | None:
        """What a non-2xx answer means when it is not the data's fault: every point to retry, or
        ``_AGAIN`` (write again: the database was just created); None for a refusal."""
        message = redact(server_message(answer), self._secrets)  # decoded JSON may spell a secret anew ("\u0026")
        if status == 404 and self.handle_not_found(message):
            return _AGAIN
        hint = self.not_found_hint(headers) if status == 404 else None
        if hint is not None:
            message = f"{message}; {hint}"
        if status in _RETRY_STATUSES or status >= 500 or status < 200 or 300 <= status < 400:
            if 300 <= status < 400:
                where = redact(_header(headers, "location") or "nowhere", self._secrets)[:200]
                message = f"redirected to {where}, not followed (another server, or too many)"
            return WriteResult(
                retry=indices,
                error=f"HTTP {status} from {self.url}: {message}",
                retry_after=_retry_after(headers),
                nbytes=nbytes,
                hopeless=hint is not None,
            )
        return None

    def _splits_lines(self) -> bool:
        """Whether this server reads line protocol as VictoriaMetrics does (a raw newline in a
        quoted string value ends the line; a '"' in a field key drops it). InfluxDB (its /ping
        answers with X-Influxdb-Version) stores such values exactly; any server that does not
        say it is InfluxDB is taken as VictoriaMetrics."""
        if self._line_splitting is None:
            try:
                headers = {k.lower() for k in self._request("GET", "/ping").headers}
                self._line_splitting = "x-influxdb-version" not in headers
            except Exception:
                return True  # unknown for now: the safe reading, asked again next time
        return self._line_splitting

    def _same_server_location(self, headers: dict[str, str]) -> tuple[str, list[tuple[str, str]]] | None:
        """(path, query) of a redirect's Location when it is on this server, else None."""
        location = _header(headers, "location")
        if not location:
            return None
        base = urllib.parse.urlsplit(self.url)
        target = urllib.parse.urlsplit(urllib.parse.urljoin(self.url + "/", location))
        if (target.scheme, target.hostname, target.port) != (base.scheme, base.hostname, base.port):
            return None
        path = target.path
        if base.path and path.startswith(base.path):
            path = path[len(base.path) :] or "/"  # the client puts the base path back
        return path, urllib.parse.parse_qsl(target.query, keep_blank_values=True)

    def _sent_as_held(self, points: Sequence[Point], result: WriteResult) -> WriteResult:
        """Points refused for a field's type that the number itself does not decide, sent again
        as the server holds the field: a whole-number float (below 2**53) as an int where the
        server holds integers (the builder writes an int as float once it has seen a float
        there), an int as a float where it holds floats. The same numbers; 0.5 into an integer
        field stays refused. An answer that refuses several points names one field only (the
        first conflict): the points without that field are sent again as they are, to be
        answered for themselves."""
        again: list[Point] = []
        at: list[int] = []  # the index in `points` of each point sent again
        kept: list[Rejection] = []
        unnamed: list[Rejection] = []  # refused with another point's field in the reason
        named = 0  # refused points that have the field their reason names, of the type it names
        learned: set[tuple[str, str]] = set()
        learned_floats: set[tuple[str, str]] = set()
        for rejection in result.rejected:
            conflict = rejection.int_field or rejection.float_field
            point = points[rejection.index] if rejection.index is not None and conflict else None
            if point is None or conflict is None or rejection.index is None:
                kept.append(rejection)
            elif point.measurement != conflict[0] or type(point.fields.get(conflict[1])) is not (
                float if rejection.int_field is not None else int
            ):
                unnamed.append(rejection)  # its own conflict is in another field (or another point's)
            else:
                named += 1
                converted = _as_held(point, conflict[1], integer=rejection.int_field is not None)
                if converted is None:
                    kept.append(rejection)
                    continue
                again.append(converted)
                at.append(rejection.index)
                (learned if rejection.int_field is not None else learned_floats).add(conflict)
        if unnamed and named:  # the answer was about a point here: the others answer for themselves
            again += [points[r.index] for r in unnamed]  # type: ignore[index]
            at += [r.index for r in unnamed]  # type: ignore[misc]
        else:
            kept += unnamed
        if not again:
            return result
        sent = self._write(again, list(range(len(again))))
        result.stored += sent.stored
        result.rejected = kept + [replace(r, index=None if r.index is None else at[r.index]) for r in sent.rejected]
        result.retry = [*result.retry, *(at[i] for i in sent.retry)]
        result.nbytes += sent.nbytes
        result.error = result.error or sent.error
        result.retry_after = result.retry_after or sent.retry_after
        result.unanswered = result.unanswered or sent.unanswered
        result.int_fields = [*result.int_fields, *sorted(learned), *sent.int_fields]
        result.float_fields = [*result.float_fields, *sorted(learned_floats), *sent.float_fields]
        return result

    def _refused(
        self,
        points: Sequence[Point],
        indices: list[int],
        batch: Sequence[Point],
        lines: list[str],
        status: int,
        answer: str,
        nbytes: int,
    ) -> WriteResult:
        refusal = read_refusal(answer, lines)
        message = redact(refusal.message, self._secrets)  # decoded JSON may spell a secret anew
        if not refusal.partial:
            if len(indices) == 1:
                return WriteResult(rejected=[_rejection(indices[0], status, message)])
            return self._by_halves(points, indices, nbytes)  # the whole body was refused
        rejected = [
            _rejection(indices[i], status, redact(why, self._secrets)) for i, why in sorted(refusal.named.items())
        ]
        rest = [indices[i] for i in range(len(indices)) if i not in refusal.named]
        if not rest:
            return WriteResult(rejected=rejected, nbytes=nbytes)
        if refusal.complete and not self.overwrites_duplicates:
            return WriteResult(stored=len(rest), rejected=rejected, nbytes=nbytes)
        # The rest is stored only once an answer says so: InfluxDB 1.x leaves refusals out of a
        # partial answer (a retention refusal beside a type conflict; a parse error beside one;
        # dropped=1 for two conflicts), so the rest is sent again (stored points are overwritten
        # by themselves) until a 2xx answers it, or its own refusals are found.
        if not self.overwrites_duplicates:
            reason = f"HTTP {status}: {message}"
            rejected += [Rejection(i, "refused_unidentified", reason) for i in rest]
            return WriteResult(rejected=rejected, nbytes=nbytes)
        if len(rest) == 1 and not refusal.named:
            return WriteResult(rejected=[_rejection(rest[0], status, message)])
        found = self._write(points, rest) if refusal.named else self._by_halves(points, rest, 0)
        return WriteResult(
            stored=found.stored,
            rejected=rejected + found.rejected,
            retry=found.retry,
            retry_after=found.retry_after,
            error=found.error,
            nbytes=nbytes + found.nbytes,
            unanswered=found.unanswered,
            int_fields=found.int_fields,
            float_fields=found.float_fields,
        )

    def _by_halves(self, points: Sequence[Point], indices: list[int], nbytes: int) -> WriteResult:
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
            unanswered=first.unanswered or second.unanswered,
            int_fields=first.int_fields + second.int_fields,
            float_fields=first.float_fields + second.float_fields,
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


def _for_line_splitting_server(point: Point) -> Point:
    """A string value's newlines become spaces, a field key's '"' becomes "'"."""
    fields = {
        k.replace('"', "'"): v.replace("\r\n", " ").replace("\n", " ").replace("\r", " ") if type(v) is str else v
        for k, v in point.fields.items()
    }
    return Point(point.measurement, point.tags, fields, point.time_ns)


def _as_held(point: Point, name: str, integer: bool) -> Point | None:
    """The point with field ``name`` of the type the server holds it as (integer, or float),
    where its number is the same in that type; None where it is not (0.5, 2**53, a string)."""
    value = point.fields[name]
    if integer:
        if type(value) is not float or not value.is_integer() or abs(value) >= 2**53:
            return None
        held: int | float = int(value)
    else:
        if type(value) is not int or abs(value) > 2**53:
            return None
        held = float(value)
    return Point(point.measurement, point.tags, {**point.fields, name: held}, point.time_ns)


def _rejection(index: int, status: int, why: str) -> Rejection:
    """One refused point, with what the server's reason says about the field's type there."""
    return Rejection(index, cause_of(why), f"HTTP {status}: {why}", float_field(why), int_field(why))


def _decoded(body: Any) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return "" if body is None else str(body)


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _maybe_sent(exc: BaseException) -> bool:
    """False when the request surely never reached the server (no connection was made)."""
    import ssl

    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    never_sent = (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError, ssl.SSLCertVerificationError)
    return not any(isinstance(cause, never_sent) for cause in _causes(exc))


def _refused_connection(exc: BaseException) -> bool:
    """The server refused the connection (nothing listens on its port): nothing was sent."""
    return any(isinstance(cause, ConnectionRefusedError) for cause in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps: urllib3's ``reason``, then ``__cause__``/``__context__``."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        reason = getattr(cause, "reason", None)
        cause = reason if isinstance(reason, BaseException) else (cause.__cause__ or cause.__context__)


def describe_transport_error(exc: BaseException) -> str:
    """A transport failure in one line, with the cause a TLS failure buries in urllib3's chain."""
    import ssl

    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or cause}"
    text = f"{type(exc).__name__}: {exc}"
    if "CERTIFICATE_VERIFY_FAILED" in text or "hostname" in text and "match" in text:
        return "TLS: " + text
    return text


def _retry_after(headers: dict[str, str]) -> float | None:
    value = _header(headers, "retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


class InfluxV2Sink(InfluxSink):
    """POST /api/v2/write with token, org and bucket: InfluxDB 2.x/3.x/Cloud, 1.8+, VictoriaMetrics."""

    name = "influxdb"
    path = "/api/v2/write"

    def __init__(self, url: str, *, bucket: str, org: str | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.bucket = bucket
        self.org = org or ""
        self._server_version: str | None = None  # X-Influxdb-Version, learnt on a 404

    kind = "influxdb-v2"

    def target(self) -> dict[str, str | None]:
        return {"org": self.org, "bucket": self.bucket}

    def describe_target(self) -> str:
        return f"org={self.org!r}, bucket={self.bucket!r}"

    def not_found_hint(self, headers: dict[str, str]) -> str | None:
        """A 404 from an InfluxDB older than 1.8 (no /api/v2/write; /ping's X-Influxdb-Version
        says so, as ``tplr-metrics check`` reads it): name the fix, once asked, then remembered."""
        if self._server_version is None:
            version = _header(headers, "x-influxdb-version")
            if version is None:
                try:
                    version = _header(dict(self._request("GET", "/ping").headers), "x-influxdb-version")
                except Exception:  # unreachable now: ask again on the next 404
                    return None
            self._server_version = version or ""
        version = self._server_version
        numbers = [int(part) for part in re.findall(r"\d+", version)[:2]]
        if version.lstrip("v").startswith("1.") and len(numbers) == 2 and tuple(numbers) < (1, 8):
            return (
                f"the server is InfluxDB {version}, which has no v2 API (it came with 1.8): "
                'set INFLUXDB_API=v1 (api="v1")'
            )
        return None

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
        self._create_asked: float | None = None  # when CREATE DATABASE was last sent (monotonic)
        self._create_failure_logged = False

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
        """Create the missing database (True: write again). Asked again when the database goes
        missing later (dropped, or a fresh server at the same address), but at most once every
        CREATE_AGAIN_S: not on every batch where creating is refused, and never in a loop where a
        created database still answers 404 (the write is then retried as any 404 is)."""
        if not self.create_database or "database not found" not in message:
            return False
        with self._lock:
            now = time.monotonic()
            if self._create_asked is not None and now - self._create_asked < CREATE_AGAIN_S:
                return False
            self._create_asked = now
            query = "CREATE DATABASE " + _quote_identifier(self.database)
            status, reply, _ = self.post("/query", b"", [("q", query)], "application/x-www-form-urlencoded")
            if 200 <= status < 300 and '"error"' not in reply:
                logger.info("created InfluxDB database %r at %s", self.database, self.url)
                return True
            (logger.debug if self._create_failure_logged else logger.error)(
                "database %r does not exist at %s and could not be created: HTTP %s %s",
                self.database,
                self.url,
                status,
                redact(reply, self._secrets),
            )
            self._create_failure_logged = True
            return False


def _quote_identifier(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
