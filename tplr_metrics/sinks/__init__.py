"""Destinations for points, each behind the small :class:`~tplr_metrics.sinks.base.Sink` protocol."""

from .base import Rejection, Sink, WriteResult

__all__ = ["Rejection", "Sink", "WriteResult"]
