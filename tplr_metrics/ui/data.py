"""What the web UI reads: runs, their metrics and downsampled series, from one configured source.

Two sources, one interface (:class:`RunSource`): the local store (:class:`StoreSource`), where
runs can be deleted, or JSON Lines logs named on the command line (:class:`JsonlSource`), read
only. Both turn points into :class:`~tplr_metrics.viz.run_data.RunData`, so a metric is named
and smoothed here exactly as ``tplr-metrics plot`` names and smooths it.

A store run is read once and then only its new rows (``points_after``) on each poll, so a live
chart polled every second costs what arrived since the last poll, not the whole run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..commands._store_cli import is_live
from ..commands.table import columns_of, versions
from ..store.database import RunRow, Store, StoreError
from ..viz.plotting import SMOOTHERS, X_KEYS, smooth, xy
from ..viz.run_data import RunData, RunDataError, directory_label, read_jsonl, run_label
from .downsample import lttb_indices

logger = logging.getLogger("tplr_metrics")

#: A JSONL log written to within this many seconds counts as a live run (its charts poll).
JSONL_LIVE_S = 30.0
_NAME_TAGS = ("name", "run_name", "experiment")
#: The most points (samples and table rows, all runs together) a source keeps read; the runs
#: least recently asked for are dropped first (and read again if asked for), the last one never.
MAX_CACHED_POINTS = 5_000_000


class UnknownRun(LookupError):
    """No run of that id in the source."""


class NotDeletable(Exception):
    """The run cannot be deleted: the source is read only, or the run is still being written."""


class SourceError(Exception):
    """The source cannot be read right now (a store that is locked, corrupt or gone)."""


class RunSource(Protocol):
    deletable: bool

    def describe(self) -> str: ...
    def close(self) -> None: ...
    def runs(self) -> list[dict[str, Any]]: ...
    def run(self, run_id: str) -> dict[str, Any]: ...
    def metrics(self, run_id: str) -> list[dict[str, Any]]: ...
    def series(
        self, run_id: str, metric: str, x: str, max_points: int, smoothing: str | None, window: int
    ) -> dict[str, Any]: ...
    def tables(self, run_id: str) -> list[dict[str, Any]]: ...
    def table(self, run_id: str, name: str, offset: int, limit: int, query: str, version: int) -> dict[str, Any]: ...
    def delete(self, run_id: str) -> int: ...


# --- shared by both sources -----------------------------------------------------------------


def headline(data: RunData) -> dict[str, Any] | None:
    """The last value of the first metric (sorted by name) whose field is named like loss."""
    for name in data.metric_names():
        if "loss" in name.rsplit(".", 1)[-1].lower() and data.series[name]:
            return {"metric": name, "value": data.series[name][-1].value}
    return None


def metric_list(data: RunData) -> list[dict[str, Any]]:
    return [
        {"name": name, "points": len(data.series[name]), "last": data.series[name][-1].value}
        for name in data.metric_names()
        if data.series[name]
    ]


def series_of(
    data: RunData, metric: str, x: str, max_points: int, smoothing: str | None, window: int
) -> dict[str, Any]:
    """One metric as columns for uPlot: x, raw y and (with smoothing) the smoothed y, cut by
    LTTB on the raw curve to at most ``max_points``. Smoothing runs over every point first, so
    a downsampled chart shows the same smoothed curve as a full one."""
    if x not in X_KEYS:
        raise ValueError(f"unknown x {x!r} (use {', '.join(X_KEYS)})")
    if smoothing is not None and smoothing not in SMOOTHERS:
        raise ValueError(f"unknown smoothing {smoothing!r} (use {', '.join(SMOOTHERS)})")
    if metric not in data.series:
        raise UnknownRun(f"no metric {metric!r} in this run")
    xs, ys, missing = xy(data, metric, x)
    smoothed = smooth(ys, smoothing, window) if smoothing else None
    keep = lttb_indices(xs, ys, max_points)
    out: dict[str, Any] = {
        "metric": metric,
        "x_key": x,
        "total": len(xs),
        "missing_x": missing,
        "x": [xs[i] for i in keep],
        "y": [ys[i] for i in keep],
    }
    if smoothed is not None:
        out["smoothed"] = [smoothed[i] for i in keep]
        out["smoothing"] = {"kind": smoothing, "window": window}
    return out


def table_list(data: RunData) -> list[dict[str, Any]]:
    """The run's logged tables (LogStore.log_table), each with its latest version's size."""
    out = []
    for name in dict.fromkeys(r.table for r in data.tables):
        found = versions(data.tables, name)
        last = found[-1]
        out.append(
            {"name": name, "versions": len(found), "rows": len(last), "step": last[0].step, "time_ns": last[0].time_ns}
        )
    return out


def _cell_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def table_page(data: RunData, name: str, offset: int, limit: int, query: str, version: int) -> dict[str, Any]:
    """One page of one version of a table (-1: the latest), its rows narrowed to those with a
    cell containing ``query`` (case-insensitive) first; cells go out as logged."""
    found = versions(data.tables, name)
    if not found:
        raise UnknownRun(f"no table {name!r} in this run")
    if not -len(found) <= version < len(found):
        raise ValueError(f"version must be between {-len(found)} and {len(found) - 1}")
    rows = found[version]
    needle = query.casefold()
    matching = (
        [r for r in rows if any(needle in _cell_text(v).casefold() for v in r.values.values())] if needle else rows
    )
    return {
        "table": name,
        "version": version % len(found),
        "versions": [{"step": v[0].step, "time_ns": v[0].time_ns, "rows": len(v)} for v in found],
        "step": rows[0].step,
        "time_ns": rows[0].time_ns,
        "columns": columns_of(rows),
        "rows_total": len(rows),
        "matching": len(matching),
        "offset": offset,
        "limit": limit,
        "query": query,
        "rows": [{"row": r.row, "values": r.values} for r in matching[offset : offset + limit]],
    }


def points_held(data: RunData) -> int:
    return sum(len(samples) for samples in data.series.values()) + len(data.tables)


def trim_cache(cache: OrderedDict[str, Any], keep: str, limit: int, size: Any) -> None:
    """Mark ``keep`` most recently used, then drop the least recently used entries of ``cache``
    until the points they hold (``size(entry)``) fit in ``limit``; ``keep`` always stays."""
    cache.move_to_end(keep)
    total = sum(size(entry) for entry in cache.values())
    while total > limit and len(cache) > 1:
        _, dropped = cache.popitem(last=False)
        total -= size(dropped)


def display_name(config: dict[str, Any], role: str, uid: str, fallback: str) -> str:
    for key in _NAME_TAGS:
        value = config.get(key)
        if isinstance(value, str) and value:
            return value
    who = "/".join(part for part in (role, uid) if part)
    return who or fallback


# --- the local store ------------------------------------------------------------------------


@dataclass
class _CachedRun:
    data: RunData
    last_id: int


def _config_of(rows: Sequence[RunRow]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for row in rows:
        for key, value in row.config.items():
            config[key[len("config_") :] if key.startswith("config_") else key] = value
    return config


class StoreSource:
    """Runs of one store file; a run id is a logger's runtime_id (all its rows together)."""

    deletable = True

    def __init__(self, path: Path, max_cached_points: int = MAX_CACHED_POINTS) -> None:
        self.path = path
        self._store: Store | None = None
        self._cache: OrderedDict[str, _CachedRun] = OrderedDict()
        self.max_cached_points = max_cached_points
        self._lock = threading.Lock()  # the cache; the store serializes its own calls

    def describe(self) -> str:
        return f"store {self.path}"

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _open(self) -> Store | None:
        """The store, opened on first use: the UI may start before anything is logged."""
        if self._store is None:
            if not self.path.is_file():
                return None
            try:
                self._store = Store(self.path, create=False)
            except StoreError as exc:
                raise SourceError(f"local store {exc}") from None
        return self._store

    def _rows(self, store: Store, run_id: str) -> list[RunRow]:
        try:
            rows = [r for r in store.find_runs(run_id) if r.run_id == run_id]  # exact ids only
        except ValueError:
            rows = []
        if not rows:
            raise UnknownRun(f"no run {run_id!r} in {self.path}")
        return rows

    def _summary(self, rows: Sequence[RunRow], points: int, head: dict[str, Any] | None) -> dict[str, Any]:
        first = rows[0]
        live = any(is_live(r) for r in rows)
        running = any(r.status == "running" for r in rows)
        status = "running" if live else ("crashed" if running else rows[-1].status)
        started = min(r.started_at for r in rows)
        ended = None if running else max((r.ended_at or r.started_at) for r in rows)
        end = ended if ended is not None else (time.time_ns() if live else None)
        config = _config_of(rows)
        return {
            "run_id": first.run_id,
            "name": display_name(config, first.role, first.uid, first.run_id[:8]),
            "status": status,
            "live": live,
            "role": first.role,
            "uid": first.uid,
            "prefix": first.prefix,
            "group": first.group,
            "job_type": first.job_type,
            "version": first.version,
            "host": first.host,
            "started_at": started,
            "ended_at": ended,
            "duration_s": None if end is None else round((end - started) / 1e9, 3),
            "points": points,
            "headline": head,
            "config": config,
        }

    def _headline(self, store: Store, ids: Sequence[int]) -> dict[str, Any] | None:
        point = store.last_point_with_field(ids, "%loss%")
        if point is None:
            return None
        data = RunData("", "")
        data.add_point(point.to_point())
        return headline(data)

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            store = self._open()
            if store is None:
                return []
            try:
                rows = store.runs()
                counts = store.point_counts([r.id for r in rows])
                grouped: dict[str, list[RunRow]] = {}
                for row in rows:  # newest first, as store.runs() orders them
                    grouped.setdefault(row.run_id, []).append(row)
                out = []
                for group in grouped.values():
                    group.sort(key=lambda r: r.id)
                    ids = [r.id for r in group]
                    points = sum(counts.get(i, 0) for i in ids)
                    out.append(self._summary(group, points, self._headline(store, ids)))
                return out
            except StoreError as exc:
                raise SourceError(f"local store {exc}") from None

    def run(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            store = self._existing()
            try:
                rows = self._rows(store, run_id)
                ids = [r.id for r in rows]
                points = sum(store.point_counts(ids).values())
                return self._summary(rows, points, self._headline(store, ids))
            except StoreError as exc:
                raise SourceError(f"local store {exc}") from None

    def _existing(self) -> Store:
        store = self._open()
        if store is None:
            raise UnknownRun(f"no local store at {self.path} yet")
        return store

    def _data(self, run_id: str) -> RunData:
        """The run's points, topped up with the rows written since the last call."""
        with self._lock:
            store = self._existing()
            try:
                rows = self._rows(store, run_id)
                cached = self._cache.get(run_id)
                if cached is None:
                    cached = _CachedRun(RunData(run_id[:8], f"run {run_id}"), 0)
                    self._cache[run_id] = cached
                cached.data.config = _config_of(rows)
                ids = [r.id for r in rows]
                while True:
                    batch = store.points_after(cached.last_id, ids, limit=10_000)
                    for point in batch:
                        cached.data.add_point(point.to_point())
                    if batch:
                        cached.last_id = batch[-1].id
                    if len(batch) < 10_000:
                        break
                trim_cache(self._cache, run_id, self.max_cached_points, lambda c: points_held(c.data))
                return cached.data
            except StoreError as exc:
                raise SourceError(f"local store {exc}") from None

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        return metric_list(self._data(run_id))

    def series(
        self, run_id: str, metric: str, x: str, max_points: int, smoothing: str | None, window: int
    ) -> dict[str, Any]:
        return series_of(self._data(run_id), metric, x, max_points, smoothing, window)

    def tables(self, run_id: str) -> list[dict[str, Any]]:
        return table_list(self._data(run_id))

    def table(self, run_id: str, name: str, offset: int, limit: int, query: str, version: int) -> dict[str, Any]:
        return table_page(self._data(run_id), name, offset, limit, query, version)

    def delete(self, run_id: str) -> int:
        """Delete the run's rows and points; the number of points deleted."""
        with self._lock:
            store = self._existing()
            try:
                rows = self._rows(store, run_id)
                if any(is_live(r) for r in rows):
                    raise NotDeletable(f"run {run_id!r} is still being written; stop it first")
                deleted = store.delete_runs([r.id for r in rows])
            except StoreError as exc:
                raise SourceError(f"local store {exc}") from None
            self._cache.pop(run_id, None)
            logger.info("ui: deleted run %s (%d points) from %s", run_id, deleted, self.path)
            return deleted


# --- JSON Lines logs ------------------------------------------------------------------------


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
                    from ..viz.run_data import newest_log

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

    def table(self, run_id: str, name: str, offset: int, limit: int, query: str, version: int) -> dict[str, Any]:
        return table_page(self._data(self._file(run_id))[0], name, offset, limit, query, version)

    def delete(self, run_id: str) -> int:
        self._file(run_id)
        raise NotDeletable("runs read from JSONL files cannot be deleted here; delete the file")


# --- InfluxDB -------------------------------------------------------------------------------

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
        from ..viz.run_data import InfluxReader

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

    def table(self, run_id: str, name: str, offset: int, limit: int, query: str, version: int) -> dict[str, Any]:
        return table_page(self._cached(run_id, 0.5).data, name, offset, limit, query, version)

    def delete(self, run_id: str) -> int:
        self._cached(run_id, INFLUX_LIST_TTL_S)
        raise NotDeletable("runs read from InfluxDB are read only here")


__all__ = [
    "InfluxSource",
    "JsonlSource",
    "NotDeletable",
    "RunSource",
    "SourceError",
    "StoreSource",
    "UnknownRun",
    "display_name",
    "headline",
    "series_of",
    "table_list",
    "table_page",
]
