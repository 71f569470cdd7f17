"""The embedded local store: one SQLite file, in WAL mode, holding runs and their points.

It is what a logger writes to when no InfluxDB server is configured, and what the
``tplr-metrics`` commands read. WAL mode lets readers (``watch``, ``runs``) run while a logger
writes, and a process killed mid-write leaves the last committed transaction intact. Every batch
is one ``BEGIN IMMEDIATE`` transaction, so several processes can log into one file: a writer
waits for the lock (busy timeout) instead of failing with "database is locked".

Schema (version 3, in ``PRAGMA user_version``), meant to be read with plain ``sqlite3`` too:

``runs``: one row per logger. ``run_id`` is the logger's runtime_id (several loggers of one
process may share it); ``started_at``/``ended_at`` are nanoseconds since the epoch; ``status``
is running, ok, failed, cancelled, or crashed (its process died; found when its spool was adopted);
``name`` is the run's name for people (the logger's ``run_name``, by default role/uid).

``points``: ``measurement``, ``time_ns``, ``tags`` (a JSON object, keys sorted) and ``fields``
(a JSON object whose numbers keep their type: ``1`` is an integer, ``1.0`` a real). ``series``
is a 64-bit hash of measurement and tags: ``(time_ns, series)`` is unique, as a point's identity
is in InfluxDB, so writing the same point twice (a retried batch) stores it once and a second
point of the same series and time merges its fields into the first.

Reads of a run walk the index ``(run, id)`` (or ``(run, measurement)``, whose entries end in
the id too) in id order, so one run costs what it holds, whatever else the file holds. Version 2
added ``(run, id)``, version 3 ``runs.name`` (filled in as role/uid for the runs already there);
an older file is upgraded in place the first time it is opened.

The views ``point_fields`` and ``point_tags`` show one row per field (with its JSON type:
integer, real, text, true, false) and per tag.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import itertools
import json
import logging
import os
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ..config.paths import private_dir, tplr_home
from ..encoding.points import Point
from ..sinks.base import Rejection, RunInfo, default_run_name

logger = logging.getLogger("tplr_metrics")

SCHEMA_VERSION = 3
STORE_FILENAME = "metrics.sqlite"
RUN_STATUSES = ("running", "ok", "failed", "cancelled", "crashed")  # crashed: died, spool recovered
_PAGE_SIZE = 16_384
_CHECKPOINT_BYTES = 32 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,              -- one row per logger; points.run refers to it
    run_id      TEXT NOT NULL,                    -- the logger's runtime_id
    started_at  INTEGER NOT NULL,                 -- ns since the epoch
    ended_at    INTEGER,                          -- ns since the epoch; NULL while running
    status      TEXT NOT NULL DEFAULT 'running',  -- running | ok | failed | cancelled | crashed
    role        TEXT NOT NULL DEFAULT '',
    uid         TEXT NOT NULL DEFAULT '',
    prefix      TEXT NOT NULL DEFAULT '',
    group_name  TEXT NOT NULL DEFAULT '',         -- the logger's group ("group" is an SQL keyword)
    job_type    TEXT NOT NULL DEFAULT '',
    version     TEXT NOT NULL DEFAULT '',
    config      TEXT NOT NULL DEFAULT '{}',       -- JSON object: the config_* tags
    host        TEXT NOT NULL DEFAULT '',
    pid         INTEGER,
    name        TEXT NOT NULL DEFAULT ''          -- for people: run_name, by default role/uid
);
CREATE INDEX IF NOT EXISTS runs_started_at ON runs(started_at);
CREATE INDEX IF NOT EXISTS runs_run_id ON runs(run_id);
CREATE INDEX IF NOT EXISTS runs_name ON runs(name);

CREATE TABLE IF NOT EXISTS points (
    id          INTEGER PRIMARY KEY,              -- insertion order: watch tails it
    run         INTEGER,                          -- runs.id of the logger that wrote the point
    measurement TEXT NOT NULL,
    time_ns     INTEGER NOT NULL,                 -- ns since the epoch
    series      INTEGER NOT NULL,                 -- 64-bit hash of measurement + tags
    tags        TEXT NOT NULL,                    -- JSON object of strings, keys sorted
    fields      TEXT NOT NULL                     -- JSON object; numbers keep integer/real apart
);
CREATE UNIQUE INDEX IF NOT EXISTS points_time_series ON points(time_ns, series);
CREATE INDEX IF NOT EXISTS points_run_measurement ON points(run, measurement);
CREATE INDEX IF NOT EXISTS points_run_id ON points(run, id);

CREATE VIEW IF NOT EXISTS point_fields AS
    SELECT p.id AS point, p.run, p.measurement, p.time_ns, f.key AS field, f.value, f.type
    FROM points AS p, json_each(p.fields) AS f;
CREATE VIEW IF NOT EXISTS point_tags AS
    SELECT p.id AS point, p.run, p.measurement, p.time_ns, t.key AS tag, t.value
    FROM points AS p, json_each(p.tags) AS t;
"""

# A repeated point (same series and time) merges its fields into the stored one, as InfluxDB
# does; an identical one (a retried batch) changes nothing, so its numbers stay exact.
_POINT_VALUES = "(?, ?, ?, ?, ?, ?)"
_ON_CONFLICT = (
    " ON CONFLICT (time_ns, series) DO UPDATE SET fields = json_patch(points.fields, excluded.fields)"
    " WHERE points.fields <> excluded.fields"
)

