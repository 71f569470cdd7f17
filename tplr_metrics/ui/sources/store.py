"""The UI's runs from the local store; a run id is a logger's runtime_id (all its rows together).

A store run is read once and then only its new rows (``points_after``) on each poll, so a live
chart polled every second costs what arrived since the last poll, not the whole run. Runs are
the only thing the UI can delete.

A large run (more than ``PREVIEW_ABOVE`` points) is not read in the request: the request gets a
preview (``Store.sample_points``: every point of its small measurements, an even sample of the
large ones) while one background thread reads the run whole; answers from the preview say so
(``progress``), and the page keeps polling until the whole run is drawn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...commands._store_cli import is_live
from ...sinks.base import default_run_name
from ...store.database import RunRow, Store, StoreError
from ...viz.run_data import RunData
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

logger = logging.getLogger("tplr_metrics")


#: A run with more points than this is drawn from a preview first (read whole in the background).
PREVIEW_ABOVE = 200_000
#: Points of each large measurement the preview holds (two per pixel of a wide chart).
PREVIEW_SAMPLES = 4_000
_PAGE = 10_000
#: Rows one request reads of a run's new points at most: a run logging faster than that is
#: caught up over the next polls (answers say ``partial``), so that no request holds the
#: source for long (a run growing 157k -> 600k during one request held it 19.8 s: every
#: other request, /api/runs included, waited).
TOP_UP_ROWS = 3 * _PAGE


@dataclass
class _CachedRun:
    data: RunData
    last_id: int
    #: Set while ``data`` is a preview: (points read so far, points the run held at the start).
    reading: tuple[int, int] | None = None
    #: Set while a run that grows faster than one request reads is behind: (held, in the store).
    behind: tuple[int, int] | None = None


def _name_of(row: RunRow, config: dict[str, Any]) -> str:
    """The run's ``run_name`` as the store keeps it (what ``tplr-metrics runs`` shows), unless it
    is only the default (role/uid), which a ``name``/``run_name`` config tag then overrides."""
    default = default_run_name(row.role, row.uid, row.run_id)
    if row.name and row.name != default:
        return row.name
    return display_name(config, row.role, row.uid, row.run_id[:8])


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
        self._stop = threading.Event()
        self._readers: list[threading.Thread] = []
        self._one_reader = threading.Semaphore(1)  # large runs are read one at a time

    def describe(self) -> str:
        return f"store {self.path}"

    def close(self) -> None:
        self._stop.set()
        for reader in self._readers:
            reader.join(5.0)
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
            "name": _name_of(first, config),
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
        """The run's points, topped up with the rows written since the last call (or its
        preview while a large run is being read whole)."""
        with self._lock:
            store = self._existing()
            try:
                rows = self._rows(store, run_id)
                ids = [r.id for r in rows]
                cached = self._cache.get(run_id)
                if cached is None:
                    cached = self._first_read(store, run_id, ids)
                    self._cache[run_id] = cached
                cached.data.config = _config_of(rows)
                if cached.reading is None:
                    self._top_up(store, cached, ids)
                trim_cache(self._cache, run_id, self.max_cached_points, lambda c: points_held(c.data))
                return cached.data
            except StoreError as exc:
                raise SourceError(f"local store {exc}") from None

    def _first_read(self, store: Store, run_id: str, ids: list[int]) -> _CachedRun:
        held = store.count_points_upto(ids, PREVIEW_ABOVE + 1)
        if held <= PREVIEW_ABOVE:
            return _CachedRun(RunData(run_id[:8], f"run {run_id}"), 0)
        preview = RunData(run_id[:8], f"run {run_id} (preview)")
        for point, order in store.sample_points(ids, PREVIEW_SAMPLES):
            preview.add_point(point.to_point(), order)
        cached = _CachedRun(preview, 0, reading=(0, sum(store.point_counts(ids).values())))
        reader = threading.Thread(
            target=self._read_whole, args=(run_id, ids, cached), name="tplr-metrics-ui-reader", daemon=True
        )
        self._readers = [r for r in self._readers if r.is_alive()] + [reader]
        reader.start()
        return cached

    @staticmethod
    def _top_up(store: Store, cached: _CachedRun, ids: list[int]) -> None:
        read = 0
        while read < TOP_UP_ROWS:
            batch = store.points_after(cached.last_id, ids, limit=_PAGE)
            for point in batch:
                cached.data.add_point(point.to_point())
            if batch:
                cached.last_id = batch[-1].id
            read += len(batch)
            if len(batch) < _PAGE:
                cached.behind = None
                return
        held = sum(store.point_counts(ids).values())
        cached.behind = (held - store.count_points_after(cached.last_id, ids), held)

    def _read_whole(self, run_id: str, ids: list[int], cached: _CachedRun) -> None:
        """A large run, read whole on a connection of its own, then put in its preview's place
        (unless the run was deleted, or dropped from the cache, meanwhile)."""
        with self._one_reader:
            whole = _CachedRun(RunData(run_id[:8], f"run {run_id}"), 0)
            read, total = 0, cached.reading[1] if cached.reading else 0
            try:
                store = Store(self.path, create=False)
            except StoreError as exc:
                self._forget(run_id, cached, exc)
                return
            try:
                while not self._stop.is_set():
                    batch = store.points_after(whole.last_id, ids, limit=_PAGE)
                    for point in batch:
                        whole.data.add_point(point.to_point())
                    if batch:
                        whole.last_id = batch[-1].id
                    read += len(batch)
                    cached.reading = (read, total)
                    if len(batch) < _PAGE:
                        break
                    time.sleep(0)  # let the requests in between pages
                else:
                    return
            except StoreError as exc:
                self._forget(run_id, cached, exc)
                return
            finally:
                store.close()
            with self._lock:
                if self._cache.get(run_id) is cached:
                    cached.data, cached.last_id, cached.reading = whole.data, whole.last_id, None

    def _forget(self, run_id: str, cached: _CachedRun, exc: StoreError) -> None:
        """A large run could not be read whole: drop its preview, so the next request tries again."""
        logger.warning("ui: cannot read run %s: %s", run_id, exc)
        with self._lock:
            if self._cache.get(run_id) is cached:
                del self._cache[run_id]

    def progress(self, run_id: str) -> dict[str, int] | None:
        """While a large run is read whole: how far (its answers come from a preview)."""
        with self._lock:
            cached = self._cache.get(run_id)
            if cached is None or (cached.reading or cached.behind) is None:
                return None
            read, of = cached.reading or cached.behind or (0, 0)
            return {"read": read, "of": of}

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        return metric_list(self._data(run_id))

    def series(
        self, run_id: str, metric: str, x: str, max_points: int, smoothing: str | None, window: int
    ) -> dict[str, Any]:
        return series_of(self._data(run_id), metric, x, max_points, smoothing, window)

    def tables(self, run_id: str) -> list[dict[str, Any]]:
        return table_list(self._data(run_id))

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return artifact_list(self._data(run_id))

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


__all__ = ["StoreSource"]
