"""The ``wandb`` sink (extra ``wandb``): a Weights & Biases run, offline unless told otherwise.

The project is the ``project`` param, else ``WANDB_PROJECT``, else ``tplr_metrics``. The mode is
the ``mode`` param, else ``WANDB_MODE``, else ``offline``: the run is written to
``<log_dir>/wandb/offline-run-*`` and nothing leaves the machine. ``log_dir`` is the param, else
``WANDB_DIR`` (as ``wandb.init`` reads it), else ``$TPLR_METRICS_HOME/wandb``. This sink never calls
``wandb sync`` or any upload; ``wandb sync <dir>`` later is the user's choice.

* a LogStore metrics point: ``<split>/<metric>`` values with ``<split>/step`` as their step
  metric (``define_metric``), so train and validation rows may interleave in any order;
* any other point: ``<measurement>/<field>`` for each numeric field (tags as in the tensorboard
  sink);
* hyperparams (and the run's config tags): the run's config; artifacts: summary entries
  ``artifacts/<name>`` holding the path, a pointer (no bytes are copied or uploaded). Table
  rows are not written (use jsonl or local).

The W&B run starts on the first write, on the pipeline's writer thread, so the second or so
that ``wandb.init`` takes is never spent in the training loop.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config.paths import tplr_home
from ..encoding import log_points
from ..encoding.points import Point
from ._files import make_private_dirs
from .base import RunInfo, WriteResult
from .registry import require_module
from .tensorboard import series_tag

logger = logging.getLogger("tplr_metrics")


class WandbSink:
    """Logs points into one W&B run (offline by default)."""

    name = "wandb"

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        project: str | None = None,
        run_name: str | None = None,
        entity: str | None = None,
        mode: str | None = None,
        tags: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        require_module("wandb", "wandb", "wandb")  # at configuration time: the registry skips us
        environ = os.environ if environ is None else environ
        self.mode = (mode or environ.get("WANDB_MODE") or "offline").strip().lower()
        if self.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"mode must be offline, online or disabled, not {self.mode!r}")
        if log_dir is None and (environ.get("WANDB_DIR") or "").strip():
            log_dir = environ["WANDB_DIR"].strip()
        self.log_dir = Path(log_dir).expanduser() if log_dir is not None else tplr_home(environ) / "wandb"
        self.project = project or (environ.get("WANDB_PROJECT") or "").strip() or "tplr_metrics"
        self.run_name = run_name
        self.entity = entity
        self.tags = list(tags or [])
        self._lock = threading.Lock()
        self._run: Any = None
        self._run_dir: Path | None = None
        self._info: RunInfo | None = None
        self._splits: set[str] = set()
        self._status = "ok"
        self._reported = False

    def destination(self) -> dict[str, str]:
        return {"kind": "wandb", "dir": str(self.log_dir.absolute()), "project": self.project}

    def after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock at the fork."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WandbSink({str(self.log_dir)!r}, mode={self.mode!r})"

    @property
    def run_dir(self) -> Path | None:
        """The run's directory (``.../wandb/offline-run-*``) once it has started."""
        return self._run_dir

    def start_run(self, run: RunInfo) -> None:
        with self._lock:
            self._info = run

    def end_run(self, status: str) -> None:
        self._status = status

    def _open(self) -> Any:
        if self._run is not None:
            return self._run
        import wandb

        make_private_dirs(self.log_dir)
        info = self._info
        config = {k[len("config_") :]: v for k, v in (info.config if info else {}).items()}
        settings: dict[str, Any] = {"silent": True, "console": "off", "disable_git": True, "save_code": False}
        settings["x_disable_stats"] = True  # no system-metrics process: the logger samples its own
        self._run = wandb.init(
            project=self.project,
            entity=self.entity,
            name=self.run_name or (info.run_id if info else None),
            group=(info.group or None) if info else None,
            job_type=(info.job_type or None) if info else None,
            tags=self.tags or None,
            config=config or None,
            dir=str(self.log_dir),
            mode=self.mode,  # type: ignore[arg-type]
            reinit="create_new",
            settings=wandb.Settings(**settings),
        )
        files_dir = getattr(self._run, "dir", None)  # <run dir>/files
        self._run_dir = Path(files_dir).parent if files_dir else None
        return self._run

    def write(self, points: Sequence[Point]) -> WriteResult:
        if not points:
            return WriteResult()
        with self._lock:
            try:
                run = self._open()
            except Exception as exc:
                if not self._reported:
                    self._reported = True
                    logger.error("wandb: could not start a run in %s: %s", self.log_dir, exc)
                return WriteResult.all_retry(len(points), f"wandb init: {type(exc).__name__}: {exc}")
            stored = 0
            retry: list[int] = []
            error: str | None = None
            for index, point in enumerate(points):
                try:
                    self._log(run, point)
                    stored += 1
                except Exception as exc:  # never raise into the pipeline
                    retry.append(index)
                    error = f"wandb: {type(exc).__name__}: {exc}"
            if retry:
                return WriteResult(stored=stored, retry=retry, error=error)
        return WriteResult.all_stored(len(points))

    def _log(self, run: Any, point: Point) -> None:
        row = log_points.as_metrics(point)
        if row is not None:
            step_key = f"{row.split}/step"
            if row.split not in self._splits:
                run.define_metric(step_key)
                run.define_metric(f"{row.split}/*", step_metric=step_key)
                self._splits.add(row.split)
            data: dict[str, Any] = {
                log_points.split_key(row.split, k): v
                for k, v in row.metrics.items()
                if isinstance(v, (int, float, str))
            }
            if row.step is not None:
                data[step_key] = row.step
            run.log(data)
            return
        merged = log_points.as_hyperparams(point)
        if merged is not None:
            run.config.update(merged, allow_val_change=True)
            return
        artifact = log_points.as_artifact(point)
        if artifact is not None:
            run.summary[f"artifacts/{artifact['name']}"] = artifact["path"]
            return
        if log_points.as_table_row(point) is not None:
            return
        data = {
            series_tag(point, field): value
            for field, value in point.fields.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        if data:
            run.log(data)

    def flush(self) -> None:
        return None  # run.log hands each record to W&B's own writer process

    def close(self) -> None:
        with self._lock:
            if self._run is not None:
                try:
                    self._run.finish(exit_code=0 if self._status == "ok" else 1)
                finally:
                    self._run = None


__all__ = ["WandbSink"]
