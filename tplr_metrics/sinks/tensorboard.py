"""The ``tensorboard`` sink (extra ``tensorboard``): TensorBoard event files, one directory per run.

It uses the ``tensorboard`` package's own event writer and protos, so neither torch nor
TensorFlow is needed. What becomes what:

* a LogStore metrics point: one scalar per metric, tag ``<split>/<metric>`` (a key that already
  starts with ``<split>/`` keeps its name), at its ``step``;
* any other point: one scalar per numeric field, tag ``<measurement>/<field>`` (plus
  ``{tag=value,...}`` for its own tags other than the logger's standard ones), at its
  ``step``/``global_step``/``window`` tag or field, else at a counter per tag;
* hyperparams: a text summary ``hyperparams`` (the merged JSON); artifacts: a text summary
  ``artifacts/<name>`` holding the path. Table rows are not written (use jsonl or local).

Files go to ``<log_dir>/<run_name>/`` (the run's runtime_id unless ``run_name`` is given);
``log_dir`` defaults to ``$TPLR_METRICS_HOME/tensorboard``. Directories this sink creates are
0700 and the event files 0600.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.paths import tplr_home
from ..encoding import log_points
from ..encoding.points import Point
from ._files import chmod_private_files, make_private_dirs
from .base import RunInfo, WriteResult
from .registry import require_module

logger = logging.getLogger("tplr_metrics")

#: Tags every point of a logger carries; they name the run, not the series.
STANDARD_TAGS = frozenset({"uid", "prefix", "version", "runtime_id", "role", "group", "job_type"})
_X_TAGS = frozenset(log_points.STEP_KEYS + log_points.WINDOW_KEYS)


def series_tag(point: Point, field: str) -> str:
    """``measurement/field``, with the point's own tags when it has some (one curve each)."""
    own = sorted(
        (k, v)
        for k, v in point.tags.items()
        if k not in STANDARD_TAGS and k not in _X_TAGS and not k.startswith("config_")
    )
    name = f"{log_points.base_measurement(point)}/{field}"
    if own:
        name += "{" + ",".join(f"{k}={v}" for k, v in own) + "}"
    return name


class TensorBoardSink:
    """Writes points as TensorBoard scalar (and text) summaries."""

    name = "tensorboard"

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        run_name: str | None = None,
        flush_secs: float = 10.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # Fail here, at configuration time, when the extra is missing: the registry skips us.
        require_module("tensorboard", "tensorboard", "tensorboard.summary.writer.event_file_writer")
        if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not flush_secs > 0:
            raise ValueError(f"flush_secs must be a positive number of seconds, not {flush_secs!r}")
        self.log_dir = Path(log_dir).expanduser() if log_dir is not None else tplr_home(environ) / "tensorboard"
        self.run_name = run_name
        self.flush_secs = flush_secs
        self._lock = threading.Lock()
        self._writer: Any = None
        self._writer_pid = 0
        self._counters: dict[str, int] = {}

    @property
    def run_dir(self) -> Path:
        if self.run_name is None:
            self.run_name = str(uuid.uuid4())
        return self.log_dir / self.run_name

    def destination(self) -> dict[str, str]:
        return {"kind": "tensorboard", "dir": str(self.log_dir.absolute())}

    def after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock at the fork."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TensorBoardSink({str(self.log_dir)!r}, run_name={self.run_name!r})"

    def start_run(self, run: RunInfo) -> None:
        with self._lock:
            if self.run_name is None:
                self.run_name = run.run_id

    def _open(self) -> Any:
        if self._writer is not None and self._writer_pid == os.getpid():
            return self._writer
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        run_dir = make_private_dirs(self.run_dir)
        self._writer = EventFileWriter(str(run_dir), max_queue_size=1_000, flush_secs=self.flush_secs)
        self._writer_pid = os.getpid()
        chmod_private_files(run_dir)  # the writer creates its file with the umask's mode
        return self._writer

    def write(self, points: Sequence[Point]) -> WriteResult:
        if not points:
            return WriteResult()
        try:
            with self._lock:
                writer = self._open()
                for point in points:
                    for event in self._events(point):
                        writer.add_event(event)
        except Exception as exc:  # never raise into the pipeline
            return WriteResult.all_retry(len(points), f"tensorboard {self.log_dir}: {type(exc).__name__}: {exc}")
        return WriteResult.all_stored(len(points))

    def _step(self, tag: str, explicit: int | None) -> int:
        if explicit is not None:
            return explicit
        n = self._counters.get(tag, 0)
        self._counters[tag] = n + 1
        return n

    def _events(self, point: Point) -> list[Any]:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        wall_time = point.time_ns / 1e9
        values: list[tuple[int, Any]] = []
        row = log_points.as_metrics(point)
        if row is not None:
            for metric, value in row.metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tag = log_points.split_key(row.split, metric)
                    step = self._step(tag, row.step)
                    values.append((step, summary_pb2.Summary.Value(tag=tag, simple_value=float(value))))
        elif (merged := log_points.as_hyperparams(point)) is not None:
            text = "```\n" + json.dumps(merged, indent=2, sort_keys=True) + "\n```"
            values.append((0, _text_value("hyperparams", text)))
        elif (artifact := log_points.as_artifact(point)) is not None:
            tag = f"artifacts/{artifact['name']}"
            values.append((self._step(tag, None), _text_value(tag, f"{artifact['kind']}: {artifact['path']}")))
        elif log_points.as_table_row(point) is None:
            explicit = log_points.first_int(log_points.STEP_KEYS, point.tags, point.fields)
            if explicit is None:
                explicit = log_points.first_int(log_points.WINDOW_KEYS, point.tags, point.fields)
            for field, value in point.fields.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and field not in _X_TAGS:
                    tag = series_tag(point, field)
                    values.append(
                        (self._step(tag, explicit), summary_pb2.Summary.Value(tag=tag, simple_value=float(value)))
                    )
        return [
            event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[value]))
            for step, value in values
        ]

    def flush(self) -> None:
        with self._lock:
            if self._writer is not None and self._writer_pid == os.getpid():
                self._writer.flush()

    def close(self) -> None:
        with self._lock:
            if self._writer is not None and self._writer_pid == os.getpid():
                self._writer.close()
            self._writer = None


def _text_value(tag: str, text: str) -> Any:
    """A text-plugin summary value (what tf.summary.text writes)."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    return summary_pb2.Summary.Value(
        tag=tag,
        metadata=summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")),
        tensor=tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            string_val=[text.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[]),
        ),
    )


__all__ = ["TensorBoardSink", "series_tag"]
