"""A durable on-disk outbox of points, bounded, replayable, and safe to pick up after a crash.

Layout: ``<root>/<run dir>/`` holds one process's files; ``<root>`` is shared, so a spool left
by a dead process (crash, SIGKILL, power loss) is found and adopted by the next logger that uses
the same root, or by ``tplr-metrics replay --spool``. Each run dir has a ``.lock`` held (flock)
by its live owner; a run dir whose lock can be taken belongs to nobody, so at most one process
adopts it.

Files come in two formats, named so that sorting by name is replay order. Format 1 is JSON
lines, one point per line ``[measurement, tags, fields, time_ns]`` (JSON keeps ints and floats
apart, so points replay exactly), named ``<seq>-<kind>.jsonl``. Format 2 (``spool_lp``), for a
lane whose sink POSTs line protocol as it is (``bodies``), is a batch's line-protocol body under
a header with its line count, size and digest, named ``<seq>-batch.lp``: replayed by sending the
file's bytes, with no point decoded or encoded again. Both are read, whichever this process writes:

* ``batch`` files: batches the server could not take (written to a temp name, fsynced, renamed
  into place, so a crash never leaves half a batch);
* ``wal`` files: durable mode's write-ahead log, one line per accepted point, appended by log()
  itself, fsynced every ``durable_sync_interval``; a segment is deleted once every point in it
  is delivered or safe in a batch file. Since format 2 a segment holds what log() was given, not
  the built point, so that log() only copies and appends (building the point cost the caller
  more than everything else together): a header line ``{"tplr_wal":2,"prefix":...,"tags":{the
  logger's standard tags}}`` says how its points are built, then one line per call,
  ``[measurement, tags, fields, time_ns]`` (``, host_fields, host_tags]`` with host metrics).
  Adoption builds each line into a point with the header's prefix and standard tags (as the dead
  process's encoder did) and rewrites the segment as format 1 point lines, before anything else
  reads it; a line that does not build into a point is kept as it was, to be quarantined like
  any other bad line. A segment without a header (format 1, from an older version) is read as
  points, as before.

Files are 0600 in 0700 directories. When the files pass ``max_bytes`` the oldest batch files are
evicted, and their points counted. A line that does not decode into a valid point (torn, or of
the wrong shape) is handed back by ``read`` for the lane to quarantine: dead letter, cause
``corrupt_spool_line``, and the file rewritten without it, so the rest is delivered.

A point killed between a batch file and the retirement of the WAL segment holding it is in both:
adoption drops from the batch files every line a WAL segment still holds.

An adopted file is renamed ``<seq>-batch.from-<runtime_id>.jsonl``: the run that logged its
points (the dead run dir's name), so that a sink keeping runs (the local store) stores them under
that run and marks it ``crashed``, even if the adopting process dies in turn. Adopted files are
counted (``adopted``, by their lines) when taken. Only the orphans of the same destination are
adopted: ``<root>`` is ``<spool root>/<fingerprint of the destination>``, with a
``destination.json`` manifest (no secret) beside the run dirs. No symlink below the spool root is
followed (see ``config/paths.py``).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import logging
import math
import mmap
import operator
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..config.paths import private_dir
from ..encoding.line_protocol import CONTROL_CHARACTER, encode_lines
from ..encoding.points import INT64_MAX, INT64_MIN, Point, PointBuilder
from . import spool_lp
from .run_names import name_of_run, run_of, run_of_name
from .stats import PipelineStats

logger = logging.getLogger("tplr_metrics")

# <seq>-batch.jsonl, <seq>-wal.jsonl; an adopted file names the run that logged its points:
# <seq>-batch.from-<run>.jsonl, so that they are stored under that run, even after a second death.
_FILE_NAME = re.compile(r"^(\d{12})-(batch|wal)(?:\.from-([A-Za-z0-9._~-]{1,200}))?\.(jsonl|lp)$")


_LOCK_NAME = ".lock"
MANIFEST_NAME = "destination.json"


_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE

try:  # encoding/_compact_record.c, built where the install found a C compiler
    from ..encoding._compact_record import writes_no_null  # type: ignore[import-not-found]
except ImportError:

    def writes_no_null(tags: Any, fields: Any) -> bool:
        return False  # unknown: the WAL line is searched for a null instead


_LONG_NUMBER = re.compile(rb"-\d{19}|\d{20}")  # past what orjson reads as an int: 64 bits


_dumps_line = functools.partial(orjson.dumps, option=_APPEND_NEWLINE)
_as_tuple = operator.itemgetter(slice(None))  # point[:], as a C callable


def encode_point(point: Point) -> bytes:
    """One spool line, ``[measurement, tags, fields, time_ns]\n`` (orjson: a few µs less than json).
    ``point[:]`` is the plain tuple orjson serializes natively (``tuple(point)`` iterates, 10× slower)."""
    try:
        return orjson.dumps(point[:], option=_APPEND_NEWLINE)
    except TypeError:  # an int orjson cannot hold: the stdlib can
        return (json.dumps(list(point), separators=(",", ":")) + "\n").encode()


def encode_points(points: Iterable[Point], at_once: bool = False) -> bytes:
    """Spool lines for many points. ``at_once`` runs the whole loop in C (map and join over C
    callables run no bytecode, so the GIL is never handed over inside): close() uses it for its
    last spool file, which threads logging through close() otherwise slowed 10x (107,000 points:
    3.3 s instead of 0.2 s). Writers do not: their batches hold the GIL in short steps."""
    dumps = orjson.dumps
    try:
        if at_once:
            return b"".join(map(_dumps_line, map(_as_tuple, points)))
        return b"".join([dumps(p[:], option=_APPEND_NEWLINE) for p in points])
    except TypeError:
        return b"".join([encode_point(p) for p in points])


#: A WAL segment's first reservation (it doubles as it fills).
_WAL_CHUNK = 256 * 1024

#: The first bytes of a format-2 WAL segment (its header line).
WAL_HEADER_START = b'{"tplr_wal":'
WAL_FORMAT = 2


def wal_header(prefix: str, standard_tags: dict[str, str]) -> bytes:
    """A format-2 WAL segment's first line: how its records are built into points."""
    return orjson.dumps({"tplr_wal": WAL_FORMAT, "prefix": prefix, "tags": standard_tags}, option=_APPEND_NEWLINE)


