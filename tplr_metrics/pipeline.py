"""Bounded queue -> encoder thread -> batches -> writer threads -> sink, with flush and close.

The caller pays for one lock and one ``deque.append``; everything else happens on background
threads. The encoder thread swaps the whole queue out at once (so it never holds the callers'
lock for long), turns records into points, and cuts batches of ``batch_size`` or whatever is
there each ``flush_interval``. A bounded hand-off to ``max_workers`` writer threads gives
backpressure: when the sink is slow, batches wait, the queue fills and the overflow policy
decides, always counted.

Writers retry what the sink hands back as transient with exponential backoff and full jitter,
honouring Retry-After, for at most ``max_retry_time``; then the points are dropped and counted.

``flush()`` drops a marker into the stream: it completes when every batch cut up to the marker
has settled (stored, rejected or dropped). The threads are daemons; an ``atexit`` hook closes
the pipeline with ``close_timeout`` so an unclosed logger still delivers at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .points import Point, PointBuilder, Record
from .sinks.base import Sink, WriteResult
from .stats import PipelineStats

logger = logging.getLogger("tplr_metrics")

OVERFLOW_POLICIES = ("drop_oldest", "drop_new", "block")


@dataclass(frozen=True)
class PipelineOptions:
    max_queue_size: int = 600_000
    batch_size: int = 1_000
    flush_interval_ms: int = 1_000
    flush_jitter_ms: int = 0
    max_workers: int = 1
    overflow: str = "drop_oldest"
    block_timeout_s: float = 1.0
    retry_interval_ms: int = 1_000
    max_retry_delay_ms: int = 30_000
    max_retry_time_ms: int = 180_000
    exponential_base: float = 2.0
    close_timeout_s: float = 30.0


class _FlushMarker:
    __slots__ = ("done", "batch_id")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.batch_id = -1


_STOP = object()


class Pipeline:
    """Moves records from callers to a sink without blocking them or losing count of any."""

    def __init__(
        self,
        sink: Sink,
        builder: PointBuilder,
        stats: PipelineStats,
        options: PipelineOptions,
        on_rejected: Callable[[Point, str, str], None] | None = None,
        on_close: Callable[[str | None], None] | None = None,
    ) -> None:
        if options.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {options.overflow!r}")
        self.sink = sink
        self.builder = builder
        self.stats = stats
        self.options = options
        self._on_rejected = on_rejected
        self._on_close = on_close
        self._closed = False
        self._init_state()
        self._start_threads()
        # Flush at interpreter exit, and rebuild threads in a forked child; both through weak
        # references so that an abandoned pipeline can still be collected.
        self_ref = weakref.ref(self)
        self._atexit_hook = _make_atexit_hook(self_ref)
        atexit.register(self._atexit_hook)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_make_fork_hook(self_ref))

    # --- state ---------------------------------------------------------------------------

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._queue: deque[Record] = deque()
        self._markers: list[_FlushMarker] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()  # no more input: drain and stop
        self._abort = threading.Event()  # deadline passed: stop retrying, count the rest
        self._handoff: deque[Any] = deque()
        self._handoff_ready = threading.Condition(threading.Lock())
        self._settle_lock = threading.Lock()
        self._next_batch_id = 0
        self._unsettled: set[int] = set()
        self._waiting_markers: list[_FlushMarker] = []
        self._threads: list[threading.Thread] = []

    def _start_threads(self) -> None:
        encoder = threading.Thread(target=self._encoder_loop, name="tplr-metrics-encoder", daemon=True)
        self._threads = [encoder]
        for i in range(max(1, self.options.max_workers)):
            self._threads.append(
                threading.Thread(target=self._writer_loop, name=f"tplr-metrics-writer-{i}", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def _after_fork_in_child(self) -> None:
        """A forked child starts with an empty pipeline of its own: what the parent had queued
        is the parent's to deliver, so nothing is sent twice."""
        if self._closed:
            return
        self._init_state()
        self._start_threads()

    # --- caller side ---------------------------------------------------------------------

    def submit(self, record: Record) -> bool:
        """Queue one record; False when it was not accepted (closed, or drop_new when full)."""
        with self._lock:
            self.stats.logged += 1  # every call is counted once: written, rejected or dropped
            if self._closed:
                self.stats.after_close += 1
                return False
            queue = self._queue
            if len(queue) >= self.options.max_queue_size:
                policy = self.options.overflow
                if policy == "drop_oldest":
                    queue.popleft()
                    self.stats.queue_dropped += 1
                elif policy == "block" and self._not_full.wait_for(
                    lambda: len(self._queue) < self.options.max_queue_size or self._closed,
                    self.options.block_timeout_s,
                ):
                    if self._closed:
                        self.stats.after_close += 1
                        return False
                    queue = self._queue
                else:
                    self.stats.queue_dropped += 1
                    return False
            queue.append(record)
            if len(queue) == self.options.batch_size:
                self._wake.set()
            return True

    def count_sampled_out(self) -> None:
        with self._lock:
            self.stats.sampled_out += 1

    def queue_depth(self) -> int:
        return len(self._queue)

    # --- encoder thread ------------------------------------------------------------------

    def _encoder_loop(self) -> None:
        options = self.options
        interval = options.flush_interval_ms / 1000.0
        batch: list[Point] = []
        while True:
            timeout = interval + random.uniform(0, options.flush_jitter_ms / 1000.0)
            poked = self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                records, self._queue = self._queue, deque()
                markers, self._markers = self._markers, []
                self._not_full.notify_all()
            for record in records:
                try:
                    point = self.builder.build(record)
                except Exception as exc:  # a bug in the rules must not stop the pipeline
                    self.stats.drop("encode_error")
                    self.stats.warn_once("encode_error", "could not encode a point: %r", exc)
                    continue
                if point is None:
                    continue
                batch.append(point)
                if len(batch) >= options.batch_size:
                    self._emit(batch)
                    batch = []
            stopping = self._stopping.is_set()
            if batch and (markers or stopping or not poked):
                self._emit(batch)
                batch = []
            if markers:
                with self._settle_lock:
                    last_id = self._next_batch_id - 1
                    for marker in markers:
                        marker.batch_id = last_id
                        self._waiting_markers.append(marker)
                    self._release_markers()
            if stopping and not self._queue:
                break
        for _ in range(max(1, options.max_workers)):
            self._handoff_put(_STOP, force=True)

    def _emit(self, batch: list[Point]) -> None:
        with self._settle_lock:
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            self._unsettled.add(batch_id)
        self._handoff_put((batch_id, batch))

    def _handoff_put(self, item: Any, force: bool = False) -> None:
        limit = max(1, self.options.max_workers)
        with self._handoff_ready:
            while not force and len(self._handoff) >= limit and not self._abort.is_set():
                self._handoff_ready.wait(0.1)
            self._handoff.append(item)
            self._handoff_ready.notify_all()

    # --- writer threads ------------------------------------------------------------------

    def _writer_loop(self) -> None:
        while True:
            with self._handoff_ready:
                while not self._handoff:
                    self._handoff_ready.wait()
                item = self._handoff.popleft()
                self._handoff_ready.notify_all()
            if item is _STOP:
                return
            batch_id, batch = item
            try:
                self._deliver(batch)
            except Exception as exc:  # the sink broke its promise not to raise
                self.stats.drop("sink_error", len(batch))
                self.stats.error(f"{type(exc).__name__} in {getattr(self.sink, 'name', 'sink')}")
            finally:
                self._settle(batch_id)

    def _deliver(self, batch: list[Point]) -> None:
        options = self.options
        started = time.monotonic()
        deadline = started + options.max_retry_time_ms / 1000.0
        pending = batch
        attempt = 0
        while True:
            t0 = time.monotonic()
            result: WriteResult = self.sink.write(pending)
            elapsed = time.monotonic() - t0
            if result.stored:
                self.stats.wrote(result.stored, result.nbytes, elapsed)
            for rejection in result.rejected:
                self.stats.reject(rejection.cause)
                self.stats.warn_once(
                    "rejected:" + rejection.cause, "%s refused a point: %s", self.sink.name, rejection.reason
                )
                if self._on_rejected is not None and rejection.index is not None:
                    self._on_rejected(pending[rejection.index], rejection.cause, rejection.reason)
            if not result.retry:
                return
            pending = [pending[i] for i in result.retry]
            self.stats.retry(len(pending), result.error)
            attempt += 1
            delay = min(
                options.max_retry_delay_ms / 1000.0,
                options.retry_interval_ms / 1000.0 * options.exponential_base ** (attempt - 1),
            )
            delay = random.uniform(delay / 2, delay)  # jitter, so that many loggers do not pulse
            if result.retry_after is not None:
                delay = max(delay, result.retry_after)
            if attempt == 1 or attempt % 10 == 0:
                logger.warning(
                    "%s: %d points not delivered (%s); retry %d in %.1fs",
                    self.sink.name,
                    len(pending),
                    result.error,
                    attempt,
                    delay,
                )
            if time.monotonic() + delay > deadline:
                self.stats.drop("retries_exhausted", len(pending))
                logger.error(
                    "%s: gave up on %d points after retrying for %.0fs",
                    self.sink.name,
                    len(pending),
                    time.monotonic() - started,
                )
                return
            if self._abort.wait(delay):
                self.stats.drop("close_timeout", len(pending))
                return

    def _settle(self, batch_id: int) -> None:
        with self._settle_lock:
            self._unsettled.discard(batch_id)
            self._release_markers()

    def _release_markers(self) -> None:
        """Wake the flushes whose batches have all settled (call with _settle_lock held)."""
        oldest = min(self._unsettled) if self._unsettled else self._next_batch_id
        still = []
        for marker in self._waiting_markers:
            if marker.batch_id < oldest:
                marker.done.set()
            else:
                still.append(marker)
        self._waiting_markers = still

    # --- flush and close -----------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call has settled; False on timeout."""
        if not any(t.is_alive() for t in self._threads):
            return not self._queue
        marker = _FlushMarker()
        with self._lock:
            self._markers.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = None, status: str | None = None) -> bool:
        """Flush, stop the threads and close the sink; idempotent. True when all was delivered.

        ``status`` is passed to ``on_close`` (None at interpreter exit: the hook decides).
        """
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            self._not_full.notify_all()
        try:
            atexit.unregister(self._atexit_hook)
        except Exception:
            pass
        if timeout is None:
            timeout = self.options.close_timeout_s
        deadline = time.monotonic() + timeout
        delivered = self.flush(timeout)
        if not delivered:
            self._abort.set()
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()) + (0.5 if not delivered else 0))
        left = len(self._queue)
        if left:
            self.stats.drop("close_timeout", left)
            self._queue.clear()
        if self._on_close is not None:
            try:
                self._on_close(status)
            except Exception as exc:
                logger.warning("close hook failed: %s", type(exc).__name__)
        try:
            self.sink.close()
        except Exception as exc:
            logger.warning("closing %s failed: %s", getattr(self.sink, "name", "sink"), type(exc).__name__)
        if not delivered:
            logger.error("close() timed out after %.1fs; undelivered points are counted in stats()", timeout)
        return delivered

    @property
    def closed(self) -> bool:
        return self._closed


def _make_atexit_hook(ref: weakref.ref[Pipeline]) -> Callable[[], None]:
    def hook() -> None:
        pipeline = ref()
        if pipeline is not None and not pipeline.closed:
            pipeline.close()

    return hook


def _make_fork_hook(ref: weakref.ref[Pipeline]) -> Callable[[], None]:
    def hook() -> None:
        pipeline = ref()
        if pipeline is not None:
            pipeline._after_fork_in_child()

    return hook
