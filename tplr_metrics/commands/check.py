"""``tplr-metrics check``: can this machine's configured logger reach its InfluxDB? One answer."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from .connectivity import EXIT_CODES, run_check


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="write one point with the configured settings, read it back, time it",
        description=(
            "Connectivity smoke check: with the INFLUXDB_* settings a logger would use, write one "
            "uniquely tagged point through MetricsLogger, read it back, and print the round-trip "
            "latency and the server's version. On failure, print one diagnosis and exit with its "
            "code: " + ", ".join(f"{code} {name}" for name, code in EXIT_CODES.items() if code) + "."
        ),
    )
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per step (default 10)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    library_logger = logging.getLogger("tplr_metrics")
    level = library_logger.level
    if not getattr(args, "verbose", False):
        # One diagnosis, not the logger's retry chatter that led to it (-v shows it).
        library_logger.setLevel(logging.CRITICAL)
    try:
        result = run_check(timeout_s=args.timeout)
    finally:
        library_logger.setLevel(level)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.ok:
        print(result.text())
    else:
        print(f"tplr-metrics check: {result.text()}", file=sys.stderr)
    return result.exit_code
