"""Runs read back for plots, comparisons and tables: from JSONL files, the local store or InfluxDB.

Every source becomes one :class:`RunData`: metric series named ``split.metric`` (LogStore
metrics) or ``measurement.field`` (any other point, the logger's prefix stripped), the run's
config (config tags and hyperparams, later values winning), and its table rows.

JSON Lines written by other trainers are read as written: a ``metrics`` object, nested by
split or not (``{"metrics": {"val": {"loss": 1.5}}}`` -> ``val.loss``), and flat records whose
top-level numbers are metrics (``{"step": 10, "train/loss": 1.8, "lr": 1e-4}`` -> ``train/loss``
and ``lr``), step, epoch and time keys aside. A name is found with either separator
(``train.loss`` finds ``train/loss``), see :meth:`RunData.find`.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from ..encoding import log_points
from ..encoding.points import Point

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
#: Files of a log directory that hold no metric lines.
NON_METRIC_FILES = ("tables.jsonl", "tables.jsonl.gz")
#: Top-level keys of a JSON line that place a record (its step, epoch, time), never metrics.
AXIS_KEYS = frozenset(
    (*log_points.STEP_KEYS, *log_points.WINDOW_KEYS)
    + ("epoch", "iteration", "iter", "_step", "ts", "time", "time_ns", "timestamp", "_timestamp", "_runtime")
    + ("wall_time", "row", "split", "_type")
)
#: Step keys of a foreign record, in order of trust.
JSON_STEP_KEYS = (*log_points.STEP_KEYS, "_step", "iteration", "iter")


class RunDataError(Exception):
    """An input that cannot be read at all (missing, not JSON Lines, server unreachable)."""


class UnknownRunError(RunDataError):
    """A run id the server has no run for, or the prefix of several."""


class Sample(NamedTuple):
    """One value of a metric (a tuple: a run's million samples are built fast and held small)."""

    value: float
    time_s: float  # unix seconds
    step: int | None = None
    window: int | None = None
    #: The record's numeric keys (epoch, lr, ...): any of them can be the x axis. One mapping
    #: is shared by every sample of a record.
    coords: Mapping[str, float] | None = None
    #: In a sample of a longer run (the UI's preview): the point's position in the whole run,
    #: what a series without steps is drawn at (else its position among the samples).
    order: float | None = None


#: A Sample from a tuple of its six values: NamedTuple's own __new__ is a Python function,
#: and a run's read makes six samples a point.
_sample = tuple.__new__
_CONFIG_PREFIX = itertools.repeat("config_")


@dataclass(frozen=True)
class TableRecord:
    table: str
    time_ns: int
    row: int
    step: int | None
    values: dict[str, Any]


@dataclass
class RunData:
    label: str
    source: str
    config: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[Sample]] = field(default_factory=dict)
    tables: list[TableRecord] = field(default_factory=list)
    #: LogStore.log_artifact records, in the order logged: {name, path, kind, time_ns}.
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0
    #: The local store's run_id, for a run read from there (two runs of one name are told apart by it).
    run_id: str = ""
    #: measurement -> field -> its list in ``series``: a point's samples found without building
    #: and hashing "measurement.field" for each.
    _named: dict[str, dict[str, list[Sample]]] = field(default_factory=dict, repr=False, compare=False)

    def metric_names(self) -> list[str]:
        return sorted(self.series)

    def find(self, name: str) -> str | None:
        """The series ``name`` means: itself, else the one equal with ``/`` read as ``.``
        (``train.loss`` finds ``train/loss`` and back), so names are typed as written or not."""
        if name in self.series:
            return name
        wanted = name.replace("/", ".")
        return next((known for known in self.series if known.replace("/", ".") == wanted), None)

    def x_keys(self) -> set[str]:
        """The numeric record keys some sample has, for ``--x-key``."""
        return {key for samples in self.series.values() for s in samples if s.coords for key in s.coords}

    @property
    def empty(self) -> bool:
        return not self.series and not self.tables and not self.config

    # --- adding what a source holds -----------------------------------------------------

    def add_sample(
        self,
        name: str,
        value: Any,
        time_s: float,
        step: int | None,
        window: int | None,
        coords: Mapping[str, float] | None = None,
        order: float | None = None,
    ) -> None:
        number = _number(value)
        if number is not None:
            self.series.setdefault(name, []).append(_sample(Sample, (number, time_s, step, window, coords, order)))

    def add_point(self, point: Point, order: float | None = None) -> None:
        """A stored point: LogStore metrics, hyperparams and tables by shape, others by name;
        ``order``: its position in the whole run, when it is one of a sample of it."""
        time_s = point.time_ns / 1e9
        if True in map(str.startswith, point.tags, _CONFIG_PREFIX):  # one C loop: most points have none
            for key, tag in point.tags.items():
                if key.startswith("config_"):  # config tags say the run's config on every point
                    self.config.setdefault(key[len("config_") :], tag)
        measurement = log_points.base_measurement(point)
        if measurement not in log_points.LOG_STORE_MEASUREMENTS:  # most points: one look decides
            self._add_named(measurement, point, time_s, order)
            return
        row = log_points.as_metrics(point)
        if row is not None:
            window = log_points.first_int(log_points.WINDOW_KEYS, point.tags)
            coords = _numbers(point.fields)
            for key, value in row.metrics.items():
                metric = log_points.split_key(row.split, key, ".")
                self.add_sample(metric, value, time_s, row.step, window, coords, order)
            return
        merged = log_points.as_hyperparams(point)
        if merged is not None:
            self.config.update(merged)
            return
        table_row = log_points.as_table_row(point)
        if table_row is not None:
            self.tables.append(
                TableRecord(table_row.table, point.time_ns, table_row.row, table_row.step, table_row.values)
            )
            return
        artifact = log_points.as_artifact(point)
        if artifact is not None:
            self.artifacts.append({**artifact, "time_ns": point.time_ns})
            return
        self._add_named(measurement, point, time_s, order)

    def _add_named(self, measurement: str, point: Point, time_s: float, order: float | None) -> None:
        """Any other point: each numeric field is the metric ``measurement.field``."""
        fields = point.fields
        step = log_points.first_int(log_points.STEP_KEYS, point.tags, fields)
        window = log_points.first_int(log_points.WINDOW_KEYS, point.tags, fields)
        coords = _numbers(fields)
        named = self._named.get(measurement)
        if named is None:
            named = self._named[measurement] = {}
        for name, number in coords.items():  # the numeric fields, in the point's order
            found = named.get(name)
            if found is None:
                found = named[name] = self.series.setdefault(f"{measurement}.{name}", [])
            found.append(_sample(Sample, (number, time_s, step, window, coords, order)))

    def add_json_line(self, obj: Any) -> None:
        """One line of a metrics.jsonl (ours, another trainer's, or flat), a tables.jsonl or an export."""
        if not isinstance(obj, dict):
            self.bad_lines += 1
            return
        time_s = _time_s(obj)
        if "table" in obj and isinstance(obj.get("values"), dict):
            row = log_points.as_int(obj.get("row"))
            self.tables.append(
                TableRecord(
                    str(obj["table"]),
                    int(time_s * 1e9),
                    -1 if row is None else row,
                    log_points.as_int(obj.get("step")),
                    obj["values"],
                )
            )
        elif isinstance(obj.get("measurement"), str) and isinstance(obj.get("fields"), dict):
            raw_tags = obj.get("tags")
            tags: dict[Any, Any] = raw_tags if isinstance(raw_tags, dict) else {}
            self.add_point(
                Point(obj["measurement"], {str(k): str(v) for k, v in tags.items()}, obj["fields"], int(time_s * 1e9))
            )
        elif not self._add_metrics_record(obj, time_s):
            self.bad_lines += 1

    def _add_metrics_record(self, obj: dict[str, Any], time_s: float) -> bool:
        """A record of metrics in any of the shapes trainers write; False when it holds none."""
        step = log_points.first_int(JSON_STEP_KEYS, obj)
        window = log_points.first_int(log_points.WINDOW_KEYS, obj)
        coords = _numbers(obj)
        found: list[tuple[str, Any]] = []
        metrics = obj.get("metrics")
        if isinstance(metrics, dict):
            split = obj.get("split")
            for name, value in metrics.items():
                name = str(name)
                if isinstance(split, str) and split:
                    found.extend(_flatten(log_points.split_key(split, name, "."), value))
                elif isinstance(value, dict) or "/" in name:
                    found.extend(_flatten(name, value))  # {"val": {"loss": ..}} or "train/loss": its own split
                else:
                    found.append((f"train.{name}", value))  # ours, written without a split
        # Flat records (and any top-level number beside a metrics object): the key is the name.
        found.extend((str(key), value) for key, value in obj.items() if key not in AXIS_KEYS and key != "metrics")
        added = 0
        for name, value in found:
            if _number(value) is not None:
                self.add_sample(name, value, time_s, step, window, coords)
                added += 1
        return added > 0 or isinstance(metrics, dict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(obj: Mapping[str, Any]) -> dict[str, float]:
    """A record's numeric top-level keys (what --x-key can name)."""
    out: dict[str, float] = {}
    for key, value in obj.items():
        if value.__class__ is float and value - value == 0.0 and key.__class__ is str:
            out[key] = value  # most values: a finite float under a str key (inf - inf is nan)
            continue
        number = _number(value)
        if number is not None:
            out[str(key)] = number
    return out


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Nested metric objects as dotted names: ("val", {"loss": 1}) -> ("val.loss", 1)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}", inner)
    else:
        yield prefix, value