# Rows per INSERT: one statement of many rows costs SQLite and the sqlite3 module about 1.3 µs
# less per row than executemany of one-row statements (4.5 µs a row here). 100 rows are 600
# parameters, under the 999 SQLite allowed before 3.32. Rows are inserted in order, one by one,
# so a row meets an earlier row of its own statement in the conflict clause as it would a
# stored one.
_ROWS_PER_INSERT = 100


@functools.lru_cache(maxsize=8)
def _insert_rows_sql(n: int) -> str:
    values = ",".join([_POINT_VALUES] * n)
    return f"INSERT INTO points (run, measurement, time_ns, series, tags, fields) VALUES {values}{_ON_CONFLICT}"


_INSERT_POINT = _insert_rows_sql(1)


def _insert_rows(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    per = _ROWS_PER_INSERT
    whole = len(rows) - len(rows) % per
    flat = itertools.chain.from_iterable
    if whole:
        conn.executemany(_insert_rows_sql(per), [tuple(flat(rows[i : i + per])) for i in range(0, whole, per)])
    if whole < len(rows):
        conn.execute(_insert_rows_sql(len(rows) - whole), tuple(flat(rows[whole:])))


# What one row can cause on its own, whatever the others hold: SQLite cannot hold it (a text past
# its length limit: DataError) or sqlite3 cannot bind it (UnicodeEncodeError, OverflowError).
# Not OperationalError (a full disk, a lock, an I/O error): a later try can get past those.
_ROW_ERRORS = (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError, UnicodeEncodeError, OverflowError)


def _insert_rows_refusing(conn: sqlite3.Connection, rows: Sequence[Row]) -> list[tuple[int, BaseException]]:
    """Insert the rows; where one of them fails its statement, roll the batch back and insert
    them one by one, refusing (returning, with the error) only the rows that fail alone. Without
    this, one such row failed its whole batch at every try, and the points behind it waited for
    ever."""
    conn.execute("SAVEPOINT batch")
    try:
        _insert_rows(conn, rows)
    except _ROW_ERRORS:
        conn.execute("ROLLBACK TO batch")
    else:
        conn.execute("RELEASE batch")
        return []
    refused: list[tuple[int, BaseException]] = []
    for k, row in enumerate(rows):
        try:
            conn.execute(_INSERT_POINT, row)
        except _ROW_ERRORS as exc:
            refused.append((k, exc))
    conn.execute("RELEASE batch")
    return refused


# default_run_name() in SQL: what a run recorded before names (or by crashed_run) is called.
_DEFAULT_NAME_SQL = (
    "CASE WHEN role <> '' AND uid <> '' THEN role || '/' || uid WHEN role <> '' THEN role"
    " WHEN uid <> '' THEN uid ELSE substr(run_id, 1, 8) END"
)

_T = TypeVar("_T")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


class StoreError(Exception):
    """The store file cannot be used; the message names the file.

    ``corrupt``: the file is not a (tplr_metrics) SQLite database, retrying cannot help.
    ``busy``: another process held the lock past the busy timeout; trying again later can.
    """

    def __init__(self, path: Path, message: str, *, corrupt: bool = False, busy: bool = False) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.corrupt = corrupt
        self.busy = busy


def default_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$TPLR_METRICS_HOME/metrics.sqlite``, ``~/.tplr_metrics/metrics.sqlite`` by default."""
    return tplr_home(environ) / STORE_FILENAME


def _error(path: Path, exc: BaseException) -> StoreError:
    """Classify an sqlite3 error: corrupt (give up), busy (retry later) or anything else."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc)
    lowered = text.lower()
    corrupt = name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or any(
        words in lowered for words in ("not a database", "malformed", "not a tplr_metrics store")
    )
    busy = name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in lowered or "busy" in lowered
    return StoreError(path, text or type(exc).__name__, corrupt=corrupt, busy=busy and not corrupt)


# --- encoding --------------------------------------------------------------------------------

try:  # orjson is 4-5x faster than json here (float formatting dominates); both write the same JSON
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

try:  # the rows of a batch in one C call (optional: built with the package; the Python loop otherwise)
    from ._store_rows import rows as _c_rows  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the build
    _c_rows = None

# Raw UTF-8 like orjson, so both write the same text (and series hash); \u escapes only for
# what UTF-8 cannot carry (lone surrogates).
_json_tags = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False).encode
_json_fields = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_json_ascii_tags = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True, allow_nan=False).encode
_json_ascii_fields = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode
_blake2b = hashlib.blake2b
_int64_le = struct.Struct("<q").unpack

# measurement -> a blake2b already fed the measurement's bytes: names repeat, and copying a hasher
# costs a third of making one with its digest size (the store's insert rate: about 0.7 µs a point).
# Never updated after it is made, so any thread may copy it.
_series_hashers: dict[str, Any] = {}


