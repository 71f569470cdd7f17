"""Real servers for tests and benchmarks: InfluxDB 1.x and VictoriaMetrics from Debian's packages.

Each runs on a free loopback port with its data in a temp dir, and is stopped at the end. They
never listen on, or talk to, anything but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class ServerProcess:
    """A server binary started on a free port, restartable on the same data directory."""

    binary = ""

    def __init__(self, workdir: Path | None = None) -> None:
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"{self.binary} is not installed (apt-get install {self.package})")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"tplr-{self.binary}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "server.log"

    package = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited: {self.log_path.read_text()[-2000:]}")
            try:
                if self.ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.binary} did not answer in {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: the data dir stays for a restart."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class InfluxDB1(ServerProcess):
    """influxd 1.x with its HTTP API on a free port; ``auth=True`` turns on authentication."""

    binary = "influxd"
    package = "influxdb"

    def __init__(self, workdir: Path | None = None, auth: bool = False) -> None:
        super().__init__(workdir)
        self.auth = auth
        self.admin = ("admin", "admin-test-password")
        self.rpc_port = free_port()

    def command(self) -> list[str]:
        config = self.workdir / "influxdb.conf"
        config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.workdir}/meta"
[data]
  dir = "{self.workdir}/data"
  wal-dir = "{self.workdir}/wal"
  query-log-enabled = false
  max-series-per-database = 0
  max-values-per-tag = 0
[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""
        )
        return ["influxd", "-config", str(config)]

    def ready(self) -> bool:
        status, _ = http("GET", self.url + "/ping", timeout=2)
        return status == 204

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        if self.auth:
            # The first user may be created without credentials; it must be an admin.
            self.query(
                f"CREATE USER {self.admin[0]} WITH PASSWORD '{self.admin[1]}' WITH ALL PRIVILEGES", credentials=False
            )

    def query(self, q: str, db: str | None = None, credentials: bool = True, epoch: str | None = "ns") -> Any:
        params = {"q": q}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        if self.auth and credentials:
            params["u"], params["p"] = self.admin
        status, body = http("POST", self.url + "/query?" + urllib.parse.urlencode(params))
        data = json.loads(body or b"{}")
        if status >= 300 or "error" in data:
            raise RuntimeError(f"query failed ({status}): {data}")
        for result in data.get("results", []):
            if "error" in result:
                raise RuntimeError(f"query {q!r} failed: {result['error']}")
        return data

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """Rows of all series of a query, as dicts (tags of GROUP BY included)."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, db).get("results", []):
            for series in result.get("series", []) or []:
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=False))
                    row.update(series.get("tags") or {})
                    row["_measurement"] = series.get("name")
                    out.append(row)
        return out

    def count(self, measurement: str, field: str, db: str, where: str = "") -> int:
        q = f'SELECT count("{field}") FROM "{measurement}"' + (f" WHERE {where}" if where else "")
        rows = self.rows(q, db)
        return int(rows[0]["count"]) if rows else 0

    def create_database(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"')

    def write(self, db: str, body: bytes) -> tuple[int, bytes]:
        params = {"db": db, "precision": "ns"}
        if self.auth:
            params["u"], params["p"] = self.admin
        return http("POST", self.url + "/write?" + urllib.parse.urlencode(params), body)


class VictoriaMetrics(ServerProcess):
    """victoria-metrics single node; InfluxDB line protocol at /write and /api/v2/write."""

    binary = "victoria-metrics"
    package = "victoria-metrics"

    def command(self) -> list[str]:
        return [
            "victoria-metrics",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir}/data",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]

    def ready(self) -> bool:
        status, _ = http("GET", self.url + "/health", timeout=2)
        return status == 200

    def force_flush(self) -> None:
        http("GET", self.url + "/internal/force_flush")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching a selector, with all its samples."""
        self.force_flush()
        status, body = http("GET", self.url + "/api/v1/export?" + urllib.parse.urlencode({"match[]": match}))
        if status != 200:
            raise RuntimeError(f"export failed ({status}): {body[:500]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def count_samples(self, match: str, expected: int | None = None, timeout: float = 15.0) -> int:
        """Samples of the matching series. New series become searchable about a second after
        they are written, so with ``expected`` this polls until the count reaches it (or the
        timeout passes) and then checks that it stays there."""
        deadline = time.monotonic() + timeout
        while True:
            count = sum(len(series["values"]) for series in self.export(match))
            if expected is None or count >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if expected is not None and count >= expected:
            time.sleep(0.5)
            count = sum(len(series["values"]) for series in self.export(match))
        return count

    def export_when_visible(self, match: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            series = self.export(match)
            if series or time.monotonic() > deadline:
                return series
            time.sleep(0.25)


def ci_requires(binary: str) -> bool:
    """In CI a missing server is a failure, not a skip: the tests must not pass by not running."""
    return shutil.which(binary) is None and os.environ.get("CI", "").lower() in ("1", "true", "yes")
