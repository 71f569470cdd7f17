"""Definitions and a dialect into Grafana dashboard JSON (through grafanalib), and onto disk."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard as GrafanaDashboard
from grafanalib.core import (
    DashboardLink,
    GridPos,
    RowPanel,
    Stat,
    Table,
    TableSortByField,
    Templating,
    Time,
    TimeSeries,
)

from . import flux, influxql
from .definitions import all_dashboards
from .model import ALL_VALUE, VARIABLES, VERSION_KIND, VERSION_KINDS, Annotation, Dashboard, Panel, Query

DIALECTS = ("influxql", "flux")
#: The data sources the local stack provisions; a user's own Grafana picks its own.
DATASOURCES = {
    "influxql": {"uid": "tplr-influxql", "name": "InfluxDB (InfluxQL)"},
    "flux": {"uid": "tplr-flux", "name": "InfluxDB (Flux)"},
}
LABELS = {"influxql": "InfluxQL", "flux": "Flux"}
#: The ``datasource`` variable lists only data sources whose name fits the dashboard's dialect
#: (Grafana matches the regex against data source names): "flux" in the name, other than the one
#: in "influx", is a Flux source.
DATASOURCE_REGEX = {"influxql": "/^(?!.*(?:^|[^n])flux).*$/i", "flux": "/(?:^|[^n])flux/i"}
DATASOURCE_REF = {"type": "influxdb", "uid": "${datasource}"}
SCHEMA_VERSION = 39  # Grafana 10/11 dashboards
#: Keys of the pre-5.0 dashboard model that grafanalib still writes; Grafana ignores them.
LEGACY_DASHBOARD_KEYS = frozenset({"rows", "hideControls", "sharedCrosshair", "style"})
LEGACY_PANEL_KEYS = frozenset({"span", "height", "minSpan", "error"})
#: Keys of the old table panel (columns, styles, fontSize) that grafanalib's Table still writes.
LEGACY_TABLE_KEYS = frozenset({"columns", "styles", "fontSize", "color", "mappings"})
#: What a row panel is: anything else (fieldConfig, targets, datasource) is noise on a row.
ROW_KEYS = frozenset({"type", "title", "collapsed", "gridPos", "id", "panels", "repeat"})


def _check(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, not {dialect!r}")


def render_query(query: Query, dialect: str, smooth: int = 0) -> str:
    _check(dialect)
    return influxql.render(query, smooth) if dialect == "influxql" else flux.render(query, smooth)


def _target(query: Query, dialect: str, ref_id: str, smooth: int = 0) -> dict[str, Any]:
    text = render_query(query, dialect, smooth)
    if dialect == "flux":
        if smooth:
            # Name the trend apart from the raw series it is drawn over.
            text += f'\n  |> map(fn: (r) => ({{r with _field: r._field + " (avg {smooth})"}}))'
        return {"datasource": DATASOURCE_REF, "refId": ref_id, "query": text}
    alias = query.alias + (f" (avg {smooth})" if smooth else "")
    return {
        "alias": alias,
        "datasource": DATASOURCE_REF,
        "query": text,
        "rawQuery": True,
        "refId": ref_id,
        "resultFormat": "time_series" if query.shape == "timeseries" else "table",
    }


def panel_targets(panel: Panel, dialect: str) -> list[dict[str, Any]]:
    """Raw targets A, B, ... first, then the smoothed ones."""
    targets: list[dict[str, Any]] = []
    for query in panel.queries:
        targets.append(_target(query, dialect, chr(ord("A") + len(targets))))
    for query in panel.queries:
        if query.smooth:
            targets.append(_target(query, dialect, chr(ord("A") + len(targets)), query.smooth))
    return targets


def _raw_overrides(panel: Panel, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where a panel is smoothed, its raw series are drawn as faint points under the trend."""
    smoothed = any(q.smooth for q in panel.queries)
    if not smoothed:
        return []
    raw_refs = targets[: len(panel.queries)]
    return [
        {
            "matcher": {"id": "byFrameRefID", "options": target["refId"]},
            "properties": [
                {"id": "custom.drawStyle", "value": "points"},
                {"id": "custom.pointSize", "value": 3},
            ],
        }
        for target in raw_refs
    ]


#: The column of a last-seen table that holds how long ago each group's last point was.
AGE = "age"


