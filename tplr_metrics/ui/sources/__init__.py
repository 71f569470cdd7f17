"""Where the UI's runs come from: the local store, JSON Lines logs, or InfluxDB, behind one
interface (:class:`RunSource`) the routes read."""

from .common import NotDeletable, RunSource, SourceError, UnknownRun
from .influx import InfluxSource
from .jsonl import JsonlSource
from .store import StoreSource

__all__ = ["InfluxSource", "JsonlSource", "NotDeletable", "RunSource", "SourceError", "StoreSource", "UnknownRun"]
