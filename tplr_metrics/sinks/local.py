"""The local store as a sink: what a logger writes to when no server is configured.

One batch is one transaction. The store is opened on first use, never in the constructor, so
building a logger cannot fail on a bad file; an unusable file is reported once as an error that
names it, and the points are handed back for retry (locked, disk full, unreadable: these can
pass) or refused with cause ``store_corrupt`` (retrying a file that is not a database cannot
help). The pipeline counts both in ``stats()``; nothing raises into the training loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import run_status
from ..config.paths import refuse_symlink
from ..encoding.points import Point
from ..store.database import Store, StoreError, default_store_path
from .base import Rejection, RunInfo, WriteResult

logger = logging.getLogger("tplr_metrics")

# A connection must not cross fork(); one a child inherited is parked here, never closed (its
# close could touch the parent's WAL), and the child opens its own.
_inherited: list[Store] = []

# SQLite must not be inside a call when the process forks: a transaction in progress in another
# thread leaves the child's copy of SQLite's in-process lock state saying "locked", and the
# child's own connection then waits out its busy timeout ("database is locked", 4 of 15 forks in
# a plain sqlite3 test; a child of a busy logger took 60 s to exit). So the fork waits for each
# sink's lock, a bounded time (a write can itself be waiting for another process's lock).
_live_sinks: weakref.WeakSet[LocalStoreSink] = weakref.WeakSet()
_held_at_fork: list[threading.Lock] = []
_FORK_WAIT_S = 2.0


def _before_fork() -> None:
    for sink in list(_live_sinks):
        lock = sink._lock
        if lock.acquire(timeout=_FORK_WAIT_S):
            _held_at_fork.append(lock)


def _after_fork_in_parent() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_at_fork.clear()
    for sink in list(_live_sinks):
        sink.after_fork()


def _watch_forks(sink: LocalStoreSink) -> None:
    if not _live_sinks and not _fork_hooks_installed and hasattr(os, "register_at_fork"):
        _install_fork_hooks()
    _live_sinks.add(sink)


_fork_hooks_installed = False


def _install_fork_hooks() -> None:
    global _fork_hooks_installed
    _fork_hooks_installed = True
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


class LocalStoreSink:
    """Writes points, and the runs of the loggers that feed it, into the local SQLite store."""

    name = "local"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout_s: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if path is None:
            path = default_store_path(environ)
            refuse_symlink(path, "the default store")  # planted: a user's own link is passed as path
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._store_pid = 0
        self._run: RunInfo | None = None
        self._run_row: int | None = None
        self._run_pid = 0
        self._reported: str | None = None  # the error last reported, so it is said once
        _watch_forks(self)

    def destination(self) -> dict[str, str]:
        return {"kind": "local", "path": str(self.path.expanduser().absolute())}

    def after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock at the fork."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalStoreSink({str(self.path)!r})"

    # --- connection ---------------------------------------------------------------------

    def _open(self) -> Store:
        """The store for this process (call with the lock held); raises StoreError."""
        pid = os.getpid()
        if self._store is not None and self._store_pid != pid:
            _inherited.append(self._store)
            self._store = None
        if self._store is None:
            self._store = Store(self.path, busy_timeout_s=self.busy_timeout_s)
            self._store_pid = pid
        return self._store

    def _report(self, exc: StoreError) -> None:
        """Say once what is wrong with the store (with the lock held); later cases only count."""
        kind = "corrupt" if exc.corrupt else "busy" if exc.busy else "error"
        if self._reported == kind:
            return
        self._reported = kind
        if exc.corrupt:
            logger.error(
                "local store %s is not usable (%s): points for it are dropped and counted in stats(); "
                "move the file away to start a new store",
                self.path,
                exc,
            )
        elif exc.busy:
            logger.warning("local store %s stayed locked by another process; points will be retried", self.path)
        else:
            logger.error("local store %s cannot be written (%s); points will be retried", self.path, exc)
        if self._store is not None and exc.corrupt:
            self._store.close()
            self._store = None

    def _ensure_run(self, store: Store) -> None:
        if self._run is not None and self._run_row is None and self._run_pid == os.getpid():
            self._run_row = store.add_run(self._run)

    # --- run hooks ----------------------------------------------------------------------

    def start_run(self, run: RunInfo) -> None:
        """Record a run (status running). Never raises: an unusable store is retried at write."""
        run_status.install()
        with self._lock:
            self._run = run
            self._run_row = None
            self._run_pid = os.getpid()
            if self._store is not None and self._store_pid != self._run_pid:
                # A forked child (this runs in its at-fork hook): the first write records the run,
                # so the fork never waits for the database lock its parent keeps busy.
                return
            try:
                self._ensure_run(self._open())
            except StoreError as exc:
                self._report(exc)
            except Exception as exc:  # the constructor of a logger must not fail on its store
                logger.error("local store %s: could not record run %s: %r", self.path, run.run_id, exc)

    def end_run(self, status: str) -> None:
        """Record how the run ended; only the process that started it may (not a forked child)."""
        with self._lock:
            if self._run is None or self._run_pid != os.getpid():
                return
            try:
                store = self._open()
                self._ensure_run(store)
                if self._run_row is not None:
                    store.end_run(self._run_row, status, time.time_ns())
            except StoreError as exc:
                self._report(exc)

    # --- Sink protocol ------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> WriteResult:
        return self._insert(points, None)

    def write_recovered(self, points: Sequence[Point], origin: str) -> WriteResult:
        """Points a dead process logged (its spool, adopted): stored under its own run, which is
        marked ``crashed`` if it was still ``running`` (created so when it was never recorded)."""
        return self._insert(points, origin)

    def _insert(self, points: Sequence[Point], origin: str | None) -> WriteResult:
        if not points:
            return WriteResult()
        with self._lock:
            try:
                store = self._open()
                if origin is not None and origin != (self._run.run_id if self._run else None):
                    run_row: int | None = store.crashed_run(origin, time.time_ns())
                else:
                    self._ensure_run(store)
                    run_row = self._run_row
                stored, rejected, nbytes = store.insert_points(run_row, points)
            except StoreError as exc:
                self._report(exc)
                if exc.corrupt:
                    reason = f"local store {self.path}: {exc}"
                    return WriteResult(rejected=[Rejection(i, "store_corrupt", reason) for i in range(len(points))])
                return WriteResult.all_retry(len(points), f"local store {exc}")
            except Exception as exc:  # never raise into the pipeline
                return WriteResult.all_retry(len(points), f"local store {self.path}: {type(exc).__name__}: {exc}")
            if self._reported is not None:
                logger.info("local store %s is usable again", self.path)
                self._reported = None
        return WriteResult(stored=stored, rejected=rejected, nbytes=nbytes)

    def flush(self) -> None:
        return None  # every batch is committed by write()

    def close(self) -> None:
        with self._lock:
            if self._store is not None and self._store_pid == os.getpid():
                self._store.close()
            self._store = None


__all__ = ["LocalStoreSink"]
