"""The ``tplr-metrics`` command line: a thin dispatcher over ``tplr_metrics.commands``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._version import __version__
from .commands import CommandError, load_commands


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit code 2, like every command's own errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="tplr-metrics",
        description="Telemetry for training runs: simulate, inspect and ship metrics.",
    )
    parser.add_argument("--version", action="version", version=f"tplr-metrics {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for module in load_commands():
        module.register(subparsers)
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged, not the stream it was when
    the handler was made: a caller that swaps stderr (pytest's capture, a redirect in a
    notebook) and closes the old one later gets no "I/O operation on closed file" errors."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # StreamHandler.__init__ sets it; the property always answers the current stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The CLI is an application, so it shows the library's log lines; the library never does.
    library_logger = logging.getLogger("tplr_metrics")
    if not any(getattr(h, "tplr_metrics_cli", False) for h in library_logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.tplr_metrics_cli = True  # type: ignore[attr-defined]
        library_logger.addHandler(handler)
    library_logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args) or 0)
    except CommandError as exc:
        print(f"tplr-metrics {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