def _time_s(obj: Mapping[str, Any]) -> float:
    for key in ("ts", "time", "timestamp", "_timestamp", "wall_time"):  # unix seconds, by whoever wrote it
        ts = obj.get(key)
        if isinstance(ts, (int, float)) and not isinstance(ts, bool):
            return float(ts)
    time_ns = obj.get("time_ns")
    if isinstance(time_ns, int) and not isinstance(time_ns, bool):
        return time_ns / 1e9
    return 0.0


# --- JSONL files --------------------------------------------------------------------------------


def _is_jsonl(path: Path) -> bool:
    return path.name.endswith(JSONL_SUFFIXES)


def newest_log(directory: Path) -> Path:
    """The most recently modified metrics log under ``directory`` (a tables file only when
    there is nothing else)."""
    logs = [p for p in directory.rglob("*") if p.is_file() and _is_jsonl(p)]
    candidates = [p for p in logs if p.name not in NON_METRIC_FILES] or logs
    if not candidates:
        raise RunDataError(f"{directory}: no .jsonl or .jsonl.gz log in it")
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, str(p)))


#: File names (before the suffix) that say nothing about the run: such a log is named by its directory.
GENERIC_LOG_NAMES = ("metrics", "log", "logs", "events", "tables", "train", "training", "history")


