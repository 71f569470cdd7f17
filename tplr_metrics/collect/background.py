"""Measurements a logger takes by itself: ``system`` every S seconds, and its own health.

Each is a ``reactivex.interval`` stream on one EventLoopScheduler: one daemon thread per logger,
created only when a measurement is asked for, reading a monotonic clock (reactivex's default
is the wall clock, which an NTP step would make stall or burst). Each tick calls
``metrics_logger.log()``, so these points flow through the same pipeline as the caller's and get
the logger's prefix and standard tags. ``close()`` disposes the streams and joins the thread, so a
tick in progress lands before the logger's final flush.

In a forked child this is a no-op: only the process that built the logger takes these
measurements (a child's points would carry the parent's runtime_id and overwrite its series).
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..config.settings import ConfigurationError

if TYPE_CHECKING:
    from reactivex.abc import DisposableBase
    from reactivex.scheduler import EventLoopScheduler

    from .host import HostMetrics

logger = logging.getLogger("tplr_metrics")

SYSTEM_MEASUREMENT = "system"
HEALTH_MEASUREMENT = "tplr_metrics_health"
#: The health fields, by name; dashboards are built on exactly these.
HEALTH_FIELDS = (
    "queue_depth",
    "written_per_s",
    "dropped",
    "retried",
    "rejected",
    "write_latency_s",
    "spooled",
    "lost_since_last",
)


class _Logger(Protocol):
    _host: HostMetrics

    def log(self, measurement: str, tags: Mapping[str, Any] | None, fields: Mapping[str, Any] | None) -> None: ...

    def stats(self) -> dict[str, Any]: ...


def health_fields(previous: Mapping[str, Any], current: Mapping[str, Any], elapsed_s: float) -> dict[str, float | int]:
    """The tplr_metrics_health fields from two ``stats()`` snapshots ``elapsed_s`` apart.

    queue_depth is a gauge; dropped, retried, rejected and spooled are totals since the logger
    started, and ``lost_since_last`` the dropped, rejected and spooled points since the previous
    snapshot (the first: since the logger started, so a loss before the first health point still
    counts: an alert on totals' spread missed it); written_per_s and write_latency_s (mean
    seconds per batch write) cover the time between the snapshots. With no write in between, the
    latency is the last one seen.
    """
    written = current.get("written", 0) - previous.get("written", 0)
    batches = current.get("batches", 0) - previous.get("batches", 0)
    seconds = current.get("write_seconds_total", 0.0) - previous.get("write_seconds_total", 0.0)
    return {
        "queue_depth": int(current.get("queue_depth", 0)),
        "written_per_s": float(written / elapsed_s) if elapsed_s > 0 else 0.0,
        "dropped": int(current.get("dropped_total", 0)),
        "retried": int(current.get("retried", 0)),
        "rejected": int(current.get("rejected_total", 0)),
        "write_latency_s": float(seconds / batches) if batches > 0 else float(current.get("last_write_seconds", 0.0)),
        "spooled": _count(current.get("spooled", 0)),
        "lost_since_last": max(0, _lost(current) - _lost(previous)),
    }


def _lost(stats: Mapping[str, Any]) -> int:
    return sum(_count(stats.get(name, 0)) for name in ("dropped_total", "rejected_total", "spooled"))


_NOTHING_YET: Mapping[str, Any] = {}  # stats() of a logger before its first point


def _count(value: Any) -> int:
    """A counter that may arrive as a number or as counts by reason."""
    if isinstance(value, Mapping):
        return sum(_count(v) for v in value.values())
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return 0


class BackgroundMeasurements:
    """Periodic measurements of one logger; stopped when the logger closes."""

    def __init__(self, metrics_logger: Any, system_every: float | None, health_every: float | None) -> None:
        self._logger: _Logger = metrics_logger
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._warned: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._subscriptions: list[DisposableBase] = []
        self._scheduler: EventLoopScheduler | None = None
        self._health_prev: tuple[Mapping[str, Any], float] | None = None
        if system_every is None and health_every is None:
            return  # no thread, and reactivex is not even imported
        import reactivex

        self._scheduler = _monotonic_scheduler_class()(thread_factory=self._make_thread)
        if system_every is not None:
            self._logger._host.sample()  # start sampling now, so the first tick has figures
            self._subscribe(reactivex.interval(system_every, scheduler=self._scheduler), self._log_system)
        if health_every is not None:
            self._health_prev = (_NOTHING_YET, time.monotonic())  # the first point counts from the start
            self._subscribe(reactivex.interval(health_every, scheduler=self._scheduler), self._log_health)

    def _make_thread(self, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name="tplr-metrics-background", daemon=True)
        self._threads.append(thread)
        return thread

    def _subscribe(self, ticks: Any, job: Callable[[], None]) -> None:
        self._subscriptions.append(ticks.subscribe(lambda _: self._tick(job)))

    def _tick(self, job: Callable[[], None]) -> None:
        if self._closed:
            return
        try:
            job()
        except Exception as exc:  # an exception would end the stream for good
            name = getattr(job, "__name__", "job")
            if name not in self._warned:
                self._warned.add(name)
                logger.warning("background %s failed: %r (further failures are not logged)", name, exc)

    def _log_system(self) -> None:
        sample = self._logger._host.sample()
        if sample.system:
            self._logger.log(SYSTEM_MEASUREMENT, None, sample.system)
        for gpu in sample.gpus:  # one point per GPU, tagged gpu_id and gpu_name
            self._logger.log(SYSTEM_MEASUREMENT, gpu.tags, gpu.fields)

    def _log_health(self) -> None:
        now = time.monotonic()
        current = self._logger.stats()
        previous, previous_at = self._health_prev or (current, now)
        self._health_prev = (current, now)
        self._logger.log(HEALTH_MEASUREMENT, None, health_fields(previous, current, now - previous_at))

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def close(self, timeout: float = 5.0) -> None:
        """Stop both measurements and wait for a tick in progress; idempotent."""
        if os.getpid() != self._pid:
            return  # forked child: its copy of the scheduler's locks may be held by no thread
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for subscription in self._subscriptions:
            subscription.dispose()
        if self._scheduler is not None:
            self._scheduler.dispose()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))


@functools.cache
def _monotonic_scheduler_class() -> type[EventLoopScheduler]:
    """EventLoopScheduler on time.monotonic(), defined on first use (reactivex is a slow import)."""
    from reactivex.scheduler import EventLoopScheduler

    epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

    class MonotonicEventLoopScheduler(EventLoopScheduler):
        @property
        def now(self) -> _dt.datetime:
            return epoch + _dt.timedelta(seconds=time.monotonic())

    return MonotonicEventLoopScheduler


def _period(name: str, value: Any) -> float | None:
    if value is None or (not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds (or None), not {value!r}")
    return float(value)


def check_periods(system_metrics_every: Any, health_every: Any) -> None:
    """Raise ConfigurationError for a bad period before anything starts."""
    _period("system_metrics_every", system_metrics_every)
    _period("health_every", health_every)


def start_background(
    metrics_logger: Any, system_metrics_every: float | None, health_every: float | None
) -> BackgroundMeasurements:
    """Start the measurements asked for; None or 0 turns one off."""
    return BackgroundMeasurements(
        metrics_logger,
        _period("system_metrics_every", system_metrics_every),
        _period("health_every", health_every),
    )
