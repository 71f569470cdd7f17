"""``tplr-metrics simulate``: simulated miners, validators and evaluators logging real points.

The destination is whatever a logger built with no server arguments picks, so this is also a
quick way to see where a process's metrics would go.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config.settings import ConfigurationError
from ..simulation import add_arguments, options_from_args, print_summary, run_simulation
from . import CommandError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="log realistic miner/validator/evaluator metrics (time-compressed)",
        description=(
            "Simulate Templar miners, validators and evaluators, each logging through its own "
            "MetricsLogger (its own run) to the configured destination, then print a summary."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    try:
        summary = run_simulation(options, progress=sys.stderr)
    except ConfigurationError as exc:
        raise CommandError(str(exc), 2) from None
    print_summary(summary, args.json)
    # Points that never landed are a failure worth an exit code.
    return 0 if summary.dropped == 0 and summary.rejected == 0 else 1