def run_label(path: Path) -> str:
    """outputs/run-001/logs/metrics.jsonl -> run-001; exp_a/train.jsonl -> exp_a; runs/a.jsonl -> a."""
    if path.name.split(".", 1)[0] not in GENERIC_LOG_NAMES:
        return path.name.split(".", 1)[0]
    return directory_label(path)


def directory_label(path: Path) -> str:
    """The name of the run directory a log is in: exp_a/train.jsonl and exp_a/logs/train.jsonl -> exp_a."""
    directory = path.parent
    if directory.name in ("logs", "log") and directory.parent.name:
        directory = directory.parent
    name = directory.name or str(path)
    return name[:8] if len(name) == 36 and name.count("-") == 4 else name  # a run id: its short form


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _json_lines(path: Path) -> Iterator[Any]:
    with _open_text(path) as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                yield None


def read_jsonl(path: str | os.PathLike[str], label: str | None = None) -> RunData:
    """A run from a JSON Lines log (``.jsonl`` or ``.jsonl.gz``) or a directory's newest log,
    with ``hyperparams.json`` and ``tables.jsonl`` beside it when they exist."""
    given = Path(path).expanduser()
    if given.is_dir():
        log = newest_log(given)
    elif given.is_file():
        log = given
    else:
        raise RunDataError(f"{given}: no such file or directory")
    data = RunData(label or run_label(log), str(log))
    try:
        for obj in _json_lines(log):
            data.add_json_line(obj)
        hyperparams = log.parent / "hyperparams.json"
        if hyperparams.is_file() and log.name.startswith("metrics"):
            loaded = json.loads(hyperparams.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                data.config.update(loaded)
        for name in NON_METRIC_FILES:
            tables = log.parent / name
            if tables.is_file() and tables != log:
                for obj in _json_lines(tables):
                    data.add_json_line(obj)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise RunDataError(f"{log}: cannot read it: {exc}") from None
    except ValueError as exc:
        raise RunDataError(f"{log}: {exc}") from None
    return data


# --- the local store ----------------------------------------------------------------------------


def read_store_run(store: Any, run_id: str, rows: Iterable[Any]) -> RunData:
    """A run of the local store (``rows``: its RunRow records, from ``select_run``)."""
    from ..store.database import PointFilter

    rows = list(rows)
    first = rows[0]
    who = " ".join(part for part in (first.role, first.uid) if part)
    data = RunData(first.name or first.run_id[:8] + (f" ({who})" if who else ""), f"run {first.run_id}")
    data.run_id = first.run_id
    for row in rows:
        for key, value in row.config.items():
            data.config[key[len("config_") :] if key.startswith("config_") else key] = value
    for point in store.iter_points(PointFilter(runs=[r.id for r in rows])):
        data.add_point(point.to_point())
    return data


# --- InfluxDB -----------------------------------------------------------------------------------


def _influxql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _runtime_id(given: str, tag_values: list[dict[str, Any]], where: str) -> str:
    """The runtime_id ``given`` is, or the one it is a prefix of, among SHOW TAG VALUES' answer."""
    known = {str(row[1]) for series in tag_values for row in series.get("values") or [] if len(row) > 1}
    if given in known:
        return given
    matches = sorted(v for v in known if given and v.startswith(given))
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise UnknownRunError(f"run id {given!r} is ambiguous in {where}: it starts {len(matches)} runs ({shown})")
    raise UnknownRunError(f"no run {given!r} in {where} (no runtime_id tag value starts with it)")


class InfluxReader:
    """InfluxQL queries to the configured InfluxDB (INFLUXDB_*) through /query (InfluxDB 2.x
    answers it for a bucket with a DBRP mapping)."""

    def __init__(self, environ: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> None:
        from ..commands.connectivity import _Client
        from ..config.settings import ConfigurationError, resolve_server

        try:
            self.server = resolve_server(environ=environ)
        except ConfigurationError as exc:
            raise RunDataError(f"--from-influx: {exc}") from None
        self._client = _Client(self.server, timeout_s)

    def describe(self) -> str:
        return f"influxdb {self.server.database} on {self.server.url}"

    def query(self, query: str) -> list[dict[str, Any]]:
        """The answer's series (``{"name", "tags", "columns", "values"}``), times in ns."""
        from ..commands.connectivity import CheckFailed

        url = self.server.url
        params = {"db": self.server.database, "q": query, "epoch": "ns"}
        try:
            status, body, _ = self._client.request("GET", "/query", params)
        except CheckFailed as exc:
            raise RunDataError(f"InfluxDB at {url}: {exc}") from None
        if status != 200:
            raise RunDataError(f"InfluxDB at {url} answered HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            raise RunDataError(f"InfluxDB at {url}: the answer is not JSON") from None
        out: list[dict[str, Any]] = []
        for result in answer.get("results", []):
            if result.get("error"):
                raise RunDataError(f"InfluxDB: {result['error']}")
            out.extend(result.get("series") or [])
        return out

    def run_ids(self) -> list[str]:
        """Every runtime_id tag value in the database."""
        found: dict[str, None] = {}
        for series in self.query('SHOW TAG VALUES WITH KEY = "runtime_id"'):
            columns = series.get("columns") or []
            at = columns.index("value") if "value" in columns else 1
            for values in series.get("values") or []:
                if values[at]:
                    found[str(values[at])] = None
        return list(found)

    def add_run_points(self, data: RunData, run_id: str, after_ns: int | None = None) -> tuple[int, dict[str, str]]:
        """The run's points (after ``after_ns`` when given) into ``data``; the newest point's
        time (or ``after_ns``, or 0) and the tags the points carry (the first value of each)."""
        where = f'"runtime_id" = {_influxql_string(run_id)}' + (f" AND time > {int(after_ns)}" if after_ns else "")
        newest = after_ns or 0
        tags_seen: dict[str, str] = {}
        added = 0
        for series in self.query(f"SELECT * FROM /.*/ WHERE {where} GROUP BY *"):
            tags = {k: v for k, v in (series.get("tags") or {}).items() if v}
            for key, value in tags.items():
                tags_seen.setdefault(key, value)
            columns = series.get("columns") or []
            for values in series.get("values") or []:
                fields = {c: v for c, v in zip(columns[1:], values[1:], strict=False) if v is not None}
                if fields:
                    data.add_point(Point(series.get("name", ""), tags, fields, int(values[0])))
                    newest = max(newest, int(values[0]))
                    added += 1
        if added:
            for samples in data.series.values():
                samples.sort(key=lambda s: s.time_s)
        return newest, tags_seen


def read_influx_run(run_id: str, environ: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> RunData:
    """A run's points from the configured InfluxDB (INFLUXDB_*), by its runtime_id tag or a
    unique prefix of one, through InfluxQL's /query (InfluxDB 2.x answers it for a bucket with a
    DBRP mapping). UnknownRunError when no runtime_id (or several) starts with ``run_id``."""
    reader = InfluxReader(environ, timeout_s)
    where = f"InfluxDB {reader.server.url} database {reader.server.database!r}"
    run_id = _runtime_id(run_id, reader.query('SHOW TAG VALUES WITH KEY = "runtime_id"'), where)
    data = RunData(run_id[:8], f"influxdb {reader.server.database} run {run_id}")
    reader.add_run_points(data, run_id)
    return data


__all__ = [
    "AXIS_KEYS",
    "InfluxReader",
    "RunData",
    "RunDataError",
    "UnknownRunError",
    "Sample",
    "TableRecord",
    "directory_label",
    "newest_log",
    "read_influx_run",
    "read_jsonl",
    "read_store_run",
    "run_label",
]