def _series(measurement: str, tags_json: bytes) -> int:
    """blake2b-64 of ``measurement + NUL + tags JSON``, as a little-endian signed int."""
    hasher = _series_hashers.get(measurement)
    if hasher is None:
        if len(_series_hashers) > 10_000:
            _series_hashers.clear()
        hasher = _blake2b(measurement.encode("utf-8", "surrogatepass") + b"\0", digest_size=8)
        _series_hashers[measurement] = hasher
    series = hasher.copy()
    series.update(tags_json)
    return int(_int64_le(series.digest())[0])


def _encode_slow(point: Point) -> tuple[str, str, list[str]]:
    """The stdlib path: for when orjson is missing or refused a value (NaN, lone surrogates).

    Returns tags JSON, fields JSON and the fields left out (non-finite floats).
    """
    fields: dict[str, Any] = {}
    left_out: list[str] = []
    for key, value in point.fields.items():
        if type(value) is float and (value != value or value in (float("inf"), float("-inf"))):
            left_out.append(key)
            continue
        fields[key] = value
    tags_s = _json_tags(point.tags)
    if not _is_utf8(tags_s):
        tags_s = _json_ascii_tags(point.tags)
    fields_s = _json_fields(fields)
    if not _is_utf8(fields_s):
        fields_s = _json_ascii_fields(fields)
    return tags_s, fields_s, left_out


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


Row = tuple[int | None, str, int, int, str, str]


def encode_points(run: int | None, points: Sequence[Point]) -> tuple[list[Row], list[Rejection], int]:
    """Rows for ``points``, the points that cannot be stored, and the bytes of JSON written."""
    rejected: list[Rejection] = []
    if _orjson is None:
        return _python_rows(run, points, rejected, _slow_row)
    if _c_rows is None:
        return _python_rows(run, points, rejected, _orjson_row)
    listed = points if type(points) is list else list(points)
    made, nbytes, undecided = _c_rows(run, listed, _orjson.dumps)
    if not undecided:
        return made, rejected, nbytes
    # Points the C loop leaves to this one (a bad time, a lone surrogate, a NaN, ...), in order.
    rows: list[Row] = []
    for index, row in enumerate(made):
        if row is None:
            row = _orjson_row(run, index, listed[index], rejected)
            if row is None:
                continue
            nbytes += _json_bytes(row)
        rows.append(row)
    return rows, rejected, nbytes


def _python_rows(
    run: int | None, points: Sequence[Point], rejected: list[Rejection], make: Callable[..., Row | None]
) -> tuple[list[Row], list[Rejection], int]:
    rows: list[Row] = []
    nbytes = 0
    for index, point in enumerate(points):
        row = make(run, index, point, rejected)
        if row is not None:
            rows.append(row)
            nbytes += _json_bytes(row)
    return rows, rejected, nbytes


def _json_bytes(row: Row) -> int:
    tags, fields = row[4], row[5]
    return (len(tags) if tags.isascii() else len(tags.encode("utf-8"))) + (
        len(fields) if fields.isascii() else len(fields.encode("utf-8"))
    )


def _orjson_row(run: int | None, index: int, point: Point, rejected: list[Rejection]) -> Row | None:
    """One point's row through orjson (what the C loop does), or the careful way when orjson
    refuses a value or writes a null (NaN and infinities)."""
    _, tags, fields, time_ns = point
    measurement = _stored_measurement(index, point, rejected)
    if measurement is None:
        return None
    dumps = _orjson.dumps
    try:
        tags_b = dumps(tags, option=_orjson.OPT_SORT_KEYS)
        fields_b = dumps(fields)
        if b"null" in fields_b:  # orjson writes NaN and inf as null: take the careful path
            raise ValueError("non-finite")
    except (TypeError, ValueError):
        return _slow_row(run, index, point, rejected)
    return (run, measurement, time_ns, _series(measurement, tags_b), tags_b.decode(), fields_b.decode())


def _stored_measurement(index: int, point: Point, rejected: list[Rejection]) -> str | None:
    """The point's measurement as the store holds it, or None (refused, in ``rejected``) for a
    point the store cannot hold: a time that is not int64 nanoseconds, a measurement that is
    not a str. A lone surrogate, which UTF-8 cannot carry (sqlite3 cannot bind it), is stored
    as "?", as line protocol writes it: refused by the database, it failed its whole batch and
    every retry of it, and so every point behind it."""
    measurement, _, _, time_ns = point
    if type(time_ns) is not int or not _INT64_MIN <= time_ns <= _INT64_MAX:
        rejected.append(Rejection(index, "bad_time", f"time {time_ns!r} is not int64 nanoseconds"))
        return None
    if not isinstance(measurement, str):
        rejected.append(Rejection(index, "unstorable", f"measurement {measurement!r:.80} is not a str"))
        return None
    return measurement if measurement.isascii() or _is_utf8(measurement) else _without_surrogates(measurement)


