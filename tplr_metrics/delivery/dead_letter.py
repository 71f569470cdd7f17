"""Points a server refused, kept with its reason instead of vanishing with their batch."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from ..encoding.points import Point
from ..sinks.base import Rejection
from .spool import private_dir


class DeadLetterFile:
    """Appends one JSON object per refused point to a 0600 file, created on first use.

    ``{"at_ns", "sink", "cause", "reason", "point": [measurement, tags, fields, time_ns]}``
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, point: Point, rejection: Rejection, sink_name: str) -> None:
        record = {
            "at_ns": time.time_ns(),
            "sink": sink_name,
            "cause": rejection.cause,
            "reason": rejection.reason,
            "point": list(point),
        }
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            private_dir(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