def encode_record(record: Sequence[Any]) -> bytes:
    """One format-2 WAL line: what log() queued (its copies of the caller's tags and fields, every
    value immutable), ``[measurement, tags, fields, time_ns]`` plus the host parts when set.

    A valid line never holds a JSON null: a None field value is written as the 0.0 the value rules
    make of it, a None tag value (left out by the builder) is left out, and NaN and infinities are
    written as the stdlib spells them (orjson would write null)."""
    plain = record[4] is None and record[5] is None
    line = record[:4] if plain else record[:6]
    try:
        data = orjson.dumps(line, option=_APPEND_NEWLINE)
    except TypeError:  # an int past 64 bits, or a key that is not a str
        return _encode_record_slowly(line)
    if plain and writes_no_null(record[1], record[2]):
        return data  # no value orjson writes as null: no need to search the line for one
    return _encode_record_slowly(line) if b"null" in data else data


def _encode_record_slowly(line: Sequence[Any]) -> bytes:
    measurement, tags, fields, time_ns, *host = line
    parts = [measurement, _plain_part(tags, None), _plain_part(fields, 0.0), time_ns]
    parts += [part if part is None else _plain_part(part, 0.0) for part in host]
    return (json.dumps(parts, separators=(",", ":"), default=str) + "\n").encode()


def _plain_part(part: Any, none: float | None) -> Any:
    """Keys as the builder reads them (their text), None values as the value rules make them."""
    if not isinstance(part, dict):
        return part
    return {_key_text(k): none if v is None else v for k, v in part.items() if v is not None or none is not None}


def _key_text(key: Any) -> str:
    return key if type(key) is str else ("" if key is None else str(key))


def _loads(line: bytes) -> Any:
    # orjson reads an int past 64 bits as a float: such lines go to the stdlib, as do NaN and
    # infinities (which _is_valid refuses in a point, and a WAL record may hold).
    if _LONG_NUMBER.search(line):
        return json.loads(line)
    try:
        return orjson.loads(line)
    except ValueError:
        return json.loads(line)


