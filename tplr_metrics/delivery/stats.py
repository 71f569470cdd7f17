"""Counters of what passed each stage of the pipeline, and what was dropped or changed, and why."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

logger = logging.getLogger("tplr_metrics")

#: Input causes that drop a whole point: the caller's data was bad, nothing failed to deliver, so
#: they do not make flush() or close() answer False (they are counted and warned about at the call).
INPUT_DROP_REASONS = frozenset({"no_fields", "empty_measurement", "bad_timestamp"})


class PipelineStats:
    """Thread-safe counters behind ``MetricsLogger.stats()``.

    The caller-side counters (``logged``, ``sampled_out`` and queue drops) are bumped by the
    pipeline under its queue lock; everything else under this object's own lock.
    """

    def __init__(self) -> None:
        # Reentrant: log() may report an issue from a signal handler that interrupted this thread
        # while it held the lock.
        self._lock = threading.RLock()
        self.logged = 0  # in a lane: points handed to it
        self.wal_failed = 0
        self.sampled_out = 0
        self.after_close = 0
        self.queue_dropped = 0
        self.written = 0
        self.retried = 0
        self.batches = 0
        self.bytes_sent = 0
        self.write_seconds = 0.0
        self.last_write_seconds = 0.0
        self.spooled = 0  # points in the disk outbox now
        self.spooled_total = 0  # points ever put in it
        self.replayed = 0  # points delivered from it
        self.adopted = 0  # points picked up from the spools of dead processes
        self.maybe_stored = 0  # of the dropped: a request carrying them went unanswered
        self.dropped: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.sanitized: Counter[str] = Counter()
        self.last_error: str | None = None
        self._warned: set[str] = set()

    def at_once(self) -> threading.RLock:
        """Held around several counts that are one step of a point's way (spooled -> written):
        books read meanwhile never see the points in both places."""
        return self._lock

    def received(self, n: int) -> None:
        with self._lock:
            self.logged += n

    def count(self, what: str) -> None:
        """An informational count that changes no point's fate (``wal_failed``)."""
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def undrop(self, reason: str, n: int, maybe_stored: bool = False) -> None:
        """A late answer showed points counted lost were stored after all."""
        with self._lock:
            if maybe_stored:
                self.maybe_stored -= n
            self.dropped[reason] -= n
            if self.dropped[reason] <= 0:
                del self.dropped[reason]

    def drop(self, reason: str, n: int = 1, maybe_stored: bool = False) -> None:
        """``maybe_stored``: a request carrying them went out unanswered, so the server may
        hold them although they are counted lost (``dropped_maybe_stored``)."""
        if n:
            with self._lock:
                self.dropped[reason] += n
                if maybe_stored:
                    self.maybe_stored += n

    def reject(self, reason: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self.rejected[reason] += n

    def sanitize(self, cause: str, n: int = 1) -> None:
        with self._lock:
            self.sanitized[cause] += n

    def wrote(self, points: int, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.written += points
            self.batches += 1
            self.bytes_sent += nbytes
            self.write_seconds += seconds
            self.last_write_seconds = seconds

    def retry(self, points: int, error: str | None) -> None:
        with self._lock:
            self.retried += points
            if error:
                self.last_error = error

    def spool_in(self, points: int) -> None:
        with self._lock:
            self.spooled += points
            self.spooled_total += points

    def spool_out(self, points: int, delivered: int) -> None:
        """A spool file's points left the outbox; ``delivered`` of them were stored."""
        with self._lock:
            self.spooled = max(0, self.spooled - points)
            self.replayed += delivered

    def adopted_points(self, points: int) -> None:
        with self._lock:
            self.adopted += points
            self.spooled += points

    def reset_lock(self) -> None:
        """In a forked child: the parent's threads may have held the lock at the fork."""
        self._lock = threading.RLock()

    def spool_evicted(self, points: int, maybe_stored: bool = False) -> None:
        with self._lock:
            self.spooled = max(0, self.spooled - points)
            self.dropped["spool_evicted"] += points
            if maybe_stored:
                self.maybe_stored += points

    def error(self, message: str) -> None:
        with self._lock:
            self.last_error = message

    def warn_once(self, cause: str, message: str, *args: Any) -> None:
        """Log a warning the first time a cause is seen; later ones only count."""
        with self._lock:
            if cause in self._warned:
                return
            self._warned.add(cause)
        logger.warning(message + " (further cases are only counted in stats())", *args)

    def snapshot(self, queue_depth: int) -> dict[str, Any]:
        with self._lock:
            dropped = dict(self.dropped)
            if self.queue_dropped:
                dropped["queue_full"] = dropped.get("queue_full", 0) + self.queue_dropped
            if self.after_close:
                dropped["after_close"] = self.after_close
            return {
                "logged": self.logged,
                "sampled_out": self.sampled_out,
                "written": self.written,
                "retried": self.retried,
                "dropped": dropped,
                "dropped_total": sum(dropped.values()),
                "dropped_maybe_stored": self.maybe_stored,
                "rejected": dict(self.rejected),
                "rejected_total": sum(self.rejected.values()),
                "sanitized": dict(self.sanitized),
                "queue_depth": queue_depth,
                "spooled": self.spooled,
                "spooled_total": self.spooled_total,
                "replayed": self.replayed,
                "adopted": self.adopted,
                "wal_failed": self.wal_failed,
                "batches": self.batches,
                "bytes_sent": self.bytes_sent,
                "write_seconds_total": round(self.write_seconds, 6),
                "last_write_seconds": round(self.last_write_seconds, 6),
                "last_error": self.last_error,
            }
