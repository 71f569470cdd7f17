"""``tplr-metrics export``: points of the local store as CSV, JSON lines or line protocol.

Line protocol is what any InfluxDB imports (``curl --data-binary @run.lp '.../write?db=x&precision=ns'``);
JSON lines keep every value's type; CSV has one column per tag and per field (a field named like
a tag is written as ``field_<name>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from ..encoding.line_protocol import encode_line
from ..store.database import PointFilter, Store, StoredPoint, StoreError
from . import CommandError
from ._progress import Progress, progress_stream
from ._store_cli import (
    add_store_argument,
    add_tag_argument,
    csv_writer,
    described_tags,
    iso,
    non_empty_run_id,
    open_output,
    open_store,
    parse_time,
    select_run,
    store_error,
    store_path,
    survives_closed_pipe,
)

FORMATS = {"csv": "csv", "jsonl": "jsonl", "json": "jsonl", "lp": "lp", "line": "lp"}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write points of the local store as CSV, JSON lines or line protocol",
        description="Write the points of a run, of measurements or of a time window (all points when "
        "nothing is selected) as CSV, JSON lines or InfluxDB line protocol.",
    )
    add_selection_arguments(parser)
    parser.add_argument(
        "--format",
        default="jsonl",
        metavar="FORMAT",
        help="csv, jsonl (default; also: json) or lp (line protocol, for InfluxDB)",
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE (created 0600) instead of stdout")
    add_store_argument(parser)
    parser.set_defaults(func=run)


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-id",
        type=non_empty_run_id,
        metavar="ID",
        help="one run: its run_id, its id from runs --json, its name, or a unique prefix",
    )
    parser.add_argument(
        "--measurement", action="append", metavar="NAME", help="only this measurement (repeat for several)"
    )
    parser.add_argument("--since", type=parse_time, metavar="WHEN", help="from: a duration ago (24h) or a time (ISO)")
    parser.add_argument("--until", type=parse_time, metavar="WHEN", help="before: a duration ago or a time (ISO)")
    add_tag_argument(parser)


def selection(args: argparse.Namespace, store: Store) -> PointFilter:
    runs = [r.id for r in select_run(store, args.run_id)] if args.run_id else None
    return PointFilter(
        runs=runs, measurements=args.measurement, since_ns=args.since, until_ns=args.until, tags=args.tag
    )


@survives_closed_pipe
def run(args: argparse.Namespace) -> int:
    fmt = FORMATS.get(str(args.format).lower())
    if fmt is None:
        raise CommandError(f"unknown format {args.format!r} (use csv, jsonl or lp)", 2)
    with open_store(args) as store:
        try:
            chosen = selection(args, store)
            out = open_output(args.output)
            try:
                stream = progress_stream()
                progress = Progress("export", store.count_points(chosen) if stream else 0, stream)
                n = _write(store, chosen, fmt, out, progress)
            finally:
                if out is not sys.stdout:
                    out.close()
        except StoreError as exc:
            raise store_error(exc) from None
    if n == 0:
        # A typo in --measurement or --run-id must not look like a successful empty export.
        raise CommandError(f"no points matched {described(args)} in {store_path(args)}", 1)
    if args.output and args.output != "-":
        print(f"exported {n} points to {args.output}", file=sys.stderr)
    return 0


def described(args: argparse.Namespace) -> str:
    parts = [f"--run-id {args.run_id}"] if args.run_id else []
    parts += [f"--measurement {m}" for m in args.measurement or ()]
    parts += [f"--{name} {iso(getattr(args, name))}" for name in ("since", "until") if getattr(args, name) is not None]
    parts += described_tags(args.tag)
    return " ".join(parts) or "(the store has no points)"


def _write(store: Store, chosen: PointFilter, fmt: str, out: IO[str], progress: Progress) -> int:
    n = 0
    points = _counted(store.iter_points(chosen), progress)
    if fmt == "lp":
        for p in points:
            out.write(encode_line(p.measurement, p.tags, p.fields, p.time_ns) + "\n")
            n += 1
    elif fmt == "jsonl":
        for p in points:
            out.write(json.dumps(point_json(p), ensure_ascii=False) + "\n")
            n += 1
    else:
        tag_keys, field_keys = store.keys(chosen)
        field_columns = [f"field_{k}" if k in tag_keys else k for k in field_keys]
        writer = csv_writer(out)
        writer.writerow(["time", "time_ns", "measurement", *tag_keys, *field_columns])
        write_row = writer.writerow
        blanks = [""] * len(tag_keys)
        # map() over the columns, not a generator per cell (with the cached dates, 3.5 s of a
        # 1M-point export's 19). A missing field is None, which csv writes as an empty cell;
        # only bools need _cell.
        for p in points:
            row: list[Any] = [iso(p.time_ns), p.time_ns, p.measurement]
            row += map(p.tags.get, tag_keys, blanks)
            values = list(map(p.fields.get, field_keys))
            if bool in map(type, values):
                values = [_cell(v) for v in values]
            row += values
            write_row(row)
            n += 1
    out.flush()
    progress.draw(n, final=True)
    return n


def _counted(points: Iterator[StoredPoint], progress: Progress) -> Iterator[StoredPoint]:
    """The points, the progress line redrawn every 1,000."""
    for n, p in enumerate(points, 1):
        yield p
        if n % 1_000 == 0:
            progress.draw(n)


def point_json(p: StoredPoint) -> dict[str, Any]:
    return {
        "measurement": p.measurement,
        "time": iso(p.time_ns),
        "time_ns": p.time_ns,
        "tags": p.tags,
        "fields": p.fields,
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return value