def _ignore_issue(cause: str, measurement: str, field: str, detail: str) -> None:
    """Adoption rebuilds points the dead process built (and counted the issues of) already."""


def wal_to_points(data: bytes, builders: dict[bytes, PointBuilder] | None = None) -> bytes | None:
    """A format-2 WAL segment as format-1 point lines (None when ``data`` is format 1 already):
    each record built with its header's prefix and standard tags; a line that is not a record or
    does not build into a point is kept as it was (the replayer quarantines it). ``builders``
    carries what a builder learns (fields seen as float) from one segment of a run to the next."""
    lines = data.replace(b"\0", b"").splitlines()  # a killed process's reserved, unused tail
    if not lines or not lines[0].startswith(WAL_HEADER_START):
        return None if b"\0" not in data else b"".join(line + b"\n" for line in lines if line.strip())
    builders = {} if builders is None else builders
    builder = builders.get(lines[0])
    if builder is None:
        try:
            header = orjson.loads(lines[0])
            builder = PointBuilder(dict(header["tags"]), str(header["prefix"]), _ignore_issue)
        except (ValueError, TypeError, KeyError):
            # A header that does not say how to build: every line is kept as it is, to be
            # quarantined (nothing is sent that this process cannot vouch for).
            return b"".join(line + b"\n" for line in lines[1:] if line.strip())
        builders[lines[0]] = builder
    out = []
    for line in lines[1:]:
        if not line.strip():
            continue
        point = _build_record(builder, line)
        out.append(encode_point(point) if point is not None else line + b"\n")
    return b"".join(out)


def _build_record(builder: PointBuilder, line: bytes) -> Point | None:
    try:
        record = _loads(line)
    except (ValueError, TypeError):
        return None
    if type(record) is not list or len(record) not in (4, 6):
        return None
    if len(record) == 4:
        record += [None, None]
    measurement, tags, fields, time_ns, host_fields, host_tags = record
    if not (
        type(measurement) is str
        and type(tags) is dict
        and type(fields) is dict
        and type(time_ns) is int
        and INT64_MIN <= time_ns <= INT64_MAX
        and (host_fields is None or type(host_fields) is dict)
        and (host_tags is None or type(host_tags) is dict)
        and None not in tags.values()  # encode_record never writes a null: a line edited by hand
        and None not in fields.values()
    ):
        return None
    try:
        point = builder.build((measurement, tags, fields, time_ns, host_fields, host_tags))
    except Exception:  # a line the rules cannot take: quarantined, never sent
        return None
    return point  # the value rules made it storable (it is checked again when read back)


def decode_points(data: bytes) -> tuple[list[Point], list[bytes]]:
    """Points of a spool file, and the lines that are not a valid point (a torn last line, a
    line of the wrong shape): the caller quarantines those, the rest is delivered."""
    points: list[Point] = []
    bad: list[bytes] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            point = Point(*_loads(line))
        except (ValueError, TypeError):
            bad.append(line)
            continue
        if is_valid_point(point):
            points.append(point)
        else:
            bad.append(line)
    return points, bad


_FIELD_TYPES = (bool, int, float, str)
_INT64 = (-(2**63), 2**63 - 1)
# What the value rules never let through into a name or tag value: control characters (a raw
# newline would end the line: a planted one injects a point), and a leading '#' (a comment).
_BAD_MEASUREMENT = re.compile(r"[\x00-\x1f\x7f]|^[# ]")  # CONTROL_CHARACTER, or a leading '#' or space


def is_valid_point(point: Point) -> bool:
    """What every point log() builds looks like; anything else (a line edited into the wrong
    shape, or one holding what the value rules refuse: NaN, an int past 64 bits, a raw newline
    in a name) is quarantined, never sent."""
    measurement, tags, fields, time_ns = point
    if not (
        type(measurement) is str
        and bool(measurement)
        and type(tags) is dict
        and type(fields) is dict
        and bool(fields)
        and type(time_ns) is int
        and _INT64[0] < time_ns < _INT64[1]
        and not _BAD_MEASUREMENT.search(measurement)
    ):
        return False
    for key, value in tags.items():
        if type(key) is not str or type(value) is not str or not key or CONTROL_CHARACTER.search(key + value):
            return False
    for name, field_value in fields.items():
        if type(name) is not str or not name or CONTROL_CHARACTER.search(name):
            return False
        if not isinstance(field_value, _FIELD_TYPES):
            return False
        if type(field_value) is float and not math.isfinite(field_value):
            return False
        if type(field_value) is int and not _INT64[0] <= field_value <= _INT64[1]:
            return False
    return True


