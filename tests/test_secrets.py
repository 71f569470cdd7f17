"""Secrets never leave: not in a log line (DEBUG included, urllib3's too), stats(), repr(), an
exception, a file under TPLR_METRICS_HOME, or a point.

Before: a token read from a file with its trailing newline leaked in full into the warning log
and stats()["last_error"] (`Invalid header value b'Token …\\n'`); a 401 body echoing
`Basic <base64>` was not redacted; a short token turned every such letter of a message into
`***`; config attributes holding secrets became config_* tags on every point and in the runs
table."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.config.secrets import looks_secret, redact, secret_forms

from .loopback_http import serving

TOKEN = "tok-0123456789abcdef"
PASSWORD = "pw12345"  # 7 characters: hidden only where it stands as a word of its own
CONFIG = SimpleNamespace(
    lr=0.001,
    netuid=3,
    wandb_api_key="wandb-key-ABCDEFGH1234",
    influxdb_token="influx-token-ZYXW9876",
    hf_password="hf-pass-QWERTY5678",
    aws_secret_access_key="aws-secret-POIU0987",
    github_auth="gh-auth-LKJH6543",
)
SECRETS = [TOKEN, PASSWORD] + [v for k, v in vars(CONFIG).items() if looks_secret(k)]


@contextmanager
def echoing_server() -> Iterator[tuple[str, list[bytes]]]:
    """Answers the first request of each Authorization scheme 401, echoing the header it got (as
    some proxies do), then 204; keeps the bodies it accepted."""
    bodies: list[bytes] = []
    refused: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return None

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            scheme = (self.headers.get("Authorization") or "").split(" ")[0]
            if scheme not in refused:
                refused.add(scheme)
                answer = json.dumps({"code": "unauthorized", "message": f"refused {self.headers.get('Authorization')}"})
                data = answer.encode()
                self.send_response(401)
            else:
                bodies.append(body)
                data = b""
                self.send_response(204)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving(Handler) as url:
        yield url, bodies


def assert_nowhere(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}"
    basic = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert basic not in text, f"the Basic header in {where}"


def test_secrets_appear_nowhere(isolated_env: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # as `echo $TOKEN > file` leaves it
    store = isolated_env / "metrics.sqlite"
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    with echoing_server() as (url, bodies):
        loggers = [
            MetricsLogger(
                url=url,
                api="v2",
                database="b",
                org="o",
                token=token_file.read_text(),  # the trailing newline included
                config=CONFIG,
                sinks=["influxdb", {"kind": "local", "params": {"path": str(store)}}],
                retry_interval=50,
            ),
            MetricsLogger(
                url=url,
                api="v1",
                database="d",
                username="user",
                password=PASSWORD,
                config=CONFIG,
                retry_interval=50,
            ),
        ]
        for m in loggers:
            for i in range(20):
                m.log("secretive", {"k": "v"}, {"step": i})
        results = [m.close(timeout=20) for m in loggers]
        sent = b"\n".join(bodies).decode()
    assert results == [True, True], [m.stats() for m in loggers]
    assert sent.count("secretive") == 40 and "config_lr=0.001" in sent
    assert_nowhere(sent, "the points sent")
    assert_nowhere(caplog.text, "the log")
    assert "refused Token ***" in caplog.text and "refused Basic ***" in caplog.text  # echoed, then hidden
    for m in loggers:
        assert_nowhere(repr(m), "repr()")
        assert_nowhere(json.dumps(m.stats(), default=str), "stats()")
    for path in isolated_env.rglob("*"):
        if path.is_file():
            assert_nowhere(path.read_bytes().decode("utf-8", "replace"), str(path))
    for command in (["runs", "--json"], ["export", "--format", "jsonl"]):
        shown = subprocess.run(
            [sys.executable, "-m", "tplr_metrics.cli", *command, "--store", str(store)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "config_lr" in shown.stdout or '"lr"' in shown.stdout
        assert_nowhere(shown.stdout + shown.stderr, " ".join(command))


def test_redaction_hides_every_spelling_and_never_a_short_string() -> None:
    forms = secret_forms("s3cr3t-token\n", "ab", username="me")
    text = "Token s3cr3t-token and 's3cr3t-token\\n' and Basic bWU6czNjcjN0LXRva2VuCg== and a b c"
    hidden = redact(text, forms)
    assert "s3cr3t" not in hidden and "bWU6" not in hidden
    assert hidden.endswith("and a b c")  # "ab" (2 characters) only as a word of its own
    assert redact("refused user:ab, abc, cab", forms) == "refused user:***, abc, cab"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("wandb_api_key", True),
        ("influxdb_token", True),
        ("hf_password", True),
        ("aws_secret_access_key", True),
        ("db_passwd", True),
        ("apiKey", True),
        ("github_auth", True),
        ("credentials", True),
        ("privkey", True),
        ("wallet_mnemonic", True),
        ("lr", False),
        ("netuid", False),
        ("monkey_patch", False),
        ("num_keys", False),
        ("author", False),
        ("project", False),
    ],
)
def test_secret_looking_names(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_config_tags_selection(isolated_env: Path) -> None:
    m = MetricsLogger(sinks=["jsonl"], config=CONFIG, config_tags={"deny": ["netuid"]})
    assert {k for k in m.standard_tags() if k.startswith("config_")} == {"config_lr"}
    m.close(1)
    m = MetricsLogger(sinks=["jsonl"], config={"key_size": 4, "lr": 1}, config_tags=["key_size"])
    assert {k for k in m.standard_tags() if k.startswith("config_")} == {"config_key_size"}  # named: kept
    m.close(1)
    with pytest.raises(ValueError, match="config_tags"):
        MetricsLogger(sinks=["jsonl"], config=CONFIG, config_tags="lr")


def test_a_secret_the_answer_spells_in_json_escapes_is_hidden(isolated_env: Path) -> None:
    """Go's JSON writes '&', '<', '>' as \\u0026...; a body may escape every character. The
    message is redacted after it is decoded. (Before: 'Long&Secret<Pw>99' and 'a&b<c' appeared
    in stats() and the log.)"""
    for password in ("Long&Secret<Pw>99", "a&b<c"):
        escaped = "".join(f"\\u{ord(c):04x}" for c in password)

        class Handler(BaseHTTPRequestHandler):
            body = ('{"code":"unauthorized","message":"bad password ' + escaped + ' for user"}').encode()

            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = self.body
                self.send_response(401)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        with serving(Handler) as url:
            m = MetricsLogger(
                url=url,
                database="d",
                api="v1",
                username="u",
                password=password,
                spool=False,
                max_retry_time=300,
                retry_interval=50,
            )
            m.log("x", {}, {"v": 1.0})
            m.close(timeout=5)
        assert password not in json.dumps(m.stats()), m.stats()["last_error"]
        assert "***" in (m.stats()["last_error"] or "")
