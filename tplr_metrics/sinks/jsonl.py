"""The ``jsonl`` sink: a run's points as plain files under one log directory.

What lands where (file names are params):

* ``metrics.jsonl``: one object per ``log_metrics``/``log_scalar`` call,
  ``{"ts": <unix seconds>, "step": <int>, "split": "train", "metrics": {"loss": 0.5}}``; any other
  point (a plain ``MetricsLogger.log``) as ``{"ts", "time_ns", "measurement", "tags", "fields"}``,
  the shape ``tplr-metrics export --format jsonl`` writes.
* ``hyperparams.json``: the merged hyperparams (rewritten whole, atomically, on each change).
* ``artifacts.json``: a list of ``{"name", "path", "kind", "ts"}`` (rewritten the same way).
* ``tables.jsonl``: one object per table row, ``{"ts", "table", "row", "step", "values"}``
  (created on the first table).

With no ``log_dir``, files go to ``$TPLR_METRICS_HOME/logs/<run_id>``. Files are 0600 and
directories this sink creates 0700. Appends are one ``write()`` per batch; a failed write
(disk full) hands the batch back to the pipeline for retry.
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
from ._files import make_private_dirs, open_private_append, write_private_atomic
from .base import RunInfo, WriteResult

logger = logging.getLogger("tplr_metrics")


def _ts(time_ns: int) -> float:
    return round(time_ns / 1e9, 6)


def _dumps(obj: Any) -> str:
    # NaN/inf never reach here (the value rules drop them); keep the output strict JSON anyway.
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


class JsonlSink:
    """Appends a run's metrics to JSON Lines and keeps its hyperparams and artifacts as JSON."""

    name = "jsonl"

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        metrics_file: str = "metrics.jsonl",
        hyperparams_file: str = "hyperparams.json",
        artifacts_file: str = "artifacts.json",
        tables_file: str = "tables.jsonl",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        names = {
            "metrics_file": metrics_file,
            "hyperparams_file": hyperparams_file,
            "artifacts_file": artifacts_file,
            "tables_file": tables_file,
        }
        for param, value in names.items():
            if not isinstance(value, str) or not value or os.sep in value or value in (".", ".."):
                raise ValueError(f"{param} must be a plain file name, not {value!r}")
        if len(set(names.values())) != len(names):
            raise ValueError(f"file names must differ: {names}")
        self._configured_dir = Path(log_dir).expanduser() if log_dir is not None else None
        self._home = tplr_home(environ)
        self.metrics_file = metrics_file
        self.hyperparams_file = hyperparams_file
        self.artifacts_file = artifacts_file
        self.tables_file = tables_file
        self._lock = threading.Lock()
        self._run_id: str | None = None
        self._fds: dict[str, int] = {}
        self._fd_pid = 0
        self._hyperparams: dict[str, Any] | None = None
        self._artifacts: list[dict[str, Any]] | None = None

    @property
    def log_dir(self) -> Path:
        if self._configured_dir is not None:
            return self._configured_dir
        if self._run_id is None:
            self._run_id = str(uuid.uuid4())
        return self._home / "logs" / self._run_id

    def destination(self) -> dict[str, str]:
        base = self._configured_dir if self._configured_dir is not None else self._home / "logs"
        return {"kind": "jsonl", "dir": str(base.absolute())}

    def after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock at the fork."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.log_dir)!r})"

    def start_run(self, run: RunInfo) -> None:
        with self._lock:
            if self._run_id is None:
                self._run_id = run.run_id

    # --- Sink protocol ------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> WriteResult:
        if not points:
            return WriteResult()
        try:
            with self._lock:
                return self._write(points)
        except (OSError, ValueError) as exc:
            return WriteResult.all_retry(len(points), f"jsonl {self.log_dir}: {type(exc).__name__}: {exc}")

    def _write(self, points: Sequence[Point]) -> WriteResult:
        metrics: list[str] = []
        tables: list[str] = []
        hyperparams: dict[str, Any] | None = None
        artifacts: list[dict[str, Any]] = []
        for point in points:
            row = log_points.as_metrics(point)
            if row is not None:
                metrics.append(
                    _dumps({"ts": _ts(point.time_ns), "step": row.step, "split": row.split, "metrics": row.metrics})
                )
                continue
            merged = log_points.as_hyperparams(point)
            if merged is not None:
                hyperparams = {**(hyperparams or {}), **merged}
                continue
            artifact = log_points.as_artifact(point)
            if artifact is not None:
                artifacts.append({**artifact, "ts": _ts(point.time_ns)})
                continue
            table_row = log_points.as_table_row(point)
            if table_row is not None:
                tables.append(
                    _dumps(
                        {
                            "ts": _ts(point.time_ns),
                            "table": table_row.table,
                            "row": table_row.row,
                            "step": table_row.step,
                            "values": table_row.values,
                        }
                    )
                )
                continue
            metrics.append(
                _dumps(
                    {
                        "ts": _ts(point.time_ns),
                        "time_ns": point.time_ns,
                        "measurement": point.measurement,
                        "tags": point.tags,
                        "fields": point.fields,
                    }
                )
            )
        directory = make_private_dirs(self.log_dir)
        nbytes = 0
        appended: list[tuple[int, int]] = []  # (fd, size before): taken back if the batch fails
        try:
            if metrics:
                nbytes += self._append(directory, self.metrics_file, metrics, appended)
            if tables:
                nbytes += self._append(directory, self.tables_file, tables, appended)
        except OSError:
            self._take_back(appended)
            raise
        if hyperparams is not None:
            current = self._load(directory / self.hyperparams_file, dict) if self._hyperparams is None else None
            self._hyperparams = {**(current or self._hyperparams or {}), **hyperparams}
            data = (_dumps(self._hyperparams) + "\n").encode()
            write_private_atomic(directory / self.hyperparams_file, data)
            nbytes += len(data)
        if artifacts:
            if self._artifacts is None:
                self._artifacts = list(self._load(directory / self.artifacts_file, list) or [])
            self._artifacts.extend(artifacts)
            data = (json.dumps(self._artifacts, ensure_ascii=False, indent=2) + "\n").encode()
            write_private_atomic(directory / self.artifacts_file, data)
            nbytes += len(data)
        return WriteResult.all_stored(len(points), nbytes)

    def _append(self, directory: Path, name: str, lines: list[str], appended: list[tuple[int, int]]) -> int:
        if self._fd_pid != os.getpid():  # a forked child opens its own descriptors
            self._fds = {}
            self._fd_pid = os.getpid()
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = open_private_append(directory / name)
        data = ("\n".join(lines) + "\n").encode()
        appended.append((fd, os.fstat(fd).st_size))
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        return len(data)

    def _take_back(self, appended: list[tuple[int, int]]) -> None:
        """A batch that failed half-way (a full disk) is retried whole: cut what it did append,
        or the file would hold a torn line and, after the retry, its first lines twice."""
        for fd, size in appended:
            try:
                os.ftruncate(fd, size)
            except OSError as exc:
                logger.warning("jsonl: could not take back a partial write (%s)", exc.strerror or exc)

    @staticmethod
    def _load(path: Path, kind: type) -> Any:
        """What an earlier process left in a JSON file (a resumed run keeps adding to it)."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("jsonl: %s is unreadable (%s); it is rewritten", path, exc)
            return None
        return data if isinstance(data, kind) else None

    def flush(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                try:
                    os.fsync(fd)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            if self._fd_pid == os.getpid():
                for fd in self._fds.values():
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._fds = {}


__all__ = ["JsonlSink"]
