"""Callers -> bounded queue -> encoder thread -> one lane per destination; flush, close, fork.

The caller's path takes no lock: ``deque.append``/``popleft`` and ``next()`` on a counter are
single C calls under the GIL, so ``log()`` from any thread, or from a signal handler that
interrupted ``log()`` itself, never waits for anything it could be holding.

The encoder thread takes records off the queue one at a time, turns them into points and cuts
batches of ``batch_size`` (or whatever is there each ``flush_interval``). When every destination
takes line protocol, it cuts batches of the records themselves and encodes each batch straight
to lines (:mod:`..encoding.line_batches`: no Point per record). Each batch is handed to
every lane (see :mod:`.lane`); the encoder waits only while *no* lane has room, so the fastest
destination sets the pace and a slow one spills to its own spool or counts its own drops. When
every lane is slow, the queue fills and the overflow policy decides, always counted.

``flush()`` puts a marker into the queue: once the encoder reaches it, each lane is asked for a
marker that completes when every batch it was given has settled (stored, rejected or dropped).

``close()`` stops intake, flushes until its deadline, then accounts for every point still in the
process: records still queued and the encoder's batch in hand go to the lanes, which write them
to their spools (or count ``close_timeout``); requests still in flight after a grace period are
spooled too (or counted ``in_flight_at_exit``). No point is left in no counter.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..encoding.line_batches import BatchLineEncoder
from ..encoding.line_protocol import encode_lines
from ..encoding.points import Point, PointBuilder, Record, expand_queued, is_compact
from ..sinks.base import PointBatch, Sink
from .counters import AtomicCounter, ReasonCounters
from .destination_id import describe_destination, fingerprint
from .lane import FlushMarker, Lane, LaneOptions, OnCorruptLine, OnRejected
from .queue_take import take
from .spool import encode_record, wal_header
from .stats import INPUT_DROP_REASONS, PipelineStats

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

    def lane_options(self) -> LaneOptions:
        return LaneOptions(
            batch_size=self.batch_size,
            max_workers=self.max_workers,
            buffer_points=max(self.max_queue_size, self.batch_size),
            retry_interval_ms=self.retry_interval_ms,
            max_retry_delay_ms=self.max_retry_delay_ms,
            max_retry_time_ms=self.max_retry_time_ms,
            exponential_base=self.exponential_base,
            spool_max_bytes=self.spool_max_bytes,
            durable=self.durable,
            durable_sync_interval_s=self.durable_sync_interval_s,
        )


class _Flush:
    """A flush() marker in the queue; the encoder fills in one marker per lane."""

    __slots__ = ("reached", "lane_markers")

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.lane_markers: list[FlushMarker] = []


class _WalMark:
    """A lane's request (from its WAL rotation) for a durable-only marker at this queue position."""

    __slots__ = ("lane", "marker")

    def __init__(self, lane: Lane, marker: FlushMarker) -> None:
        self.lane = lane
        self.marker = marker


_CONTROL = (_Flush, _WalMark)


def lane_sinks(sink: Sink) -> list[Sink]:
    """The destinations behind a sink: a multiplex's children, else the sink itself."""
    children = getattr(sink, "children", None)
    if isinstance(children, list) and children and getattr(sink, "is_multiplex", False):
        return [s for child in children for s in lane_sinks(child)]
    return [sink]


