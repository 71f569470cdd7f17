"""Files the file-based sinks write: 0600 files in 0700 directories, whole-file rewrites atomic."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..config.paths import private_dir


def make_private_dirs(path: Path) -> Path:
    """``path`` (which the user chose) and its missing parents as 0700 directories."""
    return private_dir(path)


def open_private_append(path: Path) -> int:
    """A file descriptor appending to ``path``, created 0600."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def write_private_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader never sees half a file; the file is 0600."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def chmod_private_files(directory: Path) -> None:
    """0600 for the files a third-party writer created in ``directory`` with its own mode."""
    for entry in directory.iterdir():
        if entry.is_file() and not entry.is_symlink():
            try:
                os.chmod(entry, 0o600)
            except OSError:
                pass
