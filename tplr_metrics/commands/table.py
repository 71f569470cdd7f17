"""``tplr-metrics table``: tables logged with ``LogStore.log_table``, printed back as tables."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from ..viz.run_data import RunData, TableRecord
from . import CommandError
from ._run_inputs import add_source_arguments, read_path, read_run_id
from ._store_cli import local_time, non_empty_run_id, print_json, print_table, survives_closed_pipe


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "table",
        help="print a table logged with LogStore.log_table (or list a run's tables)",
        description="Without NAME, list the run's tables; with NAME, print its latest version "
        "(--all: every version, oldest first).",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="the table's name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="PATH", help="a JSONL log directory (or its metrics/tables file)")
    source.add_argument(
        "--run-id",
        type=non_empty_run_id,
        metavar="ID",
        help="a run of the local store (or InfluxDB with --from-influx)",
    )
    parser.add_argument("--all", action="store_true", help="every logged version of the table, not only the last")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_source_arguments(parser)
    parser.set_defaults(func=run)


def versions(records: list[TableRecord], name: str) -> list[list[TableRecord]]:
    """The table's versions (one per log_table call: rows sharing a timestamp), oldest first."""
    grouped: dict[int, list[TableRecord]] = defaultdict(list)
    for record in records:
        if record.table == name:
            grouped[record.time_ns].append(record)
    return [sorted(grouped[t], key=lambda r: r.row) for t in sorted(grouped)]


def columns_of(rows: list[TableRecord]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.values))
    return list(names)


#: The widest a text-table cell gets; --json keeps every value whole.
MAX_CELL = 60
_ONE_LINE = str.maketrans({"\n": "\u23ce", "\r": "", "\t": " "})


def cell(value: Any) -> str:
    """One text-table cell on one line: a newline shows as ⏎, and a long value is cut with …
    (a sample completion would otherwise break every row's alignment)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = (value if isinstance(value, str) else json.dumps(value)).translate(_ONE_LINE)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "\u2026"


@survives_closed_pipe
def run(args: argparse.Namespace) -> int:
    data: RunData = read_path(args.input) if args.input else read_run_id(args, args.run_id)
    if not args.name:
        names: dict[str, list[list[TableRecord]]] = {}
        for name in dict.fromkeys(r.table for r in data.tables):
            names[name] = versions(data.tables, name)
        if args.json:
            print_json([{"table": n, "versions": len(v), "rows": len(v[-1])} for n, v in names.items()])
        elif not names:
            print(f"no tables in {data.source}")
        else:
            print_table(
                ([n, str(len(v)), str(len(v[-1])), local_time(v[-1][0].time_ns)] for n, v in names.items()),
                ["TABLE", "VERSIONS", "ROWS", "LAST"],
            )
        return 0
    found = versions(data.tables, args.name)
    if not found:
        known = sorted({r.table for r in data.tables})
        hint = f" (it has: {', '.join(known)})" if known else " (it has no tables)"
        raise CommandError(f"no table {args.name!r} in {data.source}{hint}", 2)
    shown = found if args.all else found[-1:]
    if args.json:
        print_json(
            [
                {"table": args.name, "time_ns": rows[0].time_ns, "step": rows[0].step, "rows": [r.values for r in rows]}
                for rows in shown
            ]
        )
        return 0
    for i, rows in enumerate(shown):
        if i:
            print()
        step = f"  step {rows[0].step}" if rows[0].step is not None else ""
        print(f"{args.name}  {local_time(rows[0].time_ns)}{step}  ({len(rows)} rows)")
        columns = columns_of(rows)
        print_table(([str(r.row), *(cell(r.values.get(c)) for c in columns)] for r in rows), ["ROW", *columns])
    return 0
