"""From what log() was given to a storable point: value rules, standard tags, clean names.

This runs on the pipeline's encoder thread (and, in strict mode, once more in the caller to
raise early), never on the caller's hot path.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .line_protocol import (
    MAX_SERIES_KEY_BYTES,
    MAX_STRING_BYTES,
    FloatFields,
    StandardTags,
    clean_key,
    clean_measurement,
    field_keys_text,
    fit_series_key,
    standard_tags_text,
    truncate_string,
)
from .values import IMMUTABLE_TYPES, FieldValue, free_name, key_text, process_fields, tag_value
from .values import INT64_MAX as FIELD_INT_MAX
from .values import INT64_MIN as FIELD_INT_MIN

#: Prefix that keeps a caller's tag which shares its name with a standard tag (e.g. ``uid``).
CALLER_TAG_PREFIX = "caller_"

INT64_MIN = -(2**63) + 2  # InfluxDB's own timestamp bounds
INT64_MAX = 2**63 - 2


class Point(NamedTuple):
    """A point whose names are clean and whose values are storable; the unit sinks receive."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int


#: What log() queues: measurement, tags, fields, time, host fields, host tags; or, for plain dicts
#: of immutable values and no host metrics, the compact ``(shape id, time, *tag values, *field
#: values)`` (about 180 B for Templar's validator_scores instead of 590: two dict copies saved).
#: A compact record holds only ints, floats and strings, so the garbage collector stops tracking
#: it at its first pass: a backlog of them costs a full collection next to nothing.
Record = tuple[str, Mapping[str, Any], Mapping[str, Any], int, "Mapping[str, Any] | None", "Mapping[str, str] | None"]


class QueuedShape:
    """The names of a compact queued record: its measurement, tag keys and field keys, shared by
    every record of that shape. A record names its shape by ``id`` (see :func:`queued_shape`)."""

    __slots__ = ("id", "measurement", "tag_keys", "field_keys", "n_tags", "size")

    def __init__(self, measurement: Any, tag_keys: tuple[Any, ...], field_keys: tuple[Any, ...]) -> None:
        self.measurement = measurement
        self.tag_keys = tag_keys
        self.field_keys = field_keys
        self.n_tags = len(tag_keys)
        self.size = 2 + len(tag_keys) + len(field_keys)
        self.id = -1


#: Every shape compact records were queued with, by id, for the life of the process (records of
#: it may wait in any queue): bounded, after which log() queues plain records for new shapes.
_QUEUED_SHAPES: dict[int, QueuedShape] = {}
_SHAPE_OF_NAMES: dict[tuple[Any, ...], QueuedShape] = {}  # every logger of the process shares them
MAX_QUEUED_SHAPES = 10_000
_shape_ids = itertools.count()


def register_shape(measurement: Any, tag_keys: tuple[Any, ...], field_keys: tuple[Any, ...]) -> QueuedShape | None:
    """The shape for compact records with these names (str keys only: see MetricsLogger.log),
    made once per process; None once MAX_QUEUED_SHAPES exist and these names are new."""
    names = (measurement, tag_keys, field_keys)
    known = _SHAPE_OF_NAMES.get(names)
    if known is not None:
        return known
    if len(_QUEUED_SHAPES) >= MAX_QUEUED_SHAPES:
        return None
    shape = QueuedShape(measurement, tag_keys, field_keys)
    shape.id = next(_shape_ids)  # atomic: two threads never get one id
    _QUEUED_SHAPES[shape.id] = shape
    return _SHAPE_OF_NAMES.setdefault(names, shape)  # a racing thread's shape stays valid too


queued_shape = _QUEUED_SHAPES.get


def is_compact(item: tuple[Any, ...]) -> bool:
    """A compact record: its second element is its int time (a plain record's is its tags)."""
    return type(item[1]) is int and type(item[0]) is int


