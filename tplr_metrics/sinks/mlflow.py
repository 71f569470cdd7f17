"""The ``mlflow`` sink (extra ``mlflow``): one MLflow run, through ``MlflowClient``; never starts a server.

The tracking URI is the ``tracking_uri`` param, else ``MLFLOW_TRACKING_URI``, else an offline
file store at ``$TPLR_METRICS_HOME/mlruns``. The experiment is the ``experiment`` param, else
``MLFLOW_EXPERIMENT_NAME``, else ``tplr_metrics``. For a ``file:`` store this sink sets
``MLFLOW_ALLOW_FILE_STORE=true`` in the process when it is unset (MLflow 3 refuses file stores
without it); set it to ``false`` yourself to refuse them.

* a LogStore metrics point: one metric per value, key ``<split>/<metric>`` (the split once), at
  its ``step``; a batch's metrics go out in ``MlflowClient.log_batch`` calls;
* hyperparams: params, nested dicts flattened to ``a.b`` keys; MLflow params are write-once, so a
  later different value of one is not sent again (counted as ``mlflow_param_changed``);
* artifacts: a local file or directory is copied into the run's artifacts under ``<name>/``
  (``copy_artifacts=False`` to only record it); a URI or a missing path becomes the tag
  ``artifact.<name>``;
* any other point: ``<measurement>/<field>`` metrics (as in the tensorboard sink). Table rows are
  not written (use jsonl or local).

The run starts on the first write (on the pipeline's writer thread) and ends with the logger's
status: FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.paths import tplr_home
from ..encoding import log_points
from ..encoding.points import Point
from .base import RunInfo, WriteResult
from .registry import require_module
from .tensorboard import _X_TAGS, series_tag

logger = logging.getLogger("tplr_metrics")

#: MLflow's log_batch limits: 1000 metrics, 100 params and 100 tags a call.
_METRICS_PER_CALL = 1000
_PARAMS_PER_CALL = 100
_KEY_UNSAFE = re.compile(r"[^\w\-. /]")  # what MLflow refuses in a metric name
_STATUS = {"ok": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "crashed": "FAILED"}


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts as ``a.b`` keys; values as MLflow params (text; lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, str):
            out[name] = value
        else:
            out[name] = json.dumps(value, sort_keys=True)
    return out


class MlflowSink:
    """Logs points into one MLflow run."""

    name = "mlflow"

    def __init__(
        self,
        *,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        copy_artifacts: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        require_module("mlflow", "mlflow", "mlflow.tracking")  # at configuration time: the registry skips us
        environ = os.environ if environ is None else environ
        for param, value in (("tracking_uri", tracking_uri), ("experiment", experiment), ("run_name", run_name)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{param} must be a non-empty string, not {value!r}")
        if tags is not None and not isinstance(tags, Mapping):
            raise ValueError(f"tags must be a mapping of names to text, not {type(tags).__name__}")
        uri = tracking_uri or (environ.get("MLFLOW_TRACKING_URI") or "").strip()
        self.tracking_uri = uri or (tplr_home(environ) / "mlruns").absolute().as_uri()
        self.experiment = experiment or (environ.get("MLFLOW_EXPERIMENT_NAME") or "").strip() or "tplr_metrics"
        self.run_name = run_name
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.copy_artifacts = bool(copy_artifacts)
        self._lock = threading.Lock()
        self._client: Any = None
        self._run_id: str | None = None
        self._info: RunInfo | None = None
        self._params: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self._status = "ok"

    def __repr__(self) -> str:
        return f"MlflowSink({self.tracking_uri!r}, experiment={self.experiment!r})"

    def destination(self) -> dict[str, str]:
        return {"kind": "mlflow", "tracking_uri": self.tracking_uri, "experiment": self.experiment}

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id once it has started."""
        return self._run_id

    def start_run(self, run: RunInfo) -> None:
        with self._lock:
            self._info = run

    def end_run(self, status: str) -> None:
        self._status = status

    def _open(self) -> tuple[Any, str]:
        if self._client is not None and self._run_id is not None:
            return self._client, self._run_id
        if self.tracking_uri.startswith("file:"):
            if "MLFLOW_ALLOW_FILE_STORE" not in os.environ:
                os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
            Path(self.tracking_uri.removeprefix("file://").removeprefix("file:")).mkdir(parents=True, exist_ok=True)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(self.experiment)
        info = self._info
        tags = dict(self.tags)
        if info is not None:
            tags["tplr.run_id"] = info.run_id
            for key in ("role", "uid", "group", "job_type", "version"):
                value = getattr(info, key)
                if value:
                    tags[f"tplr.{key}"] = str(value)
        run = client.create_run(experiment_id, run_name=self.run_name or (info.run_id if info else None), tags=tags)
        self._client, self._run_id = client, run.info.run_id
        return client, run.info.run_id

    def write(self, points: Sequence[Point]) -> WriteResult:
        if not points:
            return WriteResult()
        try:
            with self._lock:
                client, run_id = self._open()
                sanitized = self._write(client, run_id, points)
        except Exception as exc:  # never raise into the pipeline
            return WriteResult.all_retry(len(points), f"mlflow {self.tracking_uri}: {type(exc).__name__}: {exc}")
        result = WriteResult.all_stored(len(points))
        result.sanitized = sanitized
        return result

    def _write(self, client: Any, run_id: str, points: Sequence[Point]) -> dict[str, int]:
        from mlflow.entities import Metric, Param, RunTag

        metrics: list[Any] = []
        params: dict[str, str] = {}
        tags: list[Any] = []
        sanitized: dict[str, int] = {}
        for point in points:
            ms = point.time_ns // 1_000_000
            row = log_points.as_metrics(point)
            if row is not None:
                for key, value in row.metrics.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        name = log_points.split_key(row.split, key)
                        metrics.append(Metric(name, float(value), ms, self._step(name, row.step)))
                continue
            merged = log_points.as_hyperparams(point)
            if merged is not None:
                for key, text in flatten(merged).items():
                    if key not in self._params and key not in params:
                        params[key] = text
                    elif self._params.get(key, params.get(key)) != text:
                        sanitized["mlflow_param_changed"] = sanitized.get("mlflow_param_changed", 0) + 1
                continue
            artifact = log_points.as_artifact(point)
            if artifact is not None:
                path = str(artifact["path"])
                if self.copy_artifacts and "://" not in path and os.path.exists(path):
                    if os.path.isdir(path):
                        client.log_artifacts(run_id, path, artifact_path=artifact["name"])
                    else:
                        client.log_artifact(run_id, path, artifact_path=artifact["name"])
                else:
                    tags.append(RunTag(f"artifact.{artifact['name']}", path))
                continue
            if log_points.as_table_row(point) is not None:
                continue
            explicit = log_points.first_int(log_points.STEP_KEYS, point.tags, point.fields)
            if explicit is None:
                explicit = log_points.first_int(log_points.WINDOW_KEYS, point.tags, point.fields)
            for field, value in point.fields.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and field not in _X_TAGS:
                    name = _KEY_UNSAFE.sub("_", series_tag(point, field))
                    metrics.append(Metric(name, float(value), ms, self._step(name, explicit)))
        param_items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(param_items), _PARAMS_PER_CALL):
            client.log_batch(run_id, params=param_items[start : start + _PARAMS_PER_CALL])
        self._params.update(params)
        for start in range(0, len(metrics), _METRICS_PER_CALL):
            client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_CALL])
        for start in range(0, len(tags), _PARAMS_PER_CALL):
            client.log_batch(run_id, tags=tags[start : start + _PARAMS_PER_CALL])
        return sanitized

    def _step(self, key: str, explicit: int | None) -> int:
        if explicit is not None:
            return explicit
        n = self._counters.get(key, 0)
        self._counters[key] = n + 1
        return n

    def flush(self) -> None:
        return None  # each log_batch is stored when it returns

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._run_id is not None:
                try:
                    self._client.set_terminated(self._run_id, _STATUS.get(self._status, "FINISHED"))
                except Exception as exc:
                    logger.warning("mlflow: could not end run %s: %s", self._run_id, exc)
            self._client = None


__all__ = ["MlflowSink", "flatten"]
