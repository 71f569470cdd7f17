"""``tplr-metrics plot``: curves of one or more runs on shared axes, optionally smoothed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..viz.plotting import (
    SMOOTHINGS,
    X_KEYS,
    PlotExtraMissing,
    default_metrics,
    has_display,
    import_pyplot,
    parse_smoothing,
    plot_runs,
    rank_metrics,
    xy,
)
from ..viz.run_data import RunData
from . import CommandError
from ._run_inputs import add_source_arguments, read_runs, report_inputs, save_figure, warn
from ._store_cli import non_empty_run_id, positive_int


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plot",
        help="plot metrics of runs (JSONL logs, the local store or InfluxDB) on shared axes",
        description="Plot metrics of one or more runs, one subplot per metric and one line per run. Metric "
        "names are split.metric (LogStore metrics, e.g. train.loss) or measurement.field (any other "
        "point, e.g. training_step_v2.loss), or as another trainer's JSONL wrote them (train/loss, lr; "
        "train.loss finds train/loss too); --list shows what an input has.",
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
        type=non_empty_run_id,
        nargs="+",
        action="extend",
        default=[],
        metavar="ID",
        help="a run of the local store (or of InfluxDB with --from-influx), by id or unique prefix",
    )
    add_plot_arguments(parser)
    parser.add_argument("--list", action="store_true", help="list each input's metrics (with point counts) and exit")
    parser.add_argument(
        "--metrics",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help="metrics to plot (default: up to 4 that every input has, losses first)",
    )
    parser.add_argument("--out", metavar="FILE.png", help="where to write the figure (default: plot.png)")
    add_source_arguments(parser)
    parser.set_defaults(func=run)


def smoothing_arg(text: str) -> tuple[str, int | None]:
    try:
        return parse_smoothing(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--x-key",
        default="step",
        metavar="KEY",
        help=f"the x axis: {', '.join(X_KEYS)} or any numeric key of the records, e.g. epoch (default: step)",
    )
    parser.add_argument(
        "--smooth",
        type=smoothing_arg,
        metavar="|".join(SMOOTHINGS) + "|N",
        help="smooth each line (same number of points); an integer N is sma over N points",
    )
    parser.add_argument("--window", type=positive_int, metavar="N", help="smoothing window in points (default 10)")
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
    smoothing, window = smoothing_window(args)
    check_x_key(args.x_key, runs)
    if not any(xy(run, metric, args.x_key)[0] for run in runs for metric in metrics):
        raise CommandError(f"no point of {', '.join(metrics)} has a {args.x_key} (see --x-key); nothing to plot", 1)
    try:
        plt = import_pyplot(args.show)
        show = args.show and has_display(plt)
        if args.show and not show:
            warn(command, "--show: no display is available; writing the file instead")
        figure = plot_runs(
            runs,
            metrics,
            x_key=args.x_key,
            smoothing=smoothing,
            window=window,
            title=args.title,
            warn=lambda message: warn(command, message),
            figure_factory=plt.figure if show else None,
        )
    except PlotExtraMissing as exc:
        raise CommandError(str(exc), 1) from None
    if args.out or not show:
        path = save_figure(figure, args.out or default_out)
        print(f"wrote {path}", file=sys.stderr)
    if show:
        plt.show()
    return 0


def smoothing_window(args: argparse.Namespace) -> tuple[str | None, int]:
    """--smooth KIND [--window N] or --smooth N: the kind and its window (default 10)."""
    kind, window = args.smooth or (None, None)
    if window is not None and args.window is not None and args.window != window:
        raise CommandError(f"--smooth {window} is already the window; drop --window {args.window}", 2)
    return kind, window or args.window or 10


def check_x_key(x_key: str, runs: list[RunData]) -> None:
    if x_key in X_KEYS or any(x_key in run.x_keys() for run in runs):
        return
    known = sorted({key for run in runs for key in run.x_keys()} - set(X_KEYS))
    others = f", or a numeric key of the records: {', '.join(known[:12])}" if known else ""
    raise CommandError(f"--x-key {x_key!r}: no input has it (use {', '.join(X_KEYS)}{others})", 2)


def run(args: argparse.Namespace) -> int:
    if not args.input and not args.run_id:
        raise CommandError("name what to plot: --input PATH... and/or --run-id ID...", 2)
    runs = read_runs(args, args.input, args.run_id)
    report_inputs("plot", runs)
    if args.list:
        print_listing(runs)
        return 0
    metrics = list(dict.fromkeys(args.metrics))
    if not metrics:
        # Like compare: what every input has, losses first; else what any of them has.
        with_metrics = [r for r in runs if r.series]
        metrics = default_metrics(with_metrics) or rank_metrics(name for r in runs for name in r.series)
        if not metrics:
            raise CommandError("no input has any metric to plot (see --list)", 1)
        print(f"plotting {', '.join(metrics)} (choose with --metrics)", file=sys.stderr)
    if not any(run.find(metric) for run in runs for metric in metrics):
        known = sorted({name for run in runs for name in run.series})
        hint = f" (they have: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''})" if known else ""
        raise CommandError(f"none of the inputs has {', '.join(metrics)}{hint}", 1)
    return draw("plot", args, runs, metrics, "plot.png")
