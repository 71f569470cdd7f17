"""Grafana alert rules generated from code: Grafana unified-alerting provisioning files.

Each rule is one InfluxQL query (``$timeFilter`` and ``$__interval`` only: alert rules have no
dashboard variables), reduced per series to its last value and compared with a threshold, as
Grafana's *reduce* and *threshold* expressions do. One series per uid (or per node) makes each
rule multi-dimensional: it fires for the miner, validator or host concerned, with its tags as
labels. Thresholds are the fields of :class:`AlertParams`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..catalog import HEALTH_MEASUREMENT, measurement
from .influxql import ident

#: The InfluxQL data source the local stack provisions (builder.DATASOURCES["influxql"]).
DATASOURCE_UID = "tplr-influxql"
FOLDER = "tplr-metrics"
GROUP = "tplr-metrics"

MINER_STEP = measurement("miner", "training_step_v2")
V_WINDOW = measurement("validator", "validator_window_v2")
HEALTH_SOURCE = f"/{HEALTH_MEASUREMENT}$/"
#: Any measurement: the NVML fields are on the background ``system`` points (off by default) and
#: on every point logged ``with_gpu_metrics=True`` (Templar's way).
GPU_SOURCE = "/.*/"

OPS = {"gt": lambda v, t: v > t, "lt": lambda v, t: v < t}


@dataclass(frozen=True)
class AlertParams:
    """The thresholds of the generated rules; every field has a documented default."""

    #: Wall time of one training window (Templar: 7 blocks of 12 s).
    window_seconds: float = 84.0
    #: A miner that logged no ``training_step_v2`` point for this many windows is silent.
    silent_windows: int = 3
    #: A validator whose ``current_block`` did not advance for this many windows is stuck.
    stuck_windows: int = 3
    #: How far back a miner or validator must have been seen to be reported silent or stuck.
    lookback_windows: int = 30
    #: The last loss over the lowest of ``loss_windows`` windows above this factor is a jump.
    loss_jump_factor: float = 2.0
    loss_windows: int = 10
    #: Mean gather success rate (percent) over ``gather_windows`` windows below this floor.
    gather_floor_percent: float = 50.0
    gather_windows: int = 5
    #: Range over which a rise of dropped, rejected or spooled points fires.
    pipeline_range_s: int = 300
    #: GPU memory in use by every process (NVML), percent of the device's memory.
    gpu_memory_percent: float = 97.0
    gpu_range_s: int = 120
    #: How long a condition must hold before the rule fires (Grafana's ``for``).
    pending: str = "0s"


@dataclass(frozen=True)
class AlertRule:
    uid: str
    title: str
    query: str
    #: Seconds of data the query looks at, ending now.
    range_s: int
    op: str
    threshold: float
    summary: str
    runbook: str
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The query has GROUP BY time($__interval) at this many milliseconds (else: one row per series).
    interval_ms: int = 0
    for_: str = "0s"
    #: What a rule with no series at all means: quiet (OK), or the rule's fault (Alerting).
    no_data: str = "OK"

    def fires(self, value: float | None) -> bool:
        """Grafana's threshold on a reduced value; a null or non-numeric value does not fire."""
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return bool(OPS[self.op](value, self.threshold))


def _interval(seconds: float) -> str:
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _windows(params: AlertParams, n: int) -> int:
    return max(1, math.ceil(params.window_seconds * n))


