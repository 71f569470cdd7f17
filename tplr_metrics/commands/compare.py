"""``tplr-metrics compare RUN RUN...``: the config keys that differ between runs, and their
curves overlaid."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ..viz.plotting import DEFAULT_METRICS, default_metrics
from ..viz.run_data import RunData
from . import CommandError
from ._run_inputs import add_source_arguments, read_named, report_inputs, warn
from ._store_cli import non_empty_run_id, print_json, print_table
from .plot import add_plot_arguments, draw

_ABSENT = object()  # a key a run does not have


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="config differences between runs, and their curves overlaid",
        description="Print every config tag or hyperparameter that differs between the runs, then plot "
        "their metrics on shared axes. A RUN is a JSONL log or directory, or a run id of the local "
        "store (of InfluxDB with --from-influx).",
    )
    parser.add_argument(
        "runs", nargs="+", type=non_empty_run_id, metavar="RUN", help="a JSONL path, or a run id (or unique prefix)"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help=f"metrics to overlay (default: up to {DEFAULT_METRICS} that every run has)",
    )
    add_plot_arguments(parser)
    parser.add_argument("--out", metavar="FILE.png", help="where to write the figure (default: compare.png)")
    parser.add_argument("--no-plot", action="store_true", help="only the config differences")
    parser.add_argument("--json", action="store_true", help="print the differences as JSON")
    add_source_arguments(parser)
    parser.set_defaults(func=run)


def display(value: Any) -> str:
    """One cell: scalars as text (so 0.0003 and the tag "0.0003" are the same), the rest as JSON."""
    if value is _ABSENT:
        return "-"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return str(value)
    return str(json.dumps(value, sort_keys=True))


def config_diff(runs: Sequence[RunData]) -> dict[str, list[str]]:
    """Each config key whose value is not the same in every run (absent counts as different),
    with each run's value as a table cell ("-": absent)."""
    keys = sorted({key for run in runs for key in run.config})
    differences: dict[str, list[str]] = {}
    for key in keys:
        values = [display(run.config.get(key, _ABSENT)) for run in runs]
        if len(set(values)) > 1:
            differences[key] = values
    return differences


def config_diff_values(runs: Sequence[RunData]) -> dict[str, list[Any]]:
    """config_diff's keys with each run's value as the run has it (a number stays a number;
    the local store's config is tags, so strings), None where the run lacks the key: for --json."""
    return {key: [run.config.get(key) for run in runs] for key in config_diff(runs)}


def run(args: argparse.Namespace) -> int:
    if len(args.runs) < 2:
        raise CommandError("compare needs at least two runs", 2)
    runs = read_named(args, args.runs)
    differences = config_diff(runs)
    compared = len({key for r in runs for key in r.config})
    if args.json:
        print_json(
            {
                "runs": [{"label": r.label, "source": r.source} for r in runs],
                "keys_compared": compared,
                "differences": config_diff_values(runs),
            }
        )
    elif differences:
        print(f"config differences ({len(differences)} of {compared} keys):")
        print_table(([key, *values] for key, values in differences.items()), ["KEY", *(r.label for r in runs)])
    else:
        print(f"no config differences ({compared} keys compared)")
    if args.no_plot:
        return 0
    report_inputs("compare", runs)
    metrics = list(dict.fromkeys(args.metrics)) or default_metrics(runs)
    if not metrics:
        warn("compare", "no metric is common to all runs; nothing to plot (name some with --metrics)")
        return 0
    if not args.metrics:
        print(f"plotting {', '.join(metrics)} (choose with --metrics)", file=sys.stderr)
    return draw("compare", args, runs, metrics, "compare.png")