#: The names of a caller's last compact record: (shape id, measurement, tag keys, field keys);
#: id -1 for names that have no shape (a key that is not a str, or the registry full).
QueuedNames = tuple[int, Any, tuple[Any, ...], tuple[Any, ...]]
_all_plain = IMMUTABLE_TYPES.issuperset


def _compact_record_py(
    names: QueuedNames, measurement: Any, tags: Any, fields: Any, time_ns: Any
) -> tuple[Any, ...] | None | bool:
    """log()'s compact record for plain dicts with these names, in their order: ``(shape id,
    time_ns, *tag values, *field values)``; None when the names differ (look the shape up and ask
    again); False when the record is not one to queue compact (not plain dicts, a value to freeze,
    an unusable time, names without a shape). ``_compact_record.c`` does the same in one call."""
    if type(tags) is not dict or type(fields) is not dict or type(measurement) is not str or type(time_ns) is not int:
        return False
    # Copies first (one C call each, which no other thread can interleave with): keys and values
    # read from the caller's dicts in two steps could be paired wrongly if another thread
    # reordered them in between.
    tags = tags.copy()
    fields = fields.copy()
    if tuple(fields) != names[3] or tuple(tags) != names[2] or measurement != names[1]:
        return None
    if names[0] < 0:
        return False
    compact = (names[0], time_ns, *tags.values(), *fields.values())
    return compact if _all_plain(map(type, compact)) else False


compact_record: Callable[[QueuedNames, Any, Any, Any, Any], tuple[Any, ...] | None | bool]
try:  # built where the install found a C compiler
    from ._compact_record import compact as _compact_record_c  # type: ignore[import-not-found]
except ImportError:
    compact_record = _compact_record_py
else:
    compact_record = _compact_record_c


def expand_queued(item: tuple[Any, ...]) -> Record | None:
    """A compact record ``(shape id, time_ns, *tag values, *field values)`` as the Record it stands
    for; None when its length does not match its shape (dicts another thread changed while log()
    read them)."""
    shape = _QUEUED_SHAPES[item[0]]
    if len(item) != shape.size:
        return None
    n = 2 + shape.n_tags
    tags = dict(zip(shape.tag_keys, item[2:n], strict=True)) if shape.n_tags else {}
    return (shape.measurement, tags, dict(zip(shape.field_keys, item[n:], strict=True)), item[1], None, None)


#: Called for each problem found: (cause, measurement, field or tag, detail).
IssueHandler = Callable[[str, str, str, str], None]


_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)$")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class BadTimestamp:
    """In a record's time slot: log() was given a timestamp it cannot use; the point is dropped
    (counted ``bad_timestamp``; strict mode raises) by the builder, like any other bad input."""

    __slots__ = ("shown",)

    def __init__(self, value: Any) -> None:
        self.shown = repr(value)[:80]


def timestamp_ns(ts: Any) -> int | None:
    """An explicit timestamp as int nanoseconds; None when it cannot be one.

    int: nanoseconds. float: seconds since the epoch (``time.time()``). datetime (pandas
    Timestamp included, to the nanosecond): its instant, naive ones taken as UTC (as
    influxdb-client does); date: its midnight UTC. numpy datetime64: its instant. str: RFC 3339
    (``2025-01-31T12:00:00.123456789Z``, an offset instead of ``Z``). Anything else (a
    timedelta, a bool, a time the servers cannot store: before 1677-09-21 or after 2262-04-11)
    is None.
    """
    if isinstance(ts, bool) or isinstance(ts, _dt.timedelta):
        return None
    if isinstance(ts, int):
        value = ts
    elif isinstance(ts, float):
        if ts != ts or ts in (float("inf"), float("-inf")):
            return None
        # Whole seconds and the fraction apart: ts * 1e9 at today's epoch keeps 256 ns steps
        # (the attack found points 240 ns off); this is the nanosecond nearest the float's value.
        whole = int(ts)
        value = whole * 1_000_000_000 + round((ts - whole) * 1e9)
    elif isinstance(ts, _dt.datetime):
        nanos = getattr(ts, "value", None)  # a pandas Timestamp knows its nanoseconds
        if type(nanos) is int and hasattr(ts, "nanosecond"):
            value = nanos
        else:
            value = _datetime_ns(ts)
    elif isinstance(ts, _dt.date):
        value = _datetime_ns(_dt.datetime(ts.year, ts.month, ts.day))
    elif isinstance(ts, str):
        parsed = _rfc3339_ns(ts.strip())
        if parsed is None:
            return None
        value = parsed
    elif type(ts).__name__ == "datetime64":  # numpy, without importing it
        parsed = _datetime64_ns(ts)
        if parsed is None:
            return None
        value = parsed
    else:
        index = getattr(ts, "__index__", None)
        if index is None:
            return None
        try:
            value = index()
        except Exception:
            return None
    if not INT64_MIN <= value <= INT64_MAX:
        return None
    return value


