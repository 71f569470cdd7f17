"""How the LogStore facade's calls look as points, both ways: what it logs and how sinks and
readers (JSONL, TensorBoard, W&B, plots) recognize it again.

====================  ==============  ======================  ====================================
call                  measurement     tags                    fields
====================  ==============  ======================  ====================================
log_metrics/scalar    ``metrics``     ``split``               ``step`` (int) + one float per metric
log_hyperparams       ``hyperparams`` (none)                  each value (nested ones as JSON
                                                              text) + ``hyperparams_json`` (all)
log_artifact          ``artifacts``   ``name``, ``kind``      ``path``
log_table             ``table``       ``table``, ``row``      the row's columns (+ ``step``)
====================  ==============  ======================  ====================================

Every point also carries the logger's standard tags (runtime_id, role, ..., config_*); a
logger ``prefix`` is prepended to the measurement, and readers strip it again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from .points import Point

METRICS = "metrics"
HYPERPARAMS = "hyperparams"
ARTIFACTS = "artifacts"
TABLE = "table"
HYPERPARAMS_JSON = "hyperparams_json"
STEP = "step"
SPLIT = "split"

#: The measurements LogStore writes (a point of any other is read by its name).
LOG_STORE_MEASUREMENTS = frozenset((METRICS, HYPERPARAMS, TABLE, ARTIFACTS))

#: Names a point's x position may have, most specific first.
STEP_KEYS = ("step", "global_step")
WINDOW_KEYS = ("window", "sync_window", "current_window")


def base_measurement(point: Point) -> str:
    """The measurement without the logger's prefix (the ``prefix`` tag says what it was)."""
    prefix = point.tags.get("prefix", "")
    if prefix and point.measurement.startswith(prefix):
        return point.measurement[len(prefix) :]
    return point.measurement


class MetricsRow(NamedTuple):
    step: int | None
    split: str
    metrics: dict[str, Any]


class TableRow(NamedTuple):
    table: str
    row: int
    step: int | None
    values: dict[str, Any]


def as_metrics(point: Point) -> MetricsRow | None:
    """A log_metrics/log_scalar point, or None."""
    if SPLIT not in point.tags or base_measurement(point) != METRICS:
        return None
    metrics = dict(point.fields)
    step = as_int(metrics.pop(STEP, None))
    return MetricsRow(step, point.tags[SPLIT], metrics)


def metric_name(split: str, key: str) -> str:
    """A metric's name within its split: ``loss`` for ``loss``, and for a key that already
    carries its split (``train/loss`` in split ``train``), so the split is never shown twice."""
    prefix = f"{split}/"
    return key[len(prefix) :] if key.startswith(prefix) and len(key) > len(prefix) else key


def split_key(split: str, key: str, sep: str = "/") -> str:
    """``<split><sep><metric>``: a TensorBoard tag or W&B key (``/``), a plot name (``.``)."""
    return f"{split}{sep}{metric_name(split, key)}"


def as_hyperparams(point: Point) -> dict[str, Any] | None:
    """The merged hyperparams a log_hyperparams point carries, or None."""
    if base_measurement(point) != HYPERPARAMS:
        return None
    text = point.fields.get(HYPERPARAMS_JSON)
    if isinstance(text, str):
        try:
            merged = json.loads(text)
        except ValueError:
            merged = None
        if isinstance(merged, dict):
            return merged
    return {k: v for k, v in point.fields.items() if k != HYPERPARAMS_JSON}


def as_artifact(point: Point) -> dict[str, Any] | None:
    """{name, path, kind} of a log_artifact point, or None."""
    if base_measurement(point) != ARTIFACTS or "name" not in point.tags:
        return None
    return {"name": point.tags["name"], "path": point.fields.get("path", ""), "kind": point.tags.get("kind", "file")}


def as_table_row(point: Point) -> TableRow | None:
    if base_measurement(point) != TABLE or "table" not in point.tags:
        return None
    values = dict(point.fields)
    step = as_int(values.pop(STEP, None))
    row = as_int(point.tags.get("row"))
    return TableRow(point.tags["table"], -1 if row is None else row, step, values)


def as_int(value: Any) -> int | None:
    """An int from a field or tag value (``"12"``, ``12``, ``12.0``), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def first_int(keys: tuple[str, ...], *sources: Mapping[str, Any]) -> int | None:
    for key in keys:
        for source in sources:
            if key in source:
                value = as_int(source[key])
                if value is not None:
                    return value
    return None


def json_safe(value: Any) -> tuple[Any, bool]:
    """A JSON-serializable copy of a hyperparam value, and whether it had to be changed."""
    try:
        json.dumps(value, allow_nan=False)
        return value, False
    except (TypeError, ValueError):
        pass
    from .values import coerce_scalar

    scalar = coerce_scalar(value)  # numpy/torch numbers
    if isinstance(scalar, (bool, int, str)) or (isinstance(scalar, float) and math.isfinite(scalar)):
        return scalar, scalar is not value and type(scalar) is not type(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        changed = False
        for k, v in value.items():
            out[str(k)], c = json_safe(v)
            changed = changed or c or not isinstance(k, str)
        return out, changed
    if isinstance(value, (list, tuple)):
        items = [json_safe(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items) or isinstance(value, tuple)
    return str(value), True


def hyperparams_fields(merged: Mapping[str, Any]) -> dict[str, Any]:
    """Fields of a hyperparams point: scalars as they are, the rest as JSON text, and the whole."""
    fields: dict[str, Any] = {}
    for key, value in merged.items():
        if value is None:
            continue
        if isinstance(value, (bool, int, float, str)):
            fields[key] = value
        else:
            fields[key] = json.dumps(value, sort_keys=True)
    fields[HYPERPARAMS_JSON] = json.dumps(dict(merged), sort_keys=True)
    return fields


__all__ = [
    "ARTIFACTS",
    "HYPERPARAMS",
    "HYPERPARAMS_JSON",
    "METRICS",
    "MetricsRow",
    "SPLIT",
    "STEP",
    "STEP_KEYS",
    "TABLE",
    "TableRow",
    "WINDOW_KEYS",
    "as_artifact",
    "as_hyperparams",
    "as_int",
    "as_metrics",
    "as_table_row",
    "base_measurement",
    "first_int",
    "hyperparams_fields",
    "json_safe",
    "metric_name",
    "split_key",
]