def _without_surrogates(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def _slow_row(run: int | None, index: int, point: Point, rejected: list[Rejection]) -> Row | None:
    measurement = _stored_measurement(index, point, rejected)
    if measurement is None:
        return None
    try:
        tags_s, fields_s, left_out = _encode_slow(point)
    except (TypeError, ValueError) as exc:
        rejected.append(Rejection(index, "unstorable", f"{measurement}: {exc}"))
        return None
    if fields_s == "{}":
        rejected.append(Rejection(index, "no_fields", f"{measurement}: no finite field value"))
        return None
    if left_out:
        logger.debug("%s: non-finite fields %s left out", measurement, left_out)
    return (run, measurement, point[3], _series(measurement, tags_s.encode()), tags_s, fields_s)


_POINT_COLUMNS = "id, run, measurement, time_ns, tags, fields"  # what _stored_point reads


def _loads(text: str) -> Any:
    if _orjson is not None:
        try:
            return _orjson.loads(text)
        except ValueError:  # a lone surrogate (\ud800), which orjson will not read back: json does
            pass
    return json.loads(text)


# --- rows read back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """One logger's run as stored."""

    id: int
    run_id: str
    started_at: int
    ended_at: int | None
    status: str
    role: str
    uid: str
    prefix: str
    group: str
    job_type: str
    version: str
    config: dict[str, str] = field(default_factory=dict)
    host: str = ""
    pid: int | None = None
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "name": self.name,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "status": self.status,
            "role": self.role,
            "uid": self.uid,
            "prefix": self.prefix,
            "group": self.group,
            "job_type": self.job_type,
            "version": self.version,
            "config": dict(self.config),
            "host": self.host,
            "pid": self.pid,
        }


_RUN_COLUMNS = (
    "id, run_id, started_at, ended_at, status, role, uid, prefix, group_name, job_type, version, config, host, pid,"
    " name"
)


def _run_row(row: Sequence[Any]) -> RunRow:
    try:
        config = json.loads(row[11]) if row[11] else {}
    except ValueError:
        config = {}
    return RunRow(
        id=row[0],
        run_id=row[1],
        started_at=row[2],
        ended_at=row[3],
        status=row[4],
        role=row[5],
        uid=row[6],
        prefix=row[7],
        group=row[8],
        job_type=row[9],
        version=row[10],
        config=config if isinstance(config, dict) else {},
        host=row[12],
        pid=row[13],
        name=row[14],
    )


class StoredPoint(NamedTuple):
    """A point read back, with where it is in the store."""

    id: int
    run: int | None
    measurement: str
    tags: dict[str, str]
    fields: dict[str, Any]
    time_ns: int

    def to_point(self) -> Point:
        return Point(self.measurement, self.tags, self.fields, self.time_ns)


@dataclass(frozen=True)
class MeasurementCount:
    measurement: str
    points: int
    first_ns: int
    last_ns: int


@dataclass(frozen=True)
class PointFilter:
    """Which points a command asks for; every part optional (all points when none is set)."""

    runs: Sequence[int] | None = None  # runs.id values
    measurements: Sequence[str] | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    tags: Sequence[tuple[str, str]] | None = None  # (key, value): the point's tag key is value

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.runs is not None:
            clauses.append(f"run IN ({','.join('?' * len(self.runs))})" if self.runs else "0")
            params.extend(self.runs)
        more, more_params = self.clauses(pin=False, measurements=True)
        clauses.extend(more)
        params.extend(more_params)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def clauses(self, *, pin: bool, measurements: bool) -> tuple[list[str], list[Any]]:
        """The measurement (when ``measurements``), time and tag tests. ``pin`` writes the
        column tests as ``+column``, which keeps SQLite on the index a paged read walks (the
        time index would make every page sort what it found)."""
        plus = "+" if pin else ""
        clauses: list[str] = []
        params: list[Any] = []
        if self.measurements and measurements:
            clauses.append(f"{plus}measurement IN ({','.join('?' * len(self.measurements))})")
            params.extend(self.measurements)
        if self.since_ns is not None:
            clauses.append(f"{plus}time_ns >= ?")
            params.append(self.since_ns)
        if self.until_ns is not None:
            clauses.append(f"{plus}time_ns < ?")
            params.append(self.until_ns)
        tag_sql, tag_params = tag_clauses(self.tags)
        return [*clauses, *tag_sql], [*params, *tag_params]


def tag_clauses(tags: Sequence[tuple[str, str]] | None) -> tuple[list[str], list[Any]]:
    """``tags = {key: value}`` tests of a point's JSON tags: read on rows an index found."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in tags or ():
        clauses.append("json_extract(tags, ?) = ?")
        params.extend((f'$."{key}"', value))
    return clauses, params


def _and(clauses: Sequence[str]) -> str:
    return "".join(" AND " + c for c in clauses)


def _per_measurement(measurements: Sequence[str] | None) -> list[tuple[str, list[Any]]]:
    """A run's read, split by measurement when some are chosen: each part walks the index
    ``(run, measurement, id)`` in id order."""
    if not measurements:
        return [("", [])]
    return [(" AND measurement = ?", [m]) for m in dict.fromkeys(measurements)]


# --- the store -------------------------------------------------------------------------------


def _add_run_names(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3: the ``name`` column, each run already there named as a new one would be."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    if columns and "name" not in columns:
        conn.execute("ALTER TABLE runs ADD COLUMN name TEXT NOT NULL DEFAULT ''")
        conn.execute(f"UPDATE runs SET name = {_DEFAULT_NAME_SQL}")


def _prepare_file(path: Path) -> None:
    """Create the store's directory 0700 and its file 0600, before SQLite creates them 0644."""
    private_dir(path.parent)
    if not path.exists():
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)


