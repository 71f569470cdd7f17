"""``tplr-metrics runs``: the most recent runs in the local store, or one run's measurements."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import Any

from ..encoding import log_points
from ..store.database import Store, StoreError
from . import CommandError
from ._store_cli import (
    add_store_argument,
    add_tag_argument,
    described_tags,
    human_duration,
    local_time,
    non_empty_run_id,
    open_store,
    parse_duration,
    positive_int,
    print_csv,
    print_json,
    print_table,
    run_dict,
    select_run,
    store_error,
    store_path,
    survives_closed_pipe,
)

RUN_COLUMNS = [
    "run_id",
    "role",
    "uid",
    "status",
    "started_at",
    "ended_at",
    "duration_s",
    "points",
    "prefix",
    "group",
    "job_type",
    "version",
    "host",
    "pid",
    "config",
    "started_at_ns",
    "ended_at_ns",
    "name",  # last: scripts reading columns by position keep working
]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "runs",
        help="list the most recent runs in the local store",
        description="List the most recent runs (one per logger) in the local store, newest first; "
        "with --run-id, that run's measurements and point counts (and its metrics' per split).",
    )
    parser.add_argument("--role", help="only runs of this role (miner, validator, evaluator, ...)")
    parser.add_argument("--since", type=parse_duration, metavar="DURATION", help="started within, e.g. 30m, 24h, 7d")
    parser.add_argument("--limit", type=positive_int, default=20, metavar="N", help="at most N runs (default 20)")
    add_tag_argument(parser, "runs with a point")
    parser.add_argument(
        "--run-id",
        type=non_empty_run_id,
        metavar="ID",
        help="one run: its run_id, its id from runs --json, its name, or a unique prefix",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--csv", action="store_true", help="print CSV")
    add_store_argument(parser)
    parser.set_defaults(func=run)


@survives_closed_pipe
def run(args: argparse.Namespace) -> int:
    if not store_path(args).exists():
        if args.store:  # a path the user typed: a typo must not look like an empty store
            raise CommandError(f"no local store at {store_path(args)}", 1)
        if args.run_id:
            raise CommandError(f"no run {args.run_id!r}: there is no local store at {store_path(args)} yet", 2)
        return _print_runs(args, [])
    with open_store(args) as store:
        try:
            if args.run_id:
                return _print_one(args, store)
            since_ns = None if args.since is None else time.time_ns() - int(args.since * 1e9)
            if args.tag:  # newest first, each run asked along its own index until enough match
                tagged = (
                    r for r in store.runs(role=args.role, since_ns=since_ns) if store.has_tagged_points(r.id, args.tag)
                )
                rows = list(itertools.islice(tagged, args.limit))
            else:
                rows = store.runs(role=args.role, since_ns=since_ns, limit=args.limit)
            counts = store.point_counts([r.id for r in rows])
        except StoreError as exc:
            raise store_error(exc) from None
    return _print_runs(args, [run_dict(r, counts.get(r.id, 0)) for r in rows])


def _print_runs(args: argparse.Namespace, runs: list[dict[str, Any]]) -> int:
    filters = " ".join(
        ([f"--role {args.role}"] if args.role is not None else [])
        + ([f"--since {human_duration(args.since)}"] if args.since is not None else [])
        + described_tags(args.tag)
    )
    if not runs and filters:
        # An empty listing is a fine answer, but say it is the filter's (exit 0, stdout stays parseable).
        print(f"tplr-metrics runs: no runs match {filters} in {store_path(args)}", file=sys.stderr)
    if args.json:
        print_json(runs)
    elif args.csv:
        print_csv(runs, RUN_COLUMNS)
    elif not runs:
        if not filters:
            print(f"no runs in {store_path(args)}", file=sys.stderr)
    else:
        print_table(
            (
                [
                    r["run_id"],
                    r["name"] or "-",
                    r["role"] or "-",
                    r["uid"] or "-",
                    r["status"],
                    local_time(r["started_at_ns"]),
                    human_duration(r["duration_s"]),
                    str(r["points"]),
                ]
                for r in runs
            ),
            ["RUN ID", "NAME", "ROLE", "UID", "STATUS", "STARTED", "DURATION", "POINTS"],
        )
    return 0


def _print_one(args: argparse.Namespace, store: Store) -> int:
    rows = select_run(store, args.run_id)
    ids = [r.id for r in rows]
    counts = store.point_counts(ids, args.tag)
    measurements = store.measurements(ids, args.tag)
    metrics = sorted({r.prefix + log_points.METRICS for r in rows})  # what log_metrics writes
    splits = store.split_counts(ids, metrics, args.tag)
    if args.tag and not measurements:
        print(
            f"tplr-metrics runs: run {rows[0].run_id} has no points with {' '.join(described_tags(args.tag))}",
            file=sys.stderr,
        )
    runs = [run_dict(r, counts.get(r.id, 0)) for r in rows]
    listing: list[dict[str, Any]] = [
        {
            "measurement": m.measurement,
            "points": m.points,
            "first_ns": m.first_ns,
            "last_ns": m.last_ns,
        }
        for m in measurements
    ]
    if args.json:
        print_json(
            {
                "run_id": rows[0].run_id,
                "runs": runs,
                "points": sum(counts.values()),
                "measurements": listing,
                "splits": [{"split": split, "points": n} for split, n in splits.items()],
            }
        )
    elif args.csv:
        print_csv(listing, ["measurement", "points", "first_ns", "last_ns"])
    else:
        for r in runs:
            ended = local_time(r["ended_at_ns"]) if r["ended_at_ns"] else "-"
            print(
                f"run {r['run_id']}  name={r['name'] or '-'} role={r['role'] or '-'} uid={r['uid'] or '-'} "
                f"status={r['status']}  "
                f"started {local_time(r['started_at_ns'])}  ended {ended}  points {r['points']}"
            )
        print()
        print_table(
            (
                [m["measurement"], str(m["points"]), local_time(m["first_ns"]), local_time(m["last_ns"])]
                for m in listing
            ),
            ["MEASUREMENT", "POINTS", "FIRST", "LAST"],
        )
        if splits:
            print()
            print_table(([split, str(n)] for split, n in splits.items()), ["SPLIT", "POINTS"])
    return 0
