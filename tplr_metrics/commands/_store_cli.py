"""What the local-store commands share: --store, times and durations, run selection, output."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import io
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..store.database import RunRow, Store, StoreError, default_store_path
from . import CommandError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def survives_closed_pipe(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``tplr-metrics runs | head`` closes our stdout early: that is the reader's choice, not an error."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
            return 0

    return wrapper


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="PATH",
        help="the store file (default: $TPLR_METRICS_HOME/metrics.sqlite, ~/.tplr_metrics/metrics.sqlite)",
    )


def store_path(args: argparse.Namespace) -> Path:
    return Path(args.store) if getattr(args, "store", None) else default_store_path()


def open_store(args: argparse.Namespace) -> Store:
    """The existing store, for reading; an unusable one is a one-line error naming the file."""
    path = store_path(args)
    try:
        return Store(path, create=False)
    except StoreError as exc:
        raise CommandError(f"cannot use the local store {exc}", 1) from None


def store_error(exc: StoreError) -> CommandError:
    return CommandError(f"local store {exc}", 1)


# --- times --------------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """'10s', '30m', '24h', '7d', '2w' into seconds; argparse type (its error is one line)."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (use e.g. 10s, 30m, 24h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def parse_time(text: str) -> int:
    """A duration ago ('24h') or an ISO 8601 instant (UTC unless it says otherwise), as ns."""
    if _DURATION.match(text):
        return time.time_ns() - int(parse_duration(text) * 1e9)
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (10s, 30m, 24h, 7d) nor a time (2025-01-31T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def parse_tag(text: str) -> tuple[str, str]:
    """'KEY=VALUE' (argparse type): a point's tag KEY must be VALUE."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. --tag phase=train)")
    if '"' in key:
        raise argparse.ArgumentTypeError(f"{text!r}: a tag key with a double quote cannot be matched")
    return key.strip(), value


def add_tag_argument(parser: argparse.ArgumentParser, what: str = "points") -> None:
    parser.add_argument(
        "--tag",
        action="append",
        type=parse_tag,
        metavar="KEY=VALUE",
        help=f"only {what} whose tag KEY is VALUE (repeat: all must hold)",
    )


def described_tags(tags: Sequence[tuple[str, str]] | None) -> list[str]:
    return [f"--tag {key}={value}" for key, value in tags or ()]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_empty_run_id(text: str) -> str:
    """A --run-id / RUN (argparse type): an empty one names no run (it must not mean "every run")."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: an empty run id names no run")
    return text


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def iso(ns: int | None) -> str | None:
    """UTC, microseconds: 2025-01-31T12:00:00.123456Z."""
    if ns is None:
        return None
    return f"{_iso_second(ns // 1_000_000_000)}.{(ns % 1_000_000_000) // 1_000:06d}Z"


@functools.lru_cache(maxsize=1024)
def _iso_second(seconds: int) -> str:
    """A second's UTC text; cached because an export's points share seconds (formatting each
    point's date was about a tenth of a CSV export's time)."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def local_time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d{seconds % 86_400 // 3600:02d}h"


# --- runs ---------------------------------------------------------------------------------


def select_run(store: Store, run_id: str) -> list[RunRow]:
    """The rows of one run: its run_id, the integer ``id`` that ``runs --json`` shows (the run
    that row belongs to), its name (when one run has it), or a unique prefix of a run_id, tried
    in that order. An unknown or ambiguous one is exit code 2."""
    try:
        rows = store.find_runs(run_id, prefix=False)
        if not rows and run_id.isdigit() and len(run_id) < 19:  # < 19 digits: fits SQLite's integer
            by_id = store.run_rows([int(run_id)])
            rows = store.find_runs(by_id[0].run_id, prefix=False) if by_id else []
        if not rows:
            rows = _named(store, run_id)
        if not rows:
            rows = store.find_runs(run_id)
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    except StoreError as exc:
        raise store_error(exc) from None
    if not rows:
        raise CommandError(f"no run {run_id!r} in {store.path} (list them with: tplr-metrics runs)", 2)
    return rows


def _named(store: Store, name: str) -> list[RunRow]:
    """The rows of the one run called ``name``; ValueError when several runs are."""
    ids = sorted({r.run_id for r in store.runs_named(name)})
    if len(ids) > 1:
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise ValueError(f"run name {name!r} is ambiguous: {len(ids)} runs have it ({shown}); give a run id")
    return store.find_runs(ids[0], prefix=False) if ids else []


def is_live(run: RunRow) -> bool:
    """A run still being written: status running and its process alive (as far as we can see)."""
    if run.status != "running":
        return False
    if run.host != socket.gethostname() or not run.pid:
        return True  # another machine's process: assume alive
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def run_dict(run: RunRow, points: int | None = None) -> dict[str, Any]:
    """A run for --json and --csv: times both as ISO strings and as ns."""
    out = run.to_dict()
    out["started_at_ns"] = run.started_at
    out["ended_at_ns"] = run.ended_at
    out["started_at"] = iso(run.started_at)
    out["ended_at"] = iso(run.ended_at)
    end = run.ended_at if run.ended_at is not None else (time.time_ns() if run.status == "running" else None)
    out["duration_s"] = None if end is None else round((end - run.started_at) / 1e9, 3)
    if points is not None:
        out["points"] = points
    return out


# --- output -------------------------------------------------------------------------------


def print_json(data: Any, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    json.dump(data, out, indent=2, ensure_ascii=False)
    out.write("\n")


def csv_writer(out: IO[str]) -> Any:
    """A csv.writer whose rows end in \n and which quotes a cell holding \r.

    csv quotes only the line terminator's characters: with "\n" as the terminator a bare \r
    went out unquoted, and a reader split the row there. So the writer ends rows with
    "\r\n" (a cell with \r or \n gets quoted) and each row's end is written as "\n"."""
    return csv.writer(_LineFeedRows(out), lineterminator="\r\n")


class _LineFeedRows:
    """What csv.writer writes to: each row (one write() call, ending in \r\n) ends in \n."""

    def __init__(self, out: IO[str]) -> None:
        self.write_text = out.write

    def write(self, row: str) -> int:
        return self.write_text(row[:-2] + "\n")


def print_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: IO[str] | None = None) -> None:
    writer = csv_writer(out or sys.stdout)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(column)) for column in columns])


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


def print_table(rows: Iterable[Sequence[str]], headers: Sequence[str], out: IO[str] | None = None) -> None:
    table = [list(headers)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    buffer = io.StringIO()
    for row in table:
        buffer.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")
    (out or sys.stdout).write(buffer.getvalue())


def open_output(path: str | None) -> IO[str]:
    """stdout, or a file we create 0600 (exports hold the run's data)."""
    if not path or path == "-":
        return sys.stdout
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}", 1) from None
    return os.fdopen(fd, "w", encoding="utf-8", newline="")
