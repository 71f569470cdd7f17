"""Shared bookkeeping for the delivery tests: what a logger counted lost, and draining a spool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tplr_metrics import MetricsLogger


def lost(stats: dict[str, Any]) -> int:
    """Every point a logger counted as not delivered, whatever the reason."""
    return int(stats["dropped_total"] + stats["rejected_total"])


def drain_spool(url: str, database: str, spool: Path, timeout: float = 120) -> dict[str, Any]:
    """A second logger for the same destination and spool delivers what the first left; its stats."""
    second = MetricsLogger(url=url, database=database, api="v1", spool_dir=spool)
    assert second.close(timeout=timeout)
    return second.stats()
