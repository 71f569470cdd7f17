"""Points a server refused, kept with its reason instead of vanishing with their batch."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from ..config.paths import private_dir
from ..encoding.points import Point
from ..sinks.base import Rejection
from .spool import write_all

_MAX_LINE = 64 * 1024  # of a corrupt spool line kept in the dead letter


class DeadLetterFile:
    """Appends one JSON object per refused point to a 0600 file, created on first use.

    ``{"at_ns", "sink", "cause", "reason", "point": [measurement, tags, fields, time_ns]}``, or
    for a corrupt spool line ``"line": "<its text>"`` in place of ``"point"``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, point: Point, rejection: Rejection, sink_name: str) -> None:
        self._append(
            {
                "at_ns": time.time_ns(),
                "sink": sink_name,
                "cause": rejection.cause,
                "reason": rejection.reason,
                "point": list(point),
            }
        )

    def corrupt_line(self, line: bytes, file_name: str, sink_name: str) -> None:
        """A spool line that is not a valid point: kept as text (``line``), with its file's name."""
        self._append(
            {
                "at_ns": time.time_ns(),
                "sink": sink_name,
                "cause": "corrupt_spool_line",
                "reason": f"not a valid point in spool file {file_name}",
                "line": line[:_MAX_LINE].decode("utf-8", "replace"),
            }
        )

    def _append(self, record: dict[str, object]) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            private_dir(self.path.parent, trusted=self.path.parent.parent)  # no planted symlink
            # O_NOFOLLOW: a symlink planted at the file must not make us append elsewhere.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            try:
                write_all(fd, line)
            finally:
                os.close(fd)
