"""A progress line on stderr for long commands (export, replay, prune): drawn on a terminal only,
so a piped or logged stderr stays clean. ``TPLR_METRICS_PROGRESS=1`` draws it anyway (tests, a
CI log that wants it), ``=0`` never. A plain ``\\r`` line: no dependency."""

from __future__ import annotations

import os
import sys
import time
from typing import IO

PROGRESS_VARIABLE = "TPLR_METRICS_PROGRESS"


def progress_stream(quiet: bool = False) -> IO[str] | None:
    """stderr when a progress line belongs there, else None."""
    forced = os.environ.get(PROGRESS_VARIABLE, "").strip()
    if quiet or forced == "0":
        return None
    if forced == "1":
        return sys.stderr
    try:
        return sys.stderr if sys.stderr.isatty() else None
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return None


class Progress:
    """``label [####....] done/total unit  pct  rate/s``, redrawn at most 5 times a second."""

    def __init__(self, label: str, total: int, out: IO[str] | None, unit: str = "points") -> None:
        self.label = label
        self.total = total
        self.out = out
        self.unit = unit
        self.started = time.monotonic()
        self.last_draw = 0.0

    def draw(self, done: int, final: bool = False) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if not final and now - self.last_draw < 0.2:
            return
        self.last_draw = now
        line = render_bar(done, self.total, now - self.started, label=self.label, unit=self.unit)
        self.out.write("\r" + line + ("\n" if final else ""))
        self.out.flush()


def render_bar(
    done: int, total: int, elapsed: float, width: int = 30, label: str = "replay", unit: str = "points"
) -> str:
    fraction = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(round(fraction * width))
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit} {fraction:6.1%} {rate:,.0f}/s"
