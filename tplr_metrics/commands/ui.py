"""``tplr-metrics ui``: a live web UI over the local store, JSONL logs or InfluxDB (extra ``ui``).

It binds 127.0.0.1 unless told otherwise; any other address needs an access token, generated
and printed with the URL unless ``--token`` or TPLR_METRICS_UI_TOKEN gives one.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import webbrowser
from pathlib import Path
from typing import Any

from . import CommandError
from ._store_cli import add_store_argument, store_path

UI_EXTRA_HINT = "needs the optional extra 'ui': pip install 'tplr_metrics[ui]'"
TOKEN_ENV = "TPLR_METRICS_UI_TOKEN"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ui",
        help="a live web UI: run list, charts, comparisons (extra 'ui')",
        description="Serve a web UI over the local store (or JSONL logs): the runs, one chart per "
        "metric that grows while the run logs, and comparisons of runs. Binds 127.0.0.1 by default; "
        "another --host needs an access token (generated and printed unless --token or "
        f"{TOKEN_ENV} gives one).",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        nargs="+",
        metavar="JSONL_OR_DIR",
        help="read these JSON Lines logs (or directories' newest log) instead of the store; read only",
    )
    source.add_argument(
        "--from-influx",
        action="store_true",
        help="read the runs (runtime_id tag values) of the InfluxDB configured by INFLUXDB_*; read only",
    )
    add_store_argument(source)  # type: ignore[arg-type]
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--token", help=f"the access token (default: ${TOKEN_ENV}, or generated off loopback)")
    parser.set_defaults(func=run)


def _bind(host: str, port: int) -> socket.socket:
    """Our own listening socket, so the printed URL has the real port (also for --port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..ui.app import create_app
        from ..ui.security import is_loopback
        from ..ui.sources import InfluxSource, JsonlSource, RunSource, SourceError, StoreSource
    except ImportError as exc:
        raise CommandError(f"ui {UI_EXTRA_HINT} ({exc})", 2) from None

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port {args.port} is not a port (0-65535)", 2)
    loopback = is_loopback(args.host)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is None and not loopback:
        token = secrets.token_urlsafe(24)  # off loopback, never without one
    source: RunSource
    if args.input:
        paths = [Path(p).expanduser() for p in args.input]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise CommandError(f"no such file or directory: {', '.join(missing)}", 2)
        source = JsonlSource(paths)
    elif args.from_influx:
        try:
            source = InfluxSource()
        except SourceError as exc:
            raise CommandError(str(exc), 2) from None
    else:
        source = StoreSource(store_path(args))

    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
    print(f"tplr-metrics ui: serving {source.describe()} at {url}", flush=True)
    print("tplr-metrics ui: press Ctrl-C to stop", file=sys.stderr, flush=True)
    app = create_app(source, token=token, loopback=loopback)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    if not args.no_browser:
        try:
            webbrowser.open(url)
        except webbrowser.Error:
            pass
    try:
        # uvicorn turns Ctrl-C / SIGTERM into a graceful shutdown, then raises the signal again;
        # stopping the server is what Ctrl-C is for here, so that is a clean exit (code 0).
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        source.close()
    print("tplr-metrics ui: stopped", file=sys.stderr)
    return 0
