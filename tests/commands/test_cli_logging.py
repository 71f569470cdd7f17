"""The CLI shows the library's log lines on stderr: whatever stderr is when a line is logged."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from tplr_metrics.cli import main


def test_the_cli_log_handler_writes_to_the_current_stderr(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler bound to the stderr of its first call wrote to a closed stream once that was
    swapped and closed (pytest's capture, a notebook's redirect): "--- Logging error ---"."""
    library = logging.getLogger("tplr_metrics")
    handlers, level = list(library.handlers), library.level
    try:
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        main(["runs"])  # no store yet: exit 1; the CLI's handler is added either way
        first.close()
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        library.warning("after the swap")
        assert "Logging error" not in second.getvalue()
        assert "WARNING tplr_metrics: after the swap" in second.getvalue()
    finally:
        library.handlers[:] = handlers
        library.setLevel(level)
