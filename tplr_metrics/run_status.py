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
from types import FrameType, TracebackType

_lock = threading.Lock()
_status: str | None = None
_hook_installed = False
_sigterm_done = False
_installer_pid = 0


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


def _reset_for_tests() -> None:
    """Forget what was noted (tests run many 'processes' in one)."""
    global _status
    with _lock:
        _status = None


__all__ = ["exit_status", "install", "note_exit"]
