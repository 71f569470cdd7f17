"""How a process is ending, for the status of its runs: ok, failed or cancelled."""

from __future__ import annotations


def exit_status() -> str:
    """The status of a run whose logger is closed at interpreter exit."""
    return "ok"
