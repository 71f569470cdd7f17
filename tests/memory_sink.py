"""A real Sink that keeps points in memory: for unit tests of the logger and pipeline.

Integration tests use real servers instead; this is the pipeline's own destination contract,
not a stand-in for a database.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tplr_metrics import Point, WriteResult


class MemorySink:
    name = "memory"

    def __init__(self, delay: float = 0.0) -> None:
        self.points: list[Point] = []
        self.batches = 0
        self.closed = False
        self.delay = delay
        self.gate = threading.Event()  # cleared: writes wait until set
        self.gate.set()
        self.runs: list[object] = []
        self.ended: list[str] = []
        self._lock = threading.Lock()

    def write(self, points: Sequence[Point]) -> WriteResult:
        self.gate.wait()
        if self.delay:
            threading.Event().wait(self.delay)
        with self._lock:
            self.points.extend(points)
            self.batches += 1
        return WriteResult.all_stored(len(points))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def start_run(self, run: object) -> None:
        self.runs.append(run)

    def end_run(self, status: str) -> None:
        self.ended.append(status)
