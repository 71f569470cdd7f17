"""The public face: a Templar-compatible ``MetricsLogger``.

``log()`` costs the caller a sampling draw, the clock, two shallow dict copies and one
enqueue; value rules, tags, line protocol and HTTP all happen on the pipeline's threads. It
never raises into the training loop (unless ``strict=True``) and never mutates the caller's
dicts.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import logging
import os
import random
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .collect.background import check_periods, start_background
from .collect.host import HostMetrics
from .config.destinations import resolve_destination
from .config.paths import private_dir, tplr_home
from .config.settings import ConfigurationError, ServerSettings
from .delivery.accounting import accounting_of, merge_snapshot
from .delivery.dead_letter import DeadLetterFile
from .delivery.pipeline import OVERFLOW_POLICIES, Pipeline, PipelineOptions
from .delivery.run_names import name_of_run
from .delivery.stats import INPUT_DROP_REASONS, PipelineStats
from .encoding.points import (
    BadTimestamp,
    Point,
    PointBuilder,
    QueuedNames,
    QueuedShape,
    Record,
    compact_record,
    register_shape,
    timestamp_ns,
)
from .encoding.values import IMMUTABLE_TYPES, FieldValue, frozen_tags, process_fields
from .encoding.values import config_tags as tags_of_config
from .encoding.values import process_value as _process_value
from .run_status import close_on_sigterm_in_fork, exit_status
from .sinks.base import RunInfo, Sink, default_run_name, end_run, start_run

logger = logging.getLogger("tplr_metrics")

#: Causes that drop a whole point (the rest only change or drop a part of it).
_POINT_CAUSES = INPUT_DROP_REASONS

# Sampling draws from its own generator: a training loop that seeds `random` for
# reproducibility gets the same sequence whether or not it logs.
_sampling = random.Random()

_PLAIN = IMMUTABLE_TYPES  # module globals: one cached lookup each per log() call
_time_ns = time.time_ns
_NO_NAMES: QueuedNames = (-1, None, (), ())

# No locks here: dict.setdefault and next() on a count are atomic, and a lock could be left
# held in a forked child.
_runtime_ids: dict[int, str] = {}


def process_runtime_id() -> str:
    """A uuid4 for this process (a forked child gets its own)."""
    pid = os.getpid()
    known = _runtime_ids.get(pid)
    return known if known is not None else _runtime_ids.setdefault(pid, str(uuid.uuid4()))


#: ``health_every`` left unset: a tplr_metrics_health point every this many seconds when points
#: go to an InfluxDB server (what the pipeline-health dashboard reads), none otherwise.
DEFAULT_HEALTH_EVERY = 10.0
#: How long a forked child's logger may take to deliver (or spool) what it holds on SIGTERM.
CHILD_SIGTERM_CLOSE_S = 10.0


class MetricsLogger:
    """Log training metrics to InfluxDB without slowing, breaking or losing them.

    The positional arguments are Templar's; everything after ``*`` is new. Unset server
    arguments come from INFLUXDB_* environment variables, read here (never at import).
    ``health_every`` unset (None) is ``DEFAULT_HEALTH_EVERY`` seconds with an InfluxDB
    destination and off for any other (local store, files, a ``sink=`` given); 0 turns it off.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        database: str | None = None,
        token: str | None = None,
        org: str | None = None,
        prefix: str = "",
        uid: str | int | None = None,
        version: str = __version__,
        runtime_id: str | None = None,
        role: str = "",
        config: Any = None,
        group: str = "",
        job_type: str = "",
        max_queue_size: int = 600_000,
        max_workers: int = 1,
        *,
        run_name: str | None = None,
        config_tags: Any = None,
        url: str | None = None,
        api: str | None = None,
        username: str | None = None,
        password: str | None = None,
        batch_size: int | None = None,
        flush_interval: int = 1_000,
        flush_jitter: int = 0,
        strict: bool = False,
        overflow: str = "drop_oldest",
        block_timeout: float = 1.0,
        retry_interval: int = 1_000,
        max_retry_delay: int = 30_000,
        max_retry_time: int = 180_000,
        close_timeout: float = 30.0,
        create_database: bool = True,
        verify_ssl: bool | None = None,
        ssl_ca_cert: str | None = None,
        timeout: int | None = None,
        gzip: bool | None = None,
        host_metrics_interval: float = 2.0,
        system_metrics_every: float | None = None,
        health_every: float | None = None,
        sinks: Sequence[str | Sink | Mapping[str, Any]] | None = None,
        sink: Sink | None = None,
        spool: bool = True,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 512 * 1024 * 1024,
        durable: bool = False,
        durable_sync_interval: float = 1.0,
    ) -> None:
        _check_positive("max_queue_size", max_queue_size)
        _check_positive("max_workers", max_workers)
        _check_positive("flush_interval", flush_interval)
        if batch_size is not None:
            _check_positive("batch_size", batch_size)
        if overflow not in OVERFLOW_POLICIES:
            raise ConfigurationError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
        _check_positive("spool_max_bytes", spool_max_bytes)
        _check_positive("durable_sync_interval", durable_sync_interval)
        check_periods(system_metrics_every, health_every)
        if durable and not spool:
            raise ConfigurationError("durable=True needs the spool (spool=True): the write-ahead log lives there")

        self.prefix = prefix or ""
        self.uid = uid
        self.version = version
        if runtime_id is not None:
            _check_text("runtime_id", runtime_id)
        # Each is a standard tag of every point (and in the spool's header): valid text or refused.
        texts = {"prefix": prefix, "uid": uid, "version": version, "role": role, "group": group, "job_type": job_type}
        for name, value in texts.items():
            if isinstance(value, str):
                _check_text(name, value)
        self._given_runtime_id = runtime_id
        self.runtime_id = runtime_id or process_runtime_id()
        self.role = role or ""
        self.config = config
        self._config_select = config_tags  # which config attributes become tags (secrets never)
        self.group = group or ""
        self.job_type = job_type or ""
        self.strict = strict
        self.server: ServerSettings | None = None

        if sink is None:
            sink, self.server = resolve_destination(
                {
                    "url": url,
                    "host": host,
                    "port": port,
                    "database": database,
                    "token": token,
                    "org": org,
                    "api": api,
                    "username": username,
                    "password": password,
                    "verify_ssl": verify_ssl,
                    "ssl_ca_cert": ssl_ca_cert,
                    "timeout_ms": timeout,
                    "gzip": gzip,
                    "create_database": create_database,
                },
                sinks=sinks,
            )
            logger.info("points go to %r", sink)
        self.sink = sink
        self.database = self.server.database if self.server else database
        self.org = self.server.org if self.server else org

        self.run = RunInfo(
            run_id=self.runtime_id,
            started_at_ns=time.time_ns(),
            role=self.role,
            uid="" if uid is None else str(uid),
            prefix=self.prefix,
            group=self.group,
            job_type=self.job_type,
            version=self.version or "",
            config=tags_of_config(config, config_tags),
            name=run_name or default_run_name(self.role, "" if uid is None else str(uid), self.runtime_id),
        )
        start_run(sink, self.run)
        self._stats = PipelineStats()
        self._host = HostMetrics(self._stats, interval=host_metrics_interval)
        self._builder = PointBuilder(self.standard_tags(), self.prefix, self._on_issue)
        self._strict_builder = PointBuilder(self.standard_tags(), self.prefix, self._raise_issue) if strict else None
        self._pipeline_options = PipelineOptions(
            max_queue_size=max_queue_size,
            batch_size=batch_size or (10_000 if self.role == "validator" else 1_000),
            flush_interval_ms=flush_interval,
            flush_jitter_ms=flush_jitter,
            max_workers=max_workers,
            # Durable: a point log() accepted is in the WAL, so a full queue refuses the new point
            # (before the WAL) rather than evict an older one the next process would deliver.
            overflow="drop_new" if durable and overflow == "drop_oldest" else overflow,
            block_timeout_s=block_timeout,
            retry_interval_ms=retry_interval,
            max_retry_delay_ms=max_retry_delay,
            max_retry_time_ms=max_retry_time,
            close_timeout_s=close_timeout,
            spool_root=self._spool_root(spool, spool_dir, durable),
            spool_run_name=_spool_run_name(self.runtime_id),
            spool_max_bytes=spool_max_bytes,
            durable=durable,
            durable_sync_interval_s=durable_sync_interval,
        )
        self._dead_letter = DeadLetterFile(tplr_home() / "dead_letter" / f"{name_of_run(self.runtime_id)}.jsonl")
        self._pipeline = Pipeline(
            sink,
            self._builder,
            self._stats,
            self._pipeline_options,
            on_rejected=self._dead_letter,
            on_close=self._end_run,
            on_corrupt_line=self._dead_letter.corrupt_line,
        )
        self.durable = durable and self._pipeline.durable
        self._submit = self._pipeline.submit
        self._builds_in_caller = self.durable or self._strict_builder is not None
        # Durable mode queues compact records too (strict mode checks a Point in the call).
        self._compacts = self._strict_builder is None
        self._wal = self.durable
        if health_every is None and self.server is not None:
            health_every = DEFAULT_HEALTH_EVERY  # the pipeline-health dashboard has data at defaults
        self._last_names = _NO_NAMES  # the names of the last compact record (most calls repeat them)
        self._shapes: dict[tuple[Any, ...], QueuedShape] = {}
        # Records are queued compact (a third of the memory, untracked by the garbage collector)
        # always when every destination takes line protocol: the batch line encoder writes them
        # as they are, 1 µs a point cheaper than dict records (busy loop: 0.57 against 0.51).
        # Otherwise only once two batches wait (a destination down or slow): expanding them for
        # the builder costs more than the dict copies save.
        self._queue = self._pipeline._queue
        self._compact_from = 0 if self._pipeline.lines_only else 2 * self._pipeline_options.batch_size
        self._background = start_background(self, system_metrics_every, health_every)
        # Deliver at interpreter exit what an unclosed logger still holds (bounded by
        # close_timeout); a weak reference, so an abandoned logger can still be collected.
        self._atexit_hook = _make_atexit_hook(weakref.ref(self))
        atexit.register(self._atexit_hook)
        self._register_exit_hooks()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_make_fork_hook(weakref.ref(self)))

    def _register_exit_hooks(self) -> None:
        """multiprocessing ends its children with os._exit, so atexit never runs there; its
        Finalize registry does run (in Process._bootstrap). A forked child registers again, since
        multiprocessing clears that registry after the fork."""
        from multiprocessing import util as mp_util

        self._mp_finalizer = mp_util.Finalize(None, self._atexit_hook, exitpriority=10)
        mp_util.register_after_fork(self, MetricsLogger._register_exit_hooks)

    def _after_fork_in_child(self) -> None:
        """A forked child is a run of its own: its own run id, zeroed counters, empty queue."""
        if self._pipeline.closed:
            return
        given = self._given_runtime_id
        self.runtime_id = f"{given}.{os.getpid()}" if given else process_runtime_id()
        self.run = dataclasses.replace(self.run, run_id=self.runtime_id, started_at_ns=time.time_ns())
        self._stats = PipelineStats()
        self._builder = PointBuilder(self.standard_tags(), self.prefix, self._on_issue)
        if self._strict_builder is not None:
            self._strict_builder = PointBuilder(self.standard_tags(), self.prefix, self._raise_issue)
        self._dead_letter = DeadLetterFile(tplr_home() / "dead_letter" / f"{name_of_run(self.runtime_id)}.jsonl")
        for lane in self._pipeline.lanes:
            lane._on_rejected = self._dead_letter
            lane.on_corrupt_line = self._dead_letter.corrupt_line
            lane._learn_float_field = self._builder.learn_float_field
            lane._learn_int_field = self._builder.learn_int_field
        self._pipeline.after_fork_in_child(self._builder, self._stats)
        self._submit = self._pipeline.submit
        self._queue = self._pipeline._queue
        close_on_sigterm_in_fork(self._close_on_sigterm)
        try:
            start_run(self.sink, self.run)
        except Exception as exc:
            logger.warning("could not record the start of run %s: %s", self.runtime_id, type(exc).__name__)

    @staticmethod
    def _spool_root(enabled: bool, spool_dir: str | os.PathLike[str] | None, durable: bool) -> Path | None:
        if not enabled:
            return None
        home = tplr_home()
        root = Path(spool_dir) if spool_dir is not None else home / "spool"
        try:
            # The default root is the library's own: a symlink there was planted (UnsafePathError,
            # a ConfigurationError naming it). An explicit spool_dir may be a link the user made.
            private_dir(root, trusted=home if spool_dir is None else root)
        except OSError as exc:
            if durable:
                raise ConfigurationError(f"durable=True but the spool directory {root} is unusable: {exc}") from None
            logger.error("spool directory %s is unusable (%s); undelivered points are retried in memory", root, exc)
            return None
        return root

    # --- Templar compatibility ----------------------------------------------------------

    process_value = staticmethod(_process_value)

    def standard_tags(self) -> dict[str, str]:
        """uid, prefix, version, runtime_id, role, group, job_type and config_* tags (set ones)."""
        tags = {
            "uid": "" if self.uid is None else str(self.uid),
            "prefix": self.prefix,
            "version": self.version or "",
            "runtime_id": self.runtime_id,
            "role": self.role,
            "group": self.group,
            "job_type": self.job_type,
        }
        tags = {k: v for k, v in tags.items() if v}
        for key, value in tags_of_config(self.config, self._config_select).items():
            tags.setdefault(key, value)
        return tags

    # --- logging ------------------------------------------------------------------------

    def log(
        self,
        measurement: str,
        tags: Mapping[str, Any] | None,
        fields: Mapping[str, Any] | None,
        timestamp: int | float | Any | None = None,
        with_system_metrics: bool = False,
        with_gpu_metrics: bool = False,
        sample_rate: float = 1.0,
    ) -> None:
        """Queue one point. Returns at once; never raises unless the logger is strict.

        Everything the stored point depends on is fixed before this returns: tags and fields are
        copied, and lists, arrays, tensors and other mutable values are turned into what will be
        stored (list statistics included), so a caller may reuse or change them at once.

        When every destination takes line protocol, or else while two batches or more wait in the
        queue (a destination down or slow), the common case (plain dicts of immutable values and
        str keys, no host metrics) is queued compact: one flat tuple ``(shape id, time_ns, *tag
        values, *field values)``, the keys kept once per shape, about a third of two dict copies
        in memory, and untracked by the garbage collector."""
        try:
            if sample_rate < 1.0 and _sampling.random() > sample_rate:
                self._pipeline.count_sampled_out()
                return
            if timestamp is None:
                time_ns = _time_ns()
            else:
                explicit = timestamp_ns(timestamp)
                # Unusable: the builder drops the point (counted bad_timestamp; strict raises).
                time_ns = BadTimestamp(timestamp) if explicit is None else explicit  # type: ignore[assignment]
            if (
                len(self._queue) >= self._compact_from
                and self._compacts
                and not (with_system_metrics or with_gpu_metrics)
            ):
                if self._wal and type(tags) is dict and type(fields) is dict:
                    # Durable: the WAL line is made of these copies, which no other thread can
                    # change between the record and its line (one C call each).
                    tags = tags.copy()
                    fields = fields.copy()
                compact = compact_record(self._last_names, measurement, tags, fields, time_ns)
                if compact is None:  # other names than the last call's
                    self._last_names = self._names_of(measurement, tags, fields)
                    compact = compact_record(self._last_names, measurement, tags, fields, time_ns)
                if compact:  # else False (or None: the dicts changed meanwhile): the general path
                    # Durable: the WAL line after the queue took the record (see _submit_built).
                    if self._submit(compact) and self._wal:  # type: ignore[arg-type]
                        self._pipeline.wal_append((measurement, tags, fields, time_ns, None, None))  # type: ignore[arg-type]
                    return
            plain = _PLAIN
            if type(fields) is dict:
                fields = dict(fields)
                for value in fields.values():
                    if type(value) not in plain:
                        fields = self._freeze_fields(fields, measurement)
                        break
            else:
                fields = self._freeze_fields(self._as_dict(fields, "fields", measurement), measurement)
            if type(tags) is dict:
                tags = dict(tags)
                for value in tags.values():
                    if type(value) not in plain:
                        tags = frozen_tags(tags)
                        break
            else:
                tags = frozen_tags(self._as_dict(tags, "tags", measurement))
            if with_system_metrics or with_gpu_metrics:
                record = (measurement, tags, fields, time_ns, *self._host.cached(with_system_metrics, with_gpu_metrics))
            else:
                record = (measurement, tags, fields, time_ns, None, None)
            if self._builds_in_caller:
                self._submit_built(record)
            else:
                self._submit(record)
        except ValueError:
            if self.strict:
                raise
            self._internal_error("log_error")
        except Exception:
            self._internal_error("log_error")

    def _names_of(self, measurement: Any, tags: Any, fields: Any) -> QueuedNames:
        """The names of a record to queue compact, with its shape's id (-1: none)."""
        if type(tags) is not dict or type(fields) is not dict or type(measurement) is not str:
            return _NO_NAMES
        key = (measurement, tuple(tags), tuple(fields))
        shape = self._shapes.get(key)
        if shape is None:
            # Only str keys: 1, True and 1.0 are equal keys of a dict (the shape found for one
            # would name the others). Past the process's bound on shapes, new names are queued
            # as plain records too.
            if all(type(name) is str for name in key[1] + key[2]):
                shape = register_shape(*key)
            if shape is None:
                return (-1, *key)
            shape = self._shapes.setdefault(key, shape)
        return (shape.id, *key)

    def _submit_built(self, record: Record) -> None:
        """Strict mode checks the point in the call; durable mode writes the record to the
        write-ahead log before log() returns (the encoder builds it, as without durable mode)."""
        if self._strict_builder is not None:
            self._strict_builder.build(record)
        # The WAL only after the queue took it: a point refused (queue_full, after_close) and
        # counted lost must not be delivered by the next process from the WAL. A marker that
        # lets a segment go is queued after the segment is sealed, so after this point. A record
        # with an unusable timestamp is dropped by the encoder (bad_timestamp): no WAL line.
        if self._submit(record) and self.durable and type(record[3]) is int:
            self._pipeline.wal_append(record)

    def _freeze_fields(self, fields: dict[Any, Any], measurement: Any) -> dict[str, Any]:
        """The value rules applied in the call, for fields holding anything but plain values."""

        def issue(cause: str, field: str, detail: str) -> None:
            self._on_issue(cause, str(measurement), field, detail)

        return process_fields(fields, issue)

    def _as_dict(self, value: Any, what: str, measurement: Any) -> dict[Any, Any]:
        """tags/fields that are not a dict: any Mapping is fine, None is empty, else bad input."""
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return dict(value)
        self._on_issue(
            "not_a_mapping",
            str(measurement),
            "",
            f"{what} must be a dict, not {type(value).__name__}; {what} ignored",
        )
        return {}

    def _internal_error(self, cause: str) -> None:
        self._pipeline.count_refused(cause)
        self._stats.warn_once(cause, "tplr_metrics could not queue a point: %s", _describe_current_exception())

    def _on_issue(self, cause: str, measurement: str, field: str, detail: str) -> None:
        if cause in _POINT_CAUSES:
            self._stats.drop(cause)
        else:
            self._stats.sanitize(cause.split(":", 1)[0])
        self._stats.warn_once(cause, "%s: %s", measurement or "<no measurement>", detail)

    def _raise_issue(self, cause: str, measurement: str, field: str, detail: str) -> None:
        if cause.startswith("tag_renamed:"):
            return  # a documented rename, not bad input
        where = f"field {field!r}: " if field else ""
        raise ValueError(f"measurement {measurement!r}: {where}{detail} ({cause})")

    # --- flush, close, stats ------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Return once everything logged before the call has settled in every destination.

        False when the timeout passed first, or when any point was dropped or rejected meanwhile."""
        return self._pipeline.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is left (or spool it, or count it), stop the threads; idempotent.

        True when everything was delivered in time with nothing dropped or rejected during the
        close. Later log() calls are counted no-ops (``after_close``)."""
        return self._close(timeout, "ok")

    def _close(self, timeout: float | None, status: str | None) -> bool:
        self._background.close()  # its last points go out with the flush
        atexit.unregister(self._atexit_hook)
        finalizer = getattr(self, "_mp_finalizer", None)
        if finalizer is not None:
            finalizer.cancel()
        return self._pipeline.close(timeout, status=status)

    def _close_on_sigterm(self) -> bool:
        """A forked child told to stop (Pool.terminate()): deliver or spool, for a bounded time.
        False when a close is already under way (below this signal handler, or in a thread)."""
        if self._pipeline.closing:
            return False
        self._background.close()
        self._pipeline.close(min(self._pipeline_options.close_timeout_s, CHILD_SIGTERM_CLOSE_S), status="cancelled")
        return True

    def _close_at_exit(self) -> None:
        self._background.close()
        self._pipeline.close(status=None)  # the run's status comes from how the process ends

    def _end_run(self, status: str | None) -> None:
        """Called by the pipeline once its threads are done, before the sink closes."""
        self._background.close()
        self._host.close()
        try:
            end_run(self.sink, status or exit_status())
        except Exception as exc:
            logger.warning("could not record the end of run %s: %s", self.runtime_id, type(exc).__name__)

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        # A block that raised ends its run as failed (or cancelled on Ctrl-C), not ok.
        if exc_type is None:
            status = "ok"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "cancelled"
        else:
            status = "failed"
        self._close(None, status)

    def stats(self) -> dict[str, Any]:
        """Counters: logged, sampled_out, written, retried, dropped/rejected by reason, ...,
        and ``lanes``: the same figures for each destination on its own."""
        return merge_snapshot(self._pipeline, self._stats)

    def accounting(self) -> dict[str, Any]:
        """The accounting invariant's terms, per destination and in total, and whether they
        add up: ``logged + adopted == written + rejected + dropped + spooled`` per lane once the
        logger is closed (``in_flight`` is what is still on its way)."""
        return accounting_of(self._pipeline, self._stats)

    def __repr__(self) -> str:
        return (
            f"MetricsLogger(sink={self.sink!r}, role={self.role!r}, uid={self.uid!r}, runtime_id={self.runtime_id!r})"
        )


