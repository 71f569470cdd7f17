"""``tplr-metrics replay``: ship points of the local store into the configured InfluxDB, or
deliver what dead processes left in a spool.

The points go through the same pipeline and InfluxDB sink a logger uses (batching, retries with
backoff, per-point accounting), exactly as stored: original timestamps, tags and field types, no
standard tags or prefix added. InfluxDB keeps one point per series and time, so replaying twice
stores each point once.

A spool (``--spool DIR``) is delivered to the InfluxDB destination its ``destination.json``
names, or, with ``--to URL --yes``, all of it into that one destination. ``--list`` only shows
what it holds. Credentials come from INFLUXDB_* variables, and go only to the server INFLUXDB_URL
names (or to ``--to``): a manifest never decides where a secret is sent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config.paths import tplr_home
from ..config.settings import ConfigurationError, ServerSettings, build_influx_sink, resolve_server
from ..delivery.accounting import merge_snapshot
from ..delivery.dead_letter import DeadLetterFile
from ..delivery.destination_id import describe_destination, describe_text, fingerprint
from ..delivery.pipeline import Pipeline, PipelineOptions
from ..delivery.spool import MANIFEST_NAME, SpooledDestination, move_orphans, spooled_destinations
from ..delivery.stats import PipelineStats
from ..encoding.points import Point, PointBuilder, Record
from ..store.database import StoreError
from . import CommandError
from ._progress import Progress, progress_stream, render_bar
from ._store_cli import (
    add_store_argument,
    open_store,
    positive_float,
    positive_int,
    print_json,
    store_error,
    survives_closed_pipe,
)
from .export import add_selection_arguments, described, selection

__all__ = ["register", "render_bar", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="ship points of the local store into the configured InfluxDB",
        description="Send a run's points, a time window's, or all (--all) from the local store to InfluxDB "
        "through the logger's pipeline, with their original timestamps and tags. Idempotent. The server "
        "comes from --url/--database or INFLUXDB_* variables (credentials: INFLUXDB_TOKEN, "
        "INFLUXDB_USERNAME/INFLUXDB_PASSWORD).",
    )
    add_selection_arguments(parser)
    parser.add_argument("--all", action="store_true", help="every point in the store")
    parser.add_argument(
        "--spool",
        metavar="DIR",
        type=Path,
        help="instead of the store: deliver what dead processes left in a spool (a spool root such as "
        "~/.tplr_metrics/spool, or a directory under it), each destination's points into the InfluxDB "
        "destination they were meant for",
    )
    parser.add_argument("--list", action="store_true", help="with --spool: only list what it holds, and for where")
    parser.add_argument(
        "--to",
        metavar="URL",
        help="with --spool: deliver into this InfluxDB (with --database/--org/--api) instead; points meant "
        "for another destination need --yes",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="with --spool --to: confirm delivering points that were meant for other destinations",
    )
    parser.add_argument("--url", help="InfluxDB URL (default: INFLUXDB_URL, or INFLUXDB_HOST/INFLUXDB_PORT)")
    parser.add_argument("--database", help="database (v1) or bucket (v2) (default: INFLUXDB_DATABASE)")
    parser.add_argument("--org", help="organization, for the v2 API (default: INFLUXDB_ORG)")
    parser.add_argument("--api", choices=("v1", "v2"), help="write API (default: INFLUXDB_API, else v2)")
    parser.add_argument("--batch-size", type=positive_int, default=5_000, metavar="N", help="points per request")
    parser.add_argument(
        "--retry-seconds",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="give up on a batch the server keeps refusing after S seconds (default 60)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_store_argument(parser)
    parser.set_defaults(func=run)


class _AsStored(PointBuilder):
    """Builds points exactly as they were stored: no standard tags, prefix or value rules."""

    def __init__(self) -> None:
        super().__init__({}, "", lambda cause, measurement, key, detail: None)

    def build(self, record: Record) -> Point | None:
        measurement, tags, fields, time_ns, _host_fields, _host_tags = record
        return Point(measurement, dict(tags), dict(fields), time_ns)


@survives_closed_pipe
def run(args: argparse.Namespace) -> int:
    if args.spool is not None:
        return _replay_spool(args)
    if not (
        args.all or args.run_id or args.since is not None or args.until is not None or args.measurement or args.tag
    ):
        raise CommandError("say what to replay: --run-id ID, --since/--until, --measurement, --tag, or --all", 2)
    try:
        server = resolve_server(url=args.url, database=args.database, org=args.org, api=args.api)
    except ConfigurationError as exc:
        raise CommandError(str(exc), 2) from None
    with open_store(args) as store:
        try:
            chosen = selection(args, store)
            total = store.count_points(chosen)
            if total == 0:
                print(f"tplr-metrics replay: no points matched {described(args)} in {store.path}", file=sys.stderr)
            sink = build_influx_sink(server)
            stats = PipelineStats()
            retry_ms = int(args.retry_seconds * 1000)
            pipeline = Pipeline(
                sink,
                _AsStored(),
                stats,
                PipelineOptions(
                    max_queue_size=args.batch_size * 4,
                    batch_size=args.batch_size,
                    flush_interval_ms=200,
                    overflow="block",
                    block_timeout_s=args.retry_seconds + 30.0,
                    retry_interval_ms=500,
                    max_retry_delay_ms=min(retry_ms, 10_000),
                    max_retry_time_ms=retry_ms,
                    close_timeout_s=args.retry_seconds + 30.0,
                ),
                **_dead_letters(),
            )
            progress = Progress("replay", total, progress_stream(quiet=args.json))
            submitted = 0
            try:
                for p in store.iter_points(chosen):
                    if not pipeline.submit((p.measurement, p.tags, p.fields, p.time_ns, None, None)):
                        break
                    submitted += 1
                    if submitted % 1_000 == 0:
                        snapshot = merge_snapshot(pipeline, stats)
                        if snapshot["dropped_total"]:  # the server gave up on a batch: do not feed it more
                            break
                        progress.draw(_settled(snapshot))
            finally:
                pipeline.close(args.retry_seconds + 30.0, status="ok")
                progress.draw(_settled(merge_snapshot(pipeline, stats)), final=True)
        except StoreError as exc:
            raise store_error(exc) from None
    snapshot = merge_snapshot(pipeline, stats)
    summary = {
        "points": total,
        "written": snapshot["written"],
        "rejected": snapshot["rejected_total"],
        "dropped": snapshot["dropped_total"] + (total - submitted),
        "server": server.url,
        "database": server.database,
        "last_error": snapshot["last_error"],
    }
    _print_summary(summary, args.json)
    if summary["written"] < total:
        reason = snapshot["last_error"] or (f"rejected: {snapshot['rejected']}" if snapshot["rejected"] else "")
        print(
            f"tplr-metrics replay: {total - summary['written']} of {total} points not stored"
            + (f" ({reason})" if reason else ""),
            file=sys.stderr,
        )
        return 1
    return 0


def _replay_spool(args: argparse.Namespace) -> int:
    """Adopt the spools of dead processes under a root and deliver them through the pipeline."""
    root = args.spool.expanduser()
    if (root / ".lock").exists():  # one run directory: its destination's directory holds it
        root = root.parent
    if (root / MANIFEST_NAME).exists():  # one destination's directory: the root holds it
        root = root.parent
    if not root.is_dir():
        raise CommandError(f"no spool directory at {args.spool}", 2)
    found = [d for d in spooled_destinations(root) if d.files]
    if args.list:
        return _list_spool(root, found, args.json)
    target = args.to or args.url
    plan: list[ServerSettings] = []  # one pipeline per destination, each adopting its own orphans
    left_there = 0
    if target:
        try:
            server = resolve_server(url=target, database=args.database, org=args.org, api=args.api)
        except ConfigurationError as exc:
            raise CommandError(str(exc), 2) from None
        own = fingerprint(describe_destination(build_influx_sink(server)))
        for spooled in found:
            if spooled.directory.name == own:
                continue
            if args.yes:
                move_orphans(spooled.directory, root / own)
                _say(f"delivering {spooled.points} point(s) meant for {_meant_for(spooled)} into {server.url}")
            else:
                left_there += spooled.points
                _say(
                    f"{spooled.directory} holds {spooled.points} point(s) meant for {_meant_for(spooled)}; left "
                    "there (add --yes to deliver them into --to)"
                )
        plan.append(server)
    else:
        for spooled in found:
            meant = _meant_server(spooled)
            if meant is None:
                left_there += spooled.points
                _say(
                    f"{spooled.directory} holds {spooled.points} point(s) meant for {_meant_for(spooled)}, which "
                    "replay cannot deliver to; left there (a logger with that destination adopts them, or use --to)"
                )
                continue
            plan.append(meant)
    summaries = [_deliver_spool(root, server, args.retry_seconds) for server in plan]
    totals = {key: sum(int(s[key]) for s in summaries) for key in ("picked_up", "written", "rejected", "left_in_spool")}
    if args.json:
        print_json({**totals, "left_for_other_destinations": left_there, "destinations": summaries})
    else:
        for summary in summaries:
            print(
                f"delivered {summary['written']} of {summary['picked_up']} spooled points into {summary['server']} "
                f"{summary['target']} ({summary['rejected']} rejected, {summary['left_in_spool']} still in {root})"
            )
        if not summaries:
            print(f"nothing delivered from {root}")
    return 1 if totals["left_in_spool"] or left_there else 0


def _say(message: str) -> None:
    print(f"tplr-metrics replay: {message}", file=sys.stderr)


def _meant_for(spooled: SpooledDestination) -> str:
    return describe_text(spooled.manifest) if spooled.manifest else "an unknown destination"


def _list_spool(root: Path, found: list[SpooledDestination], as_json: bool) -> int:
    rows = [
        {
            "directory": str(d.directory),
            "meant_for": d.manifest,
            "files": d.files,
            "points": d.points,
            "runs_still_alive": d.held,
        }
        for d in found
    ]
    if as_json:
        print_json({"spool": str(root), "destinations": rows})
        return 0
    if not found:
        print(f"{root}: empty")
    for d in found:
        alive = f", {d.held} run(s) still alive" if d.held else ""
        print(f"{d.directory.name}  {d.points} point(s) in {d.files} file(s){alive}  meant for {_meant_for(d)}")
    return 0


def _meant_server(spooled: SpooledDestination) -> ServerSettings | None:
    """The InfluxDB destination a spool's manifest names, with credentials only if INFLUXDB_URL
    names the same server; None when it is not InfluxDB or does not rebuild to the same place."""
    manifest = spooled.manifest or {}
    kind = manifest.get("kind")
    url = manifest.get("url")
    if kind not in ("influxdb-v1", "influxdb-v2") or not isinstance(url, str):
        return None
    environ = dict(os.environ)
    configured = environ.get("INFLUXDB_URL", "")
    if _server_of(configured) != _server_of(url):
        for name in ("INFLUXDB_TOKEN", "INFLUXDB_TOKEN_FILE", "INFLUXDB_USERNAME", "INFLUXDB_PASSWORD"):
            environ.pop(name, None)
    try:
        server = resolve_server(
            url=url,
            database=manifest.get("database") or manifest.get("bucket"),
            org=manifest.get("org"),
            api="v1" if kind == "influxdb-v1" else "v2",
            environ=environ,
        )
        sink = build_influx_sink(server)
    except (ConfigurationError, ValueError):
        return None
    return server if fingerprint(describe_destination(sink)) == spooled.directory.name else None


def _server_of(url: str) -> tuple[str, str, int | None]:
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    return parsed.scheme.lower(), (parsed.hostname or "").lower(), port


def _dead_letters() -> dict[str, Any]:
    """Where a replay keeps what the server refused, as a logger does: one dead-letter file
    for this replay, ``$TPLR_METRICS_HOME/dead_letter/replay-<pid>.jsonl`` (before: counted
    ``rejected`` with no record of the points or why)."""
    letters = DeadLetterFile(tplr_home() / "dead_letter" / f"replay-{os.getpid()}.jsonl")
    return {"on_rejected": letters, "on_corrupt_line": letters.corrupt_line}


def _deliver_spool(root: Path, server: ServerSettings, retry_seconds: float) -> dict[str, Any]:
    """One destination: a pipeline whose lane adopts that destination's orphans and sends them."""
    sink = build_influx_sink(server)
    stats = PipelineStats()
    pipeline = Pipeline(
        sink,
        _AsStored(),
        stats,
        PipelineOptions(
            retry_interval_ms=500,
            max_retry_delay_ms=5_000,
            spool_root=root,
            spool_run_name=f"replay-{os.getpid()}",
        ),
        **_dead_letters(),
    )
    spool = pipeline.lanes[0].spool
    if spool is None:
        pipeline.close(0)
        raise CommandError(f"cannot use the spool at {root}", 1)
    deadline = time.monotonic() + retry_seconds
    lane = pipeline.lanes[0]
    # An answer no retry can fix (a v2 write to an InfluxDB 1.x) ends the wait: the points stay.
    while spool.pending() and not lane.replay_hopeless and time.monotonic() < deadline:
        time.sleep(0.1)
    left = spool.pending_points()
    pipeline.close(1.0, status="ok")
    snapshot = merge_snapshot(pipeline, stats)
    return {
        "picked_up": snapshot["adopted"],
        "written": snapshot["written"],
        "rejected": snapshot["rejected_total"],
        "left_in_spool": left,
        "server": server.url,
        "target": sink.describe_target(),
        "database": server.database,
        "last_error": snapshot["last_error"],
    }


def _settled(snapshot: Mapping[str, Any]) -> int:
    return int(snapshot["written"] + snapshot["rejected_total"] + snapshot["dropped_total"])


def _print_summary(summary: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(dict(summary))
        return
    print(
        f"replayed {summary['written']} of {summary['points']} points into {summary['server']} "
        f"database {summary['database']!r} ({summary['rejected']} rejected, {summary['dropped']} dropped)"
    )
