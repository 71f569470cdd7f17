"""Definitions into InfluxQL: runs on InfluxDB 1.x, on 2.x through a DBRP mapping, and on 3.x.

Only portable InfluxQL is used: regex tag filters, ``GROUP BY time($__interval)``,
``fill(none)`` and ``moving_average``; Grafana fills in ``$timeFilter``, ``$__interval`` and the
variables (``${uid:regex}``: a regex-escaped alternation of the selected values).
"""

from __future__ import annotations

from .model import VARIABLE_PARENTS, VARIABLES, VERSION_KIND, Annotation, Query, tag_of

DIALECT = "influxql"
#: The column a last-seen query fills with the range's end, for Grafana to compute the age.
TO_MS = "range_end_ms"


def ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def variable_filter(names: tuple[str, ...] = VARIABLES, version_kind: bool = True) -> str:
    """``"role" =~ /^${role:regex}$/ AND ...``; an absent tag reads as "" and "All" matches it.

    ``version_kind`` adds the releases-only switch (``${version_kind:raw}`` is a regex itself).
    """
    terms = [f"{ident(tag_of(name))} =~ /^${{{name}:regex}}$/" for name in names]
    if version_kind:
        terms.append(f'"version" =~ /${{{VERSION_KIND}:raw}}/')
    return " AND ".join(terms)


def source(query: Query) -> str:
    if query.regex:
        return "/" + query.measurement.replace("/", "\\/") + "/"
    return ident(query.measurement)


def _selectors(query: Query, smooth: int) -> str:
    def wrap(expr: str) -> str:
        return f"moving_average({expr}, {smooth})" if smooth else expr

    if not query.fields:  # every field: InfluxQL names the columns <aggregate>_<field>
        return wrap(f"{query.aggregate}(*)")
    return ", ".join(f"{wrap(f'{query.aggregate}({ident(f)})')} AS {ident(f)}" for f in query.fields)


def render(query: Query, smooth: int = 0) -> str:
    """The InfluxQL text of a query; ``smooth`` > 0 renders its moving average instead."""
    where = f"$timeFilter AND {variable_filter()}"
    for tag, value in query.match:
        where += f" AND {ident(tag)} = '" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    by = ", ".join(ident(tag) for tag in query.by)
    if query.shape == "events":
        fields = ", ".join(ident(f) for f in query.fields)
        group = f" GROUP BY {by}" if by else ""
        return f"SELECT {fields} FROM {source(query)} WHERE {where}{group}"
    group = f" GROUP BY {by}" if by else ""
    if query.shape == "lastseen":
        # A selector alone keeps its point's own time; "* 0 + ${__to}" carries the range's end
        # (epoch ms) so Grafana can subtract the time from it (InfluxQL cannot use time in math).
        field = ident(query.fields[0])
        return f"SELECT last({field}) * 0 + ${{__to}} AS {ident(TO_MS)} FROM {source(query)} WHERE {where}{group}"
    if query.shape == "latest" and query.top:
        # Rank the groups by their aggregate over the range; top() names the group by its tag.
        field = ident(query.fields[0])
        inner = f"SELECT {query.aggregate}({field}) AS {field} FROM {source(query)} WHERE {where}{group}"
        tags = "".join(f", {ident(tag)}" for tag in query.by)
        return f"SELECT top({field}{tags}, {query.top}) AS {field} FROM ({inner})"
    if query.shape == "latest":
        if len(query.fields) > 1:
            # One selector and plain fields: the other fields of that same point, at its own time
            # (several selectors would all be stamped with the range's start).
            first, *rest = query.fields
            columns = ", ".join([f"{query.aggregate}({ident(first)}) AS {ident(first)}", *map(ident, rest)])
            return f"SELECT {columns} FROM {source(query)} WHERE {where}{group}"
        return f"SELECT {_selectors(query, 0)} FROM {source(query)} WHERE {where}{group}"
    group = "time($__interval)" + (f", {by}" if by else "")
    return f"SELECT {_selectors(query, smooth)} FROM {source(query)} WHERE {where} GROUP BY {group} fill(none)"


def variable_query(name: str) -> str:
    """Values of a template variable, narrowed by the variables before it (and the version
    list by the releases-only switch)."""
    parents = VARIABLE_PARENTS[name]
    terms = [variable_filter(parents, version_kind=False)] if parents else []
    if name == "version":
        terms.append(f'"version" =~ /${{{VERSION_KIND}:raw}}/')
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    return f"SHOW TAG VALUES WITH KEY = {ident(tag_of(name))}{where}"


def annotation_query(annotation: Annotation) -> str:
    """One row per event: its time, the text column and the tag columns.

    A first-of annotation reads from ``lookback`` before the range (``${__from}`` is epoch ms), so
    ``first()`` finds a run's real first point, not its first point inside the range.
    """
    columns = [annotation.text, *annotation.tags]
    where = f"{variable_filter()}"
    source_text = source(Query(annotation.measurement, (annotation.field,), regex=annotation.regex))
    if annotation.first_of:
        extra = "".join(f", {ident(c)}" for c in columns)
        field = ident(annotation.field)
        return (
            f"SELECT first({field}) AS {field}{extra} FROM {source_text} "
            f"WHERE time >= ${{__from}}ms - {annotation.lookback} AND time <= ${{__to}}ms AND {where} "
            f"GROUP BY {ident(annotation.first_of)}"
        )
    fields = ", ".join(ident(c) for c in dict.fromkeys([annotation.field, *columns]))
    return f"SELECT {fields} FROM {source_text} WHERE $timeFilter AND {where}"
