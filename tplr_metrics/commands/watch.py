"""``tplr-metrics watch``: print points as they land in the local store, like ``tail -f``.

It follows the newest run (switching when a newer one starts), or the run given by --run-id,
or every run with --all. WAL mode means this reader never blocks the logger writing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..store.database import RunRow, Store, StoredPoint, StoreError
from . import CommandError
from ._store_cli import (
    add_store_argument,
    add_tag_argument,
    iso,
    non_empty_run_id,
    open_store,
    positive_float,
    select_run,
    store_error,
    store_path,
    survives_closed_pipe,
)
from .export import point_json

#: Tags every point of a run carries; shown once in the header, not on each line.
_RUN_TAGS = frozenset({"runtime_id", "version", "prefix", "group", "job_type"})
_BATCH = 2_000


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "watch",
        help="print new points of the local store as they land",
        description="Tail the local store: print new points as they are written, following the newest "
        "run (or --run-id, or --all). Ctrl-C stops.",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--run-id",
        type=non_empty_run_id,
        metavar="ID",
        help="follow this run: its run_id, its id from runs --json, its name, or a unique prefix",
    )
    target.add_argument("--all", action="store_true", help="follow every run")
    parser.add_argument("--measurement", action="append", metavar="NAME", help="only this measurement (repeatable)")
    add_tag_argument(parser)
    parser.add_argument(
        "--poll-seconds", type=positive_float, default=1.0, metavar="S", help="how often to look (default 1.0)"
    )
    parser.add_argument("--last", type=int, default=10, metavar="N", help="first print the last N points (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    add_store_argument(parser)
    parser.set_defaults(func=run)


@survives_closed_pipe
def run(args: argparse.Namespace) -> int:
    try:
        return _watch(args)
    except KeyboardInterrupt:
        return 0


def _watch(args: argparse.Namespace) -> int:
    path = store_path(args)
    if not path.exists():
        if args.store:  # a path the user typed: a typo must not wait forever
            raise CommandError(f"no local store at {path}", 1)
        print(f"waiting for points in {path} ...", file=sys.stderr)
        while not path.exists():
            time.sleep(args.poll_seconds)
    store = open_store(args)
    try:
        follower = _Follower(args, store)
        while True:
            try:
                printed = follower.poll()
            except StoreError as exc:
                raise store_error(exc) from None
            if printed < _BATCH:
                sys.stdout.flush()
                time.sleep(args.poll_seconds)
    finally:
        store.close()


class _Follower:
    """Which runs to show, and the id of the last point shown."""

    def __init__(self, args: argparse.Namespace, store: Store) -> None:
        self.args = args
        self.store = store
        self.measurements = set(args.measurement or ())
        self.tags = list(getattr(args, "tag", None) or ())
        self.run_id: str | None = None
        self.runs: dict[int, RunRow] = {}
        self.last_id = 0
        self.started = False
        self.checked_measurements = False
        if args.run_id:
            rows = select_run(store, args.run_id)
            self._follow(rows)
        elif args.all:
            self.last_id = store.point_id_before_last(None, max(0, args.last))
            self.started = True

    def _follow(self, rows: list[RunRow]) -> None:
        self.run_id = rows[0].run_id
        self.runs = {r.id: r for r in rows}
        self.last_id = self.store.point_id_before_last(list(self.runs), max(0, self.args.last))
        self.started = True
        first = rows[0]
        print(
            f"-- following run {first.run_id} (role={first.role or '-'} uid={first.uid or '-'} "
            f"status={first.status}); Ctrl-C to stop",
            file=sys.stderr,
        )
        if self.measurements and not self.checked_measurements:
            self._warn_missing_measurements()

    def _warn_missing_measurements(self) -> None:
        """At start only: a --measurement the run does not have is likely a typo; say so, keep watching."""
        self.checked_measurements = True
        has = [m.measurement for m in self.store.measurements(list(self.runs))]
        for name in sorted(self.measurements - set(has)):
            listing = f"it has: {', '.join(has)}" if has else "it has no points yet"
            print(f"-- run {self.run_id} has no measurement {name!r} yet ({listing}); still watching", file=sys.stderr)

    def _refresh_runs(self) -> None:
        if self.args.all:
            return
        if self.args.run_id:
            rows = self.store.find_runs(self.run_id or self.args.run_id)
            self.runs = {r.id: r for r in rows}  # another logger of the same process may join
            return
        newest = self.store.runs(limit=1)
        if not newest:
            if not self.started:
                print(f"waiting for a run in {self.store.path} ...", file=sys.stderr)
                self.started = True
            return
        if newest[0].run_id != self.run_id:
            self._follow(self.store.find_runs(newest[0].run_id))
        else:
            self.runs = {r.id: r for r in self.store.find_runs(newest[0].run_id)}

    def poll(self) -> int:
        self._refresh_runs()
        if not self.args.all and not self.runs:
            return 0
        points = self.store.points_after(self.last_id, None if self.args.all else list(self.runs), _BATCH)
        for p in points:
            if self._shown(p):
                print(self._format(p))
        if points:
            self.last_id = points[-1].id
        return len(points)

    def _shown(self, p: StoredPoint) -> bool:
        if self.measurements and p.measurement not in self.measurements:
            return False
        return all(p.tags.get(key) == value for key, value in self.tags)

    def _format(self, p: StoredPoint) -> str:
        if self.args.json:
            return json.dumps(point_json(p), ensure_ascii=False)
        tags = " ".join(
            f"{k}={v}" for k, v in sorted(p.tags.items()) if k not in _RUN_TAGS and not k.startswith("config_")
        )
        fields = " ".join(f"{k}={_value(v)}" for k, v in p.fields.items())
        head = f"{iso(p.time_ns)}  {p.measurement}"
        return f"{head}  {tags}  | {fields}" if tags else f"{head}  | {fields}"


def _value(value: Any) -> str:
    if type(value) is float:
        return f"{value:.6g}"
    if type(value) is str:
        return json.dumps(value, ensure_ascii=False)
    return str(value)
