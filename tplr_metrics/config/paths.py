"""Where tplr_metrics keeps its files: ``$TPLR_METRICS_HOME``, ``~/.tplr_metrics`` by default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

HOME_VARIABLE = "TPLR_METRICS_HOME"


def tplr_home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    configured = (environ.get(HOME_VARIABLE) or "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".tplr_metrics"
