"""The UI's runs from the configured InfluxDB (INFLUXDB_*): read only, one run per
``runtime_id`` tag value, read once and then only the points newer than the last one seen."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ...viz.run_data import RunData, RunDataError
from .common import (
    MAX_CACHED_POINTS,
    NotDeletable,
    SourceError,
    UnknownRun,
    artifact_list,
    display_name,
    headline,
    metric_list,
    points_held,
    series_of,
    table_list,
    table_page,
    trim_cache,
)

#: An InfluxDB run whose newest point is younger than this counts as live (there is no status).
INFLUX_LIVE_S = 30.0
#: How long the run list reuses a run's points before asking the server for newer ones.
INFLUX_LIST_TTL_S = 5.0
_WHO_TAGS = ("role", "uid", "prefix", "group", "job_type", "version", "host")


@dataclass
class _InfluxRun:
    data: RunData
    last_ns: int = 0
    first_ns: int | None = None
    tags: dict[str, str] | None = None
    read_at: float = 0.0


class InfluxSource:
    """Read-only runs of the configured InfluxDB (INFLUXDB_*): one per ``runtime_id`` tag value.
    A run is read once, then only its points newer than the last one seen."""

    deletable = False

    def __init__(self, environ: Any = None, max_cached_points: int = MAX_CACHED_POINTS) -> None:
        from ...viz.run_data import InfluxReader

        try:
            self._reader = InfluxReader(environ)
        except RunDataError as exc:
            raise SourceError(str(exc)) from None
        self._cache: OrderedDict[str, _InfluxRun] = OrderedDict()
        self.max_cached_points = max_cached_points
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self._reader.describe()

    def close(self) -> None:
        pass

    def _run_ids(self) -> list[str]:
        try:
            return self._reader.run_ids()
        except RunDataError as exc:
            raise SourceError(str(exc)) from None

    def _cached(self, run_id: str, max_age_s: float = 0.0) -> _InfluxRun:
        with self._lock:
            cached = self._cache.get(run_id)
            if cached is not None and time.monotonic() - cached.read_at < max_age_s:
                return cached
            fresh = cached or _InfluxRun(RunData(run_id[:8], f"influxdb run {run_id}"))
            try:
                newest, tags = self._reader.add_run_points(fresh.data, run_id, fresh.last_ns or None)
            except RunDataError as exc:
                raise SourceError(str(exc)) from None
            if cached is None and newest == 0:
                raise UnknownRun(f"no run {run_id!r} in {self.describe()}")
            if fresh.tags is None:
                fresh.tags = tags
            times = [s.time_s for samples in fresh.data.series.values() for s in samples[:1]]
            times += [r.time_ns / 1e9 for r in fresh.data.tables[:1]]
            if times:
                first = int(min(times) * 1e9)
                fresh.first_ns = first if fresh.first_ns is None else min(fresh.first_ns, first)
            fresh.last_ns, fresh.read_at = newest, time.monotonic()
            self._cache[run_id] = fresh
            trim_cache(self._cache, run_id, self.max_cached_points, lambda c: points_held(c.data))
            return fresh

    def _summary(self, run_id: str, run: _InfluxRun) -> dict[str, Any]:
        data, tags = run.data, run.tags or {}
        live = time.time_ns() - run.last_ns < INFLUX_LIVE_S * 1e9
        started = run.first_ns
        config = dict(data.config)
        who = {key: tags.get(key, "") for key in _WHO_TAGS}
        return {
            "run_id": run_id,
            "name": display_name(config, who["role"], who["uid"], run_id[:8]),
            "status": "running" if live else "influx",
            "live": live,
            **who,
            "started_at": started,
            "ended_at": None if live else run.last_ns,
            "duration_s": None if started is None else round((run.last_ns - started) / 1e9, 3),
            "points": sum(len(s) for s in data.series.values()),
            "headline": headline(data),
            "config": config,
        }

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for run_id in self._run_ids():
            try:
                out.append(self._summary(run_id, self._cached(run_id, INFLUX_LIST_TTL_S)))
            except UnknownRun:
                continue  # a tag value whose points are gone (a retention policy dropped them)
        out.sort(key=lambda r: r["started_at"] or 0, reverse=True)
        return out

    def run(self, run_id: str) -> dict[str, Any]:
        return self._summary(run_id, self._cached(run_id))

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        return metric_list(self._cached(run_id, 0.5).data)

    def series(
        self, run_id: str, metric: str, x: str, max_points: int, smoothing: str | None, window: int
    ) -> dict[str, Any]:
        return series_of(self._cached(run_id, 0.5).data, metric, x, max_points, smoothing, window)

    def tables(self, run_id: str) -> list[dict[str, Any]]:
        return table_list(self._cached(run_id, 0.5).data)

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return artifact_list(self._cached(run_id, 0.5).data)

    def table(self, run_id: str, name: str, offset: int, limit: int, query: str, version: int) -> dict[str, Any]:
        return table_page(self._cached(run_id, 0.5).data, name, offset, limit, query, version)

    def progress(self, run_id: str) -> dict[str, int] | None:
        return None  # read whole in the request

    def delete(self, run_id: str) -> int:
        self._cached(run_id, INFLUX_LIST_TTL_S)
        raise NotDeletable("runs read from InfluxDB are read only here")


__all__ = ["InfluxSource"]
