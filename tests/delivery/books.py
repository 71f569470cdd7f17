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


SPOOL_SUFFIXES = (".jsonl", ".lp")  # format 1 (JSON lines) and 2 (a line-protocol body)


def spool_files(spool: Path) -> list[Path]:
    """Every batch or WAL file under a spool root, of either format."""
    return sorted(p for p in spool.rglob("*-*") if p.suffix in SPOOL_SUFFIXES and p.name[:12].isdigit())


def spooled_lines(spool: Path) -> int:
    """The points held in a spool's files (a format-2 file's header is not one)."""
    total = 0
    for path in spool_files(spool):
        lines = path.read_bytes().splitlines()
        total += len(lines) - (path.suffix == ".lp" and bool(lines) and lines[0].startswith(b"#tplr-spool 2 "))
    return total
