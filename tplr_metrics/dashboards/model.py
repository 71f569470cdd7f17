"""What a dashboard shows, independent of the query language that fetches it.

A :class:`Query` names a measurement, fields, an aggregate and the tags to split by; the
InfluxQL and Flux modules turn the same definition into their own text, so both dialects of a
panel always ask the same question.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The template variables every dashboard has, in the order Grafana shows them. Each is a tag
#: the logger writes on every point, multi-select with an "All" that matches missing tags too:
#: netuid and project are Templar's ``config=`` (``config_netuid``/``config_project`` tags), the
#: others the logger's standard tags.
VARIABLES: tuple[str, ...] = ("netuid", "project", "role", "uid", "group", "version", "runtime_id")
#: The tag a variable filters on, where its name is not the tag's.
VARIABLE_TAGS: dict[str, str] = {"netuid": "config_netuid", "project": "config_project"}
#: Which earlier variables narrow each variable's list of values.
VARIABLE_PARENTS: dict[str, tuple[str, ...]] = {
    "netuid": (),
    "project": ("netuid",),
    "role": (),
    "uid": ("role",),
    "group": ("role",),
    "version": ("role",),
    "runtime_id": ("role", "uid"),
}
#: Value of "All": a regex matching anything, an absent tag included.
ALL_VALUE = ".*"

#: A single-value variable that keeps every version or only release versions (digits and dots,
#: an optional leading v: 2.1.3, v1.0): dev, test, rc and local builds (2.2.0-dev, 2.1.4rc1,
#: 0.0.0+test) are hidden. Every query has ``version =~ /${version_kind:raw}/`` (an absent
#: version tag reads as "" and is kept either way).
VERSION_KIND = "version_kind"
VERSION_KINDS: dict[str, str] = {"all": ".*", "releases": r"^(v?[0-9]+(\.[0-9]+)*)?$"}


def tag_of(variable: str) -> str:
    """The tag a template variable filters on."""
    return VARIABLE_TAGS.get(variable, variable)


AGGREGATES = ("mean", "max", "min", "last", "count", "sum")


@dataclass(frozen=True)
class Query:
    """One series request.

    ``fields=()`` means every field of the measurement. ``smooth=N`` adds a second target with an
    N-point moving average next to the raw one. ``shape`` is "timeseries" (aggregated per
    interval), "latest" (the last value per group, for tables, each row at its own point's time),
    "lastseen" (the time of each group's last point and its age at the range's end) or "events"
    (raw points).
    """

    measurement: str
    fields: tuple[str, ...]
    aggregate: str = "mean"
    by: tuple[str, ...] = ()
    smooth: int = 0
    shape: str = "timeseries"
    #: The measurement is a regex (e.g. a measurement any role may log, whatever its prefix).
    regex: bool = False
    #: Legend for InfluxQL ($col, $tag_<name>, $m); Flux legends come from field and tags.
    alias: str = ""
    #: "latest" only: keep the ``top`` groups with the highest aggregate of the first field over
    #: the range (e.g. the 20 fastest miners by mean tokens/s).
    top: int = 0
    #: Tag equalities every point must meet, e.g. (("task", "hellaswag"),).
    match: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, not {self.aggregate!r}")
        if self.shape not in ("timeseries", "latest", "lastseen", "events"):
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.shape != "timeseries" and self.smooth:
            raise ValueError("only time series are smoothed")
        if self.shape == "lastseen" and len(self.fields) != 1:
            raise ValueError("a last-seen query names the one field whose points it dates")


@dataclass(frozen=True)
class Panel:
    """A Grafana panel: ``kind`` is timeseries, bars (counts per interval), stat, table or trend
    (a line over ``x``, a numeric tag such as window or global_step, instead of time; one line per
    value of ``series`` and field).

    ``thresholds`` are Grafana's steps, (from value, colour), the first from ``None``: the healthy
    range of the panel's values, drawn as coloured bands (a stat panel is coloured by them).
    """

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "none"
    kind: str = "timeseries"
    decimals: int | None = None
    min: float | None = None
    max: float | None = None
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float | None, str], ...] = ()
    #: Tables: the column sorted by default, highest first (a header click sorts any column).
    sort_desc: str = ""
    #: Tables: Grafana's grouping-to-matrix (row field, column field, value field), e.g. version x task.
    matrix: tuple[str, str, str] | None = None
    #: Stat panels: show the latest value of this column as text (a tag such as version or
    #: window, read next to the query's first field) instead of the numeric fields.
    text_field: str = ""
    #: Trend panels: the tag on the x axis and the tag that splits the lines.
    x: str = ""
    series: str = ""

    def __post_init__(self) -> None:
        if (self.kind == "trend") != bool(self.x):
            raise ValueError("a trend panel, and only one, names its x tag")


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Annotation:
    """Events drawn on every panel's time axis, from the points the runs themselves logged.

    ``first_of`` set: one event per value of that tag (a run's runtime_id, a version) at the
    first point of ``measurement`` carrying it: a run start, the first point of a new version.
    The query looks ``lookback`` before the range, so a run that began earlier is not shown as
    starting where the range starts. ``first_of`` empty: one event per point (e.g. each slash).
    ``text`` names the tag or field that is the event's text, ``tags`` those shown as its tags.
    """

    name: str
    measurement: str
    field: str
    text: str
    tags: tuple[str, ...] = ()
    first_of: str = ""
    color: str = "blue"
    regex: bool = False
    lookback: str = "1h"


@dataclass(frozen=True)
class Dashboard:
    """A dashboard definition; ``slug`` names its file and, with the dialect, its uid."""

    slug: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=("tplr-metrics",))
    annotations: tuple[Annotation, ...] = ()

    def panels(self) -> list[Panel]:
        return [panel for row in self.rows for panel in row.panels]

    def queries(self) -> list[Query]:
        return [query for panel in self.panels() for query in panel.queries]