def _table_transformations(panel: Panel, dialect: str) -> list[dict[str, Any]]:
    """Rows merged into one table; a last-seen table also gets its age column.

    Flux computes the age in the query; InfluxQL cannot use time in arithmetic, so its query
    carries the range's end and Grafana subtracts the row's time from it.
    """
    steps: list[dict[str, Any]] = [{"id": "merge", "options": {}}]
    if panel.matrix:
        row, column, value = panel.matrix
        steps.append(
            {"id": "groupingToMatrix", "options": {"rowField": row, "columnField": column, "valueField": value}}
        )
    if dialect == "influxql" and any(q.shape == "lastseen" for q in panel.queries):
        steps += [
            {
                "id": "calculateField",
                "options": {
                    "alias": AGE,
                    "mode": "binary",
                    "binary": {
                        "left": {"matcher": {"id": "byName", "options": influxql.TO_MS}},
                        "operator": "-",
                        "right": {"matcher": {"id": "byName", "options": "Time"}},
                    },
                },
            },
            {"id": "organize", "options": {"excludeByName": {influxql.TO_MS: True}}},
        ]
    return steps


def _age_overrides(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The age column in milliseconds (Grafana prints "2.5 min"), its cell coloured by ``steps``."""
    properties: list[dict[str, Any]] = [
        {"id": "unit", "value": "ms"},
        {"id": "custom.cellOptions", "value": {"type": "color-background", "mode": "basic"}},
    ]
    if steps:
        properties.append({"id": "thresholds", "value": {"mode": "absolute", "steps": steps}})
    return [{"matcher": {"id": "byName", "options": AGE}, "properties": properties}]


def _panel(panel: Panel, dialect: str, pos: GridPos) -> Any:
    targets = panel_targets(panel, dialect)
    common: dict[str, Any] = {
        "title": panel.title,
        "description": panel.description,
        "dataSource": DATASOURCE_REF,
        "targets": targets,
        "gridPos": pos,
        "maxDataPoints": None,  # Grafana then sizes $__interval to the panel's width
    }
    steps = [{"color": color, "value": value} for value, color in panel.thresholds]
    if steps:
        common["thresholds"] = steps
    if panel.kind == "stat":
        # One value per series (per uid), each named by its alias; uncoloured without thresholds.
        # A text stat reads its column from a table (a tag is no time series) and shows it as is.
        for target in targets:
            if "resultFormat" in target:
                target["resultFormat"] = "table" if panel.text_field else "time_series"
        common["thresholds"] = steps or [{"color": "text", "value": None}]
        return Stat(
            format=panel.unit,
            decimals=panel.decimals,
            reduceCalc="lastNotNull",
            graphMode="none",
            colorMode="value" if steps else "none",
            fields=f"/^{panel.text_field}$/" if panel.text_field else "",
            textMode="value" if panel.text_field else "auto",
            **common,
        )
    if panel.kind == "table":
        lastseen = any(q.shape == "lastseen" for q in panel.queries)
        if lastseen:
            common.pop("thresholds", None)  # they colour the age column only
        return Table(
            unit=panel.unit,
            transformations=_table_transformations(panel, dialect),
            overrides=_age_overrides(steps) if lastseen else [],
            sortBy=[TableSortByField(displayName=panel.sort_desc, desc=True)] if panel.sort_desc else [],
            filterable=True,
            **common,
        )
    bars = panel.kind == "bars"
    extra: dict[str, Any] = {}
    if panel.kind == "trend":
        for target in targets:
            if "resultFormat" in target:
                target["resultFormat"] = "table"
        common["maxDataPoints"] = None  # one row per window: nothing to size to the panel
        extra = {"type": "trend", "options": {"xField": panel.x}}
    return TimeSeries(
        unit=panel.unit,
        valueDecimals=panel.decimals,
        valueMin=panel.min,
        valueMax=panel.max,
        drawStyle="bars" if bars else "line",
        fillOpacity=80 if bars else 0,
        lineWidth=1 if bars else 2,
        showPoints="never" if not bars else "auto",
        legendCalcs=["lastNotNull"],
        legendDisplayMode="list",
        tooltipMode="multi",
        overrides=_raw_overrides(panel, targets),
        thresholdsStyleMode="line+area" if steps else "off",
        transformations=_trend_transformations(panel) if panel.kind == "trend" else [],
        extraJson=extra or None,
        **common,
    )


def _trend_transformations(panel: Panel) -> list[dict[str, Any]]:
    """Rows of (time, x, series, fields) into lines over x: the x tag as a number, sorted, and
    one frame per value of the series tag; the time column is left out (x replaces it)."""
    steps: list[dict[str, Any]] = [
        {"id": "merge", "options": {}},
        {
            "id": "convertFieldType",
            "options": {"conversions": [{"targetField": panel.x, "destinationType": "number"}], "fields": {}},
        },
        {"id": "sortBy", "options": {"sort": [{"field": panel.x}]}},
        {"id": "organize", "options": {"excludeByName": {"Time": True, "_time": True}}},
    ]
    if panel.series:
        steps.append(
            {"id": "partitionByValues", "options": {"fields": [panel.series], "keepFields": False}},
        )
    return steps


def render_annotation(annotation: Annotation, dialect: str) -> str:
    _check(dialect)
    if dialect == "influxql":
        return influxql.annotation_query(annotation)
    return flux.annotation_query(annotation)


#: Grafana's own "Annotations & Alerts" entry, which a dashboard Grafana saves always has.
BUILTIN_ANNOTATION: dict[str, Any] = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def annotation_target(annotation: Annotation, dialect: str) -> dict[str, Any]:
    """The annotation's query, as Grafana's InfluxDB data source stores it (``target``)."""
    text = render_annotation(annotation, dialect)
    if dialect == "flux":  # a frame of _time, text and tags: Grafana's annotation fields
        return {"refId": "Anno", "query": text}
    return {
        "refId": "Anno",
        "query": text,
        "rawQuery": True,
        "fromAnnotations": True,
        "textColumn": annotation.text,
        "tagsColumn": ",".join(annotation.tags),
        "titleColumn": "",
        "timeEndColumn": "",
    }


def _annotations(dashboard: Dashboard, dialect: str) -> dict[str, Any]:
    entries = [dict(BUILTIN_ANNOTATION)]
    for annotation in dashboard.annotations:
        entries.append(
            {
                "name": annotation.name,
                "datasource": DATASOURCE_REF,
                "enable": True,
                "hide": False,
                "iconColor": annotation.color,
                "target": annotation_target(annotation, dialect),
            }
        )
    return {"list": entries}


def _version_kind_variable() -> dict[str, Any]:
    """A switch between every version and release versions only (see ``VERSION_KINDS``)."""
    options = [{"text": text, "value": value, "selected": text == "all"} for text, value in VERSION_KINDS.items()]
    return {
        "name": VERSION_KIND,
        "label": "version kind",
        "description": "releases: hide dev, test, rc and local builds (versions other than digits and dots)",
        "type": "custom",
        "query": ",".join(f"{text} : {value}" for text, value in VERSION_KINDS.items()),
        "current": {"text": "all", "value": VERSION_KINDS["all"]},
        "options": options,
        "multi": False,
        "includeAll": False,
        "hide": 0,
    }


def _variables(dialect: str) -> list[dict[str, Any]]:
    source = DATASOURCES[dialect]
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": f"Data source ({LABELS[dialect]})",
            "type": "datasource",
            "query": "influxdb",
            "current": {"text": source["name"], "value": source["uid"]},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": DATASOURCE_REGEX[dialect],
        }
    ]
    render = influxql.variable_query if dialect == "influxql" else flux.variable_query
    for name in VARIABLES:
        if name == "version":
            variables.append(_version_kind_variable())  # before the list it narrows
        text = render(name)
        variables.append(
            {
                "name": name,
                "label": name,
                "type": "query",
                "datasource": DATASOURCE_REF,
                "query": text,
                "multi": True,
                "includeAll": True,
                "allValue": ALL_VALUE,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "hide": 0,
                "options": [],
                "refresh": 2,  # on time range change: runs come and go
                "regex": "",
                "sort": 1,
            }
        )
    return variables


def build(dashboard: Dashboard, dialect: str) -> dict[str, Any]:
    """The dashboard's Grafana JSON model for one dialect, ready to provision or import."""
    _check(dialect)
    panels: list[Any] = []
    y = 0
    for row in dashboard.rows:
        panels.append(RowPanel(title=row.title, gridPos=GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x, row_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + row_height
                row_height = 0
            panels.append(_panel(panel, dialect, GridPos(h=panel.height, w=panel.width, x=x, y=y)))
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    grafana = GrafanaDashboard(
        title=f"{dashboard.title} ({LABELS[dialect]})",
        uid=f"tplr-{dashboard.slug}-{dialect}",
        description=dashboard.description,
        tags=[*dashboard.tags, dialect],
        panels=panels,
        templating=Templating(list=_variables(dialect)),
        time=Time("now-6h", "now"),
        refresh="30s",
        timezone="browser",
        schemaVersion=SCHEMA_VERSION,
        links=[
            DashboardLink(
                title="tplr-metrics",
                type="dashboards",
                tags=["tplr-metrics", dialect],
                asDropdown=True,
                includeVars=True,
                keepTime=True,
            )
        ],
    ).auto_panel_ids()
    data: dict[str, Any] = json.loads(json.dumps(grafana.to_json_data(), cls=DashboardEncoder))
    data["annotations"] = _annotations(dashboard, dialect)
    return clean(data)


def _drop_nulls(value: Any) -> Any:
    """Every null-valued key removed, at any depth: Grafana reads a missing key as its default.

    The one null the schema requires stays: a threshold base step's ``"value": null`` (Grafana
    reads it as -Infinity; ``Threshold.value`` is ``number | null`` and not optional).
    """
    if isinstance(value, dict):
        cleaned = {k: _drop_nulls(v) for k, v in value.items() if v is not None}
        if isinstance(cleaned.get("steps"), list):
            for step in cleaned["steps"]:
                if isinstance(step, dict) and "color" in step:
                    step.setdefault("value", None)
        return cleaned
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


#: Keys grafanalib writes on panels that Grafana 11's panel model does not have.
EXTRA_PANEL_KEYS = frozenset({"editable"})
#: Required options of the panel plugins' published types (@grafana/schema) that grafanalib
#: leaves out, at the defaults Grafana 11 saves.
PANEL_OPTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "stat": {"percentChangeColorMode": "standard", "showPercentChange": False, "wideLayout": True},
    "table": {"frameIndex": 0, "showHeader": True},
}


def _clean_panel(panel: dict[str, Any]) -> dict[str, Any]:
    if panel.get("type") == "row":
        return {k: v for k, v in panel.items() if k in ROW_KEYS}
    panel = {k: v for k, v in panel.items() if k not in LEGACY_PANEL_KEYS and k not in EXTRA_PANEL_KEYS}
    options = panel.setdefault("options", {})
    for key, default in PANEL_OPTION_DEFAULTS.get(panel.get("type", ""), {}).items():
        options.setdefault(key, default)
    if panel.get("type") in ("timeseries", "trend"):
        options.setdefault("legend", {}).setdefault("showLegend", True)
    if panel.get("type") == "table":
        panel = {k: v for k, v in panel.items() if k not in LEGACY_TABLE_KEYS}
        custom = panel.setdefault("fieldConfig", {}).setdefault("defaults", {}).setdefault("custom", {})
        display = custom.pop("displayMode", "auto")
        custom.setdefault("cellOptions", {"type": display})
        custom.setdefault("align", "auto")
        custom.setdefault("inspect", False)
    return panel


def clean(data: dict[str, Any]) -> dict[str, Any]:
    """grafanalib's model without nulls or legacy keys, in the shape Grafana 10/11 saves."""
    data = _drop_nulls(data)
    data = {k: v for k, v in data.items() if k not in LEGACY_DASHBOARD_KEYS}
    if not data.get("__inputs"):  # an export's list of data sources to ask for on import; empty here
        data.pop("__inputs", None)
    data["panels"] = [_clean_panel(panel) for panel in data.get("panels", [])]
    return data


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def build_all(dialect: str) -> dict[str, str]:
    """File name -> JSON text of every dashboard in one dialect."""
    return {f"{d.slug}.json": to_json(build(d, dialect)) for d in all_dashboards()}


def write_dashboards(out_dir: str | os.PathLike[str], dialect: str) -> list[Path]:
    """Write every dashboard of a dialect into ``out_dir`` atomically; returns the paths.

    A new file is created 0600; a file that is replaced keeps its mode (the committed ones are
    world-readable so a Grafana container can read them through a bind mount).
    """
    return write_files(out_dir, build_all(dialect))


def write_files(out_dir: str | os.PathLike[str], files: dict[str, str]) -> list[Path]:
    """Write name -> text into ``out_dir`` atomically, as :func:`write_dashboards` does."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out / name
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            # No secret in a dashboard or rule, and Grafana reads them as another user (uid 472
            # in docker-compose.yml): 0600 left a fresh build unreadable to it.
            mode = 0o644
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(path)
    return written
