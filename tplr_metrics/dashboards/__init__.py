"""Grafana dashboards generated from code, in two dialects (InfluxQL and Flux)."""

from __future__ import annotations

from .builder import (
    DATASOURCES,
    DIALECTS,
    build,
    build_all,
    panel_targets,
    render_query,
    write_dashboards,
    write_files,
)
from .definitions import all_dashboards
from .model import ALL_VALUE, VARIABLES, Dashboard, Panel, Query, Row

__all__ = [
    "ALL_VALUE",
    "DATASOURCES",
    "DIALECTS",
    "VARIABLES",
    "Dashboard",
    "Panel",
    "Query",
    "Row",
    "all_dashboards",
    "build",
    "build_all",
    "panel_targets",
    "render_query",
    "write_dashboards",
    "write_files",
]
