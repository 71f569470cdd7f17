"""Definitions into Flux, for InfluxDB 2.x (and Cloud) through Grafana's Flux data source.

Grafana fills in ``v.timeRangeStart``, ``v.timeRangeStop``, ``v.windowPeriod`` and
``v.defaultBucket``, and the variables (``${uid:regex}``). Every point carries per-window tags
(window, global_step), so each query regroups by the tags it splits on before aggregating.
"""

from __future__ import annotations

import json

from .model import VARIABLE_PARENTS, VARIABLES, VERSION_KIND, Annotation, Query, tag_of

DIALECT = "flux"


def string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Flux string literal


def regex_literal(pattern: str) -> str:
    return "/" + pattern.replace("/", "\\/") + "/"


def tag_value(name: str) -> str:
    # An absent tag reads as "", as in InfluxQL, so "All" (.*) keeps points without it.
    return f'(if exists r.{name} then r.{name} else "")'


def variable_predicate(names: tuple[str, ...] = VARIABLES, version_kind: bool = True) -> str:
    terms = [f"{tag_value(tag_of(name))} =~ /^${{{name}:regex}}$/" for name in names]
    if version_kind:
        terms.append(f"{tag_value('version')} =~ /${{{VERSION_KIND}:raw}}/")
    return " and ".join(terms)


def _columns(names: list[str]) -> str:
    return "[" + ", ".join(string(n) for n in names) + "]"


def _selection(query: Query) -> list[str]:
    if query.regex:
        measurement = f"r._measurement =~ {regex_literal(query.measurement)}"
    else:
        measurement = f"r._measurement == {string(query.measurement)}"
    lines = [
        "from(bucket: v.defaultBucket)",
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        f"  |> filter(fn: (r) => {measurement})",
    ]
    if query.fields:
        fields = " or ".join(f"r._field == {string(f)}" for f in query.fields)
        lines.append(f"  |> filter(fn: (r) => {fields})")
    for tag, value in query.match:
        lines.append(f"  |> filter(fn: (r) => r[{string(tag)}] == {string(value)})")
    lines.append(f"  |> filter(fn: (r) => {variable_predicate()})")
    return lines


def render(query: Query, smooth: int = 0) -> str:
    """The Flux text of a query; ``smooth`` > 0 renders its moving average instead."""
    lines = _selection(query)
    by = list(query.by)
    if query.shape == "events":
        keep = ["_time", *by, *query.fields]
        lines += [
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            "  |> group()",
            f"  |> keep(columns: {_columns(keep)})",
            '  |> sort(columns: ["_time"], desc: true)',
        ]
        return "\n".join(lines)
    if query.shape == "lastseen":
        lines += [
            f"  |> group(columns: {_columns(by)})",
            '  |> max(column: "_time")',  # the newest point, whatever order the merged series are in
            "  |> map(fn: (r) => ({r with age: float(v: int(v: v.timeRangeStop) - int(v: r._time)) / 1000000.0}))",
            "  |> group()",
            f"  |> keep(columns: {_columns(['_time', *by, 'age'])})",
        ]
        return "\n".join(lines)
    if query.shape == "latest" and query.top:
        field = query.fields[0]
        lines += [
            f"  |> group(columns: {_columns(by)})",
            f"  |> {query.aggregate}()",
            "  |> group()",
            f"  |> top(n: {query.top})",
            f"  |> rename(columns: {{_value: {string(field)}}})",
            f"  |> keep(columns: {_columns([*by, field])})",
        ]
        return "\n".join(lines)
    if query.shape == "latest":
        lines += [
            f"  |> group(columns: {_columns([*by, '_field'])})",
            f"  |> {query.aggregate}()",
            # pivot drops _field from the group key: one row per group (and time), one column per field
            f'  |> pivot(rowKey: {_columns([*by, "_time"])}, columnKey: ["_field"], valueColumn: "_value")',
            "  |> group()",
            f"  |> keep(columns: {_columns(['_time', *by, *query.fields])})",
        ]
        return "\n".join(lines)
    series = ["_measurement", "_field", *by] if query.regex else ["_field", *by]
    lines += [
        f"  |> group(columns: {_columns(series)})",
        f"  |> aggregateWindow(every: v.windowPeriod, fn: {query.aggregate}, createEmpty: false)",
        f"  |> keep(columns: {_columns(['_time', '_value', *series])})",
    ]
    if smooth:
        lines += ['  |> sort(columns: ["_time"])', f"  |> movingAverage(n: {smooth})"]
    return "\n".join(lines)


def variable_query(name: str) -> str:
    parents = VARIABLE_PARENTS[name]
    terms = [variable_predicate(parents, version_kind=False)] if parents else []
    if name == "version":
        terms.append(f"{tag_value('version')} =~ /${{{VERSION_KIND}:raw}}/")
    predicate = " and ".join(terms) or "true"
    return (
        'import "influxdata/influxdb/schema"\n'
        f"schema.tagValues(bucket: v.defaultBucket, tag: {string(tag_of(name))}, "
        f"predicate: (r) => {predicate}, start: v.timeRangeStart, stop: v.timeRangeStop)"
    )


def annotation_query(annotation: Annotation) -> str:
    """A frame of ``_time``, ``text`` and ``tags`` (Grafana's annotation fields), one row per event.

    A first-of annotation starts ``lookback`` before the range and keeps each group's earliest
    point (``min`` on ``_time``: the merged series are not in time order).
    """
    query = Query(annotation.measurement, (annotation.field,), regex=annotation.regex)
    lines = _selection(query)
    if annotation.first_of:
        lines[0:2] = [
            'import "date"',
            "",
            "from(bucket: v.defaultBucket)",
            f"  |> range(start: date.sub(d: {annotation.lookback}, from: v.timeRangeStart), stop: v.timeRangeStop)",
        ]
        lines += [
            f"  |> group(columns: {_columns([annotation.first_of])})",
            '  |> min(column: "_time")',
            "  |> group()",
        ]
    else:
        lines.append("  |> group()")
    text = f"string(v: {tag_value(annotation.text)})" if annotation.text != annotation.field else "string(v: r._value)"
    tags = ' + "," + '.join(tag_value(t) for t in annotation.tags) if annotation.tags else '""'
    lines += [
        f"  |> map(fn: (r) => ({{_time: r._time, text: {text}, tags: {tags}}}))",
        '  |> sort(columns: ["_time"])',
    ]
    return "\n".join(lines)
