"""The UI's runs from JSON Lines logs named on the command line: read only, one run per path
(a log file, or a directory's newest log), read again when the file changes so a log being
written grows its charts too."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...viz.run_data import RunData, RunDataError, directory_label, read_jsonl, run_label
from .common import (
    NotDeletable,
    SourceError,
    UnknownRun,
    artifact_list,
    display_name,
    headline,
    metric_list,
    series_of,
    table_list,
    table_page,
)

logger = logging.getLogger("tplr_metrics")

#: A JSONL log written to within this many seconds counts as a live run (its charts poll).
JSONL_LIVE_S = 30.0


@dataclass
class _LogFile:
    path: Path
    run_id: str
    data: RunData | None = None
    stamp: tuple[int, int] = (0, 0)  # (mtime_ns, size) the data was read at


class JsonlSource:
    """Read-only runs, one per path given (a log file, or a directory's newest log); a file is
    read again when it changes, so a log being written grows its charts too."""

    deletable = False

    def __init__(self, paths: Sequence[Path]) -> None:
        self._files: dict[str, _LogFile] = {}
        for path in paths:
            # A directory: its name, or its parent's for a logs/ folder (run-009/logs -> run-009).
            label = run_label(path) if path.is_file() else directory_label(path / "metrics.jsonl")
            run_id, n = label, 1
            while run_id in self._files:
                n += 1
                run_id = f"{label}-{n}"
            self._files[run_id] = _LogFile(path, run_id)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{len(self._files)} JSONL input(s)"

    def close(self) -> None:
        pass

    def _file(self, run_id: str) -> _LogFile:
        found = self._files.get(run_id)
        if found is None:
            raise UnknownRun(f"no run {run_id!r} among the inputs")
        return found

    def _data(self, log: _LogFile) -> tuple[RunData, float]:
        """The log's run (read again if the file changed) and the file's mtime (s)."""
        with self._lock:
            try:
                target = log.path
                if target.is_dir():
                    from ...viz.run_data import newest_log

                    target = newest_log(target)
                stat = target.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                if log.data is None or stamp != log.stamp:
                    log.data, log.stamp = read_jsonl(log.path, label=log.run_id), stamp
            except (RunDataError, OSError) as exc:
                raise SourceError(str(exc)) from None
            return log.data, stat.st_mtime

    def _summary(self, log: _LogFile) -> dict[str, Any]:
        data, mtime = self._data(log)
        live = time.time() - mtime < JSONL_LIVE_S
        times = [s.time_s for samples in data.series.values() for s in samples]
        started = int(min(times) * 1e9) if times else None
        last = int(max(times) * 1e9) if times else None
        config = {k: v for k, v in data.config.items()}
        return {
            "run_id": log.run_id,
            "name": display_name(config, str(config.get("role", "")), str(config.get("uid", "")), log.run_id),
            "status": "running" if live else "file",
            "live": live,
            "role": str(config.get("role", "")),
            "uid": str(config.get("uid", "")),
            "source": data.source,
            "started_at": started,
            "ended_at": None if live else last,
            "duration_s": None if started is None or last is None else round((last - started) / 1e9, 3),
            "points": sum(len(s) for s in data.series.values()),
            "headline": headline(data),
            "config": config,
        }

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for log in self._files.values():
            try:
                out.append(self._summary(log))
            except SourceError as exc:
                logger.warning("ui: %s", exc)
        return out

    def run(self, run_id: str) -> dict[str, Any]:
        return self._summary(self._file(run_id))

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        return metric_list(self._data(self._file(run_id))[0])

    def series(
        self, run_id: str, metric: str, x: str, max_points: int, smoothing: str | None, window: int
    ) -> dict[str, Any]:
        return series_of(self._data(self._file(run_id))[0], metric, x, max_points, smoothing, window)

    def tables(self, run_id: str) -> list[dict[str, Any]]:
        return table_list(self._data(self._file(run_id))[0])

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return artifact_list(self._data(self._file(run_id))[0])

    def table(self, run_id: str, name: str, offset: int, limit: int, query: str, version: int) -> dict[str, Any]:
        return table_page(self._data(self._file(run_id))[0], name, offset, limit, query, version)

    def progress(self, run_id: str) -> dict[str, int] | None:
        return None  # read whole in the request

    def delete(self, run_id: str) -> int:
        self._file(run_id)
        raise NotDeletable("runs read from JSONL files cannot be deleted here; delete the file")


__all__ = ["JSONL_LIVE_S", "JsonlSource"]