_DATETIME64_NS = {
    "W": 604_800 * 10**9,
    "D": 86_400 * 10**9,
    "h": 3_600 * 10**9,
    "m": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "us": 10**3,
    "ns": 1,
}


def _datetime64_ns(ts: Any) -> int | None:
    """A numpy datetime64 in nanoseconds, computed in Python ints: numpy's own cast to [ns] wraps
    around silently outside 1678-2262 (1600-01-01 came out as 2184)."""
    import numpy as np

    if np.isnat(ts):
        return None
    unit, count = np.datetime_data(ts.dtype)
    if unit in ("Y", "M"):  # months and years vary in length: days are exact and never wrap
        ts, (unit, count) = ts.astype("datetime64[D]"), ("D", 1)
    ticks = int(ts.astype("int64")) * count
    if unit in _DATETIME64_NS:
        return ticks * _DATETIME64_NS[unit]
    below = {"ps": 10**3, "fs": 10**6, "as": 10**9}.get(unit)
    return None if below is None else ticks // below


def _datetime_ns(ts: _dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.timezone.utc)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _rfc3339_ns(text: str) -> int | None:
    match = _RFC3339.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        offset = _dt.timedelta(0)
        if zone not in ("Z", "z"):
            sign = 1 if zone[0] == "+" else -1
            offset = sign * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        moment = _dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return None
    delta = moment - _EPOCH.replace(tzinfo=None) - offset
    seconds = delta.days * 86_400 + delta.seconds
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


class KnownShape(NamedTuple):
    """What a (measurement, field keys, tag keys) seen before needs no second look at: its names
    were clean as given (no issue, no collision, no standard tag among the caller's)."""

    measurement: str
    #: Every field's key as encode_lines writes it, when a point of this shape had only floats
    #: (all of them now known float or int fields of the measurement); else None.
    key_texts: tuple[str, ...] | None
    types: tuple[type, ...]  # the field value types of that point: all float
    float_fields: set[str]
    #: The series key bound's part that does not change (measurement, every tag key, the standard
    #: tags' values, 2 a tag, 64 and the longest field key): each point adds its caller tags' values.
    budget: int


_FALL_BACK = object()
_new_point = tuple.__new__  # Point(...) without NamedTuple's __new__ in Python: 100 ns less


