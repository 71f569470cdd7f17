"""What every UI source shares: the interface the routes read, its errors, and how a run's
points become the pages' answers (metric lists, LTTB-cut series, table pages).

Each source turns points into :class:`~tplr_metrics.viz.run_data.RunData`, so a metric is named
and smoothed here exactly as ``tplr-metrics plot`` names and smooths it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Protocol

from ...commands.table import columns_of, versions
from ...viz.plotting import SMOOTHERS, X_KEYS, smooth, xy
from ...viz.run_data import RunData
from ..downsample import lttb_indices

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
    def artifacts(self, run_id: str) -> list[dict[str, Any]]: ...
    def table(self, run_id: str, name: str, offset: int, limit: int, query: str, version: int) -> dict[str, Any]: ...
    def delete(self, run_id: str) -> int: ...
    def progress(self, run_id: str) -> dict[str, int] | None:
        """``{"read": n, "of": total}`` while the run's answers come from a preview, else None."""
        ...


# --- shared by every source -----------------------------------------------------------------


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


def artifact_list(data: RunData) -> list[dict[str, Any]]:
    """The run's artifacts (LogStore.log_artifact), the latest record of each name, by name."""
    latest = {a["name"]: a for a in data.artifacts}
    return [latest[name] for name in sorted(latest)]


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


__all__ = [
    "MAX_CACHED_POINTS",
    "NotDeletable",
    "RunSource",
    "SourceError",
    "UnknownRun",
    "artifact_list",
    "display_name",
    "headline",
    "metric_list",
    "points_held",
    "series_of",
    "table_list",
    "table_page",
    "trim_cache",
]
