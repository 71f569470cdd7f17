"""What plot, compare and table share: reading runs from JSONL paths, the local store or
InfluxDB; warnings; and writing a figure."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..store.database import StoreError
from ..viz.run_data import (
    RunData,
    RunDataError,
    UnknownRunError,
    directory_label,
    read_influx_run,
    read_jsonl,
    read_store_run,
)
from . import CommandError
from ._store_cli import add_store_argument, open_store, select_run, store_error, store_path

_pause_lock = threading.Lock()
_pauses = 0  # reads in progress with the collector paused, in all threads
_enabled_before = False  # whether the first of them found it on


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a whole run is read into memory.

    Each of a run's samples holds its record's coords dict, so the collector keeps tracking
    every one, and its full collections traversed all the samples read so far, again and
    again: 4.7 of the 14.5 s that plot took to read a 1M-point run. Nothing a read builds
    holds a cycle. Only this command's process is affected, for the read's length; a
    collector already off stays off. Reads in several threads share one pause (counted
    under a lock: each thread checking and switching the collector by itself left it off
    in 18 of 2,000 trials), which ends when the last of them does."""
    global _pauses, _enabled_before
    with _pause_lock:
        if _pauses == 0:
            _enabled_before = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _enabled_before:
                gc.enable()


def warn(command: str, message: str) -> None:
    print(f"tplr-metrics {command}: warning: {message}", file=sys.stderr)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-influx",
        action="store_true",
        help="read run ids from the InfluxDB configured by INFLUXDB_* (by their runtime_id tag, or a unique prefix)",
    )
    add_store_argument(parser)


def read_run_id(args: argparse.Namespace, run_id: str) -> RunData:
    """A run by id: from InfluxDB with --from-influx, else from the local store."""
    if getattr(args, "from_influx", False):
        try:
            return read_influx_run(run_id)
        except UnknownRunError as exc:
            raise CommandError(str(exc), 2) from None
        except RunDataError as exc:
            raise CommandError(str(exc), 1) from None
    if not store_path(args).exists():
        raise CommandError(f"no run {run_id!r}: there is no local store at {store_path(args)} yet", 2)
    with open_store(args) as store:
        rows = select_run(store, run_id)
        try:
            with collector_paused():
                return read_store_run(store, run_id, rows)
        except StoreError as exc:
            raise store_error(exc) from None


def read_path(path: str) -> RunData:
    try:
        with collector_paused():
            return read_jsonl(path)
    except RunDataError as exc:
        raise CommandError(str(exc), 2) from None


def read_runs(args: argparse.Namespace, paths: Sequence[str], run_ids: Sequence[str]) -> list[RunData]:
    runs = [read_path(p) for p in paths] + [read_run_id(args, r) for r in run_ids]
    _unique_labels(runs)
    return runs


def read_named(args: argparse.Namespace, names: Sequence[str]) -> list[RunData]:
    """compare's RUN arguments: an existing path is a JSONL log, anything else a run id."""
    runs = [read_path(n) if Path(n).expanduser().exists() else read_run_id(args, n) for n in names]
    _unique_labels(runs)
    return runs


def _unique_labels(runs: list[RunData]) -> None:
    """Two inputs both called run-001 (or the same run twice) still get a legend each: logs of
    one file name (exp_a/train.jsonl, exp_b/train.jsonl) by their directories, store runs of one
    name by name and short id, the rest numbered."""
    by_label: dict[str, list[RunData]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    for same in by_label.values():
        if len(same) > 1 and all(Path(run.source).is_file() for run in same):
            names = [directory_label(Path(run.source)) for run in same]
            if len(set(names)) == len(names):
                for run, name in zip(same, names, strict=True):
                    run.label = name
        elif len(same) > 1 and all(run.run_id for run in same) and len({run.run_id for run in same}) == len(same):
            for run in same:  # runs of the store with one name: the name and the short id
                run.label = f"{run.label} ({run.run_id[:8]})"
    seen: dict[str, int] = {}
    for run in runs:
        n = seen.get(run.label, 0)
        seen[run.label] = n + 1
        if n:
            run.label = f"{run.label} #{n + 1}"


def report_inputs(command: str, runs: Sequence[RunData]) -> None:
    for run in runs:
        if run.bad_lines:
            warn(command, f"{run.source}: {run.bad_lines} line(s) are not metric objects; skipped")


def save_figure(figure: Any, out: str) -> Path:
    """The figure as a file created 0600 (missing parent directories 0700); format from the suffix."""
    from ..sinks._files import make_private_dirs

    path = Path(out).expanduser()
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        if path.parent != Path(""):
            make_private_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            figure.savefig(handle, format=fmt)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot write {path}: {exc}", 1) from None
    return path
