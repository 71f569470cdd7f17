"""``tplr-metrics prune``: delete old runs (and their points) from the local store, then VACUUM.

A run still being written (status running, its process alive) is never deleted. With both
--keep-runs and --older-than, a run goes only when both say so (beyond the newest N *and*
older than the cutoff).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..store.database import RunRow, StoreError
from . import CommandError
from ._progress import Progress, progress_stream
from ._store_cli import (
    add_store_argument,
    is_live,
    local_time,
    open_store,
    parse_duration,
    print_json,
    print_table,
    store_error,
    survives_closed_pipe,
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "prune",
        help="delete old runs from the local store and reclaim the space",
        description="Delete runs beyond the newest N (--keep-runs) and/or older than a duration "
        "(--older-than, by when they last ended or started), with their points, then VACUUM. "
        "--dry-run only says what would go.",
    )
    parser.add_argument("--keep-runs", type=int, metavar="N", help="keep the N most recently started runs")
    parser.add_argument("--older-than", type=parse_duration, metavar="DURATION", help="e.g. 30d, 12h")
    parser.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_store_argument(parser)
    parser.set_defaults(func=run)


@survives_closed_pipe
def run(args: argparse.Namespace) -> int:
    if args.keep_runs is None and args.older_than is None:
        raise CommandError("say what to prune: --keep-runs N and/or --older-than DURATION", 2)
    if args.keep_runs is not None and args.keep_runs < 0:
        raise CommandError(f"--keep-runs {args.keep_runs}: must be 0 or more", 2)
    cutoff = None if args.older_than is None else time.time_ns() - int(args.older_than * 1e9)
    with open_store(args) as store:
        try:
            runs = store.runs()
            doomed = _select(runs, args.keep_runs, cutoff)
            counts = store.point_counts([r.id for r in doomed])
            orphans = store.count_orphans_before(cutoff) if cutoff is not None else 0
            size_before = store.size_bytes()
            deleted = 0
            vacuumed = False
            if not args.dry_run:
                stream = progress_stream(quiet=args.json) if doomed else None
                progress = Progress("prune", len(doomed), stream, unit="runs")
                for done, doomed_run in enumerate(doomed, 1):  # a transaction a run: the line moves
                    deleted += store.delete_runs([doomed_run.id])
                    progress.draw(done, final=done == len(doomed))
                if cutoff is not None:
                    deleted += store.delete_orphans_before(cutoff)
                try:
                    store.vacuum()
                    vacuumed = True
                except StoreError as exc:  # a logger is writing: the space is reused anyway
                    print(f"tplr-metrics prune: VACUUM skipped ({exc})", file=sys.stderr)
            size_after = store.size_bytes()
        except StoreError as exc:
            raise store_error(exc) from None
    points = sum(counts.values()) + orphans
    report = {
        "dry_run": bool(args.dry_run),
        "runs": [
            {"run_id": r.run_id, "role": r.role, "uid": r.uid, "status": r.status, "points": counts.get(r.id, 0)}
            for r in doomed
        ],
        "points": points if args.dry_run else deleted,
        "runs_kept": len(runs) - len(doomed),
        "vacuumed": vacuumed,
        "bytes_before": size_before,
        "bytes_after": size_after,
    }
    if args.json:
        print_json(report)
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(doomed)} runs and {report['points']} points; {report['runs_kept']} runs kept")
    if doomed:
        print_table(
            (
                [r.run_id, r.role or "-", r.uid or "-", r.status, local_time(r.started_at), str(counts.get(r.id, 0))]
                for r in doomed
            ),
            ["RUN ID", "ROLE", "UID", "STATUS", "STARTED", "POINTS"],
        )
    if not args.dry_run:
        freed = max(0, size_before - size_after)
        print(f"store {size_before:,} -> {size_after:,} bytes ({freed:,} freed)")
    return 0


def _select(runs: list[RunRow], keep: int | None, cutoff: int | None) -> list[RunRow]:
    """Runs to delete, from runs listed newest first."""
    doomed = []
    for position, run in enumerate(runs):
        if is_live(run):
            continue
        beyond = keep is None or position >= keep
        last_seen = run.ended_at if run.ended_at is not None else run.started_at
        old = cutoff is None or last_seen < cutoff
        if beyond and old:
            doomed.append(run)
    return doomed
