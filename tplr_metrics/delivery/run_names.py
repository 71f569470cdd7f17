"""A run's runtime_id as one file-name part, and back.

Spool run directories, the ``.from-<run>`` tail of adopted spool files and dead-letter files
are named after the runtime_id that logged their points. A runtime_id is any string the caller
chose: it is escaped (so ``/`` or ``..`` never make a path) and, when long, shortened with a
digest of the whole (a name longer than 255 bytes made the spool unusable: ENAMETOOLONG)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from ..encoding.points import Point

MAX_NAME = 138  # leaves room for <seq>-batch.from-<name>.lp and <name>.<pid>.<n> under 255 bytes
_KEPT = 119  # escaped characters kept before the digest
_DIGEST = re.compile(r"~~h[0-9a-f]{16}$")  # "~h" is never read as an escape (~XX)
_RUN_SUFFIX = re.compile(r"(?:-\d{1,3})?(?:\.\d+){0,2}$")  # <id>-2 (second logger), <id>.<pid> (child)
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]|^\.")
_ESCAPED = re.compile(r"(?:~[0-9A-F]{2})+")


def _escaped(runtime_id: str) -> str:
    return _UNSAFE_IN_NAME.sub(lambda m: "".join(f"~{b:02X}" for b in m.group().encode()), runtime_id)


def name_of_run(runtime_id: str) -> str:
    """Any character but letters, digits and ``._-`` (and a leading dot) as ``~XX`` per UTF-8
    byte, so ``team/exp-1`` is ``team~2Fexp-1``; past ``MAX_NAME`` characters, the first 119 and
    ``~~h`` with 16 hex digits of the runtime_id's SHA-256."""
    name = _escaped(runtime_id)
    if len(name) <= MAX_NAME:
        return name
    kept = name[:_KEPT]
    cut = kept.rfind("~", len(kept) - 2)  # never keep half of a ~XX escape
    if cut >= 0:
        kept = kept[:cut]
    return f"{kept}~~h{hashlib.sha256(runtime_id.encode()).hexdigest()[:16]}"


def _unescaped(name: str) -> str:
    if is_shortened(name):
        return name  # kept as it is: full_run_id matches it against the points' runtime_id
    return _ESCAPED.sub(lambda m: bytes.fromhex(m.group().replace("~", "")).decode("utf-8", "replace"), name)


def run_of_name(name: str) -> str:
    """The runtime_id a file-name part stands for (a shortened one: the name itself)."""
    return _unescaped(name)


def run_of(run_dir_name: str) -> str:
    """The runtime_id whose points a spool run directory holds."""
    return _unescaped(_RUN_SUFFIX.sub("", run_dir_name) or run_dir_name)


def is_shortened(name: str) -> bool:
    return _DIGEST.search(name) is not None


def full_run_id(run: str, points: Sequence[Point]) -> str:
    """A shortened run name resolved by the ``runtime_id`` tag its points carry (the logger's
    standard tags) when that runtime_id shortens to the same prefix (``<id>-2``, the second
    logger of a process, shares it); otherwise ``run`` itself."""
    if not is_shortened(run) or not points:
        return run
    tagged = points[0][1].get("runtime_id")
    if not tagged:
        return run
    name = name_of_run(tagged)
    return tagged if is_shortened(name) and name.startswith(run[: -len("~~h") - 16]) else run
