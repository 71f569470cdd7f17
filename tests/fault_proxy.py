"""A small fault-injecting HTTP proxy in front of a real server, on a loopback port.

It forwards requests untouched, or answers with a chosen status (429 with Retry-After, 503),
or delays each request, as a test tells it; and it records what went through, so a test can
check what the server acknowledged.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    status: int  # answered instead of forwarding; 0: the connection is reset unanswered
    retry_after: float | None = None
    times: int = 1  # how many requests get it
    location: str | None = None  # a redirect's Location header
    # partial: the request's first line is refused from now on, wherever it comes again (as a
    # line the server cannot parse would be): kept from the upstream, named in a 1.x-style
    # partial write answer; the rest is forwarded.
    partial: bool = False


@dataclass
class ProxyLog:
    started: list[float] = field(default_factory=list)  # monotonic time of each write request
    answered: list[int] = field(default_factory=list)  # status of each write request
    acked_lines: int = 0  # lines in write requests the upstream answered 2xx


class _NothingToSend(Exception):
    """Every line of a request was kept back: the upstream is not asked."""


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.delay = 0.0
        self.faults: list[Fault] = []
        self.kept_back: set[bytes] = set()  # lines refused as unparseable, every time they come
        self.forwarded: set[bytes] = set()  # lines sent upstream, when track_lines is set
        self.track_lines = False
        self.log = ProxyLog()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                self._handle(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._handle(body)

            def _handle(self, body: bytes) -> None:
                is_write = "/write" in self.path
                fault = proxy._next_fault() if is_write else None
                if is_write:
                    with proxy._lock:
                        proxy.log.started.append(time.monotonic())
                if fault is not None and fault.status == 0:  # a reset: the connection dies unanswered
                    proxy._record(is_write, 0, body)
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                kept: list[bytes] = []
                if is_write and (proxy.kept_back or (fault is not None and fault.partial)):
                    lines = body.split(b"\n")
                    with proxy._lock:
                        fresh = [line for line in lines if line not in proxy.forwarded]
                        if fault is not None and fault.partial and len(lines) > 1 and fresh:
                            # A line the server never saw (one it stored before cannot turn bad),
                            # refused from now on, whoever sends it.
                            proxy.kept_back.add(fresh[0])
                        kept = [line for line in lines if line in proxy.kept_back]
                    body = b"\n".join(line for line in lines if line not in proxy.kept_back)
                if fault is not None and not fault.partial:
                    extra = [("Location", fault.location)] if fault.location else None
                    self._answer(fault.status, b'{"error":"injected by the fault proxy"}', fault.retry_after, extra)
                    proxy._record(is_write, fault.status, body)
                    return
                if proxy.delay and is_write:
                    time.sleep(proxy.delay)
                try:
                    if kept and not body:  # nothing left to forward
                        raise _NothingToSend
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                    dropped = ("host", "connection", "content-length")  # the body may have been cut
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                    if is_write and (proxy.kept_back or proxy.track_lines):
                        with proxy._lock:
                            proxy.forwarded.update(body.split(b"\n"))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    status = response.status
                    extra = [
                        (k, v)
                        for k, v in response.getheaders()
                        if k.lower() in ("content-type", "retry-after", "x-influxdb-version")
                    ]
                    conn.close()
                except _NothingToSend:
                    status, data, extra = 204, b"", []
                except OSError:
                    status, data, extra = 502, b'{"error":"upstream unreachable"}', []
                if kept and 200 <= status < 300:  # as InfluxDB 1.x words it: one quote per line
                    quoted = "\n".join(
                        f"unable to parse '{line.decode('utf-8', 'replace')}': injected" for line in kept
                    )
                    data = json.dumps({"error": f"partial write: {quoted} dropped=0"}).encode()
                    status, extra = 400, [("Content-Type", "application/json")]
                self._answer(status, data, None, extra)
                proxy._record(is_write, status, body)

            def _answer(
                self, status: int, data: bytes, retry_after: float | None, extra: list[tuple[str, str]] | None = None
            ) -> None:
                self.send_response(status)
                for key, value in extra or []:
                    self.send_header(key, value)
                if retry_after is not None:
                    self.send_header("Retry-After", str(int(retry_after)))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self.faults.pop(0)
            return fault

    def _record(self, is_write: bool, status: int, body: bytes) -> None:
        if not is_write:
            return
        with self._lock:
            self.log.answered.append(status)
            if 200 <= status < 300:
                self.log.acked_lines += len([line for line in body.splitlines() if line.strip()])

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
