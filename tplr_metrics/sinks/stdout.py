"""The ``stdout`` sink: one human-readable line per step, for a terminal or a job's log file.

::

    step 3  train/loss=0.5  lr=0.0001
    step 3  val/loss=0.61
    hyperparams  {"batch_size": 64, "lr": 0.0003}
    artifact checkpoint  /abs/ckpt/step-1000.pt
    table samples  row 0  prompt=2+2=  score=1

Metrics points of one split at one step that arrive together share a line; a metric of a
split other than ``train`` is shown as ``<split>/<metric>`` (once, see
:func:`~tplr_metrics.encoding.log_points.split_key`). Any other point is ``measurement
tag=value ... field=value ...``. Numbers are printed with ``digits`` significant digits.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from ..encoding import log_points
from ..encoding.points import Point
from .base import WriteResult
from .tensorboard import STANDARD_TAGS

_STREAMS = ("stdout", "stderr")


class StdoutSink:
    """Prints points as lines on stdout (or stderr)."""

    name = "stdout"

    def __init__(self, *, stream: str = "stdout", digits: int = 6) -> None:
        if stream not in _STREAMS:
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 17:
            raise ValueError(f"digits must be an integer from 1 to 17, not {digits!r}")
        self.stream = stream
        self.digits = digits
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StdoutSink(stream={self.stream!r})"

    def destination(self) -> dict[str, str]:
        return {"kind": "stdout", "stream": self.stream}

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def _out(self) -> TextIO:
        # Looked up at each write, so a redirected sys.stdout (pytest, a notebook) is used.
        out: TextIO = sys.stdout if self.stream == "stdout" else sys.stderr
        return out

    def write(self, points: Sequence[Point]) -> WriteResult:
        if not points:
            return WriteResult()
        try:
            text = "".join(line + "\n" for line in self.lines(points))
            with self._lock:
                out = self._out()
                out.write(text)
                out.flush()
        except Exception as exc:  # never raise into the pipeline
            return WriteResult.all_retry(len(points), f"stdout: {type(exc).__name__}: {exc}")
        return WriteResult.all_stored(len(points))

    def lines(self, points: Sequence[Point]) -> list[str]:
        """The lines for a batch: consecutive metrics points at one step share a line."""
        lines: list[str] = []
        step_of_last: int | None = None
        pairs: list[str] = []
        for point in points:
            row = log_points.as_metrics(point)
            if row is not None and row.step is not None:
                if pairs and row.step != step_of_last:
                    lines.append(f"step {step_of_last}  " + "  ".join(pairs))
                    pairs = []
                step_of_last = row.step
                for key, value in row.metrics.items():
                    name = key if row.split == "train" else log_points.split_key(row.split, key)
                    pairs.append(f"{name}={self._value(value)}")
                continue
            if pairs:
                lines.append(f"step {step_of_last}  " + "  ".join(pairs))
                pairs = []
            lines.append(self._other(point))
        if pairs:
            lines.append(f"step {step_of_last}  " + "  ".join(pairs))
        return lines

    def _other(self, point: Point) -> str:
        merged = log_points.as_hyperparams(point)
        if merged is not None:
            return "hyperparams  " + json.dumps(merged, sort_keys=True, default=str)
        artifact = log_points.as_artifact(point)
        if artifact is not None:
            return f"artifact {artifact['name']}  {artifact['path']}"
        table = log_points.as_table_row(point)
        if table is not None:
            head = f"table {table.table}  row {table.row}" + (f"  step {table.step}" if table.step is not None else "")
            return head + self._pairs(table.values)
        tags = {k: v for k, v in point.tags.items() if k not in STANDARD_TAGS and not k.startswith("config_")}
        return log_points.base_measurement(point) + self._pairs(tags) + self._pairs(point.fields)

    def _pairs(self, values: Mapping[str, Any]) -> str:
        return "".join(f"  {k}={self._value(v)}" for k, v in values.items())

    def _value(self, value: Any) -> str:
        if isinstance(value, float):
            return format(value, f".{self.digits}g")
        return str(value)

    def flush(self) -> None:
        return None  # each write flushes the stream

    def close(self) -> None:
        return None  # the process owns its stdout


__all__ = ["StdoutSink"]
