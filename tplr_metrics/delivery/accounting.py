"""What ``stats()`` and ``accounting()`` say: the pipeline's and each lane's counters, summed.

Per lane the books balance exactly once the logger is closed::

    logged + adopted == written + rejected + dropped + spooled

``logged`` counts every ``log()`` call that was not sampled out; ``adopted`` the points picked
up from dead processes' spools; ``dropped`` includes what was lost before the lanes (a full
queue, a point with nothing storable), which every lane counts as its own loss; ``spooled`` is
what waits on disk for the next process. While the logger runs, points on their way (queued,
in a batch, in a request) make up the difference: ``in_flight``.

With several destinations the top-level figures add the lanes up, so each logged point counts
once per lane there: ``logged × lanes + adopted == written + rejected + dropped + spooled``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .stats import PipelineStats

_SUMMED = (
    "written",
    "dropped_maybe_stored",
    "retried",
    "spooled",
    "spooled_total",
    "replayed",
    "adopted",
    "batches",
    "bytes_sent",
    "wal_failed",
)


def merge_snapshot(pipeline: Pipeline, stats: PipelineStats) -> dict[str, Any]:
    """``MetricsLogger.stats()``: today's totals, plus ``lanes`` with each destination's own."""
    lanes = pipeline.lane_snapshots()
    shared = stats.snapshot(pipeline.queue_depth())
    out: dict[str, Any] = {
        "logged": pipeline.logged(),
        "sampled_out": pipeline.sampled_out(),
    }
    for key in _SUMMED:
        out[key] = sum(lane.get(key, 0) for lane in lanes.values())
    dropped: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for lane in lanes.values():
        for reason, n in lane["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
        for reason, n in lane["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + n
    if not lanes:
        dropped = dict(shared["dropped"])
    out["dropped"] = dropped
    out["dropped_total"] = sum(dropped.values())
    out["rejected"] = rejected
    out["rejected_total"] = sum(rejected.values())
    sanitized = dict(shared["sanitized"])
    for lane in lanes.values():  # what a destination had to change for its server (VictoriaMetrics)
        for cause, n in lane.get("sanitized", {}).items():
            sanitized[cause] = sanitized.get(cause, 0) + n
    out["sanitized"] = sanitized
    out["queue_depth"] = pipeline.queue_depth()
    out["write_seconds_total"] = round(sum(lane["write_seconds_total"] for lane in lanes.values()), 6)
    out["last_write_seconds"] = max((lane["last_write_seconds"] for lane in lanes.values()), default=0.0)
    errors = [lane["last_error"] for lane in lanes.values() if lane["last_error"]]
    out["last_error"] = errors[0] if errors else shared["last_error"]
    out["lanes"] = lanes
    return out


def _terms(figures: dict[str, Any]) -> tuple[dict[str, Any], int]:
    terms = {
        "logged": figures["logged"],
        "adopted": figures["adopted"],
        "written": figures["written"],
        "rejected": figures["rejected_total"],
        "dropped": figures["dropped_total"],
        "spooled": figures["spooled"],
    }
    settled = terms["written"] + terms["rejected"] + terms["dropped"] + terms["spooled"]
    return terms, settled


def accounting_of(pipeline: Pipeline, stats: PipelineStats) -> dict[str, Any]:
    """The terms of the invariant, per lane and in total, and whether they add up."""
    snapshot = merge_snapshot(pipeline, stats)
    lanes: dict[str, Any] = {}
    for name, figures in snapshot["lanes"].items():
        terms, settled = _terms(figures)
        terms["in_flight"] = terms["logged"] + terms["adopted"] - settled
        terms["balanced"] = terms["in_flight"] == 0
        lanes[name] = terms
    total, settled = _terms(snapshot)
    n = max(1, len(lanes))
    total["lanes"] = len(lanes)
    total["in_flight"] = total["logged"] * n + total["adopted"] - settled
    total["balanced"] = total["in_flight"] == 0 and all(lane["balanced"] for lane in lanes.values())
    return {**total, "closed": pipeline.closed, "per_lane": lanes}
