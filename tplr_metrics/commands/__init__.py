"""Subcommands of ``tplr-metrics``: one module each, listed here.

A command module defines ``register(subparsers)``, which adds its parser and sets
``func=run`` on it; ``run(args) -> int`` returns the exit code. Errors the user can fix are
raised as :class:`CommandError`: the CLI prints its one-line reason and exits with its code.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Modules under tplr_metrics.commands, in the order ``--help`` lists them.
COMMAND_MODULES: list[str] = [
    "simulate",
    "runs",
    "watch",
    "export",
    "replay",
    "prune",
    "delete",
    "dashboards",
    "check",
    "plot",
    "compare",
    "table",
    "ui",
]


class CommandError(Exception):
    """A failure to report as one line on stderr, with an exit code (2: bad usage or input)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_commands() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in COMMAND_MODULES]
