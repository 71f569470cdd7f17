"""Grafana's expansion of InfluxDB queries, reproduced for tests that run panel queries themselves.

What Grafana does before a query reaches InfluxDB: ``$__interval`` from the time range and the
panel's width (kbn.calculateInterval / roundInterval), ``$timeFilter`` for InfluxQL, the Flux
macros ``v.timeRangeStart`` ... (pkg/tsdb/influxdb/flux/macros.go), and template variables:
``${name:regex}`` and ``$name`` become a regex-escaped value or ``(a|b)`` alternation, a
custom "All" value (``.*``) is inserted unformatted, and ``${name:raw}`` is the value as it is
(a custom variable whose values are regexes).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence

ALL = "$__all"
_INTERVAL_STEPS = [
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (210000, 120000), (450000, 300000), (1050000, 600000), (2100000, 1200000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
]  # fmt: skip


def round_interval(ms: float) -> int:
    for limit, value in _INTERVAL_STEPS:
        if ms < limit:
            return value
    return 31536000000


def interval_ms(from_ms: int, to_ms: int, max_data_points: int = 900, min_interval_ms: int = 1) -> int:
    """kbn.calculateInterval: (range / points), not below the minimum, rounded to a nice step."""
    return round_interval(max((to_ms - from_ms) / max_data_points, min_interval_ms))


def interval_text(ms: int) -> str:
    """kbn.secondsToHms for InfluxQL (``200ms``, ``1s``, ``5m``)."""
    for unit, size in (
        ("y", 31536000000),
        ("w", 604800000),
        ("d", 86400000),
        ("h", 3600000),
        ("m", 60000),
        ("s", 1000),
    ):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def go_duration(ms: int) -> str:
    """Go's time.Duration.String(), which Grafana writes for v.windowPeriod (``1m0s``, ``200ms``)."""
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3600000)
    minutes, rest = divmod(rest, 60000)
    seconds = rest / 1000
    text = f"{seconds:g}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


def regex_escape(value: str) -> str:
    return re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", value)


def format_variable(values: Sequence[str] | str, all_value: str) -> str:
    if values == ALL or (not isinstance(values, str) and list(values) == [ALL]):
        return all_value  # a custom all value is not formatted
    if isinstance(values, str):
        values = [values]
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand_variables(text: str, variables: Mapping[str, Sequence[str] | str], all_value: str = ".*") -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        fmt = match.group(2)
        if name not in variables:
            return match.group(0)  # a macro or a legend token, not a variable
        if fmt not in (None, "regex", "raw"):
            raise ValueError(f"format {fmt!r} of ${name} is not emulated")
        value = variables[name]
        if fmt == "raw":
            return value if isinstance(value, str) else ",".join(value)
        return format_variable(value, all_value)

    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)", replace, text)


def expand_influxql(
    text: str, variables: Mapping[str, Sequence[str] | str], from_ms: int, to_ms: int, interval: int
) -> str:
    text = text.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    text = text.replace("${__from}", str(from_ms)).replace("${__to}", str(to_ms))  # global variables: epoch ms
    text = text.replace("$__interval_ms", str(interval)).replace("$__interval", interval_text(interval))
    return expand_variables(text, variables)


def _rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand_flux(
    text: str,
    variables: Mapping[str, Sequence[str] | str],
    from_ms: int,
    to_ms: int,
    interval: int,
    bucket: str,
    org: str = "",
) -> str:
    text = expand_variables(text, variables)
    text = text.replace("v.timeRangeStart", _rfc3339(from_ms)).replace("v.timeRangeStop", _rfc3339(to_ms))
    text = text.replace("v.windowPeriod", go_duration(interval))
    return text.replace("v.defaultBucket", f'"{bucket}"').replace("v.organization", f'"{org}"')