@dataclass
class SpoolFile:
    path: Path
    seq: int
    kind: str  # "batch" or "wal"
    points: int  # for an adopted file, its line count until it is read
    batch_id: int | None = None  # the in-process batch it holds, to settle flushes
    adopted: bool = False  # left by an earlier process: counted ``adopted`` when taken
    origin: str | None = None  # the runtime_id of the run that logged an adopted file's points
    busy: bool = False  # the replayer is sending it: never evicted meanwhile (it may be stored)
    maybe_stored: bool = False  # a request carrying its points went unanswered: the server may hold them

    @property
    def is_body(self) -> bool:
        """A format-2 file: the line-protocol body it is sent as (see ``spool_lp``)."""
        return self.path.suffix == ".lp"


class Spool:
    """One process's outbox under a shared root, with adoption of dead processes' outboxes."""

    def __init__(
        self,
        root: Path,
        run_name: str,
        stats: PipelineStats,
        max_bytes: int,
        describe: dict[str, Any] | None = None,
        bodies: bool = False,
    ) -> None:
        # bodies: keep a batch that carries its line protocol (PointBatch.lines) as that body
        # (format 2, spool_lp), for a sink that sends such a body as it is (write_body).
        self.bodies = bodies
        self.root = private_dir(Path(root), trusted=Path(root).parent)  # no planted symlink
        if describe is not None:
            write_manifest(self.root, describe)
        self.stats = stats
        self.max_bytes = max_bytes
        # Reentrant: durable mode appends to the WAL from log(), which a signal handler may call
        # while the same thread is inside an append.
        self._lock = threading.RLock()
        self._files: list[SpoolFile] = []
        self._bytes = 0
        self._seq = 0
        self._wal_fd: int | None = None
        self._wal: SpoolFile | None = None
        self._wal_map: mmap.mmap | None = None  # the segment's map (None: written with write())
        self._wal_end = 0  # bytes of lines in the mapped segment
        self._wal_size = 0  # bytes reserved and mapped
        self._wal_mmap = True  # False once the file system refused to reserve blocks
        self._wal_done = False  # sealed for good: close() has accounted for every point
        self._evicted_batches: list[int] = []  # batch ids evicted under the lock, settled after it
        self.on_evicted: Callable[[int], None] | None = None  # the lane settles an evicted batch
        #: The first line of each WAL segment (format 2): set by the pipeline, from its builder.
        self.wal_header = wal_header("", {})
        self._open_run_dir(run_name)

    def _open_run_dir(self, run_name: str) -> None:
        # Another live process may hold this name (a runtime_id passed to several processes):
        # then take a name of our own rather than share its files.
        run_name = name_of_run(run_name)
        candidates = [run_name] + [f"{run_name}.{os.getpid()}.{n}" for n in range(1, 100)]
        for name in candidates:
            directory = private_dir(self.root / name, trusted=self.root)
            fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.dir, self._lock_fd = directory, fd
            # Files already here (left by an earlier process of the same name) are ours to replay.
            self._take_files_from(self.dir, None)  # our own name: our own run
            return
        raise OSError(f"no free spool directory for {run_name!r} under {self.root}")

    def reopen_in_child(self, run_name: str, stats: PipelineStats) -> None:
        """A forked child gets its own run dir: the parent keeps its files and its lock."""
        self._lock = threading.RLock()
        self.stats = stats
        self._files, self._bytes, self._wal, self._wal_fd = [], 0, None, None
        self._wal_map, self._wal_end, self._wal_size = None, 0, 0  # the parent's map is the parent's
        self._wal_done = False
        self._evicted_batches = []
        self._open_run_dir(run_name)

    # --- adding ------------------------------------------------------------------------

    def _next_path(self, kind: str, origin: str | None = None, suffix: str = "jsonl") -> tuple[int, Path]:
        self._seq += 1
        tail = f".from-{name_of_run(origin)}" if origin else ""
        return self._seq, self.dir / f"{self._seq:012d}-{kind}{tail}.{suffix}"

    def add_batch(
        self, points: Sequence[Point], batch_id: int | None, at_once: bool = False, maybe_stored: bool = False
    ) -> SpoolFile | None:
        """Write a batch durably (temp file, fsync, rename) and queue it for replay; None when the
        disk refused it even after evicting older files (the caller counts the points).
        ``at_once``: encode without handing over the GIL (see encode_points)."""
        lines: Sequence[str] | None = getattr(points, "lines", None) if self.bodies else None
        if lines is not None and spool_lp.lines_fit(points, lines):
            data, suffix = spool_lp.encode_file(lines), spool_lp.SUFFIX
        else:
            data, suffix = encode_points(points, at_once), "jsonl"
        with self._lock:
            seq, path = self._next_path("batch", suffix=suffix)
            try:
                _write_durably(path, data)
            except OSError as exc:
                if not self._evict_for_space(len(data)):
                    self.stats.error(f"spool {self.dir}: {exc.strerror or exc}")
                    self.stats.warn_once("spool_write_failed", "spool %s cannot be written: %s", self.dir, exc)
                    return None
                try:
                    _write_durably(path, data)
                except OSError as exc2:
                    self.stats.error(f"spool {self.dir}: {exc2.strerror or exc2}")
                    self.stats.warn_once("spool_write_failed", "spool %s cannot be written: %s", self.dir, exc2)
                    return None
            item = SpoolFile(path, seq, "batch", len(points), batch_id, maybe_stored=maybe_stored)
            self._files.append(item)
            self._bytes += len(data)
            self.stats.spool_in(len(points))  # before an eviction can count points out
            self._evict_if_full(keep=item)
            settled, self._evicted_batches = self._evicted_batches, []
        if self.on_evicted is not None:
            for evicted_id in settled:
                self.on_evicted(evicted_id)  # its points are counted: the batch is settled
        return item

    def _evict_for_space(self, needed: int) -> bool:
        """The disk is full: evict the oldest batch files (counted) until ``needed`` bytes are freed."""
        freed = 0
        while freed < needed:
            victim = next((f for f in self._files if f.kind == "batch" and not f.busy), None)
            if victim is None:
                return freed > 0
            freed += self._evict(victim)
        return True

    def _evict(self, victim: SpoolFile) -> int:
        size = _size(victim.path)
        points = victim.points
        _unlink(victim.path)
        self._files.remove(victim)
        self._bytes -= size
        self.stats.spool_evicted(points, victim.maybe_stored)
        if victim.batch_id is not None:
            self._evicted_batches.append(victim.batch_id)
        self.stats.warn_once("spool_full", "spool %s is full; evicting the oldest points", self.dir)
        return size

    def _evict_if_full(self, keep: SpoolFile) -> None:
        """Over ``max_bytes``: evict the oldest idle batch files, never the one just written (the
        bound may be passed by one batch: evicting it would lose the newest points for nothing)."""
        while self._bytes > self.max_bytes:
            idle = [f for f in self._files if f.kind == "batch" and not f.busy and f is not keep]
            victim = next((f for f in idle if f.batch_id is None), None) or next(iter(idle), None)
            if victim is None:
                return
            self._evict(victim)

    # --- durable mode's write-ahead log -------------------------------------------------

    def wal_append(self, line: bytes) -> bool:
        """Append one encoded record to the current WAL segment; False when the disk refused it
        (the caller counts it; the point goes on).

        The segment is a shared memory map of its file, its blocks reserved beforehand
        (``posix_fallocate``: a full disk refuses the reservation, never a write into the map):
        a copy into the map puts the line in the kernel's page cache, where it survives SIGKILL
        exactly like a write() does, for a tenth of a syscall. A killed process leaves the unused,
        reserved tail as NUL bytes, which no valid line holds and every reader drops. Where the
        file system cannot reserve blocks, segments are written with write() instead."""
        try:
            with self._lock:
                if self._wal_done:
                    # A log() that passed the closed check as close() finished: its point was
                    # queued before, so close() accounted for it; a new segment would deliver
                    # it a second time in the next process.
                    return True
                if self._wal_fd is None and self._open_wal():
                    line = self.wal_header + line  # one copy: never a record without its header
                wal = self._wal
                assert wal is not None
                mapped = self._wal_map
                n = len(line)
                if mapped is None:
                    if os.write(self._wal_fd, line) != n:  # type: ignore[arg-type]
                        return False
                else:
                    # Reserve, then copy: no call between reading and moving the end, so a signal
                    # handler's log() (same thread, reentrant lock) appends after this line.
                    start = self._wal_end
                    end = start + n
                    self._wal_end = end
                    if end > self._wal_size and not self._grow_wal(end):
                        return False  # the reserved bytes stay NUL: skipped by every reader
                    mapped[start:end] = line
                wal.points += 1
                self._bytes += n
                return True
        except (OSError, ValueError):
            return False

    def _open_wal(self) -> bool:
        """A new segment (call with the lock held); False when a signal handler's append opened
        one meanwhile (that one is used)."""
        seq, path = self._next_path("wal")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        mapped: mmap.mmap | None = None
        try:
            if self._wal_mmap:
                try:
                    os.posix_fallocate(fd, 0, _WAL_CHUNK)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
                    self._wal_mmap = False  # this file system cannot reserve: write() from now on
                else:
                    mapped = mmap.mmap(fd, _WAL_CHUNK)
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        if self._wal_fd is not None:
            if mapped is not None:
                mapped.close()
            os.close(fd)
            _unlink(path)
            return False
        self._wal_fd, self._wal, self._wal_map = fd, SpoolFile(path, seq, "wal", 0), mapped
        self._wal_end, self._wal_size = 0, _WAL_CHUNK if mapped is not None else 0
        return True

    def _grow_wal(self, end: int) -> bool:
        """Reserve and map room up to at least ``end`` (call with the lock held)."""
        mapped = self._wal_map
        assert mapped is not None and self._wal_fd is not None
        size = max(self._wal_size * 2, end + _WAL_CHUNK)
        os.posix_fallocate(self._wal_fd, 0, size)  # ENOSPC: refused, nothing written
        if size > self._wal_size:  # a signal handler's append may have grown it further meanwhile
            mapped.resize(size)
            self._wal_size = size
        return True

    def wal_seal(self, final: bool = False) -> SpoolFile | None:
        """fsync and close the current WAL segment, cut to the lines it holds; the caller deletes
        it once it is safe. ``final``: no segment opens after this one (close)."""
        with self._lock:
            self._wal_done = self._wal_done or final
            fd, segment, mapped, end = self._wal_fd, self._wal, self._wal_map, self._wal_end
            self._wal_fd, self._wal, self._wal_map, self._wal_end, self._wal_size = None, None, None, 0, 0
        if fd is None:
            return None
        try:
            if mapped is not None:
                mapped.flush()
                mapped.close()
                os.ftruncate(fd, end)  # the reserved tail goes: a sealed segment holds lines only
            os.fsync(fd)
        finally:
            os.close(fd)
        return segment

    def drop_segment(self, segment: SpoolFile) -> None:
        with self._lock:
            self._bytes -= _size(segment.path)
            _unlink(segment.path)

    # --- replay --------------------------------------------------------------------------

    def pending(self) -> int:
        """Files waiting for replay."""
        return len(self._files)

    def pending_points(self) -> int:
        """Points waiting for replay."""
        with self._lock:
            return sum(f.points for f in self._files)

    def oldest(self) -> SpoolFile | None:
        """The next file to send, marked busy until ``release``: evicting a file while its
        request is out counted its points lost, and the server stored them (fault matrix, full disk)."""
        with self._lock:
            if not self._files:
                return None
            item = self._files[0]
            item.busy = True
            return item

    def release(self, item: SpoolFile) -> None:
        with self._lock:
            item.busy = False

    def read(self, item: SpoolFile) -> tuple[list[Point], list[bytes]]:
        """A file's points, and its lines that are not a valid point (to quarantine). A file
        replaced by a symlink is not followed: it is one bad "line" naming the link."""
        try:
            return decode_points(_read_nofollow(item.path))
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return [], [f"not read: {item.path.name} is a symlink".encode()]

    def read_body(self, item: SpoolFile) -> tuple[bytes, int, list[bytes], int]:
        """A format-2 file's body as it can be sent, its line count, the lines to quarantine and
        the points missing from it (see ``spool_lp.read_file``); a symlink is one bad "line"
        naming it, as in ``read``."""
        try:
            return spool_lp.read_file(_read_nofollow(item.path))
        except FileNotFoundError:
            return b"", 0, [], 0
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return b"", 0, [f"not read: {item.path.name} is a symlink".encode()], 0

    def rewrite(self, item: SpoolFile, points: Sequence[Point], lines: Sequence[str] | None = None) -> None:
        """Replace a file's points with the ones still to send (atomically); a format-2 file
        keeps its format, from ``lines`` (the points' lines as sent)."""
        if item.is_body:
            data = spool_lp.encode_file(lines if lines is not None else encode_lines(points))
        else:
            data = encode_points(points)
        with self._lock:
            before = _size(item.path)
            _write_durably(item.path, data)
            self._bytes += len(data) - before
        item.points = len(points)

    def done(self, item: SpoolFile) -> None:
        """The file's points are all stored or rejected: it is never sent again."""
        with self._lock:
            self._bytes -= _size(item.path)
            _unlink(item.path)
            if item in self._files:
                self._files.remove(item)

    def adopt_orphans(self) -> int:
        """Move the files of dead processes' run dirs into ours; returns how many were taken."""
        taken = 0
        for other in sorted(self.root.iterdir()):
            if other.is_symlink():
                _refuse_link(other)
                continue
            if other == self.dir or not other.is_dir():
                continue
            fd = lock_orphan(other)
            if fd is None:
                continue
            try:
                with self._lock:
                    taken += self._take_files_from(other, run_of(other.name))
                shutil.rmtree(other, ignore_errors=True)
            finally:
                os.close(fd)
        if taken:
            logger.info("picked up %d spool file(s) left by an earlier process under %s", taken, self.root)
        return taken

    def _take_files_from(self, directory: Path, origin: str | None) -> int:
        found = []
        for path in directory.iterdir():
            named = _FILE_NAME.match(path.name)
            if named and path.is_symlink():
                _refuse_link(path)  # not ours to read: it stays where it is, uncounted
            elif named:
                found.append((int(named.group(1)), named.group(2), path))
        found.sort()
        builders: dict[bytes, PointBuilder] = {}
        for _, kind, path in found:
            if kind == "wal":
                _wal_as_points(path, builders)
        found = _without_wal_copies(found)
        adopted = 0
        for _, _kind, path in found:
            named = _FILE_NAME.match(path.name)
            from_run = named.group(3) if named else None  # a file adopted twice keeps its run
            run = run_of_name(from_run) if from_run else origin
            suffix = named.group(4) if named else "jsonl"
            seq, target = self._next_path("batch", run, suffix)  # sealed: replayed as a whole either way
            if path != target:
                os.rename(path, target)
            # Counted now, not when read: until then accounting() shows them as spooled, so
            # the books do not balance without them while they wait.
            lines = _count_lines(target)
            self._files.append(SpoolFile(target, seq, "batch", lines, adopted=True, origin=run))
            self._bytes += _size(target)
            adopted += lines
        if adopted:
            self.stats.adopted_points(adopted)
        for stale in directory.glob("*.tmp"):
            _unlink(stale)  # a batch torn by a crash before its rename: never acknowledged
        return len(found)

    def close(self, remove_if_empty: bool = True) -> None:
        segment = self.wal_seal(final=True)
        if segment is not None and segment.points == 0:
            self.drop_segment(segment)
        with self._lock:
            empty = not self._files and not any(_FILE_NAME.match(p.name) for p in self.dir.iterdir())
        if empty and remove_if_empty:
            shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.close(self._lock_fd)
        except OSError:
            pass


