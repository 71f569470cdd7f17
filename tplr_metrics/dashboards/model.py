"""What a dashboard shows, independent of the query language that fetches it.

A :class:`Query` names a measurement, fields, an aggregate and the tags to split by; the
InfluxQL and Flux modules turn the same definition into their own text, so both dialects of a
panel always ask the same question.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The template variables every dashboard has, in the order Grafana shows them. Each is a
#: standard tag of the logger, multi-select with an "All" that matches missing tags too.
VARIABLES: tuple[str, ...] = ("role", "uid", "group", "version", "runtime_id")
#: Which earlier variables narrow each variable's list of values.
VARIABLE_PARENTS: dict[str, tuple[str, ...]] = {
    "role": (),
    "uid": ("role",),
    "group": ("role",),
    "version": ("role",),
    "runtime_id": ("role", "uid"),
}
#: Value of "All": a regex matching anything, an absent tag included.
ALL_VALUE = ".*"

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
    """A Grafana panel: ``kind`` is timeseries, bars (counts per interval), stat or table.

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


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    """A dashboard definition; ``slug`` names its file and, with the dialect, its uid."""

    slug: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=("tplr-metrics",))

    def panels(self) -> list[Panel]:
        return [panel for row in self.rows for panel in row.panels]

    def queries(self) -> list[Query]:
        return [query for panel in self.panels() for query in panel.queries]
