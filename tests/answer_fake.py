"""A loopback write endpoint that answers as InfluxDB 2.x, Cloud / 3.x Dedicated or 3 Core do.

No Docker engine here, so these servers cannot run; their refusals are reproduced in the formats
their documentation records (see ``tplr_metrics/sinks/answers.py``). The fake stores what it
accepts like InfluxDB does (one point per line text: sending a point twice stores it once) and
refuses every line holding the field ``refuse_me``, with a reason naming that line's ``pid``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REFUSE = "refuse_me"
_PID = re.compile(r"pid=(\d+)i")


def refusal_body(style: str, refused: list[tuple[int, str, str]]) -> bytes:
    """The 400 body for (1-based line number, line, reason) triples, in a server family's words."""
    if style == "v2":  # InfluxDB 2.x OSS
        listed = "; ".join(f"line {n}: {why}" for n, _, why in refused[:100])
        return json.dumps(
            {"code": "invalid", "message": f"partial write has occurred, errors encountered on line(s): {listed}"}
        ).encode()
    if style == "cloud":  # InfluxDB Cloud Serverless / Dedicated, 3.x Clustered
        listed = "".join(f"\nerror parsing line {n} (1-based): {why}" for n, _, why in refused[:100])
        return json.dumps(
            {
                "code": "invalid",
                "line": refused[0][0],
                "message": f"failed to parse line protocol: errors encountered on line(s):{listed}",
            }
        ).encode()
    if style == "v3":  # InfluxDB 3 Core / Enterprise
        return json.dumps(
            {
                "error": "partial write of line protocol occurred",
                "data": [{"original_line": line, "line_number": n, "error_message": why} for n, line, why in refused],
            }
        ).encode()
    raise ValueError(style)


class AnswerFake:
    def __init__(self, style: str) -> None:
        self.style = style
        self.stored: set[str] = set()
        self.requests = 0
        self.redirects: list[str] = []  # Location headers to answer 307 with, one per request
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with fake._lock:
                    fake.requests += 1
                    location = fake.redirects.pop(0) if fake.redirects else None
                if location is not None:
                    self.send_response(307)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                refused = []
                for n, line in enumerate(body.split("\n"), start=1):
                    if REFUSE in line:
                        pid = _PID.search(line)
                        refused.append((n, line, f"invalid field value for pid {pid.group(1) if pid else '?'}"))
                    elif line:
                        with fake._lock:
                            fake.stored.add(line)
                if not refused:
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = refusal_body(fake.style, refused)
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stored_pids(self) -> list[int]:
        with self._lock:
            return sorted(int(m.group(1)) for line in self.stored if (m := _PID.search(line)))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def answer_fake(style: str) -> Iterator[AnswerFake]:
    fake = AnswerFake(style)
    try:
        yield fake
    finally:
        fake.close()
