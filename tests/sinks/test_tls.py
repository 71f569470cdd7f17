"""TLS failures name their cause in last_error and the log. Before: "HTTP 0 from ..." and no reason."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tplr_metrics import MetricsLogger

from ..loopback_http import serving


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@contextmanager
def https_server(tmp_path: Path, name: str) -> Iterator[tuple[str, Path]]:
    """An HTTPS endpoint on loopback whose certificate names ``name``, signed by a test CA;
    yields its URL and the CA's certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert, key, request = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "cert.csr"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request))
    (tmp_path / "san.ext").write_text(f"subjectAltName=DNS:{name}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(tmp_path / "san.ext"),
        "-out",
        str(cert),
    )

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serving(Handler, tls=context) as url:
        yield url, ca


@pytest.mark.parametrize(
    ("trust_ca", "cause"),
    [(False, "certificate verify failed"), (True, "address mismatch, certificate is not valid for")],
    ids=["unknown-issuer", "hostname-mismatch"],
)
def test_a_tls_failure_names_its_cause(
    isolated_env: Path, tmp_path: Path, trust_ca: bool, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    with https_server(tmp_path, "other.example") as (url, ca):
        m = MetricsLogger(
            url=url,
            database="d",
            api="v1",
            retry_interval=50,
            spool=False,
            max_retry_time=300,
            ssl_ca_cert=str(ca) if trust_ca else None,
        )
        m.log("tls", {}, {"v": 1.0})
        m.close(timeout=5)
    error = m.stats()["last_error"] or ""
    assert error.startswith("TLS: ") and cause in error, error
    assert cause in caplog.text
