"""Templar's value rules as pure functions: what a logged Python value becomes in InfluxDB.

Templar's table (``process_value``): int stays int, float stays float, a list of ints becomes
its ``str()``, a list of numbers becomes ``<field>_mean/_min/_max/_median``, an empty list
becomes 0.0, str stays, None becomes 0.0, anything else becomes ``str()``.

Beyond Templar: bool becomes int 0/1 (bool is an int there too), numpy/torch scalars become
numbers, NaN and +-inf are dropped (InfluxDB cannot store them), ints beyond int64 become
floats, and tuples are treated as lists.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from ..config.secrets import looks_secret

#: A value InfluxDB can store (bool never appears: it becomes int).
FieldValue = int | float | str

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Callback for a value that had to be dropped or changed: (cause, field, detail).
IssueSink = Callable[[str, str, str], None]


def _ignore_issue(cause: str, field: str, detail: str) -> None:
    return None


def coerce_scalar(v: Any) -> Any:
    """Turn numpy/torch scalars and other number-likes into plain Python numbers.

    Anything that is not number-like is returned unchanged.
    """
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    item = getattr(v, "item", None)
    if item is not None:
        try:
            inner = item()
        except Exception:  # an array with more than one element, a broken __array__
            inner = v
        else:
            if inner is not v and isinstance(inner, (bool, int, float, str)):
                return inner
    if hasattr(v, "__index__"):
        try:
            return v.__index__()
        except Exception:
            pass
    if hasattr(v, "__float__") and not isinstance(v, (bytes, bytearray)):
        try:
            return float(v)
        except Exception:
            pass
    return v


def _list_value(v: list[Any] | tuple[Any, ...]) -> FieldValue | dict[str, float]:
    if not v:
        return 0.0
    if all(isinstance(i, int) for i in v):  # bool included, as in Templar
        return str(v)
    items = [coerce_scalar(i) for i in v]
    if all(isinstance(i, int) for i in items):  # numpy/torch ints: plain ints in the string
        return str([int(i) for i in items])
    if not all(isinstance(i, (int, float)) for i in items):
        return str(v)
    finite = [float(i) for i in items if math.isfinite(i)]
    if not finite:
        return {"mean": math.nan, "min": math.nan, "max": math.nan, "median": math.nan}
    return {
        "mean": float(statistics.fmean(finite)),
        "min": min(finite),
        "max": max(finite),
        "median": float(statistics.median(finite)),
    }


def process_value(v: Any) -> FieldValue | dict[str, float]:
    """Templar's value rule for one field value.

    Returns a storable value, or a dict of stats for a list of numbers (the caller expands it
    into ``<field>_<stat>`` fields). Never raises.
    """
    t = type(v)
    if t is float or t is int or t is str:
        return v  # type: ignore[no-any-return]
    if v is None:
        return 0.0
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (list, tuple)):
        try:
            return _list_value(v)
        except Exception:
            return _safe_str(v)
    if getattr(v, "ndim", 0) and callable(getattr(v, "tolist", None)):  # numpy arrays, torch tensors
        try:
            items = v.tolist()
        except Exception:
            items = None
        if isinstance(items, list):
            return process_value(items)
    scalar = coerce_scalar(v)
    if scalar is not v:
        return process_value(scalar)
    return _safe_str(v)


def key_text(key: Any) -> str:
    """A key that is not a plain str as its name: a str subclass (a ``(str, Enum)`` member) is
    the text it equals, as a dict holds it (``str()`` of it would be ``F.LOSS``, and a key equal
    to ``"loss"`` would be stored under either name depending on which came first); anything
    else is ``str()`` of it."""
    return str.__str__(key) if isinstance(key, str) else _safe_str(key)


def _safe_str(v: Any) -> str:
    try:
        return str(v)
    except Exception:
        return f"<unprintable {type(v).__name__}>"


def check_field_value(key: str, v: FieldValue, issue: IssueSink = _ignore_issue) -> FieldValue | None:
    """Make a processed value storable: drop non-finite floats, widen ints beyond int64."""
    if type(v) is float:
        if math.isfinite(v):
            return v
        issue("non_finite", key, f"{v!r} cannot be stored in InfluxDB; field dropped")
        return None
    if type(v) is int and not INT64_MIN <= v <= INT64_MAX:
        issue("int_overflow", key, "integer outside int64; written as float")
        return float(v)
    return v


def process_fields(fields: Mapping[Any, Any], issue: IssueSink = _ignore_issue) -> dict[str, FieldValue]:
    """Apply the value rules to a whole fields dict (lists expand into stats fields)."""
    out: dict[str, FieldValue] = {}
    isfinite = math.isfinite
    made = False  # a name was made here (a list's stats, a key's text): it may meet another one
    for key, raw in fields.items():
        if type(key) is not str:
            key, made = key_text(key), True
        if made and key in out:
            key = free_name(out, key, issue)
        kind = type(raw)
        if kind is float and isfinite(raw):  # the common cases, without the general path's calls
            out[key] = raw
            continue
        if (kind is int and INT64_MIN <= raw <= INT64_MAX) or kind is str:
            out[key] = raw
            continue
        value = process_value(raw)
        if type(value) is dict:
            made = True
            for stat, stat_value in value.items():
                name = f"{key}_{stat}"
                if name in out:
                    name = free_name(out, name, issue)
                checked = check_field_value(name, stat_value, issue)
                if checked is not None:
                    out[name] = checked
            continue
        checked = check_field_value(key, value, issue)  # type: ignore[arg-type]
        if checked is not None:
            out[key] = checked
    return out


def free_name(taken: Mapping[str, Any], name: str, issue: IssueSink) -> str:
    """Two values that would share a name: the later one gets ``_2`` (``_3``, ...), with a
    warning, instead of silently replacing the first."""
    n = 2
    while f"{name}_{n}" in taken:
        n += 1
    renamed = f"{name}_{n}"
    issue("name_collision", name, f"{name!r} already names another value; this one is stored as {renamed!r}")
    return renamed


#: Types whose values cannot change after log() returns: queued as they are.
IMMUTABLE_TYPES = frozenset({float, int, str, bool, type(None)})


def frozen_tags(tags: dict[Any, Any]) -> dict[Any, Any]:
    """Tag values as they are now: anything mutable becomes its text in the call (a copy)."""
    return {k: v if type(v) in IMMUTABLE_TYPES else tag_value(v) for k, v in tags.items()}


def tag_value(v: Any) -> str:
    """A tag value as Templar writes it: ``str(v)``; None becomes empty (left out)."""
    if type(v) is str:
        return v
    if type(v) is int:
        return str(v)
    if v is None:
        return ""
    return _safe_str(coerce_scalar(v))


def config_tags(config: Any, select: Any = None) -> dict[str, str]:
    """``config_<key>`` tags for the public scalar attributes of a config object.

    Works for argparse Namespaces, bittensor Configs, dataclasses and plain dicts. An attribute
    whose name looks secret (``looks_secret``: token, password, api_key, ...) never becomes a
    tag, nor one that is not a scalar. ``select`` (``MetricsLogger(config_tags=...)``) narrows
    the rest: a collection of names (only those), or ``{"allow": [...], "deny": [...]}``; a
    name allowed by name is kept even if it looks secret (``key_size``).
    """
    if config is None:
        return {}
    try:
        items = config.items() if isinstance(config, dict) else vars(config).items()
    except TypeError:
        return {}
    allow, deny = _selection(select)
    tags: dict[str, str] = {}
    for key, value in items:
        if not isinstance(key, str) or key.startswith("_") or value is None or key in deny:
            continue
        if allow is not None:
            if key not in allow:
                continue
        elif looks_secret(key):
            continue
        if isinstance(value, (str, int, float, bool)):
            # A lone surrogate (argv's undecodable bytes, say) becomes "?", as a sink would send it.
            text = str(value).encode("utf-8", "replace").decode()
            if text:
                tags[f"config_{key}".encode("utf-8", "replace").decode()] = text
    return tags


def _selection(select: Any) -> tuple[frozenset[str] | None, frozenset[str]]:
    """(allowed names or None for all, denied names) from ``config_tags=``."""
    if select is None:
        return None, frozenset()
    if isinstance(select, dict):
        unknown = set(select) - {"allow", "deny"}
        if unknown:
            raise ValueError(f"config_tags: unknown keys {sorted(unknown)}; use 'allow' and 'deny'")
        allow = select.get("allow")
        return (None if allow is None else frozenset(allow)), frozenset(select.get("deny") or ())
    if isinstance(select, str):
        raise ValueError("config_tags: a collection of attribute names, or {'allow': [...], 'deny': [...]}")
    return frozenset(select), frozenset()