_spool_names: dict[str, itertools.count[int]] = {}


def _check_text(name: str, value: object) -> None:
    """A name that files, tags and URLs are made of: a str that is valid Unicode (a lone
    surrogate made the constructor fail later with UnicodeEncodeError)."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigurationError(f"{name} is not valid text: a lone surrogate at position {exc.start}") from None


def _spool_run_name(runtime_id: str) -> str:
    """``<runtime_id>`` for a process's first logger, ``<runtime_id>-2`` for its second, ..."""
    n = next(_spool_names.setdefault(runtime_id, itertools.count(1)))
    return runtime_id if n == 1 else f"{runtime_id}-{n}"


def _make_atexit_hook(ref: weakref.ref[MetricsLogger]) -> Callable[[], None]:
    def hook() -> None:
        metrics_logger = ref()
        if metrics_logger is not None and not metrics_logger._pipeline.closed:
            metrics_logger._close_at_exit()

    return hook


def _make_fork_hook(ref: weakref.ref[MetricsLogger]) -> Callable[[], None]:
    def hook() -> None:
        metrics_logger = ref()
        if metrics_logger is not None:
            metrics_logger._after_fork_in_child()

    return hook


def _describe_current_exception() -> str:
    import sys

    exc = sys.exc_info()[1]
    return f"{type(exc).__name__}: {exc}" if exc else "unknown error"


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")


__all__ = ["MetricsLogger", "Point", "FieldValue", "process_runtime_id"]
