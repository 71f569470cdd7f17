"""``tplr-metrics dashboards build``: write the generated Grafana dashboards and alert rules as JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import CommandError

DEFAULT_OUT = "dashboards"
DEFAULT_ALERTS_OUT = "telemetry/grafana/provisioning/alerting"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dashboards", help="Grafana dashboards generated from code", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="write the dashboards' JSON",
        description=(
            "Write the Miners, Validators, Evaluators, System & GPU and Pipeline health dashboards. "
            "With --dialect, into --out (default dashboards/<dialect>); without it, both dialects "
            "into <out>/influxql and <out>/flux (default out: dashboards). The alert rules (Grafana "
            f"unified alerting) go to --alerts-out, by default {DEFAULT_ALERTS_OUT} when neither "
            "--dialect nor --out is given."
        ),
    )
    build.add_argument("--dialect", choices=("influxql", "flux"), help="query language (default: both)")
    build.add_argument("--out", metavar="DIR", help="output directory")
    build.add_argument("--alerts-out", metavar="DIR", help="directory for the alerting provisioning file")
    build.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files in the directory are stale"
    )
    build.set_defaults(func=run)


def targets(dialect: str | None, out: str | None) -> list[tuple[str, Path]]:
    if dialect:
        return [(dialect, Path(out) if out else Path(DEFAULT_OUT) / dialect)]
    base = Path(out or DEFAULT_OUT)
    return [(name, base / name) for name in ("influxql", "flux")]


def alerts_target(args: argparse.Namespace) -> Path | None:
    if args.alerts_out:
        return Path(args.alerts_out)
    return Path(DEFAULT_ALERTS_OUT) if not args.dialect and not args.out else None


def run(args: argparse.Namespace) -> int:
    from ..dashboards import build_all, write_files  # grafanalib: only when asked
    from ..dashboards.alerts import build_alerts

    stale: list[str] = []
    jobs: list[tuple[str, Path, dict[str, str]]] = [
        (dialect, directory, build_all(dialect)) for dialect, directory in targets(args.dialect, args.out)
    ]
    alerts_dir = alerts_target(args)
    if alerts_dir is not None:
        jobs.append(("alerts", alerts_dir, build_alerts()))
    for label, directory, files in jobs:
        if args.check:
            for name, text in files.items():
                path = directory / name
                try:
                    current = path.read_text(encoding="utf-8")
                except OSError:
                    current = None
                if current != text:
                    stale.append(str(path))
            continue
        try:
            paths = write_files(directory, files)
        except OSError as exc:
            raise CommandError(f"cannot write to {directory}: {exc.strerror or exc}") from None
        print(f"{label}: wrote {len(paths)} files to {directory}")
    if stale:
        for stale_path in stale:
            print(f"stale: {stale_path}", file=sys.stderr)
        raise CommandError("dashboards are stale; run: tplr-metrics dashboards build", 1)
    if args.check:
        print("dashboards are up to date")
    return 0
