"""Measurements a logger takes by itself: ``system`` every S seconds, its own health."""

from __future__ import annotations

from typing import Any


class BackgroundMeasurements:
    """Periodic measurements of one logger; stopped when the logger closes."""

    def close(self) -> None:
        return None


def start_background(
    metrics_logger: Any, system_metrics_every: float | None, health_every: float | None
) -> BackgroundMeasurements:
    return BackgroundMeasurements()