class Pipeline:
    """Moves records from callers to every destination without blocking them or losing count."""

    def __init__(
        self,
        sink: Sink,
        builder: PointBuilder,
        stats: PipelineStats,
        options: PipelineOptions,
        on_rejected: OnRejected | None = None,
        on_close: Callable[[str | None], None] | None = None,
        on_corrupt_line: OnCorruptLine | None = None,
    ) -> None:
        if options.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {options.overflow!r}")
        self.sink = sink
        self.builder = builder
        self.stats = stats  # what happens before the lanes: encoding drops, sanitizing
        self.options = options
        self._on_close = on_close
        self._closed = False
        self._close_result: bool | None = None
        self.lanes: list[Lane] = []
        names: set[str] = set()
        for child in lane_sinks(sink):
            name = str(getattr(child, "name", "sink")) or "sink"
            unique, n = name, 1
            while unique in names:
                n += 1
                unique = f"{name}-{n}"
            names.add(unique)
            description = describe_destination(child)
            spool_dir = None if options.spool_root is None else Path(options.spool_root) / fingerprint(description)
            lane = Lane(
                unique,
                child,
                options.lane_options(),
                spool_dir,
                options.spool_run_name,
                on_rejected=on_rejected,
                learn_float_field=builder.learn_float_field,
                learn_int_field=builder.learn_int_field,
                describe=description,
                on_corrupt_line=on_corrupt_line,
            )
            self.lanes.append(lane)
        self._encode_lines = any(lane.accepts_lines for lane in self.lanes)
        # Every destination takes line protocol: records go to lines with no Point between
        # (encoding/line_batches.py); a lane builds a Point only when it needs one.
        self._lines_only = bool(self.lanes) and all(lane.accepts_lines for lane in self.lanes)
        self._set_wal_header()
        self._init_state()
        self._start_threads()

    # --- state ---------------------------------------------------------------------------

    def _init_state(self) -> None:
        self._queue: deque[Any] = deque()
        self._accepted = AtomicCounter()  # records queued (or built in the caller), ever
        self._count_accepted = self._accepted.incr
        self._max_queue_size = self.options.max_queue_size
        self._batch_size = self.options.batch_size
        self._refused = ReasonCounters()  # log() calls that queued nothing: after_close, queue_full, ...
        self._evicted = AtomicCounter()  # queued records dropped by drop_oldest
        self._late = AtomicCounter()  # records queued by a log() that raced close(): see _sweep_late
        self._sampled_out = AtomicCounter()
        self._wake = threading.Event()
        self._waking = False  # set while a caller is inside _wake.set(): see submit()
        self._room = threading.Event()
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._give_up = threading.Event()  # spooling the backlog took too long: count the rest
        self._encode_lock = threading.Lock()
        self._in_hand: list[Any] = []  # Points, or (lines only) the records themselves
        self._line_encoder = BatchLineEncoder(self.builder, self._build)
        for lane in self.lanes:
            lane.request_wal_marker = self._request_wal_marker(lane)
            lane.on_room = self._room.set
        self._encoder: threading.Thread | None = None

    def _set_wal_header(self) -> None:
        """WAL segments hold records, not points: their header says how the builder makes points."""
        header = wal_header(self.builder.prefix, self.builder.standard_tags)
        self._wal_appends: list[tuple[Callable[[bytes], bool], Lane]] = []
        for lane in self.lanes:
            if lane.spool is not None:
                lane.spool.wal_header = header
                self._wal_appends.append((lane.spool.wal_append, lane))

    def _request_wal_marker(self, lane: Lane) -> Callable[[FlushMarker], None]:
        def request(marker: FlushMarker) -> None:
            self._queue.append(_WalMark(lane, marker))
            self._wake.set()

        return request

    def _start_threads(self) -> None:
        for lane in self.lanes:
            lane.start()
        self._encoder = threading.Thread(target=self._encoder_loop, name="tplr-metrics-encoder", daemon=True)
        self._encoder.start()

    def after_fork_in_child(self, builder: PointBuilder, stats: PipelineStats) -> None:
        """A forked child starts empty, with zeroed counters and spools of its own: what the
        parent had queued or spooled is the parent's to deliver, so nothing is sent twice."""
        if self._closed:
            return
        self.builder = builder
        self.stats = stats
        for lane in self.lanes:
            lane.after_fork_in_child(f"{self.options.spool_run_name}.{os.getpid()}")
        self._set_wal_header()  # the child's runtime_id is a standard tag
        self._init_state()
        self._start_threads()

    # --- caller side (no locks) ----------------------------------------------------------

    def submit(self, record: Record | Point) -> bool:
        """Queue one record (or an already built point); False when it was not accepted."""
        if self._closed:
            self._refused.add("after_close")
            if self._close_result is None:
                # close() is under way: a thread logging in a tight loop would hold the GIL a
                # share of the time close()'s own work needs; hand it over (a microsecond or two,
                # only until close() returns).
                time.sleep(0)
            return False
        queue = self._queue
        if len(queue) >= self._max_queue_size:
            options = self.options
            policy = options.overflow
            if policy == "drop_oldest":
                try:
                    oldest = queue.popleft()
                except IndexError:
                    pass
                else:
                    if type(oldest) in _CONTROL:
                        queue.append(oldest)  # a flush marker is never dropped, only moved
                    else:
                        self._evicted.incr()
            elif policy == "block":
                if not self._wait_for_room(options):
                    self._refused.add("after_close" if self._closed else "queue_full")
                    return False
            else:
                self._refused.add("queue_full")
                return False
        queue.append(record)
        self._count_accepted()
        if len(queue) == self._batch_size and not self._waking:
            # Event.set takes a lock: a signal handler that interrupted this very call must not
            # try to take it again, so it skips the wake-up (the encoder wakes on its interval).
            self._waking = True
            try:
                self._wake.set()
            finally:
                self._waking = False
        return True

    def _poke(self) -> None:
        """Wake the encoder from a non-caller path, with submit()'s guard up: a signal handler's
        log() landing inside this Event.set must not call set() again on the lock it holds."""
        self._waking = True
        try:
            self._wake.set()
        finally:
            self._waking = False

    def _wait_for_room(self, options: PipelineOptions) -> bool:
        """overflow="block": poll (a condition variable would need a lock) until the queue has
        room, within block_timeout."""
        deadline = time.monotonic() + options.block_timeout_s
        pause = 0.0005
        while len(self._queue) >= options.max_queue_size:
            if self._closed:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.01)
        return True

    def count_refused(self, reason: str) -> None:
        """A log() call that failed before queueing (``log_error``): logged, and lost for that reason."""
        self._refused.add(reason)

    def count_sampled_out(self) -> None:
        self._sampled_out.incr()

    def queue_depth(self) -> int:
        return len(self._queue)

    def wal_append(self, record: Record) -> None:
        """Durable mode: the record reaches every lane's write-ahead log before log() returns
        (what log() queued, with its time; the next process builds it as the encoder would).
        Not after close(): submit() counts such a point after_close, and a WAL segment opened
        then would be adopted and delivered by the next process."""
        if self._closed:
            return
        try:
            line = encode_record(record)
        except Exception:  # a key whose str() raises: queued already, so only as safe as not durable
            for _, lane in self._wal_appends:
                lane.wal_failed()
            return
        for append, lane in self._wal_appends:
            if not append(line):
                lane.wal_failed()

    @property
    def durable(self) -> bool:
        return self.options.durable and bool(self.lanes) and all(lane.spool is not None for lane in self.lanes)

    # --- encoder thread ------------------------------------------------------------------

    def _build(self, record: Any) -> Point | None:
        if type(record) is Point:
            return record  # type: ignore[no-any-return]  # built already (a test's or a tool's)
        try:
            if is_compact(record):
                record = expand_queued(record)
                if record is None:
                    self.stats.drop("encode_error")
                    self.stats.warn_once("encode_error", "a point's tags or fields changed while log() read them")
                    return None
            return self.builder.build(record)
        except Exception as exc:  # a bug in the rules must not stop the pipeline
            self.stats.drop("encode_error")
            self.stats.warn_once("encode_error", "could not encode a point: %r", exc)
            return None

    def _encoder_loop(self) -> None:
        options = self.options
        interval = options.flush_interval_ms / 1000.0
        while True:
            timeout = interval + _jitter.uniform(0, options.flush_jitter_ms / 1000.0)
            poked = self._wake.wait(timeout)
            self._wake.clear()
            with self._encode_lock:
                self._encode_queued(cut_partial=not poked or self._stopping.is_set())
            if self._give_up.is_set() or (self._stopping.is_set() and not self._queue):
                return

    def _encode_queued(self, cut_partial: bool) -> None:
        """Take what is queued, one record at a time; emit full batches, and the partial one when
        the interval passed, at a flush marker, or when stopping (call with _encode_lock held)."""
        queue = self._queue
        batch = self._in_hand
        batch_size = self.options.batch_size
        give_up = self._give_up
        if self._lines_only:
            # Records are batched as they are (built and encoded a batch at a time, by _emit_in_hand).
            while not give_up.is_set():
                control = self._take_records(queue, batch_size)
                if control is None:
                    break
                self._control(control)
            if cut_partial:
                self._emit_in_hand()
            return
        while queue and not give_up.is_set():
            try:
                item = queue.popleft()
            except IndexError:
                break
            if type(item) in _CONTROL:
                self._control(item)
                batch = self._in_hand  # the emitted list belongs to the lanes now
                continue
            point = self._build(item)
            if point is None:
                continue
            batch.append(point)
            if len(batch) >= batch_size:
                self._emit_in_hand()
                batch = self._in_hand
        if cut_partial:
            self._emit_in_hand()

    def _control(self, item: _Flush | _WalMark) -> None:
        """A flush or WAL marker met in the queue: what came before it goes out first."""
        self._emit_in_hand()
        if isinstance(item, _Flush):
            item.lane_markers = [lane.mark() for lane in self.lanes]
            item.reached.set()
        else:
            item.lane.track(item.marker)

    def _take_records(self, queue: deque[Any], batch_size: int) -> _Flush | _WalMark | None:
        """_encode_queued's loop for line-protocol destinations, where records are batched as
        they are: records move to the batch in hand in one call (queue_take), the abort checked
        once a batch. Returns the first flush or WAL marker met, or None once the queue is empty
        (or the pipeline gives up)."""
        give_up = self._give_up
        while True:
            batch = self._in_hand
            met, room = take(queue, batch, batch_size - len(batch), _CONTROL)
            if met is not None:
                return met  # type: ignore[no-any-return]
            if room > 0:
                return None  # the queue is empty
            self._emit_in_hand()
            if give_up.is_set():
                return None

    def _emit_in_hand(self) -> None:
        batch: Any
        batch, self._in_hand = self._in_hand, []
        if not batch:
            return
        if self._lines_only:
            batch = self._encode_records(batch)
            if not batch:
                return  # every record dropped (and counted) by the builder
        self._wait_for_a_lane()
        if self._encode_lines and not self._lines_only:
            shared = PointBatch(batch)
            shared.lines = encode_lines(batch)
            batch = shared
        for lane in self.lanes:
            lane.offer(batch)

    def _encode_records(self, records: list[Any]) -> Any:
        """Queued records as a LineBatch; should the batch encoder fail (a bug), through the
        builder one by one, so the batch is still delivered."""
        try:
            return self._line_encoder.encode(records)
        except Exception as exc:
            self.stats.warn_once("batch_encoder_error", "the batch line encoder failed (%r); building points", exc)
            points = PointBatch(point for point in map(self._build, records) if point is not None)
            points.lines = encode_lines(points)
            return points

    def _wait_for_a_lane(self) -> None:
        """Backpressure: wait while no lane has room (the fastest destination sets the pace)."""
        lanes = self.lanes
        while not self._abort.is_set() and not any(lane.has_room() for lane in lanes):
            self._room.clear()
            if any(lane.has_room() for lane in lanes):
                return
            self._room.wait(0.05)

    # --- flush and close -----------------------------------------------------------------

    def _losses(self) -> int:
        """Points dropped or rejected so far, in any lane or before the lanes (not for bad input)."""
        total = self._evicted.value + self._refused.total() - self._refused.snapshot().get("after_close", 0)
        total += sum(n for reason, n in self.stats.dropped.items() if reason not in INPUT_DROP_REASONS)
        for lane in self.lanes:
            total += sum(lane.stats.dropped.values()) + sum(lane.stats.rejected.values())
        return total

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call has settled in every lane.

        False on timeout, or when any point was dropped or rejected meanwhile (and logged)."""
        before = self._losses()
        settled = self._flush(timeout)
        lost = self._losses() - before
        if lost > 0:
            logger.warning("flush: %d point(s) were dropped or rejected meanwhile (see stats())", lost)
        return settled and lost <= 0

    def _flush(self, timeout: float | None) -> bool:
        encoder = self._encoder
        if encoder is None or not encoder.is_alive():
            return not self._queue
        deadline = None if timeout is None else time.monotonic() + timeout
        marker = _Flush()
        self._queue.append(marker)
        self._poke()
        if not marker.reached.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
        for lane_marker in marker.lane_markers:
            if not lane_marker.done.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                return False
        return True

    def close(self, timeout: float | None = None, status: str | None = None, grace: float = 0.5) -> bool:
        """Stop intake, deliver what is left, and account for every point; idempotent.

        True when everything was delivered within ``timeout`` and nothing was dropped or rejected
        during the close. What is not delivered in time goes to each lane's spool for the next
        process (or, without a spool, is counted ``close_timeout``). ``status`` is passed to
        ``on_close`` (None at interpreter exit: the hook decides)."""
        if self._closed:
            return bool(self._close_result)
        self._closed = True
        if timeout is None:
            timeout = self.options.close_timeout_s
        before = self._losses()
        deadline = time.monotonic() + timeout
        delivered = self._flush(timeout)
        if not delivered:
            self._abort.set()
            for lane in self.lanes:
                lane.abort()
        self._stopping.set()
        self._poke()
        encoder = self._encoder
        if encoder is not None:
            encoder.join(max(0.0, deadline - time.monotonic()))
            if encoder.is_alive():
                # Past the deadline the backlog still goes to the spools, for as long again at most.
                self._abort.set()
                for lane in self.lanes:
                    lane.abort()
                encoder.join(max(1.0, timeout))
                self._give_up.set()
                encoder.join(grace)
        self._account_queue_leftovers()
        for lane in self.lanes:
            lane.begin_stop()
        if time.monotonic() >= deadline:
            for lane in self.lanes:
                lane.abort()
        grace_until = max(deadline, time.monotonic()) + grace
        for lane in self.lanes:
            lane.stop(deadline, grace_until)
        if self._on_close is not None:
            try:
                self._on_close(status)
            except Exception as exc:
                logger.warning("close hook failed: %s", type(exc).__name__)
        left = 0
        kept_in: list[str] = []
        for lane in self.lanes:
            lane_left = lane.finish(delivered)
            if lane_left and lane.spool is not None:
                kept_in.append(str(lane.spool.dir))
            left += lane_left
            lane.close_sink()
        lost = self._losses() - before
        if left:
            logger.warning(
                "%d point(s) not delivered by close(); kept in %s for the next process "
                "(or `tplr-metrics replay --spool %s`)",
                left,
                ", ".join(kept_in),
                self.options.spool_root,
            )
        if lost > 0:
            logger.warning("close: %d point(s) were dropped or rejected (see stats())", lost)
        elif not delivered and not left:
            logger.error("close() timed out after %.1fs; undelivered points are counted in stats()", timeout)
        self._close_result = delivered and lost <= 0
        self._sweep_late()
        return self._close_result

    def _account_queue_leftovers(self) -> None:
        """Records the encoder never reached: to the lanes (which spool them), or counted."""
        with self._encode_lock:
            if not self._give_up.is_set():
                self._encode_queued(cut_partial=True)
                return
            self._emit_in_hand()
            left = self._drain_queue()
            if left:
                self.stats.drop("close_timeout", left)

    @property
    def lines_only(self) -> bool:
        """Every destination takes line protocol: batches are encoded with no Point per record."""
        return self._lines_only

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def closing(self) -> bool:
        """close() has begun and not returned yet."""
        return self._closed and self._close_result is None

    # --- counters ------------------------------------------------------------------------

    def lane_snapshots(self) -> dict[str, dict[str, Any]]:
        """Each lane's own figures, with the drops before the lanes (shared by all) included."""
        shared = self._shared_drops()
        logged = self.logged()
        out: dict[str, dict[str, Any]] = {}
        for lane in self.lanes:
            snap = lane.stats.snapshot(lane.buffered_points())
            dropped = dict(shared)
            for reason, n in snap["dropped"].items():
                dropped[reason] = dropped.get(reason, 0) + n
            snap["received"] = snap.pop("logged")
            snap["logged"] = logged
            snap["dropped"] = dropped
            snap["dropped_total"] = sum(dropped.values())
            snap["buffered"] = snap.pop("queue_depth")
            out[lane.name] = snap
        return out

    def logged(self) -> int:
        return self._accepted.value + self._refused.total()

    def sampled_out(self) -> int:
        return self._sampled_out.value

    def _sweep_late(self) -> None:
        """A log() that passed the closed check just as close() began can append its record
        after close() drained the queue: once close() is done, such records are counted
        ``after_close`` (they are in ``logged`` already), so the books still balance."""
        if self._close_result is None:
            return
        for _ in range(self._drain_queue()):
            self._late.incr()

    def _drain_queue(self) -> int:
        """Empty the queue unencoded: waiting flushes are released; returns how many records it held."""
        records = 0
        while self._queue:
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            if type(item) is _Flush:
                item.reached.set()
            elif type(item) not in _CONTROL:
                records += 1
        return records

    def _shared_drops(self) -> dict[str, int]:
        self._sweep_late()
        dropped = dict(self.stats.dropped)
        for reason, n in self._refused.snapshot().items():
            dropped[reason] = dropped.get(reason, 0) + n
        if self._evicted.value:
            dropped["queue_full"] = dropped.get("queue_full", 0) + self._evicted.value
        if self._late.value:
            dropped["after_close"] = dropped.get("after_close", 0) + self._late.value
        return {k: v for k, v in dropped.items() if v}