class Store:
    """A connection to one store file. Thread-safe: calls are serialized by a lock.

    ``create=False`` (the CLI) never creates a file: a missing one raises StoreError.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        try:
            if create:
                _prepare_file(self.path)
            elif not self.path.is_file():
                raise StoreError(self.path, "no local store here (nothing has been logged to it yet)")
            uri = self.path.resolve().as_uri() + ("?mode=rwc" if create else "?mode=rw")
            self.conn = sqlite3.connect(
                uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except StoreError:
            raise
        except (OSError, sqlite3.Error) as exc:
            raise _error(self.path, exc) from None
        try:
            self._retry_busy(lambda: self._configure(create))
        except sqlite3.Error as exc:
            self.conn.close()
            raise _error(self.path, exc) from None
        except StoreError:
            self.conn.close()
            raise

    def _configure(self, create: bool) -> None:
        conn = self.conn
        conn.execute("BEGIN")  # one snapshot: another process may be creating the schema now
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.execute("COMMIT")
        if version > SCHEMA_VERSION:
            raise StoreError(self.path, f"written by a newer tplr_metrics (schema {version}); upgrade to read it")
        if version == 0:
            if tables:
                raise StoreError(self.path, "an SQLite file, but not a tplr_metrics store", corrupt=True)
            if not create:
                raise StoreError(self.path, "empty file, not a tplr_metrics store yet", corrupt=True)
        if version == 0:
            # Before WAL mode, which fixes it: 16 KiB pages hold more rows (~400 bytes each),
            # so a batch writes and checkpoints fewer pages.
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("%s: the file system refused WAL mode (%s); readers may block writers", self.path, mode)
        # NORMAL in WAL mode: a crash of the process loses nothing committed; only a power loss
        # can lose the last transactions (never corrupts the file).
        conn.execute("PRAGMA synchronous=NORMAL")
        # Checkpoint every ~32 MiB of WAL instead of every 4 MiB: copying pages back is most of
        # the write cost at 100k points/s. The WAL file is cut back to 64 MiB after a checkpoint.
        conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_BYTES // _PAGE_SIZE}")
        conn.execute(f"PRAGMA journal_size_limit={2 * _CHECKPOINT_BYTES}")
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have won; IF NOT EXISTS makes the schema the upgrade too.
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    if version:
                        logger.info("%s: upgrading the store to schema %d", self.path, SCHEMA_VERSION)
                        _add_run_names(conn)
                    for statement in _SCHEMA.split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _retry_busy(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` again while SQLite answers "locked" at once, up to the busy timeout.

        The busy handler covers most waits, but not all: switching a new file to WAL mode while
        another process opens it returns SQLITE_BUSY immediately, and so can a reader racing a
        WAL recovery. Two processes starting on one fresh store hit exactly that.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.005
        while True:
            try:
                return work()
            except sqlite3.OperationalError as exc:
                if not _error(self.path, exc).busy or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def close(self) -> None:
        with self._lock:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one write transaction, the lock taken up front (no upgrade deadlock)."""
        conn = self.conn

        def transaction() -> _T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        with self._lock:
            try:
                return self._retry_busy(transaction)
            except sqlite3.Error as exc:
                raise _error(self.path, exc) from None

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._retry_busy(lambda: self.conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise _error(self.path, exc) from None

    # --- writes -------------------------------------------------------------------------

    def add_run(self, run: RunInfo) -> int:
        """Insert a run row (status running) and return its id."""
        params = (
            run.run_id,
            run.started_at_ns,
            run.role,
            run.uid,
            run.prefix,
            run.group,
            run.job_type,
            run.version,
            json.dumps(run.config, sort_keys=True),
            socket.gethostname(),
            os.getpid(),
            run.name or default_run_name(run.role, run.uid, run.run_id),
        )

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO runs (run_id, started_at, status, role, uid, prefix, group_name, job_type,"
                " version, config, host, pid, name) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )
            return int(cursor.lastrowid or 0)

        return self._write(insert)

    def crashed_run(self, run_id: str, now_ns: int) -> int:
        """The row of a run whose process died (its spool was adopted): its latest row, marked
        crashed if it still says running; a new crashed row when it was never recorded."""

        def mark(conn: sqlite3.Connection) -> int:
            latest = "SELECT id, status FROM runs WHERE run_id = ? ORDER BY id DESC LIMIT 1"
            row = conn.execute(latest, (run_id,)).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO runs (run_id, started_at, ended_at, status, name) VALUES (?, ?, ?, 'crashed', ?)",
                    (run_id, now_ns, now_ns, run_id[:8]),
                )
                return int(cursor.lastrowid or 0)
            if row[1] == "running":
                conn.execute("UPDATE runs SET status = 'crashed', ended_at = ? WHERE id = ?", (now_ns, row[0]))
            return int(row[0])

        return self._write(mark)

    def end_run(self, run: int, status: str, ended_at_ns: int) -> None:
        if status not in RUN_STATUSES:
            status = "failed"
        params = (status, ended_at_ns, run)
        self._write(lambda conn: conn.execute("UPDATE runs SET status = ?, ended_at = ? WHERE id = ?", params))

    def insert_points(self, run: int | None, points: Sequence[Point]) -> tuple[int, list[Rejection], int]:
        """Store a batch in one transaction: (points stored, points refused, JSON bytes)."""
        rows, rejected, nbytes = encode_points(run, points)
        if not rows:
            return 0, rejected, nbytes
        refused = self._write(lambda conn: _insert_rows_refusing(conn, rows))
        if refused:  # row k is the k-th point not refused already
            taken = iter(sorted(set(range(len(points))) - {r.index for r in rejected}))
            at = [next(taken) for _ in rows]
            for k, exc in refused:
                rejected.append(Rejection(at[k], "unstorable", f"{rows[k][1]}: {type(exc).__name__}: {exc}"[:300]))
                nbytes -= _json_bytes(rows[k])
            rejected.sort(key=lambda rejection: -1 if rejection.index is None else rejection.index)
        return len(rows) - len(refused), rejected, nbytes

    def delete_runs(self, runs: Sequence[int]) -> int:
        """Delete runs and their points; the number of points deleted."""
        if not runs:
            return 0
        marks = ",".join("?" * len(runs))

        def delete(conn: sqlite3.Connection) -> int:
            deleted = conn.execute(f"DELETE FROM points WHERE run IN ({marks})", tuple(runs)).rowcount
            conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", tuple(runs))
            return int(deleted)

        return self._write(delete)

    def delete_orphans_before(self, cutoff_ns: int) -> int:
        """Delete points older than the cutoff that belong to no run (left by a deleted run)."""

        def delete(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute(
                    "DELETE FROM points WHERE time_ns < ? AND (run IS NULL OR run NOT IN (SELECT id FROM runs))",
                    (cutoff_ns,),
                ).rowcount
            )

        return self._write(delete)

    def count_orphans_before(self, cutoff_ns: int) -> int:
        return int(
            self._read(
                "SELECT count(*) FROM points WHERE time_ns < ? AND (run IS NULL OR run NOT IN (SELECT id FROM runs))",
                (cutoff_ns,),
            )[0][0]
        )

    def vacuum(self) -> None:
        with self._lock:
            try:
                self.conn.execute("VACUUM")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise _error(self.path, exc) from None

    # --- reads --------------------------------------------------------------------------

    def runs(self, role: str | None = None, since_ns: int | None = None, limit: int | None = None) -> list[RunRow]:
        """The most recently started runs first."""
        clauses, params = [], []  # type: tuple[list[str], list[Any]]
        if role:
            clauses.append("role = ?")
            params.append(role)
        if since_ns is not None:
            clauses.append("started_at >= ?")
            params.append(since_ns)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_run_row(r) for r in self._read(sql, params)]

    def find_runs(self, run_id: str, prefix: bool = True) -> list[RunRow]:
        """The rows of a run id (several when loggers of one process share it), or (``prefix``)
        of the one run id it is a prefix of; [] when none. Raises ValueError for an ambiguous prefix."""
        exact = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ? ORDER BY id", (run_id,))
        if exact:
            return [_run_row(r) for r in exact]
        if not run_id or not prefix:
            return []
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id >= ? AND run_id < ? ORDER BY id",
            (run_id, run_id + "\U0010ffff"),
        )
        ids = sorted({r[1] for r in rows})
        if len(ids) > 1:
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise ValueError(f"run id {run_id!r} is ambiguous: it starts {len(ids)} runs ({shown})")
        return [_run_row(r) for r in rows]

    def has_tagged_points(self, run: int, tags: Sequence[tuple[str, str]]) -> bool:
        """Whether a run (runs.id) has a point with these tags: its own rows, along its index."""
        tag_sql, tag_params = tag_clauses(tags)
        return bool(self._read(f"SELECT 1 FROM points WHERE run = ?{_and(tag_sql)} LIMIT 1", [run, *tag_params]))

    def runs_named(self, name: str) -> list[RunRow]:
        """The rows whose name is exactly ``name`` (along the index on names)."""
        return [_run_row(r) for r in self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE name = ? ORDER BY id", (name,))]

    def run_rows(self, ids: Sequence[int]) -> list[RunRow]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return [_run_row(r) for r in self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id IN ({marks})", ids)]

    def point_counts(self, runs: Sequence[int], tags: Sequence[tuple[str, str]] | None = None) -> dict[int, int]:
        """Points per run (runs.id), for the runs given (only points with these tags)."""
        if not runs:
            return {}
        marks = ",".join("?" * len(runs))
        tag_sql, tag_params = tag_clauses(tags)
        rows = self._read(
            f"SELECT run, count(*) FROM points WHERE run IN ({marks}){_and(tag_sql)} GROUP BY run",
            [*runs, *tag_params],
        )
        counts = {run: 0 for run in runs}
        counts.update({int(run): int(n) for run, n in rows})
        return counts

    def measurements(
        self, runs: Sequence[int], tags: Sequence[tuple[str, str]] | None = None
    ) -> list[MeasurementCount]:
        """Each measurement of these runs with its point count and time range."""
        if not runs:
            return []
        marks = ",".join("?" * len(runs))
        tag_sql, tag_params = tag_clauses(tags)
        rows = self._read(
            f"SELECT measurement, count(*), min(time_ns), max(time_ns) FROM points WHERE run IN ({marks})"
            f"{_and(tag_sql)} GROUP BY measurement ORDER BY measurement",
            [*runs, *tag_params],
        )
        return [MeasurementCount(m, int(n), int(first), int(last)) for m, n, first, last in rows]

    def split_counts(
        self, runs: Sequence[int], measurements: Sequence[str], tags: Sequence[tuple[str, str]] | None = None
    ) -> dict[str, int]:
        """Points per ``split`` tag among these runs' points of these measurements (a LogStore's
        metrics), read along the index ``(run, measurement)``."""
        if not runs or not measurements:
            return {}
        run_marks = ",".join("?" * len(runs))
        measurement_marks = ",".join("?" * len(measurements))
        tag_sql, tag_params = tag_clauses(tags)
        rows = self._read(
            "SELECT json_extract(tags, '$.split') AS split, count(*) FROM points"
            f" WHERE run IN ({run_marks}) AND measurement IN ({measurement_marks}) AND split IS NOT NULL"
            f"{_and(tag_sql)} GROUP BY split ORDER BY split",
            [*runs, *measurements, *tag_params],
        )
        return {str(split): int(n) for split, n in rows}

    def count_points(self, selection: PointFilter) -> int:
        where, params = selection.where()
        return int(self._read(f"SELECT count(*) FROM points{where}", params)[0][0])

    def keys(self, selection: PointFilter) -> tuple[list[str], list[str]]:
        """The tag keys and the field keys of the selected points, sorted (CSV columns).

        Read in the pages iter_points reads, each object decoded here: SQLite's json_each over
        every row took 2.5x as long (5.2 s against 2.1 s for a 1M-point run)."""
        tag_keys: set[str] = set()
        field_keys: set[str] = set()
        with self._decoding():
            for _, tags, fields in itertools.chain.from_iterable(self._selected_rows(selection, "id, tags, fields")):
                tag_keys.update(_loads(tags))
                field_keys.update(_loads(fields))
        return sorted(map(str, tag_keys)), sorted(map(str, field_keys))

    def iter_points(self, selection: PointFilter, chunk: int = 5_000) -> Iterator[StoredPoint]:
        """The selected points in insertion order, read in chunks (memory stays flat).

        With runs chosen, each run (and measurement) is paged along its own index and the pages
        are merged by id: a run costs what it holds, not what the file holds."""
        parts = [map(_stored_point, part) for part in self._selected_rows(selection, _POINT_COLUMNS, chunk)]
        with self._decoding():
            if len(parts) == 1:
                yield from parts[0]
            else:
                yield from heapq.merge(*parts, key=lambda p: p.id)

    @contextlib.contextmanager
    def _decoding(self) -> Iterator[None]:
        """A row whose tags or fields no JSON reader takes (written by something other than
        this package) is a StoreError naming the file, as SQLite's own "malformed JSON" was."""
        try:
            yield
        except ValueError:
            raise StoreError(self.path, "malformed JSON in a point's tags or fields", corrupt=True) from None

    def _selected_rows(self, selection: PointFilter, columns: str, chunk: int = 5_000) -> list[Iterator[Any]]:
        """``columns`` (``id`` first) of the selected rows: one iterator of rows in id order for
        each run and measurement chosen (each paged along its own index), or one for them all."""
        if selection.runs is None:
            clauses, params = selection.clauses(pin=True, measurements=True)
            return [self._pages(f"id > ?{_and(clauses)}", [], params, chunk, columns)]
        clauses, params = selection.clauses(pin=True, measurements=False)  # in each part's index key
        where = _and(clauses)
        return [
            self._pages(f"run = ?{measurement} AND id > ?{where}", [run, *named], params, chunk, columns)
            for run in selection.runs
            for measurement, named in _per_measurement(selection.measurements)
        ]

    def _pages(self, where: str, head: list[Any], tail: list[Any], chunk: int, columns: str) -> Iterator[Any]:
        """``where``'s rows by id, ``chunk`` at a time; its ``id > ?`` follows ``head``'s marks."""
        sql = f"SELECT {columns} FROM points WHERE {where} ORDER BY id LIMIT ?"
        last = 0
        while True:
            rows = self._read(sql, [*head, last, *tail, chunk])
            yield from rows
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def points_after(self, after_id: int, runs: Sequence[int] | None, limit: int = 10_000) -> list[StoredPoint]:
        """Points inserted after ``after_id`` (of these runs), oldest first: what watch tails.
        A run's new points are found along its index: an old run costs nothing per poll."""
        sql = f"SELECT {_POINT_COLUMNS} FROM points WHERE {{}} ORDER BY id LIMIT ?"
        if runs is None:
            return [_stored_point(r) for r in self._read(sql.format("id > ?"), [after_id, limit])]
        rows = [r for run in runs for r in self._read(sql.format("run = ? AND id > ?"), [run, after_id, limit])]
        return [_stored_point(r) for r in sorted(rows)[:limit]]

    def count_points_after(self, after_id: int, runs: Sequence[int]) -> int:
        """How many points of these runs were inserted after ``after_id`` (along each run's index)."""
        sql = "SELECT count(*) FROM points WHERE run = ? AND id > ?"
        return sum(int(self._read(sql, (run, after_id))[0][0]) for run in runs)

    def count_points_upto(self, runs: Sequence[int], cap: int) -> int:
        """How many points these runs hold, counting no further than ``cap`` (a bounded walk
        of each run's index: "is this run large?" costs the same for a run of any size)."""
        sql = "SELECT count(*) FROM (SELECT 1 FROM points WHERE run = ? LIMIT ?)"
        total = 0
        for run in runs:
            total += int(self._read(sql, (run, cap - total))[0][0])
            if total >= cap:
                break
        return total

    def sample_points(self, runs: Sequence[int], samples: int) -> list[tuple[StoredPoint, float]]:
        """An even sample of these runs' points, oldest first: every point of a measurement
        that has at most ``samples``, else about ``samples`` of it spread evenly over its ids
        (the first and the last kept). What the UI draws while it reads a large run whole.
        Each point comes with its position among its measurement's points of these runs
        (exact where all are read, else estimated from its id between the first and last).

        Every step walks the (run, measurement) index a bounded way (the measurements one
        seek each, a capped count, a seek per sample), so a 1M-point run costs what its sample
        holds, not what the run holds."""
        names = (
            "WITH RECURSIVE m(name) AS (SELECT min(measurement) FROM points WHERE run = ?"
            " UNION ALL SELECT (SELECT min(measurement) FROM points WHERE run = ? AND measurement > m.name)"
            " FROM m WHERE m.name IS NOT NULL) SELECT name FROM m WHERE name IS NOT NULL"
        )
        capped = "SELECT count(*) FROM (SELECT 1 FROM points WHERE run = ? AND measurement = ? LIMIT ?)"
        first = "SELECT id FROM points WHERE run = ? AND measurement = ? ORDER BY id LIMIT 1"
        last = "SELECT id FROM points WHERE run = ? AND measurement = ? ORDER BY id DESC LIMIT 1"
        columns = f"SELECT {_POINT_COLUMNS} FROM points"
        every = f"{columns} WHERE run = ? AND measurement = ?"
        seek = (
            "WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i < ?)"
            f" {columns} WHERE id IN (SELECT"
            " (SELECT id FROM points WHERE run = ? AND measurement = ? AND id >= ? + i * ? ORDER BY id LIMIT 1)"
            " FROM t)"
        )
        count = "SELECT count(*) FROM points WHERE run = ? AND measurement = ?"
        out: list[tuple[StoredPoint, float]] = []
        before: dict[str, int] = {}  # a measurement's points in the runs already sampled
        for run in sorted(runs):
            for (measurement,) in self._read(names, (run, run)):
                offset = before.get(measurement, 0)
                if self._read(capped, (run, measurement, samples + 1))[0][0] <= samples:
                    rows = self._read(every, (run, measurement))
                    out.extend((_stored_point(r), float(offset + i)) for i, r in enumerate(rows))
                    before[measurement] = offset + len(rows)
                    continue
                low = self._read(first, (run, measurement))[0][0]
                high = self._read(last, (run, measurement))[0][0]
                held = self._read(count, (run, measurement))[0][0]
                found = self._read(seek, (samples - 2, run, measurement, low, (high - low) / (samples - 2)))
                ends = [] if found and found[-1][0] == high else self._read(f"{columns} WHERE id = ?", (high,))
                scale = (held - 1) / (high - low)
                out.extend((_stored_point(r), offset + round((r[0] - low) * scale)) for r in [*found, *ends])
                before[measurement] = offset + held
        out.sort(key=lambda pair: pair[0].id)
        return out

    def last_point_with_field(self, runs: Sequence[int], like: str) -> StoredPoint | None:
        """The newest point of these runs with a field whose name matches the SQL LIKE pattern
        (the run list's headline loss); walks each run's (run, id) index backwards."""
        sql = (
            f"SELECT {_POINT_COLUMNS} FROM points WHERE run = ?"
            " AND EXISTS (SELECT 1 FROM json_each(points.fields) WHERE key LIKE ?) ORDER BY id DESC LIMIT 1"
        )
        rows = [r for run in runs for r in self._read(sql, (run, like))]
        return _stored_point(max(rows)) if rows else None

    def last_point_id(self) -> int:
        return int(self._read("SELECT coalesce(max(id), 0) FROM points")[0][0])

    def point_id_before_last(self, runs: Sequence[int] | None, n: int) -> int:
        """The id after which the last ``n`` points of these runs start."""
        if n <= 0:
            return self.last_point_id()
        if runs is None:
            rows = self._read("SELECT id FROM points ORDER BY id DESC LIMIT 1 OFFSET ?", (n,))
            return int(rows[0][0]) if rows else 0
        sql = "SELECT id FROM points WHERE run = ? ORDER BY id DESC LIMIT ?"
        ids = sorted((i for run in runs for (i,) in self._read(sql, (run, n + 1))), reverse=True)
        return int(ids[n]) if len(ids) > n else 0

    def journal_mode(self) -> str:
        return str(self._read("PRAGMA journal_mode")[0][0])

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(str(self.path) + suffix)
            except OSError:
                pass
        return total


def _stored_point(row: Sequence[Any]) -> StoredPoint:
    return StoredPoint(row[0], row[1], row[2], _loads(row[4]), _loads(row[5]), row[3])


__all__ = [
    "MeasurementCount",
    "PointFilter",
    "RunRow",
    "Store",
    "StoreError",
    "StoredPoint",
    "default_store_path",
    "encode_points",
]
