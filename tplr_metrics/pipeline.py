"""Bounded queue -> encoder thread -> batches -> writer threads -> sink, with spool, flush, close.

The caller pays for one lock and one ``deque.append``; everything else happens on background
threads. The encoder thread swaps the whole queue out at once (so it never holds the callers'
lock for long), turns records into points, and cuts batches of ``batch_size`` or whatever is
there each ``flush_interval``. A bounded hand-off to ``max_workers`` writer threads gives
backpressure: when the sink is slow, batches wait, the queue fills and the overflow policy
decides, always counted.

With a spool (the default), a batch the sink cannot take for a reason that is not the data's
fault goes to disk instead of being retried in memory, and a replayer thread sends the spool's
files in order, with exponential backoff and full jitter (honouring Retry-After), as soon as the
sink answers again. While files wait, new batches join the end of the spool, so order holds and
memory stays bounded however long the outage lasts. Without a spool, writers retry in memory for
at most ``max_retry_time``, then drop and count.

``flush()`` drops a marker into the stream: it completes when every batch cut up to the marker
has settled (stored, rejected or dropped). Durable mode's write-ahead log uses the same markers
with a weaker condition, "safe": settled or written to a spool file.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .line_protocol import encode_line
from .points import Point, PointBuilder, Record
from .sinks.base import PointBatch, Rejection, Sink, WriteResult
from .spool import Spool, SpoolFile
from .stats import PipelineStats

logger = logging.getLogger("tplr_metrics")

OVERFLOW_POLICIES = ("drop_oldest", "drop_new", "block")

# Jitter draws from its own generator, never from the global one a training loop may have seeded.
_jitter = random.Random()


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
    spool_root: Path | None = None  # None: no spool, retry in memory
    spool_run_name: str = "run"
    spool_max_bytes: int = 512 * 1024 * 1024
    durable: bool = False
    durable_sync_interval_s: float = 1.0


class _FlushMarker:
    __slots__ = ("done", "batch_id", "durable_only")

    def __init__(self, durable_only: bool = False) -> None:
        self.done = threading.Event()
        self.batch_id = -1
        self.durable_only = durable_only


_STOP = object()


class Pipeline:
    """Moves records from callers to a sink without blocking them or losing count of any."""

    def __init__(
        self,
        sink: Sink,
        builder: PointBuilder,
        stats: PipelineStats,
        options: PipelineOptions,
        on_rejected: Callable[[Point, Rejection, str], None] | None = None,
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
        self._encode_lines = bool(getattr(sink, "accepts_lines", False))
        self._closed = False
        self.spool: Spool | None = None
        if options.spool_root is not None:
            try:
                self.spool = Spool(options.spool_root, options.spool_run_name, stats, options.spool_max_bytes)
                self.spool.adopt_orphans()
            except OSError as exc:
                if options.durable:
                    raise
                logger.error(
                    "spool under %s is unusable (%s); undelivered points are retried in memory", options.spool_root, exc
                )
                self.spool = None
        self._init_state()
        self._start_threads()
        if hasattr(os, "register_at_fork"):
            # Through a weak reference, so that an abandoned pipeline can still be collected.
            os.register_at_fork(after_in_child=_make_fork_hook(weakref.ref(self)))

    # --- state ---------------------------------------------------------------------------

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._queue: deque[Record | Point] = deque()
        self._markers: list[_FlushMarker] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()  # no more input: drain and stop
        self._abort = threading.Event()  # deadline passed: stop retrying, spool or count the rest
        self._handoff: deque[Any] = deque()
        self._handoff_ready = threading.Condition(threading.Lock())
        self._settle_lock = threading.Lock()
        self._next_batch_id = 0
        self._unsettled: set[int] = set()  # not yet stored, rejected or dropped
        self._unsafe: set[int] = set()  # ... and not in a spool file either
        self._waiting_markers: list[_FlushMarker] = []
        self._spool_wake = threading.Event()
        self._replay_not_before = 0.0  # monotonic time before which the replayer must not send
        self._wal_segments: list[tuple[SpoolFile, _FlushMarker]] = []
        self._threads: list[threading.Thread] = []

    def _start_threads(self) -> None:
        self._threads = [threading.Thread(target=self._encoder_loop, name="tplr-metrics-encoder", daemon=True)]
        for i in range(max(1, self.options.max_workers)):
            self._threads.append(
                threading.Thread(target=self._writer_loop, name=f"tplr-metrics-writer-{i}", daemon=True)
            )
        if self.spool is not None:
            self._threads.append(threading.Thread(target=self._spool_loop, name="tplr-metrics-spool", daemon=True))
        for thread in self._threads:
            thread.start()

    def _after_fork_in_child(self) -> None:
        """A forked child starts with an empty pipeline and spool of its own: what the parent had
        queued or spooled is the parent's to deliver, so nothing is sent twice."""
        if self._closed:
            return
        self.stats.reset_lock()
        reopen = getattr(self.sink, "after_fork", None)
        if reopen is not None:
            reopen()
        if self.spool is not None:
            self.spool.reopen_in_child(f"{self.options.spool_run_name}.{os.getpid()}")
        self._init_state()
        self._start_threads()

    # --- caller side ---------------------------------------------------------------------

    def submit(self, record: Record | Point) -> bool:
        """Queue one record (or an already built point); False when it was not accepted."""
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

    def count_dropped_in_caller(self) -> None:
        """A point durable mode built in the caller came out empty (already counted by reason)."""
        with self._lock:
            self.stats.logged += 1

    def count_sampled_out(self) -> None:
        with self._lock:
            self.stats.sampled_out += 1

    def queue_depth(self) -> int:
        return len(self._queue)

    # --- encoder thread ------------------------------------------------------------------

    def _build(self, record: Record | Point) -> Point | None:
        if type(record) is Point:
            return record  # durable mode built it in the caller
        try:
            return self.builder.build(record)  # type: ignore[arg-type]
        except Exception as exc:  # a bug in the rules must not stop the pipeline
            self.stats.drop("encode_error")
            self.stats.warn_once("encode_error", "could not encode a point: %r", exc)
            return None

    def _encoder_loop(self) -> None:
        options = self.options
        interval = options.flush_interval_ms / 1000.0
        batch: list[Point] = []
        while True:
            timeout = interval + _jitter.uniform(0, options.flush_jitter_ms / 1000.0)
            poked = self._wake.wait(timeout)
            self._wake.clear()
            with self._lock:
                records, self._queue = self._queue, deque()
                markers, self._markers = self._markers, []
                self._not_full.notify_all()
            for record in records:
                point = self._build(record)
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
        if self._encode_lines:
            batch = PointBatch(batch)
            batch.lines = [encode_line(*p) for p in batch]
        with self._settle_lock:
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            self._unsettled.add(batch_id)
            self._unsafe.add(batch_id)
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
            settled = True
            try:
                settled = self._deliver(batch_id, batch)
            except Exception as exc:  # the sink or the disk broke a promise: count, carry on
                self.stats.drop("sink_error", len(batch))
                self.stats.error(f"{type(exc).__name__} in {self.sink_name}: {exc}"[:300])
            finally:
                if settled:
                    self._settle(batch_id)

    @property
    def sink_name(self) -> str:
        return str(getattr(self.sink, "name", "sink"))

    def _deliver(self, batch_id: int, batch: list[Point]) -> bool:
        """Write one batch; False when (part of) it went to the spool and is not settled yet."""
        spool = self.spool
        if spool is not None and (spool.pending() or self._abort.is_set()):
            return self._to_spool(batch_id, batch)  # keep order behind the files already waiting
        pending: Sequence[Point] = batch
        started = time.monotonic()
        attempt = 0
        while True:
            result = self._write(pending)
            if not result.retry:
                return True
            pending = [pending[i] for i in result.retry]
            if spool is not None:
                self.stats.retry(len(pending), result.error)
                self._log_retry(len(pending), result, 1, 0.0, to_spool=True)
                # The replayer's first try waits as a retry would (Retry-After included).
                self._replay_not_before = max(
                    self._replay_not_before, time.monotonic() + self._backoff(1, result.retry_after)
                )
                return self._to_spool(batch_id, pending)
            attempt += 1
            delay = self._backoff(attempt, result.retry_after)
            self.stats.retry(len(pending), result.error)
            self._log_retry(len(pending), result, attempt, delay)
            if time.monotonic() + delay > started + self.options.max_retry_time_ms / 1000.0:
                self.stats.drop("retries_exhausted", len(pending))
                logger.error(
                    "%s: gave up on %d points after retrying for %.0fs",
                    self.sink_name,
                    len(pending),
                    time.monotonic() - started,
                )
                return True
            if self._abort.wait(delay):
                self.stats.drop("close_timeout", len(pending))
                return True

    def _write(self, points: Sequence[Point]) -> WriteResult:
        """One sink.write, with its outcome counted (stored, rejected) and rejects handed on."""
        t0 = time.monotonic()
        result = self.sink.write(points)
        elapsed = time.monotonic() - t0
        if result.stored:
            self.stats.wrote(result.stored, result.nbytes, elapsed)
        for rejection in result.rejected:
            self.stats.reject(rejection.cause)
            self.stats.warn_once(
                "rejected:" + rejection.cause, "%s refused a point: %s", self.sink_name, rejection.reason
            )
            if rejection.float_field is not None:
                self.builder.learn_float_field(*rejection.float_field)
            if self._on_rejected is not None and rejection.index is not None:
                try:
                    self._on_rejected(points[rejection.index], rejection, self.sink_name)
                except Exception as exc:
                    self.stats.warn_once("dead_letter", "could not keep a rejected point: %s", exc)
        return result

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        options = self.options
        delay = min(
            options.max_retry_delay_ms / 1000.0,
            options.retry_interval_ms / 1000.0 * options.exponential_base ** (attempt - 1),
        )
        delay = _jitter.uniform(delay / 2, delay)  # jitter, so that many loggers do not pulse together
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _log_retry(self, points: int, result: WriteResult, attempt: int, delay: float, to_spool: bool = False) -> None:
        if to_spool:
            self.stats.warn_once(
                "spooling",
                "%s: %d points not delivered (%s); kept in the spool until it answers",
                self.sink_name,
                points,
                result.error,
            )
        elif attempt == 1 or attempt % 10 == 0:
            logger.warning(
                "%s: %d points not delivered (%s); retry %d in %.1fs",
                self.sink_name,
                points,
                result.error,
                attempt,
                delay,
            )

    def _to_spool(self, batch_id: int | None, points: Sequence[Point]) -> bool:
        assert self.spool is not None
        self.spool.add_batch(points, batch_id)
        if batch_id is not None:
            with self._settle_lock:
                self._unsafe.discard(batch_id)
                self._release_markers()
        self._spool_wake.set()
        return False

    def _settle(self, batch_id: int) -> None:
        with self._settle_lock:
            self._unsettled.discard(batch_id)
            self._unsafe.discard(batch_id)
            self._release_markers()

    def _release_markers(self) -> None:
        """Wake the flushes whose batches have all settled (call with _settle_lock held)."""
        oldest = min(self._unsettled) if self._unsettled else self._next_batch_id
        oldest_unsafe = min(self._unsafe) if self._unsafe else self._next_batch_id
        still = []
        for marker in self._waiting_markers:
            if marker.batch_id < (oldest_unsafe if marker.durable_only else oldest):
                marker.done.set()
            else:
                still.append(marker)
        self._waiting_markers = still

    # --- spool replayer thread -----------------------------------------------------------

    def _spool_loop(self) -> None:
        spool = self.spool
        assert spool is not None
        attempt = 0
        last_sync = time.monotonic()
        while not self._abort.is_set():
            if self.options.durable and time.monotonic() - last_sync >= self.options.durable_sync_interval_s:
                self._rotate_wal()
                last_sync = time.monotonic()
            hold = self._replay_not_before - time.monotonic()
            if hold > 0:
                if self._abort.wait(min(hold, 0.5)):
                    break
                continue
            item = spool.oldest()
            if item is None:
                attempt = 0
                if self._stopping.is_set() and not self._threads_busy():
                    break
                self._spool_wake.wait(min(0.5, self.options.durable_sync_interval_s))
                self._spool_wake.clear()
                continue
            try:
                delay = self._replay_one(spool, item)
            except Exception as exc:  # a broken file or sink must not stop the replayer
                self.stats.error(f"spool replay: {type(exc).__name__}: {exc}"[:300])
                delay = 1.0
            if delay is None:
                attempt = 0
                continue
            attempt += 1
            if self._abort.wait(self._backoff(attempt, delay or None)):
                break
        if self.options.durable:
            self._rotate_wal()

    def _threads_busy(self) -> bool:
        return any(t.is_alive() for t in self._threads if t is not threading.current_thread())

    def _replay_one(self, spool: Spool, item: SpoolFile) -> float | None:
        """Send one spool file; None when it is done, else the Retry-After hint (0 = none)."""
        points = spool.read(item)
        if item.points < 0:  # a file adopted from a dead process
            self.stats.adopted_points(len(points))
            item.points = len(points)
        result = self._write(points) if points else WriteResult()
        if result.retry:
            self.stats.retry(len(result.retry), result.error)
            if len(result.retry) < len(points):
                # Part was stored: rewrite the file with the rest, so nothing stored is sent twice.
                spool.rewrite(item, [points[i] for i in result.retry])
                self.stats.spool_out(len(points) - len(result.retry), result.stored)
            return result.retry_after or 0.0
        spool.done(item)
        self.stats.spool_out(item.points, result.stored)
        if item.batch_id is not None:
            self._settle(item.batch_id)
        return None

    def _rotate_wal(self) -> None:
        """Seal the WAL segment (fsync) and delete sealed ones whose points are all safe."""
        spool = self.spool
        assert spool is not None
        segment = spool.wal_seal()
        if segment is not None:
            marker = _FlushMarker(durable_only=True)
            with self._lock:
                self._markers.append(marker)
            self._wake.set()
            self._wal_segments.append((segment, marker))
        while self._wal_segments and self._wal_segments[0][1].done.is_set():
            done_segment, _ = self._wal_segments.pop(0)
            spool.drop_segment(done_segment)

    def wal_append(self, point: Point) -> None:
        assert self.spool is not None
        self.spool.wal_append(point)

    # --- flush and close -----------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call has settled; False on timeout."""
        if not any(t.is_alive() for t in self._threads):
            return not self._queue
        marker = _FlushMarker()
        with self._lock:
            self._markers.append(marker)
        self._wake.set()
        self._spool_wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = None, status: str | None = None) -> bool:
        """Flush, stop the threads and close the sink; idempotent. True when all was delivered.

        What is not delivered within ``timeout`` stays in the spool for the next process (or,
        without a spool, is counted as dropped). ``status`` is passed to ``on_close`` (None at
        interpreter exit: the hook decides).
        """
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            self._not_full.notify_all()
        if timeout is None:
            timeout = self.options.close_timeout_s
        deadline = time.monotonic() + timeout
        delivered = self.flush(timeout)
        if not delivered:
            self._abort.set()
        self._stopping.set()
        self._wake.set()
        self._spool_wake.set()
        grace = 0.5 if not delivered else 0.0
        workers = [t for t in self._threads if t.name != "tplr-metrics-spool"]
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()) + grace)
        self._spool_wake.set()  # the workers are done: let the replayer see it at once
        replayer = [t for t in self._threads if t.name == "tplr-metrics-spool"]
        for thread in replayer:  # it may still be draining files adopted from a dead process
            thread.join(max(0.0, deadline - time.monotonic()))
            self._abort.set()
            self._spool_wake.set()
            thread.join(0.5)
        if delivered and self.options.durable and self.spool is not None:
            # Everything accepted before close() is stored: the write-ahead log has done its job.
            sealed = self.spool.wal_seal()
            for segment in [s for s, _ in self._wal_segments] + ([sealed] if sealed else []):
                self.spool.drop_segment(segment)
            self._wal_segments.clear()
        self._keep_leftovers()
        if self._on_close is not None:
            try:
                self._on_close(status)
            except Exception as exc:
                logger.warning("close hook failed: %s", type(exc).__name__)
        try:
            self.sink.close()
        except Exception as exc:
            logger.warning("closing %s failed: %s", self.sink_name, type(exc).__name__)
        if self.spool is not None:
            left = self.spool.pending()
            self.spool.close(remove_if_empty=not any(t.is_alive() for t in self._threads))
            if left:
                logger.warning(
                    "%d point(s) not delivered by close(); kept in %s for the next process "
                    "(or `tplr-metrics replay --spool %s`)",
                    self.stats.spooled,
                    self.spool.dir,
                    self.spool.root,
                )
        elif not delivered:
            logger.error("close() timed out after %.1fs; undelivered points are counted in stats()", timeout)
        return delivered

    def _keep_leftovers(self) -> None:
        """Records the encoder never reached: to the spool, or counted as dropped."""
        with self._lock:
            left, self._queue = list(self._queue), deque()
        if not left:
            return
        if self.spool is None:
            self.stats.drop("close_timeout", len(left))
            return
        points = [p for p in (self._build(r) for r in left) if p is not None]
        if points:
            self._to_spool(None, points)

    @property
    def closed(self) -> bool:
        return self._closed


def _make_fork_hook(ref: weakref.ref[Pipeline]) -> Callable[[], None]:
    def hook() -> None:
        pipeline = ref()
        if pipeline is not None:
            pipeline._after_fork_in_child()

    return hook
