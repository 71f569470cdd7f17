"""One destination's own way out: buffer, writer threads, retry, spool, counters.

Every destination a logger writes to (each sink of ``sinks=[...]``) gets a lane, as Telegraf
gives every output its own buffer and OpenTelemetry every exporter its own processor. A lane
that is down, slow or raising never delays, blocks or duplicates another: the encoder hands each
lane the same encoded batch and goes on; what a lane cannot deliver stays in *its* buffer, retry
loop and spool directory.

Inside a lane: batches wait in a bounded buffer; ``max_workers`` writer threads write them.
With a spool, a batch the destination cannot take for a reason that is not the data's fault goes
to disk, and a replayer thread sends the spool's files in order, with exponential backoff and
full jitter (honouring Retry-After), as soon as the destination answers again; while files wait,
new batches join the end of the spool, so order holds and memory stays bounded. Without a spool,
writers retry in memory for at most ``max_retry_time``, then drop and count.

Accounting is exact: every point handed to the lane (``received``) and every point adopted from
a dead process's spool is, once the lane is closed, in exactly one of ``written``, ``rejected``,
``dropped`` (by reason) or ``spooled`` (waiting on disk for the next process).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..encoding.line_batches import LineBatch
from ..encoding.points import Point
from ..sinks.base import PointBatch, Rejection, Sink, WriteResult
from . import spool_lp
from .run_names import full_run_id
from .spool import Spool, SpoolFile
from .stats import PipelineStats

logger = logging.getLogger("tplr_metrics")

# Jitter draws from its own generator, never from the global one a training loop may have seeded.
_jitter = random.Random()

#: How often a replay waiting out its backoff after a refused connection asks whether the server
#: listens again (a connect to a closed port costs next to nothing, on either side).
REACHABLE_POLL_S = 0.1

OnRejected = Callable[[Point, Rejection, str], None]
OnCorruptLine = Callable[[bytes, str, str], None]  # (the line, its spool file's name, the lane's name)


@dataclass(frozen=True)
class LaneOptions:
    batch_size: int = 1_000
    max_workers: int = 1
    buffer_points: int = 600_000  # points waiting in memory before the lane spills or drops
    retry_interval_ms: int = 1_000
    max_retry_delay_ms: int = 30_000
    max_retry_time_ms: int = 180_000
    exponential_base: float = 2.0
    spool_max_bytes: int = 512 * 1024 * 1024
    durable: bool = False
    durable_sync_interval_s: float = 1.0


class FlushMarker:
    """Done when every batch a lane was given before the marker has settled (or is safe)."""

    __slots__ = ("done", "batch_id", "durable_only")

    def __init__(self, batch_id: int = -1, durable_only: bool = False) -> None:
        self.done = threading.Event()
        self.batch_id = batch_id
        self.durable_only = durable_only


class _Flight:
    """One sink.write call in progress, so that close() can account for it if it never returns."""

    __slots__ = ("points", "done", "abandoned", "spooled")

    def __init__(self, points: Sequence[Point]) -> None:
        self.points = points
        self.done = False
        self.abandoned = False
        self.spooled: SpoolFile | None = None


_STOP = object()


class Lane:
    """Delivers the batches it is given to one sink, and counts what became of each point."""

    def __init__(
        self,
        name: str,
        sink: Sink,
        options: LaneOptions,
        spool_dir: Path | None,
        spool_run_name: str,
        on_rejected: OnRejected | None = None,
        learn_float_field: Callable[[str, str], None] | None = None,
        learn_int_field: Callable[[str, str], None] | None = None,
        describe: dict[str, Any] | None = None,
        on_corrupt_line: OnCorruptLine | None = None,
    ) -> None:
        self.name = name
        self.on_corrupt_line = on_corrupt_line
        self.sink = sink
        self.options = options
        self.stats = PipelineStats()
        self.accepts_lines = bool(getattr(sink, "accepts_lines", False))
        self._on_rejected = on_rejected
        self._learn_float_field = learn_float_field
        self._learn_int_field = learn_int_field
        self.spool: Spool | None = None
        if spool_dir is not None:
            try:
                # A sink that POSTs a body as it is gets its batches spooled as their line protocol
                # (format 2), replayed without decoding or encoding them again. Durable mode's
                # batch files stay JSON lines: adoption matches them against its WAL's lines.
                bodies = self.accepts_lines and callable(getattr(sink, "write_body", None)) and not options.durable
                self.spool = Spool(
                    spool_dir, spool_run_name, self.stats, options.spool_max_bytes, describe, bodies=bodies
                )
                self.spool.on_evicted = self._settle
                self.spool.adopt_orphans()
            except OSError as exc:
                if options.durable:
                    raise
                logger.error("spool under %s is unusable (%s); lane %s retries in memory", spool_dir, exc, name)
                self.spool = None
        self._init_state()

    # --- state ---------------------------------------------------------------------------

    def _init_state(self) -> None:
        self._buffer: deque[Any] = deque()
        self._buffered_points = 0
        self._buffer_ready = threading.Condition(threading.Lock())
        self._abort = threading.Event()  # deadline passed: stop retrying, spool or count the rest
        self._stopping = threading.Event()
        self._settle_lock = threading.Lock()
        self._next_batch_id = 0
        self._unsettled: set[int] = set()  # not yet stored, rejected or dropped
        self._unsafe: set[int] = set()  # ... and not in a spool file either
        self._waiting_markers: list[FlushMarker] = []
        self._spool_wake = threading.Event()
        self._replay_not_before = 0.0  # monotonic time before which the replayer must not send
        self._replay_unreachable = False  # the last replay found nothing listening: see _wait_to_replay
        self.replay_hopeless = False  # the last replay's answer says no retry can succeed (a 404 with a fix to make)
        self._wal_segments: list[tuple[SpoolFile, FlushMarker]] = []
        self._flight_lock = threading.Lock()
        self._flights: set[_Flight] = set()
        # Set by finish(), under the flight lock: close() has returned these books and let the
        # spool files go (the next process may adopt them at once). An answer arriving later
        # changes neither: its points' copy stays on disk and the next process delivers it.
        self._finished = False
        self._writers: list[threading.Thread] = []
        self._replayer: threading.Thread | None = None
        self.request_wal_marker: Callable[[FlushMarker], None] | None = None  # set by the pipeline
        self.on_room: Callable[[], None] | None = None  # set by the pipeline: a writer took a batch

    def start(self) -> None:
        for i in range(max(1, self.options.max_workers)):
            thread = threading.Thread(
                target=self._writer_loop, name=f"tplr-metrics-{self.name}-writer-{i}", daemon=True
            )
            self._writers.append(thread)
        if self.spool is not None:
            self._replayer = threading.Thread(
                target=self._spool_loop, name=f"tplr-metrics-{self.name}-spool", daemon=True
            )
        for thread in self._threads():
            thread.start()

    def _threads(self) -> list[threading.Thread]:
        return self._writers + ([self._replayer] if self._replayer is not None else [])

    def after_fork_in_child(self, run_name: str) -> None:
        """A forked child's lane starts empty, with zeroed counters and a spool dir of its own:
        what the parent had buffered or spooled is the parent's to deliver."""
        self.stats = PipelineStats()
        reopen = getattr(self.sink, "after_fork", None)
        if reopen is not None:
            reopen()
        if self.spool is not None:
            self.spool.reopen_in_child(run_name, self.stats)
        self._init_state()

    # --- from the encoder ----------------------------------------------------------------

    def has_room(self) -> bool:
        """The writers are keeping up: fewer batches wait than there are writers."""
        return len(self._buffer) < max(1, self.options.max_workers)

    def offer(self, batch: list[Point]) -> None:
        """Take one batch; never blocks. Past its buffer bound the lane spills to its spool, or
        (without one) drops its oldest batch, counted ``buffer_full``."""
        n = len(batch)
        self.stats.received(n)
        with self._settle_lock:
            batch_id = self._next_batch_id
            self._next_batch_id += 1
            self._unsettled.add(batch_id)
            self._unsafe.add(batch_id)
        with self._buffer_ready:
            self._buffer.append((batch_id, batch))
            self._buffered_points += n
            evicted: list[tuple[int, list[Point]]] = []
            while self._buffered_points > self.options.buffer_points and len(self._buffer) > 1:
                old = self._buffer.popleft()
                self._buffered_points -= len(old[1])
                evicted.append(old)
            self._buffer_ready.notify()
        for old_id, old_batch in evicted:
            if self.spool is not None:
                self._to_spool(old_id, old_batch)
            else:
                self.stats.drop("buffer_full", len(old_batch))
                self.stats.warn_once(
                    "buffer_full",
                    "%s: more than %d points waiting; the oldest are dropped",
                    self.name,
                    self.options.buffer_points,
                )
                self._settle(old_id)

    def mark(self, durable_only: bool = False) -> FlushMarker:
        """A marker done once every batch offered so far has settled (or, durable_only, is safe)."""
        return self.track(FlushMarker(durable_only=durable_only))

    def track(self, marker: FlushMarker) -> FlushMarker:
        with self._settle_lock:
            marker.batch_id = self._next_batch_id - 1
            self._waiting_markers.append(marker)
            self._release_markers()
        self._spool_wake.set()
        return marker

    def buffered_points(self) -> int:
        return self._buffered_points

    # --- writer threads ------------------------------------------------------------------

    def _writer_loop(self) -> None:
        while True:
            with self._buffer_ready:
                while not self._buffer and not self._abort.is_set():
                    self._buffer_ready.wait()
                if self._abort.is_set():
                    # Past the deadline: close() spools what waits here itself, in one file, so
                    # no writer is still writing a spool file when close() returns.
                    return
                item = self._buffer.popleft()
                if item is not _STOP:
                    self._buffered_points -= len(item[1])
            if self.on_room is not None:
                self.on_room()
            if item is _STOP:
                return
            batch_id, batch = item
            settled = True
            try:
                settled = self._deliver(batch_id, batch)
            except Exception as exc:  # the sink or the disk broke a promise: count, carry on
                self.stats.drop("sink_error", len(batch))
                self.stats.error(f"{type(exc).__name__} in {self.name}: {exc}"[:300])
            finally:
                if settled:
                    self._settle(batch_id)

    def _deliver(self, batch_id: int, batch: list[Point]) -> bool:
        """Write one batch; False when (part of) it went to the spool and is not settled yet."""
        spool = self.spool
        if self._abort.is_set():
            if spool is not None:
                return self._to_spool(batch_id, batch)
            self.stats.drop("close_timeout", len(batch))
            return True
        if spool is not None and spool.pending() and self._try_spool(batch_id, batch):
            return False  # kept in order behind the files already waiting
        pending: Sequence[Point] = batch
        started = time.monotonic()
        attempt = 0
        unanswered = False  # once a request went unanswered, the server may hold these points
        while True:
            result = self._write(pending)
            if result is None or not result.retry:
                return True  # None: close() gave up on this request and accounted for it
            if result.hopeless and spool is None:  # no retry can succeed: count it now, say the fix
                self.stats.drop("destination_error", len(result.retry), maybe_stored=unanswered)
                self.stats.error(str(result.error)[:500])
                self.stats.warn_once("destination_error", "%s: %s", self.name, result.error)
                return True
            pending = _subset(pending, result.retry)
            unanswered = unanswered or result.unanswered
            if spool is not None:
                # The replayer's first try waits as a retry would (Retry-After included): set
                # before the file exists, since writing it wakes the replayer.
                self._replay_not_before = max(
                    self._replay_not_before, time.monotonic() + self._backoff(1, result.retry_after)
                )
                self._replay_unreachable = result.unreachable
            if spool is not None and self._try_spool(batch_id, pending, maybe_stored=unanswered):
                self.stats.retry(len(pending), result.error)
                self._log_retry(len(pending), result, 1, 0.0, to_spool=True)
                return False
            if spool is not None:
                # The disk is full: retried in memory, as without a spool (and the spool tried
                # again before each retry). Meanwhile the buffer fills, and what it evicts is
                # counted (spool_write_failed): the lane's bound.
                self.stats.warn_once(
                    "spool_full_retry", "%s: the spool cannot be written; retrying in memory", self.name
                )
            attempt += 1
            delay = self._backoff(attempt, result.retry_after)
            self.stats.retry(len(pending), result.error)
            self._log_retry(len(pending), result, attempt, delay)
            if time.monotonic() + delay > started + self.options.max_retry_time_ms / 1000.0:
                self.stats.drop("retries_exhausted", len(pending), maybe_stored=unanswered)
                logger.error(
                    "%s: gave up on %d points after retrying for %.0fs",
                    self.name,
                    len(pending),
                    time.monotonic() - started,
                )
                return True
            if self._abort.wait(delay):
                self.stats.drop("close_timeout", len(pending), maybe_stored=unanswered)
                return True

    def _write(self, points: Sequence[Point]) -> WriteResult | None:
        """One sink.write of a writer's batch, its outcome counted (stored, rejected) and
        rejects handed on.

        None when close() abandoned the request while it was in flight: close() then put the
        points in the spool or counted them, and the late answer only corrects that count."""
        flight = _Flight(points)
        with self._flight_lock:
            self._flights.add(flight)
        result, elapsed = self._send(points)
        with self._flight_lock:
            self._flights.discard(flight)
            flight.done = True
            abandoned = flight.abandoned
            late = abandoned and not self._finished and self._late_answer(flight, result)
        if late:
            self._hand_on(points, result)
        if abandoned:
            return None
        self._count_result(points, result, elapsed)
        return result

    def _send(self, points: Sequence[Point], origin: str | None = None) -> tuple[WriteResult, float]:
        """The sink's answer and how long it took. ``origin``: the run a dead process's points
        were logged in, for a sink that keeps runs."""
        t0 = time.monotonic()
        write_recovered = getattr(self.sink, "write_recovered", None) if origin else None
        if write_recovered is not None and origin:
            origin = full_run_id(origin, points)  # a long runtime_id's spool name is shortened
        try:
            result = write_recovered(points, origin) if write_recovered is not None else self.sink.write(points)
        except Exception as exc:  # a sink must not raise; one that does is retried like a failure
            self.stats.warn_once(f"raised:{self.name}", "%s raised %s in write", self.name, type(exc).__name__)
            result = WriteResult.all_retry(len(points), f"{type(exc).__name__}: {exc}"[:300])
        return result, time.monotonic() - t0

    def _count_result(
        self, points: Sequence[Point], result: WriteResult, elapsed: float, moved: Callable[[], None] | None = None
    ) -> None:
        """Count an answer and hand its rejects on; see _count."""
        self._count(result, elapsed, moved)
        self._hand_on(points, result)

    def _count(self, result: WriteResult, elapsed: float, moved: Callable[[], None] | None = None) -> None:
        """Count an answer; ``moved`` counts the answered points out of where they were counted
        before (the spool, a loss) in the same step, so that the books never hold them twice."""
        stats = self.stats
        with stats.at_once():
            if result.stored:
                stats.wrote(result.stored, result.nbytes, elapsed)
            for cause, n in result.sanitized.items():
                stats.sanitize(cause, n)
            for rejection in result.rejected:
                stats.reject(rejection.cause)
            if moved is not None:
                moved()

    def _hand_on(self, points: Sequence[Point], result: WriteResult) -> None:
        """What an answer tells beyond the counts: warnings, the field types the server holds,
        and refused points to the dead letter."""
        stats = self.stats
        for cause, n in result.sanitized.items():
            stats.warn_once(cause, "%s: %d value(s) changed for this server (%s)", self.name, n, cause)
        if self._learn_int_field is not None:
            for measurement_field in result.int_fields:
                self._learn_int_field(*measurement_field)
        if self._learn_float_field is not None:
            for measurement_field in result.float_fields:
                self._learn_float_field(*measurement_field)
        for rejection in result.rejected:
            stats.warn_once("rejected:" + rejection.cause, "%s refused a point: %s", self.name, rejection.reason)
            if rejection.float_field is not None and self._learn_float_field is not None:
                self._learn_float_field(*rejection.float_field)
            if rejection.int_field is not None and self._learn_int_field is not None:
                self._learn_int_field(*rejection.int_field)
            if self._on_rejected is not None and rejection.index is not None:
                try:
                    self._on_rejected(points[rejection.index], rejection, self.name)
                except Exception as exc:
                    stats.warn_once("dead_letter", "could not keep a rejected point: %s", exc)

    def _late_answer(self, flight: _Flight, result: WriteResult) -> bool:
        """An answer that came after close() had accounted for its request, before close()
        returned (call with the flight lock held): when the whole batch settled, move its count
        from spooled (removing the copy) or in_flight_at_exit. True when it was counted."""
        if result.retry:
            return False  # the copy in the spool (or the in_flight_at_exit count) stands
        n = len(flight.points)
        if flight.spooled is not None and self.spool is not None:
            self.spool.done(flight.spooled)
            self._count(result, 0.0, lambda: self.stats.spool_out(n, 0))
        else:
            self._count(result, 0.0, lambda: self.stats.undrop("in_flight_at_exit", n, maybe_stored=True))
        return True

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
                self.name,
                points,
                result.error,
            )
        elif attempt == 1 or attempt % 10 == 0:
            logger.warning(
                "%s: %d points not delivered (%s); retry %d in %.1fs",
                self.name,
                points,
                result.error,
                attempt,
                delay,
            )

    def _to_spool(self, batch_id: int | None, points: Sequence[Point]) -> bool:
        """Into the spool, or counted ``spool_write_failed`` (and settled); False: not settled yet."""
        if not self._try_spool(batch_id, points):
            self.stats.drop("spool_write_failed", len(points))  # counted, never silent
            if batch_id is not None:
                self._settle(batch_id)
        return False

    def _try_spool(self, batch_id: int | None, points: Sequence[Point], maybe_stored: bool = False) -> bool:
        """Into the spool (the batch is then safe, not settled); False when it cannot be written."""
        assert self.spool is not None
        if self.spool.add_batch(points, batch_id, maybe_stored=maybe_stored) is None:
            return False
        if batch_id is not None:
            with self._settle_lock:
                self._unsafe.discard(batch_id)
                self._release_markers()
        self._spool_wake.set()
        return True

    def _spool_batches(self, batches: list[tuple[int, Sequence[Point]]]) -> None:
        """Several batches into one spool file: each file costs a handful of syscalls, and each
        syscall a wait for the GIL when other threads keep logging through close()."""
        assert self.spool is not None
        points: Sequence[Point]
        if all(type(batch) is LineBatch for _, batch in batches):
            points = LineBatch.joined([batch for _, batch in batches])  # type: ignore[misc]
            stored = self.spool.add_batch(points, None, at_once=True) is not None
            self._spooled_together(batches, stored, len(points))
            return
        points = [point for _, batch in batches for point in batch]
        line_lists = [getattr(batch, "lines", None) for _, batch in batches]
        if all(lines is not None for lines in line_lists):
            points = PointBatch(points)
            points.lines = [line for lines in line_lists for line in lines]  # type: ignore[union-attr]
        stored = self.spool.add_batch(points, None, at_once=True) is not None
        self._spooled_together(batches, stored, len(points))

    def _spooled_together(self, batches: list[tuple[int, Any]], stored: bool, n: int) -> None:
        if not stored:
            self.stats.drop("spool_write_failed", n)  # counted, never silent
        with self._settle_lock:
            for batch_id, _ in batches:
                self._unsafe.discard(batch_id)
                if not stored:
                    self._unsettled.discard(batch_id)
            self._release_markers()
        self._spool_wake.set()

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
                if self._wait_to_replay(min(hold, 0.5)):
                    break
                continue
            item = spool.oldest()
            if item is None:
                attempt = 0
                if self._stopping.is_set() and not any(t.is_alive() for t in self._writers):
                    break
                self._spool_wake.wait(min(0.5, self.options.durable_sync_interval_s))
                self._spool_wake.clear()
                continue
            try:
                delay = self._replay_one(spool, item)
            except Exception as exc:  # a broken file or sink must not stop the replayer
                self.stats.error(f"spool replay: {type(exc).__name__}: {exc}"[:300])
                delay = 1.0
            finally:
                spool.release(item)
            if delay is None:
                attempt = 0
                continue
            attempt += 1
            if self._wait_to_replay(self._backoff(attempt, delay or None)):
                break
        if self.options.durable:
            self._rotate_wal()

    def _wait_to_replay(self, delay: float) -> bool:
        """Wait out a replay's backoff; True when aborted. After a refused connection (nothing
        listened), the sink's ``reachable()`` is asked every REACHABLE_POLL_S meanwhile, and the
        wait ends when the server answers: the backoff (up to ``max_retry_delay``, 30 s by
        default) no longer delays a drain past the server's return. A server that answered (a
        503, a 429 and its Retry-After) is left alone for the whole wait."""
        reachable = getattr(self.sink, "reachable", None)
        if not self._replay_unreachable or not callable(reachable):
            return self._abort.wait(delay)
        until = time.monotonic() + delay
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return False
            if self._abort.wait(min(left, REACHABLE_POLL_S)):
                return True
            try:
                if reachable(1.0):
                    self._replay_not_before = 0.0  # a writer's hold too: the server is back
                    return False
            except Exception:
                return self._abort.wait(max(0.0, until - time.monotonic()))

    def _replay_one(self, spool: Spool, item: SpoolFile) -> float | None:
        """Send one spool file; None when it is done, else the Retry-After hint (0 = none)."""
        if self._finished:
            return None  # close() has returned: the file is the next process's now
        if item.is_body:
            return self._replay_body(spool, item)
        points, bad = spool.read(item)
        if item.adopted and item.points != len(points) + len(bad):  # blank lines: not points
            self.stats.adopted_points(len(points) + len(bad) - item.points)
            item.points = len(points) + len(bad)
        if bad:
            self._quarantine(spool, item, points, bad)
        # A replay's points are in their file already: close() leaves its request alone.
        result, elapsed = self._send(points, item.origin) if points else (WriteResult(), 0.0)
        with self._flight_lock:  # the file and the books change together, and never after finish()
            if self._finished:
                return None  # the file stays as it is, for the next process
            self._replay_unreachable = bool(result.retry) and result.unreachable
            self.replay_hopeless = bool(result.retry) and result.hopeless
            if result.retry:
                item.maybe_stored = item.maybe_stored or result.unanswered
                self.stats.retry(len(result.retry), result.error)
                settled = len(points) - len(result.retry)
                if settled:
                    # Part was stored: rewrite the file with the rest, so nothing stored is sent twice.
                    spool.rewrite(item, [points[i] for i in result.retry])
                self._count(result, elapsed, lambda: self.stats.spool_out(settled, result.stored))
            else:
                spool.done(item)
                self._count(result, elapsed, lambda: self.stats.spool_out(item.points, result.stored))
        self._hand_on(points, result)
        if result.retry:
            return result.retry_after or 0.0
        if item.batch_id is not None:
            self._settle(item.batch_id)
        return None

    def _replay_body(self, spool: Spool, item: SpoolFile) -> float | None:
        """Send a format-2 file (its line-protocol body, see ``spool_lp``) as it is: one POST of
        the file's bytes, no decoding or encoding. Only an answer that refuses part of it (or a
        sink that takes points only) reads its lines back into points, sent as a replay of format
        1 is, with their lines: the answer's refused lines are found and counted per point."""
        body, count, bad, missing = spool.read_body(item)
        if item.adopted and item.points != count + len(bad) + missing:  # blank lines: not points
            self.stats.adopted_points(count + len(bad) + missing - item.points)
            item.points = count + len(bad) + missing
        if bad or missing:
            kept = body.decode("utf-8", "replace").splitlines()
            self._quarantine(spool, item, (), bad, lines=kept, missing=missing)
        write_body = getattr(self.sink, "write_body", None)
        if item.origin is not None and getattr(self.sink, "write_recovered", None) is not None:
            write_body = None  # a sink that keeps runs stores these under the run that logged them
        points: Sequence[Point] = ()
        lines: list[str] = []
        result: WriteResult | None = WriteResult() if not count else None
        t0 = time.monotonic()
        if result is None and write_body is not None:
            try:
                result = write_body(body, count)
            except Exception as exc:  # a sink must not raise; one that does is retried like a failure
                self.stats.warn_once(f"raised:{self.name}", "%s raised %s in write", self.name, type(exc).__name__)
                result = WriteResult.all_retry(count, f"{type(exc).__name__}: {exc}"[:300])
        if result is None:  # refused in part: find out which, point by point
            parsed, lines, unreadable = spool_lp.parse_body(body)
            if unreadable:  # its digest held, yet not a point: set aside, never sent
                self._quarantine(spool, item, parsed, unreadable, lines=lines)
            batch = PointBatch(parsed)
            batch.lines = lines
            points = batch
            result, _ = self._send(batch, item.origin) if batch else (WriteResult(), 0.0)
        elapsed = time.monotonic() - t0
        with self._flight_lock:  # the file and the books change together, and never after finish()
            if self._finished:
                return None  # the file stays as it is, for the next process
            self._replay_unreachable = bool(result.retry) and result.unreachable
            self.replay_hopeless = bool(result.retry) and result.hopeless
            if result.retry:
                item.maybe_stored = item.maybe_stored or result.unanswered
                self.stats.retry(len(result.retry), result.error)
                settled = item.points - len(result.retry)
                if settled:
                    # Part was stored: rewrite the file with the rest, so nothing stored is sent twice.
                    spool.rewrite(item, [points[i] for i in result.retry], [lines[i] for i in result.retry])
                self._count(result, elapsed, lambda: self.stats.spool_out(settled, result.stored))
            else:
                spool.done(item)
                self._count(result, elapsed, lambda: self.stats.spool_out(item.points, result.stored))
        self._hand_on(points, result)
        if result.retry:
            return result.retry_after or 0.0
        if item.batch_id is not None:
            self._settle(item.batch_id)
        return None

    def _quarantine(
        self,
        spool: Spool,
        item: SpoolFile,
        points: Sequence[Point],
        bad: list[bytes],
        lines: Sequence[str] | None = None,
        missing: int = 0,
    ) -> None:
        """Lines that are not a valid point go to the dead letter (cause ``corrupt_spool_line``,
        counted rejected) and out of the file, so the rest of it, and every later file, is
        delivered; the file is rewritten first, so no line is counted twice. ``missing``: points
        a format-2 file's header promises that are not in it, counted dropped (``spool_damaged``)."""
        if self.on_corrupt_line is not None:
            for line in bad:
                try:
                    self.on_corrupt_line(line, item.path.name, self.name)
                except Exception as exc:  # the dead letter is best effort; the count is not
                    self.stats.error(f"dead letter: {type(exc).__name__}: {exc}"[:300])
        with self._flight_lock:
            if self._finished:
                return
            spool.rewrite(item, points, lines)
            item.points = len(lines) if lines is not None else len(points)
            with self.stats.at_once():
                self.stats.spool_out(len(bad) + missing, 0)
                self.stats.reject("corrupt_spool_line", len(bad))
                self.stats.drop("spool_damaged", missing)
        if missing:
            self.stats.warn_once(
                "spool_damaged",
                "%s: %s was cut short: %d point(s) its header promises are gone (counted spool_damaged)",
                self.name,
                item.path,
                missing,
            )
        if not bad:
            return
        self.stats.warn_once(
            "corrupt_spool_line",
            "%s: %d line(s) of %s are not a valid point; moved to the dead letter",
            self.name,
            len(bad),
            item.path,
        )

    def _rotate_wal(self) -> None:
        """Seal the WAL segment (fsync) and delete sealed ones whose points are all safe."""
        spool = self.spool
        assert spool is not None
        segment = spool.wal_seal()
        if segment is not None and self.request_wal_marker is not None:
            marker = FlushMarker(durable_only=True)
            self.request_wal_marker(marker)
            self._wal_segments.append((segment, marker))
        while self._wal_segments and self._wal_segments[0][1].done.is_set():
            done_segment, _ = self._wal_segments.pop(0)
            spool.drop_segment(done_segment)

    def wal_append(self, line: bytes) -> None:
        if self.spool is not None and not self.spool.wal_append(line):
            self.wal_failed()

    def wal_failed(self) -> None:
        """A point could not be added to the write-ahead log (a full disk): counted, logged once."""
        self.stats.warn_once("wal_failed", "%s: a point could not be added to the write-ahead log", self.name)
        self.stats.count("wal_failed")

    # --- close ---------------------------------------------------------------------------

    def abort(self) -> None:
        """The deadline passed: stop retrying; what is left goes to the spool or is counted."""
        self._abort.set()
        self._spool_wake.set()
        with self._buffer_ready:
            self._buffer_ready.notify_all()

    def begin_stop(self) -> None:
        """The encoder has handed over its last batch: writers stop once the buffer is empty."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._buffer_ready:
            for _ in self._writers:
                self._buffer.append(_STOP)
            self._buffer_ready.notify_all()

    def stop(self, deadline: float, grace_until: float) -> None:
        """Drain until ``deadline``, then abort and wait for the threads until ``grace_until``
        (absolute times, shared by all lanes so that they stop together), then account for
        what is left and for requests still in flight."""
        self.begin_stop()
        for thread in self._writers:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._writers):
            self.abort()
        self._spool_wake.set()
        if self._replayer is not None:  # it may still be draining files adopted from a dead process
            self._replayer.join(max(0.0, deadline - time.monotonic()))
            self.abort()
        for thread in self._threads():
            thread.join(max(0.0, grace_until - time.monotonic()))
        self._account_leftovers()

    def _account_leftovers(self) -> None:
        """Batches no writer took and requests that never answered: to the spool, or counted."""
        with self._buffer_ready:
            left = [item for item in self._buffer if item is not _STOP]
            self._buffer.clear()
            self._buffered_points = 0
        if left and self.spool is not None:
            self._spool_batches(left)
        elif left:
            self.stats.drop("close_timeout", sum(len(batch) for _, batch in left))
        # Under the flight lock, so that an answer arriving meanwhile sees the copy or the count.
        with self._flight_lock:
            flights = [f for f in self._flights if not f.done]
            for flight in flights:
                flight.abandoned = True
                # The request is out: the server may store these points whatever happens next.
                copy = self.spool.add_batch(flight.points, None, maybe_stored=True) if self.spool is not None else None
                if copy is not None:
                    flight.spooled = copy
                else:
                    self.stats.drop("in_flight_at_exit", len(flight.points), maybe_stored=True)
        if flights:
            logger.warning(
                "%s: %d request(s) still unanswered at close; their points are %s",
                self.name,
                len(flights),
                "in the spool" if self.spool is not None else "counted in_flight_at_exit",
            )

    def finish(self, delivered: bool) -> int:
        """Close the spool (and, when all was delivered, durable mode's WAL); points left there."""
        spool = self.spool
        with self._flight_lock:
            self._finished = True
        if spool is None:
            return 0
        if self.options.durable and (delivered or self._everything_accounted()):
            # Every point this lane received is stored, refused, counted, or in an outbox file:
            # the write-ahead log has done its job. (Kept, a replay would deliver the points
            # this process did store a second time: JSONL held 300 ids twice in the fault matrix.)
            sealed = spool.wal_seal(final=True)
            for segment in [s for s, _ in self._wal_segments] + ([sealed] if sealed else []):
                spool.drop_segment(segment)
            self._wal_segments.clear()
        left = spool.pending_points()
        spool.close(remove_if_empty=not any(t.is_alive() for t in self._threads()))
        return left

    def _everything_accounted(self) -> bool:
        """After _account_leftovers: no writer holds a batch outside a request whose points
        close() copied to the spool or counted (a writer alive elsewhere may hold uncounted points)."""
        alive = sum(1 for t in self._writers if t.is_alive())
        with self._flight_lock:
            copied = sum(1 for f in self._flights if not f.done and f.abandoned)
        return alive <= copied

    def close_sink(self) -> None:
        try:
            self.sink.close()
        except Exception as exc:
            logger.warning("closing %s failed: %s", self.name, type(exc).__name__)


def _subset(points: Sequence[Point], indices: Sequence[int]) -> Sequence[Point]:
    """The points at ``indices``, with their lines when the batch carries them (PointBatch), so
    that a batch spooled after a retry keeps the line protocol it is sent as."""
    if type(points) is LineBatch:
        return points.subset(indices)  # its Points still unbuilt
    lines: list[str] | None = getattr(points, "lines", None)
    subset = [points[i] for i in indices]
    if lines is None:
        return subset
    batch = PointBatch(subset)
    batch.lines = [lines[i] for i in indices]
    return batch