class PointBuilder:
    """Turns queued records into Points with Templar's rules.

    Standard tags are applied after the caller's (as Templar does), so a caller tag named like a
    set standard tag is kept under ``caller_<name>`` instead of replacing it. Ints logged into a
    field already seen as float in this run are written as float, which prevents the field type
    conflicts that make InfluxDB refuse points.
    """

    def __init__(
        self,
        standard_tags: Mapping[str, str],
        measurement_prefix: str,
        on_issue: IssueHandler,
    ) -> None:
        self._on_issue = on_issue
        self._prefix = measurement_prefix
        self._standard: dict[str, str] = {}
        for key, value in standard_tags.items():
            if value:
                clean, _ = clean_key(key)
                self._standard[clean] = clean_key(value, is_tag_value=True)[0]
        self._tail = (len(self._standard), standard_tags_text(self._standard))
        self._names: dict[str, str] = {}
        self._keys: dict[str, tuple[str, str | None]] = {}
        self._shapes: dict[tuple[str, tuple[Any, ...], tuple[Any, ...]], KnownShape] = {}
        self._float_fields: dict[str, set[str]] = {}  # measurement -> fields seen as float
        self._int_fields: dict[str, set[str]] = {}  # measurement -> fields the server holds as integer
        #: Counts learn_float_field/learn_int_field calls: how ints are written may have changed.
        self.generation = 0

    def learn_float_field(self, measurement: str, field: str) -> None:
        """The server holds this field as float (its conflict message said so): write ints as float."""
        self._float_fields.setdefault(measurement, set()).add(field)
        self.generation += 1

    def learn_int_field(self, measurement: str, field: str) -> None:
        """The server holds this field as integer: ints stay ints, even after a float was logged
        into it (that float was refused; writing later ints as float would lose them too)."""
        self._int_fields.setdefault(measurement, set()).add(field)
        self._float_fields.get(measurement, set()).discard(field)
        self.generation += 1

    def is_int_field(self, measurement: str, field: str) -> bool:
        """The server said it holds this field as integer."""
        return field in self._int_fields.get(measurement, ())

    def known_shape(
        self, measurement: Any, tag_keys: tuple[Any, ...], field_keys: tuple[Any, ...]
    ) -> KnownShape | None:
        """The shape of records with these names, if one came through clean (see KnownShape)."""
        return self._shapes.get((measurement, field_keys, tag_keys))

    @property
    def standard_tail(self) -> tuple[int, str]:
        """How many standard tags end each point's tags, and their escaped ``,key=value`` text."""
        return self._tail

    @property
    def standard_tags(self) -> dict[str, str]:
        return dict(self._standard)

    @property
    def prefix(self) -> str:
        return self._prefix

    def _clean_key(self, key: Any, measurement: str, *, is_tag_value: bool = False) -> str:
        if type(key) is not str:
            key = tag_value(key) if is_tag_value else key_text(key)
        cache_key = key if not is_tag_value else "\0" + key
        hit = self._keys.get(cache_key)
        if hit is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            hit = clean_key(key, is_tag_value=is_tag_value)
            self._keys[cache_key] = hit
        if hit[1] is not None:
            self._on_issue(hit[1], measurement, key, f"{key!r} stored as {hit[0]!r}")
        return hit[0]

    def build(self, record: Record) -> Point | None:
        raw_measurement, raw_tags, raw_fields, time_ns, host_fields, host_tags = record
        if (
            type(raw_measurement) is str
            and type(time_ns) is int
            and type(raw_fields) is dict
            and (type(raw_tags) is dict or not raw_tags)
            and not host_fields
            and not host_tags
        ):
            shape_key = (raw_measurement, tuple(raw_fields), tuple(raw_tags) if raw_tags else ())
            shape = self._shapes.get(shape_key)
            if shape is not None:
                point = self._build_shaped(shape, raw_tags, raw_fields, time_ns)
                if point is not _FALL_BACK:
                    return point  # type: ignore[return-value]
                return self._build(record)
            point = self._build(record)
            if point is not None:
                self._learn_shape(shape_key, raw_tags, raw_fields, point)
            return point
        return self._build(record)

    def _learn_shape(
        self, shape_key: tuple[str, tuple[Any, ...], tuple[Any, ...]], raw_tags: Any, raw_fields: Any, point: Point
    ) -> None:
        """Remember a shape whose names all came through unchanged and alone (see KnownShape)."""
        raw_measurement, field_keys, tag_keys = shape_key
        name = f"{self._prefix}{raw_measurement}"
        if clean_measurement(name) != (name, None) or point.measurement != name or type(point.tags) is not StandardTags:
            return  # a name that changed, or a series key that was cut
        for key in field_keys:
            if type(key) is not str or not key or clean_key(key) != (key, None):
                return
        for key in tag_keys:
            if type(key) is not str or not key or key in self._standard or clean_key(key) != (key, None):
                return
        values = tuple(raw_fields.values())
        types = tuple(map(type, values))
        all_float = bool(types) and all(kind is float for kind in types) and tuple(point.fields) == field_keys
        if len(self._shapes) > 10_000:
            self._shapes.clear()
        self._shapes[shape_key] = KnownShape(
            name,
            field_keys_text(field_keys) if all_float else None,
            types,
            self._float_fields[name],
            len(name)
            + sum(map(len, tag_keys))
            + sum(map(len, self._standard))
            + sum(map(len, self._standard.values()))
            + 2 * (len(tag_keys) + len(self._standard))
            + 64
            + max(map(len, field_keys)),
        )

    def _build_shaped(
        self, shape: KnownShape, raw_tags: Any, raw_fields: dict[str, Any], time_ns: int
    ) -> Point | object:
        """A point of a known shape: only its values are checked. _FALL_BACK (before any issue was
        reported) when one needs the general path: a value to convert, drop or cut."""
        measurement = shape.measurement
        values = raw_fields.values()
        fields: dict[str, FieldValue]
        if shape.key_texts is not None and tuple(map(type, values)) == shape.types and math.isfinite(sum(values)):
            floats = FloatFields(raw_fields)  # all finite floats (a sum past the float range: the loop)
            floats.key_texts = shape.key_texts
            fields = floats
        else:
            fields = {}
            float_fields = shape.float_fields
            int_fields = self._int_fields
            isfinite = math.isfinite
            for key, value in raw_fields.items():
                kind = type(value)
                if kind is float:
                    if not isfinite(value):
                        return _FALL_BACK
                    if not int_fields or key not in int_fields.get(measurement, ()):
                        float_fields.add(key)
                elif kind is int:
                    if not FIELD_INT_MIN <= value <= FIELD_INT_MAX:
                        return _FALL_BACK
                    if key in float_fields:
                        value = float(value)
                elif kind is not str or len(value) * 4 > MAX_STRING_BYTES:
                    return _FALL_BACK
                fields[key] = value
        tags = StandardTags()
        size = shape.budget
        if raw_tags:
            for key, value in raw_tags.items():
                kind = type(value)
                if kind is int:
                    text = str(value)
                else:
                    text = value if kind is str else tag_value(value)
                    if not text:
                        continue
                    if "\\" in text or not text.isprintable():
                        text = self._clean_key(text, measurement, is_tag_value=True)
                tags[key] = text
                size += len(text)
        tags.update(self._standard)
        tags.tail = self._tail
        if 8 * size > MAX_SERIES_KEY_BYTES:
            return self._fit(measurement, tags, fields, time_ns)
        return _new_point(Point, (measurement, tags, fields, time_ns))

    def _build(self, record: Record) -> Point | None:
        """The general path: every rule, every name looked at."""
        raw_measurement, raw_tags, raw_fields, time_ns, host_fields, host_tags = record
        if type(raw_measurement) is not str:
            raw_measurement = tag_value(raw_measurement)
        measurement = self._names.get(raw_measurement)
        if measurement is None:
            name = f"{self._prefix}{raw_measurement}"
            measurement, cause = clean_measurement(name)
            if cause is not None:
                self._on_issue(cause, name, "", f"measurement {name!r} stored as {measurement!r}")
            if len(self._names) > 10_000:
                self._names.clear()
            if cause is None:
                self._names[raw_measurement] = measurement
        if not measurement:
            self._on_issue("empty_measurement", "", "", "a point needs a measurement name; point dropped")
            return None
        if type(time_ns) is not int:
            shown = time_ns.shown if isinstance(time_ns, BadTimestamp) else repr(time_ns)[:80]
            self._on_issue("bad_timestamp", measurement, "", f"timestamp {shown} cannot be stored; point dropped")
            return None

        def field_issue(cause: str, field: str, detail: str) -> None:
            self._on_issue(cause, measurement, field, detail)

        processed = process_fields(raw_fields, field_issue)
        if host_fields:
            processed.update(host_fields)
        fields: dict[str, FieldValue] = {}
        keys = self._keys
        float_fields = self._float_fields.get(measurement)
        if float_fields is None:
            float_fields = self._float_fields[measurement] = set()
        for key, value in processed.items():
            hit = keys.get(key)  # names repeat: the cached, issue-free answer is the fast path
            clean = hit[0] if hit is not None and hit[1] is None else self._clean_key(key, measurement)
            if not clean:
                self._on_issue("empty_key", measurement, key, "a field needs a name; field dropped")
                continue
            kind = type(value)
            if kind is float:
                if not self._int_fields or clean not in self._int_fields.get(measurement, ()):
                    float_fields.add(clean)
            elif kind is int:
                if clean in float_fields:
                    value = float(value)
            elif kind is str and len(value) * 4 > MAX_STRING_BYTES:  # type: ignore[arg-type]
                value, cut = truncate_string(value)  # type: ignore[arg-type]
                if cut:
                    self._on_issue(
                        "string_truncated", measurement, clean, f"longer than {MAX_STRING_BYTES} bytes; truncated"
                    )
            if clean in fields:  # two keys that clean to one name ("time" and "time_")
                clean = free_name(fields, clean, field_issue)
            fields[clean] = value
        if not fields:
            self._on_issue("no_fields", measurement, "", "no storable field left; point dropped")
            return None

        tags = StandardTags()
        standard = self._standard
        for raw_tags_part in (raw_tags, host_tags):
            if not raw_tags_part:
                continue
            for key, value in raw_tags_part.items():
                hit = keys.get(key)
                clean = hit[0] if hit is not None and hit[1] is None else self._clean_key(key, measurement)
                if not clean:
                    self._on_issue("empty_key", measurement, str(key), "a tag needs a name; tag dropped")
                    continue
                text = value if type(value) is str else tag_value(value)
                if not text:
                    continue
                if "\\" in text or not text.isprintable():  # a backslash, a control character (fast in C)
                    text = self._clean_key(text, measurement, is_tag_value=True)
                if clean in standard:
                    renamed = CALLER_TAG_PREFIX + clean
                    self._on_issue(
                        f"tag_renamed:{clean}",
                        measurement,
                        clean,
                        f"tag {clean!r} is a standard tag of this logger; the caller's value is kept as {renamed!r}",
                    )
                    clean = renamed
                if clean in tags:  # two keys that clean to one name, or a rename meeting a caller's tag
                    clean = free_name(tags, clean, field_issue)
                tags[clean] = text
        tags.update(standard)
        tags.tail = self._tail
        return self._fit(measurement, tags, fields, time_ns)

    def _fit(self, measurement: str, tags: StandardTags, fields: dict[str, FieldValue], time_ns: int) -> Point:
        # A series key past 64 KiB makes InfluxDB refuse the line: cut the longest caller tag
        # values to fit (rare: a cheap bound first; 8 = 4 UTF-8 bytes, each maybe escaped).
        if (
            8
            * (
                len(measurement)
                + sum(map(len, tags))
                + sum(map(len, tags.values()))
                + 2 * len(tags)
                + 64
                + max(map(len, fields), default=0)  # the server counts the longest field key in
            )
            > MAX_SERIES_KEY_BYTES
        ):
            fitted = fit_series_key(measurement, tags, frozenset(self._standard), fields)
            if fitted is not None:
                self._on_issue(
                    "series_key_truncated",
                    measurement,
                    "",
                    f"series key past {MAX_SERIES_KEY_BYTES} bytes; longest tag values cut",
                )
                return Point(fitted[0], fitted[1], fields, time_ns)
        return Point(measurement, tags, fields, time_ns)
