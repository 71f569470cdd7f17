"""Where tplr_metrics keeps its files: ``$TPLR_METRICS_HOME``, ``~/.tplr_metrics`` by default.

Directories are created 0700, each one (not only the last: ``mkdir(parents=True)`` gives the
parents the umask's 0755). Below a directory the user chose (``TPLR_METRICS_HOME``, an explicit
``spool_dir``), the tree is the library's own, so a symlink found there was planted: it is never
followed (a chmod or a write through it would land outside), and the error names it. A path the
user configured explicitly may itself be a symlink: that one they asked for.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigurationError

HOME_VARIABLE = "TPLR_METRICS_HOME"


def tplr_home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    configured = (environ.get(HOME_VARIABLE) or "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".tplr_metrics"


class UnsafePathError(ConfigurationError):
    """A symlink (or a non-directory) where the library keeps its own files."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{path} is {what}; tplr_metrics does not follow it (remove it)")
        self.path = path


def private_dir(path: Path, trusted: Path | None = None) -> Path:
    """``path`` as a 0700 directory, with its missing parents 0700 too.

    ``trusted`` is the directory the user chose, ``path`` itself by default. Components below it
    must be real directories (a symlink raises UnsafePathError) and are made 0700 even when they
    exist; ``trusted`` and what is above it are the user's: created if missing, left as they are."""
    path = Path(path)
    trusted = path if trusted is None else Path(trusted)
    try:
        below = path.relative_to(trusted).parts
    except ValueError:
        raise ValueError(f"{path} is not under {trusted}") from None
    _make_dirs(trusted)
    current = trusted
    for part in below:
        current = current / part
        try:
            os.mkdir(current, 0o700)
        except FileExistsError:
            pass
        mode = os.lstat(current).st_mode
        if stat.S_ISLNK(mode):
            raise UnsafePathError(current, "a symlink")
        if not stat.S_ISDIR(mode):
            raise UnsafePathError(current, "not a directory")
        if stat.S_IMODE(mode) != 0o700:
            os.chmod(current, 0o700)  # lstat said: a directory, not a link
    return path


def _make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700; existing ones keep their mode (a
    directory the user made, e.g. ./outputs, is theirs to set)."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)  # mkdir's mode passes through the umask
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{path} is not a directory")


def refuse_symlink(path: Path, what: str) -> None:
    """A file the library places itself (the default store) must not be a planted symlink."""
    if os.path.islink(path):
        raise UnsafePathError(path, f"a symlink ({what})")
