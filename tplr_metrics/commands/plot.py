"""``tplr-metrics plot``: curves of one or more runs on shared axes, optionally smoothed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..viz.plotting import SMOOTHINGS, X_KEYS, PlotExtraMissing, import_pyplot, plot_runs
from ..viz.run_data import RunData
from . import CommandError
from ._run_inputs import add_source_arguments, read_runs, report_inputs, save_figure, warn
from ._store_cli import positive_int


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plot",
        help="plot metrics of runs (JSONL logs, the local store or InfluxDB) on shared axes",
        description="Plot metrics of one or more runs, one subplot per metric and one line per run. Metric "
        "names are split.metric (LogStore metrics, e.g. train.loss) or measurement.field (any other "
        "point, e.g. training_step_v2.loss); --list shows what an input has.",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="a JSONL log (.jsonl or .jsonl.gz) or a directory (its newest log)",
    )
    parser.add_argument(
        "--run-id",
        nargs="+",
        action="extend",
        default=[],
        metavar="ID",
        help="a run of the local store (or of InfluxDB with --from-influx), by id or unique prefix",
    )
    add_plot_arguments(parser)
    parser.add_argument("--list", action="store_true", help="list each input's metrics (with point counts) and exit")
    parser.add_argument("--metrics", nargs="+", action="extend", default=[], metavar="NAME", help="metrics to plot")
    parser.add_argument("--out", metavar="FILE.png", help="where to write the figure (default: plot.png)")
    add_source_arguments(parser)
    parser.set_defaults(func=run)


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--x-key", choices=X_KEYS, default="step", help="the x axis (default: step)")
    parser.add_argument("--smooth", choices=SMOOTHINGS, help="smooth each line (same number of points)")
    parser.add_argument(
        "--window", type=positive_int, default=10, metavar="N", help="smoothing window in points (default 10)"
    )
    parser.add_argument("--title", help="a title above the plots")
    parser.add_argument("--show", action="store_true", help="open a window instead of (or besides) writing a file")


def print_listing(runs: list[RunData]) -> None:
    for run in runs:
        print(f"{run.label}  ({run.source})")
        if not run.series:
            print("  (no metrics)")
        for name in run.metric_names():
            print(f"  {name}  {len(run.series[name])} points")


def draw(
    command: str,
    args: argparse.Namespace,
    runs: list[RunData],
    metrics: list[str],
    default_out: str,
) -> int:
    """Plot, then save to --out (or the default) unless only --show was asked; exit code."""
    try:
        plt = import_pyplot(args.show)
        figure = plot_runs(
            runs,
            metrics,
            x_key=args.x_key,
            smoothing=args.smooth,
            window=args.window,
            title=args.title,
            warn=lambda message: warn(command, message),
            figure_factory=plt.figure if args.show else None,
        )
    except PlotExtraMissing as exc:
        raise CommandError(str(exc), 1) from None
    if args.out or not args.show:
        path = save_figure(figure, args.out or default_out)
        print(f"wrote {path}", file=sys.stderr)
    if args.show:
        plt.show()
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.input and not args.run_id:
        raise CommandError("name what to plot: --input PATH... and/or --run-id ID...", 2)
    runs = read_runs(args, args.input, args.run_id)
    if args.list:
        print_listing(runs)
        return 0
    if not args.metrics:
        raise CommandError("name the metrics to plot with --metrics NAME... (see them with --list)", 2)
    report_inputs("plot", runs)
    metrics = list(dict.fromkeys(args.metrics))
    if not any(metric in run.series for run in runs for metric in metrics):
        known = sorted({name for run in runs for name in run.series})
        hint = f" (they have: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})" if known else ""
        raise CommandError(f"none of the inputs has {', '.join(metrics)}{hint}", 1)
    return draw("plot", args, runs, metrics, "plot.png")