def _without_wal_copies(found: list[tuple[int, str, Path]]) -> list[tuple[int, str, Path]]:
    """A durable process killed between spooling a batch and retiring the WAL segment that holds
    the same points leaves them in both files: drop from the batch files every line a WAL segment
    still holds (the same Point encodes to the same bytes), so each point is replayed once."""
    wal_lines: set[bytes] = set()
    for _, kind, path in found:
        if kind == "wal":
            wal_lines.update(_digest(line) for line in _lines(path))
    if not wal_lines:
        return found
    kept = []
    for item in found:
        _, kind, path = item
        if kind == "batch" and path.suffix != ".lp":  # a line-protocol body never equals a WAL line
            lines = _lines(path)
            unique = [line for line in lines if _digest(line) not in wal_lines]
            if not unique:
                _unlink(path)
                continue
            if len(unique) < len(lines):
                _write_durably(path, b"\n".join(unique) + b"\n")
        kept.append(item)
    return kept


def _wal_as_points(path: Path, builders: dict[bytes, PointBuilder]) -> None:
    """A dead process's format-2 WAL segment rewritten (atomically) as the points it holds."""
    try:
        data = _read_nofollow(path)
    except OSError:
        return
    converted = wal_to_points(data, builders)
    if converted is not None:
        _write_durably(path, converted)


