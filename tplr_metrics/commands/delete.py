"""``tplr-metrics delete``: delete one run (all its logger rows) and its points from the local store."""

from __future__ import annotations

import argparse
from typing import Any

from ..store.database import StoreError
from . import CommandError
from ._store_cli import add_store_argument, is_live, non_empty_run_id, open_store, store_error, store_path


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "delete",
        help="delete a run and its points from the local store",
        description="Delete a run (its runtime_id, exactly: no prefixes, as this cannot be undone) and "
        "all its points from the local store. A run still being written is refused unless --force.",
    )
    parser.add_argument(
        "run_id", type=non_empty_run_id, metavar="RUN_ID", help="the run's runtime_id (see tplr-metrics runs)"
    )
    parser.add_argument("--force", action="store_true", help="delete it even while its logger still runs")
    add_store_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not store_path(args).exists():
        raise CommandError(f"no run {args.run_id!r}: there is no local store at {store_path(args)} yet", 2)
    with open_store(args) as store:
        try:
            rows = [r for r in store.find_runs(args.run_id) if r.run_id == args.run_id]
        except ValueError:
            rows = []
        except StoreError as exc:
            raise store_error(exc) from None
        if not rows:
            raise CommandError(f"no run {args.run_id!r} in {store.path} (list them with: tplr-metrics runs)", 2)
        if not args.force and any(is_live(r) for r in rows):
            raise CommandError(f"run {args.run_id!r} is still being written; stop it first (or --force)", 1)
        try:
            deleted = store.delete_runs([r.id for r in rows])
        except StoreError as exc:
            raise store_error(exc) from None
    print(f"deleted run {args.run_id}: {len(rows)} logger row(s), {deleted} point(s)")
    return 0
