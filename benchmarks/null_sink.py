"""A sink that stores nothing, for measuring the caller's side of the pipeline."""

from __future__ import annotations

from collections.abc import Sequence

from tplr_metrics import Point, WriteResult


class NullSink:
    name = "null"

    def write(self, points: Sequence[Point]) -> WriteResult:
        return WriteResult.all_stored(len(points))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class NullLineSink(NullSink):
    """The same, taking line protocol as an InfluxDB sink does: the pipeline runs as it does for
    InfluxDB (records queued compact, the batch line encoder)."""

    name = "null-lines"
    accepts_lines = True