def _digest(line: bytes) -> bytes:
    return hashlib.blake2b(line, digest_size=16).digest()


def _lines(path: Path) -> list[bytes]:
    try:
        return [line for line in path.read_bytes().splitlines() if line.strip()]
    except OSError:
        return []


def lock_orphan(run_dir: Path) -> int | None:
    """The fd holding a run dir's lock when its owner is gone (the caller closes it), else None."""
    try:
        fd = os.open(run_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None  # its owner is alive
    return fd


@dataclass(frozen=True)
class SpooledDestination:
    """One destination's directory under a spool root, as ``replay --spool`` shows it."""

    directory: Path
    manifest: dict[str, Any] | None  # where its points were meant to go; None if unreadable
    files: int
    points: int  # lines, a torn last line included
    held: int  # run dirs whose owner is alive (their files are not for adoption)


def spooled_destinations(root: Path) -> list[SpooledDestination]:
    """Each destination directory under a spool root, with what it holds."""
    found = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    for directory in entries:
        if directory.is_symlink() or not directory.is_dir():
            continue
        paths = [p for p in directory.glob("*/*") if _FILE_NAME.match(p.name) and not p.is_symlink()]
        held = 0
        for run_dir in {p.parent for p in paths}:
            fd = lock_orphan(run_dir)
            if fd is None:
                held += 1
            else:
                os.close(fd)
        found.append(
            SpooledDestination(
                directory, read_manifest(directory), len(paths), sum(_count_lines(p) for p in paths), held
            )
        )
    return found


def move_orphans(source: Path, target: Path) -> int:
    """Move the run dirs of dead processes from one destination's directory into another's
    (``replay --spool --to URL --yes``); live ones (lock held) stay. Returns how many moved."""
    private_dir(target, trusted=target.parent)
    moved = 0
    for run_dir in sorted(source.iterdir()):
        if run_dir.is_symlink() or not run_dir.is_dir():
            continue
        fd = lock_orphan(run_dir)
        if fd is None:
            continue
        try:
            destination = target / f"{run_dir.name}.moved"
            n = 1
            while destination.exists():
                n += 1
                destination = target / f"{run_dir.name}.moved{n}"
            os.rename(run_dir, destination)
            moved += 1
        finally:
            os.close(fd)
    return moved


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a full disk gives short writes before ENOSPC)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(28, "No space left on device (short write)")
        view = view[written:]


def _write_durably(path: Path, data: bytes) -> None:
    """Write a file that is either whole or absent after a crash: temp name, fsync, rename.
    On any failure the temp file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def write_manifest(directory: Path, describe: dict[str, Any]) -> None:
    """``destination.json``: where this spool's points were meant to go (never a secret)."""
    path = directory / MANIFEST_NAME
    if path.exists():
        return
    try:
        _write_durably(path, json.dumps(describe, sort_keys=True, indent=1).encode())
    except OSError:
        pass


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_nofollow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _refuse_link(path: Path) -> None:
    logger.warning("spool: %s is a symlink; not followed, left as it is", path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count_lines(path: Path) -> int:
    """Lines in a spool file, a torn last line included (read() may find a few of them blank:
    the replayer corrects the count then)."""
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    if path.suffix == ".lp":
        return spool_lp.count_lines(data)
    data = data.replace(b"\0", b"")  # a live or killed WAL segment's reserved tail
    header = 1 if data.startswith(WAL_HEADER_START) else 0  # a format-2 WAL segment's first line
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0) - header


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