def alert_rules(params: AlertParams | None = None) -> list[AlertRule]:
    p = params or AlertParams()
    window = _interval(p.window_seconds)
    window_ms = max(1, round(p.window_seconds * 1000))
    lookback = _windows(p, p.lookback_windows)
    uid, role = ident("uid"), ident("role")
    netuid = ident("config_netuid")  # uid 0 of one subnet must not hide uid 0 of another
    return [
        AlertRule(
            uid="tplr-miner-silent",
            title="Miner silent",
            query=(
                # n_gather_peers: an int, so a miner whose loss went NaN is not silent. One bucket
                # more than silent_windows: the last one is partial, so the rule fires after
                # between silent_windows and silent_windows + 1 windows of silence.
                f'SELECT moving_average(count({ident("n_gather_peers")}), {p.silent_windows + 1}) AS "points" '
                f"FROM {ident(MINER_STEP)} WHERE $timeFilter GROUP BY time({window}), {uid}, {netuid} fill(0)"
            ),
            range_s=lookback,
            op="lt",
            threshold=1e-9,
            interval_ms=window_ms,
            summary=f"Miner {{{{ $labels.uid }}}} logged no {MINER_STEP} point for {p.silent_windows} windows",
            runbook="Check the miner's process and logs (crashed, stuck in gather, out of memory), and its "
            "tplr_metrics_health (dropping or spooling); a miner not seen for the whole lookback is no longer "
            "reported.",
            labels={"severity": "critical", "role": "miner", "team": "templar"},
        ),
        AlertRule(
            uid="tplr-validator-window-stuck",
            title="Validator window not advancing",
            query=(
                f'SELECT moving_average("advance", {p.stuck_windows}) AS "advance" FROM '
                f'(SELECT difference(max({ident("current_block")})) AS "advance" FROM {ident(V_WINDOW)} '
                f"WHERE $timeFilter GROUP BY time({window}), {uid}, {netuid} fill(previous)) GROUP BY {uid}, {netuid}"
            ),
            range_s=lookback,
            op="lt",
            threshold=1e-9,
            interval_ms=window_ms,
            summary=f"Validator {{{{ $labels.uid }}}}'s window (current_block) has not advanced for "
            f"{p.stuck_windows} windows",
            runbook="The validator is stuck or silent: check its process, chain connection and logs; a "
            "validator repeating one window logs the same current_block.",
            labels={"severity": "critical", "role": "validator", "team": "templar"},
        ),
        AlertRule(
            uid="tplr-loss-not-finite",
            title="Loss not finite",
            query=(
                # Per window, with fill(0): count(loss) of a range with no finite loss at all is
                # null, not 0, and the difference was null (quiet) for a miner whose loss was all NaN.
                f'SELECT sum("missing_loss") AS "missing_loss" FROM (SELECT count({ident("n_gather_peers")}) - '
                f'count({ident("loss")}) AS "missing_loss" FROM {ident(MINER_STEP)} WHERE $timeFilter '
                f"GROUP BY time({window}), {uid}, {netuid} fill(0)) GROUP BY {uid}, {netuid}"
            ),
            range_s=_windows(p, p.loss_windows),
            op="gt",
            threshold=0,
            interval_ms=window_ms,
            summary="Miner {{ $labels.uid }} logged windows without a finite loss (NaN or inf, dropped by the logger)",
            runbook="The loss diverged: look at the learning rate, the last gathered gradients and the "
            "checkpoint; the logger drops NaN/inf fields, so the point has no loss field.",
            labels={"severity": "critical", "role": "miner", "team": "templar"},
        ),
        AlertRule(
            uid="tplr-loss-jump",
            title="Loss jumping",
            query=(
                # The last loss over the lowest: a loss falling fast (early training) is not a jump.
                f'SELECT last({ident("loss")}) / min({ident("loss")}) AS "factor" '
                f"FROM {ident(MINER_STEP)} WHERE $timeFilter GROUP BY {uid}, {netuid}"
            ),
            range_s=_windows(p, p.loss_windows),
            op="gt",
            threshold=p.loss_jump_factor,
            summary=f"Miner {{{{ $labels.uid }}}}'s loss rose by more than {p.loss_jump_factor:g}x within "
            f"{p.loss_windows} windows",
            runbook="A loss spike: check the gathered peers (a bad gradient), the learning rate schedule and "
            "whether the miner reloaded a checkpoint.",
            labels={"severity": "warning", "role": "miner", "team": "templar"},
        ),
        AlertRule(
            uid="tplr-gather-low",
            title="Gather success rate low",
            query=(
                f'SELECT mean({ident("gather_success_rate")}) AS "gather_success_rate" '
                f"FROM {ident(MINER_STEP)} WHERE $timeFilter GROUP BY {uid}, {netuid}"
            ),
            range_s=_windows(p, p.gather_windows),
            op="lt",
            threshold=p.gather_floor_percent,
            summary=f"Miner {{{{ $labels.uid }}}} gathered under {p.gather_floor_percent:g}% of peers over "
            f"{p.gather_windows} windows",
            runbook="Check the miner's network and bucket access, and whether many peers stopped uploading "
            "(a subnet-wide drop shows on every miner).",
            labels={"severity": "warning", "role": "miner", "team": "templar"},
        ),
        AlertRule(
            uid="tplr-pipeline-losing-points",
            title="Telemetry pipeline dropping, rejecting or spooling",
            query=(
                # lost_since_last: counted since the previous health point, the first one since
                # the logger started (the totals' spread missed a loss before the first point).
                f'SELECT sum({ident("lost_since_last")}) AS "lost" FROM {HEALTH_SOURCE} WHERE $timeFilter '
                f"GROUP BY {role}, {uid}, {ident('runtime_id')}"
            ),
            range_s=p.pipeline_range_s,
            op="gt",
            threshold=0,
            summary="The metrics logger of {{ $labels.role }} {{ $labels.uid }} dropped, rejected or spooled "
            f"points in the last {p.pipeline_range_s} s",
            runbook="Open the Pipeline health dashboard: rejected means a type conflict or bad line (see the "
            "logger's last_error), spooled means the server was unreachable, dropped means the queue was full "
            "or retries ran out.",
            labels={"severity": "warning", "team": "telemetry"},
        ),
        AlertRule(
            uid="tplr-gpu-memory-full",
            title="GPU out of memory",
            query=(
                f'SELECT max({ident("gpu_mem_used_mb")}) / max({ident("gpu_mem_capacity_mb")}) * 100 AS "percent" '
                f"FROM {GPU_SOURCE} WHERE $timeFilter GROUP BY {role}, {uid}, {ident('gpu_id')}"
            ),
            range_s=p.gpu_range_s,
            op="gt",
            threshold=p.gpu_memory_percent,
            summary="GPU {{ $labels.gpu_id }} of {{ $labels.role }} {{ $labels.uid }} is over "
            f"{p.gpu_memory_percent:g}% of its memory",
            runbook="Lower the batch size or micro-batches, look for a leak (GPU memory segments climbing on "
            "the System & GPU dashboard), or another process sharing the GPU.",
            labels={"severity": "critical", "team": "templar"},
        ),
    ]


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def _provisioned(rule: AlertRule, params: AlertParams) -> dict[str, Any]:
    model: dict[str, Any] = {
        "refId": "A",
        "datasource": {"type": "influxdb", "uid": DATASOURCE_UID},
        "query": rule.query,
        "rawQuery": True,
        "resultFormat": "time_series",
        "intervalMs": rule.interval_ms or 1000,
        "maxDataPoints": 43200,
    }
    return {
        "uid": rule.uid,
        "title": rule.title,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": rule.range_s, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": model,
            },
            {
                "refId": "B",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "B",
                    "type": "reduce",
                    "expression": "A",
                    "reducer": "last",
                    "settings": {"mode": "dropNN"},
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                },
            },
            {
                "refId": "C",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": rule.op, "params": [rule.threshold]}}],
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                },
            },
        ],
        "noDataState": rule.no_data,
        "execErrState": "Error",
        "for": params.pending if rule.for_ == "0s" else rule.for_,
        "annotations": {"summary": rule.summary, "runbook": rule.runbook},
        "labels": dict(rule.labels),
        "isPaused": False,
    }


def provisioning(params: AlertParams | None = None) -> dict[str, Any]:
    """The unified-alerting provisioning document (``apiVersion: 1``) holding every rule."""
    p = params or AlertParams()
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": GROUP,
                "folder": FOLDER,
                "interval": _duration(max(10, min(60, math.ceil(p.window_seconds)))),
                "rules": [_provisioned(rule, p) for rule in alert_rules(p)],
            }
        ],
    }


ALERTS_FILE = "tplr-metrics-alerts.json"


def build_alerts(params: AlertParams | None = None) -> dict[str, str]:
    """File name -> JSON text of the alerting provisioning file (Grafana reads JSON or YAML)."""
    return {ALERTS_FILE: json.dumps(provisioning(params), indent=2, sort_keys=True) + "\n"}


def summary_text(rule: AlertRule, labels: Mapping[str, str]) -> str:
    """A rule's summary with ``{{ $labels.x }}`` filled in, as Grafana renders it."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), rule.summary)
