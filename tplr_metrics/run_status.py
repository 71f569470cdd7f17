"""How a process is ending, for the status of its runs: ok, failed or cancelled.

A logger still open at interpreter exit is closed by the pipeline's atexit hook, which asks
:func:`exit_status` how the run ended. Python does not say, so :func:`install` watches:

* ``sys.excepthook`` is wrapped (the previous hook still runs): an uncaught exception means
  ``failed``, an uncaught ``KeyboardInterrupt`` (Ctrl-C) ``cancelled``. The hook runs before
  atexit, so the status is known by the time the run is closed.
* SIGTERM: its default action kills the process on the spot, skipping atexit and so the final
  flush. Only where that default is in place (nobody installed a handler) and only from the
  main thread, a handler is installed that notes ``cancelled`` and raises ``SystemExit(143)``
  in the main thread: ``finally`` blocks and atexit run, the queue is flushed, and the exit
  code is the one a SIGTERM death reports to a shell. A forked child that inherits the handler
  gets the default action back (it did not ask for ours).

* SIGTERM in a forked child that inherited an open logger (a ``multiprocessing`` Pool worker:
  ``Pool.terminate()``, and so leaving ``with Pool(...)``, ends its workers with SIGTERM):
  where the default action is in place, :func:`close_on_sigterm_in_fork` installs a handler
  that closes the child's loggers (bounded) and then dies of SIGTERM as before. Without it the
  workers' queued points died with them, uncounted, and the parent's close() said True.

Not seen: ``sys.exit(n)`` with a non-zero code and exceptions caught by the application (both
count as ``ok``); an application that handles these itself can call :func:`note_exit`.
``install`` runs once, lazily, when the first logger with the local store is built; importing
this module changes nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType

_lock = threading.Lock()
_status: str | None = None
_hook_installed = False
_sigterm_done = False
_installer_pid = 0
_fork_closers: list[tuple[int, weakref.WeakMethod[Callable[[], bool]]]] = []


def exit_status() -> str:
    """The status of a run whose logger is closed at interpreter exit."""
    return _status or "ok"


def note_exit(status: str) -> None:
    """Record how the process is ending ("failed" or "cancelled"); the first note wins."""
    global _status
    if status not in ("ok", "failed", "cancelled"):
        raise ValueError(f"status must be ok, failed or cancelled, not {status!r}")
    with _lock:
        if _status is None:
            _status = status


def _status_of(exc_type: type[BaseException]) -> str:
    return "cancelled" if issubclass(exc_type, KeyboardInterrupt) else "failed"


def install() -> None:
    """Watch for the ways a process ends (idempotent; see the module docstring)."""
    global _hook_installed, _sigterm_done, _installer_pid
    with _lock:
        if not _hook_installed:
            _hook_installed = True
            _installer_pid = os.getpid()
            previous = sys.excepthook

            def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
                try:
                    note_exit(_status_of(exc_type))
                finally:
                    previous(exc_type, exc, tb)

            sys.excepthook = excepthook
        if _sigterm_done or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread: try again from there
        _sigterm_done = True
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError, AttributeError):  # no SIGTERM here, or an embedded interpreter
            pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _installer_pid:
        # A forked child: behave as if we were never here.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    note_exit("cancelled")
    raise SystemExit(128 + signum)


def close_on_sigterm_in_fork(close: Callable[[], bool]) -> None:
    """In a forked child: on SIGTERM, call ``close`` (a logger's bound method, held weakly), then
    die of SIGTERM. ``close`` returns False when a close of that logger is already under way (a
    Pool worker leaving its loop runs its exit hooks, and terminate()'s SIGTERM lands in the
    middle): then the signal is let go, and the close below it on the stack finishes and the
    worker exits (killing it there cut that close short). Only where SIGTERM has its default
    action (or the handler ``install`` left in the parent), and only from the child's main thread."""
    pid = os.getpid()
    _fork_closers[:] = [(p, ref) for p, ref in _fork_closers if p == pid and ref() is not None]
    _fork_closers.append((pid, weakref.WeakMethod(close)))  # type: ignore[arg-type]
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, _on_sigterm):
            signal.signal(signal.SIGTERM, _on_sigterm_in_fork)
    except (ValueError, OSError, AttributeError):
        pass


def _on_sigterm_in_fork(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    note_exit("cancelled")
    pid = os.getpid()
    under_way = False
    for owner, ref in list(_fork_closers):
        close = ref()
        if owner == pid and close is not None:
            try:
                under_way = not close() or under_way
            except Exception:  # the process is ending: nothing may stop the others' close
                pass
    if not under_way:
        os.kill(pid, signal.SIGTERM)


def _reset_for_tests() -> None:
    """Forget what was noted (tests run many 'processes' in one)."""
    global _status
    with _lock:
        _status = None


__all__ = ["close_on_sigterm_in_fork", "exit_status", "install", "note_exit"]
