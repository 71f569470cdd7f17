"""The point builder and batch encoder as they were before the fast path (branch i14): the
oracle the differential test compares the fast path with. Verbatim copies of ``PointBuilder``,
``process_fields`` and ``encode_lines`` (with caches of their own); the helpers they call, which
the fast path left alone, are imported."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from tplr_metrics.encoding.line_protocol import (
    _KEY_ESCAPES,
    _MEASUREMENT_ESCAPES,
    MAX_SERIES_KEY_BYTES,
    MAX_STRING_BYTES,
    clean_key,
    clean_measurement,
    fit_series_key,
    format_field_value,
    truncate_string,
)
from tplr_metrics.encoding.points import CALLER_TAG_PREFIX, BadTimestamp, IssueHandler, Point, Record
from tplr_metrics.encoding.values import (
    INT64_MAX,
    INT64_MIN,
    FieldValue,
    IssueSink,
    _ignore_issue,
    _safe_str,
    check_field_value,
    free_name,
    process_value,
    tag_value,
)


def process_fields(fields: Mapping[Any, Any], issue: IssueSink = _ignore_issue) -> dict[str, FieldValue]:
    """Apply the value rules to a whole fields dict (lists expand into stats fields)."""
    out: dict[str, FieldValue] = {}
    isfinite = math.isfinite
    made = False  # a name was made here (a list's stats, a key's text): it may meet another one
    for key, raw in fields.items():
        if type(key) is not str:
            key, made = _safe_str(key), True
        if made and key in out:
            key = free_name(out, key, issue)
        kind = type(raw)
        if kind is float and isfinite(raw):  # the common cases, without the general path's calls
            out[key] = raw
            continue
        if (kind is int and INT64_MIN <= raw <= INT64_MAX) or kind is str:
            out[key] = raw
            continue
        value = process_value(raw)
        if type(value) is dict:
            made = True
            for stat, stat_value in value.items():
                name = f"{key}_{stat}"
                if name in out:
                    name = free_name(out, name, issue)
                checked = check_field_value(name, stat_value, issue)
                if checked is not None:
                    out[name] = checked
            continue
        checked = check_field_value(key, value, issue)  # type: ignore[arg-type]
        if checked is not None:
            out[key] = checked
    return out


_TAG_PAIRS: dict[tuple[str, str], str] = {}
_FIELD_KEYS: dict[str, str] = {}
_CACHE_LIMIT = 200_000


def _tag_pair(key: str, value: str) -> str:
    if len(_TAG_PAIRS) > _CACHE_LIMIT:
        _TAG_PAIRS.clear()
    pair = _TAG_PAIRS[key, value] = "," + key.translate(_KEY_ESCAPES) + "=" + value.translate(_KEY_ESCAPES)
    return pair


_MEASUREMENTS: dict[str, str] = {}


def _measurement(name: str) -> str:
    if len(_MEASUREMENTS) > _CACHE_LIMIT:
        _MEASUREMENTS.clear()
    escaped = _MEASUREMENTS[name] = name.translate(_MEASUREMENT_ESCAPES)
    return escaped


def _field_key(key: str) -> str:
    if len(_FIELD_KEYS) > _CACHE_LIMIT:
        _FIELD_KEYS.clear()
    prefix = _FIELD_KEYS[key] = key.translate(_KEY_ESCAPES) + "="
    return prefix


def _float_texts(points: Sequence[tuple[str, Mapping[str, str], Mapping[str, object], int | None]]) -> Iterator[str]:
    """Every float field value of the points, in order, as the shortest text that reads back as
    the same float. One orjson call for a whole batch costs what repr() costs for a few floats:
    2.9 instead of 4.9 µs per point of 6 floats. orjson writes small numbers without an exponent
    (0.00001 where repr writes 1e-05): every server here reads both as the same float."""
    floats = [v for point in points for v in point[2].values() if type(v) is float]
    if orjson is None or not floats:
        return map(repr, floats)
    return iter(orjson.dumps(floats)[1:-1].decode().split(","))


def encode_lines(points: Iterable[tuple[str, Mapping[str, str], Mapping[str, object], int | None]]) -> list[str]:
    """``encode_line`` for many points at once (a batch): the lines, in order."""
    points = points if isinstance(points, Sequence) else list(points)
    floats = _float_texts(points)
    pairs = _TAG_PAIRS
    keys = _FIELD_KEYS
    lines = []
    for measurement, tags, fields, time_ns in points:
        parts = [_MEASUREMENTS.get(measurement) or _measurement(measurement)]
        for item in tags.items():
            if item[1]:
                parts.append(pairs.get(item) or _tag_pair(*item))
        parts.append(" ")
        separator = ""
        for key, value in fields.items():
            parts.append(separator)
            separator = ","
            parts.append(keys.get(key) or _field_key(key))
            kind = type(value)
            if kind is float:
                parts.append(next(floats))
            elif kind is int:
                parts.append(f"{value}i")
            else:
                parts.append(format_field_value(value))  # type: ignore[arg-type]
        if time_ns is not None:
            parts.append(f" {time_ns}")
        lines.append("".join(parts))
    return lines


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
        self._names: dict[str, str] = {}
        self._keys: dict[str, tuple[str, str | None]] = {}
        self._float_fields: dict[str, set[str]] = {}  # measurement -> fields seen as float
        self._int_fields: dict[str, set[str]] = {}  # measurement -> fields the server holds as integer

    def learn_float_field(self, measurement: str, field: str) -> None:
        """The server holds this field as float (its conflict message said so): write ints as float."""
        self._float_fields.setdefault(measurement, set()).add(field)

    def learn_int_field(self, measurement: str, field: str) -> None:
        """The server holds this field as integer: ints stay ints, even after a float was logged
        into it (that float was refused; writing later ints as float would lose them too)."""
        self._int_fields.setdefault(measurement, set()).add(field)
        self._float_fields.get(measurement, set()).discard(field)

    @property
    def standard_tags(self) -> dict[str, str]:
        return dict(self._standard)

    def _clean_key(self, key: Any, measurement: str, *, is_tag_value: bool = False) -> str:
        if type(key) is not str:
            key = tag_value(key)
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

        tags: dict[str, str] = {}
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
        # A series key past 64 KiB makes InfluxDB refuse the line: cut the longest caller tag
        # values to fit (rare: a cheap bound first; 8 = 4 UTF-8 bytes, each maybe escaped).
        if (
            8 * (len(measurement) + sum(map(len, tags)) + sum(map(len, tags.values())) + 2 * len(tags) + 64)
            > MAX_SERIES_KEY_BYTES
        ):
            fitted = fit_series_key(measurement, tags, frozenset(standard), fields)
            if fitted is not None:
                self._on_issue(
                    "series_key_truncated",
                    measurement,
                    "",
                    f"series key past {MAX_SERIES_KEY_BYTES} bytes; longest tag values cut",
                )
                return Point(fitted[0], fitted[1], fields, time_ns)
        return Point(measurement, tags, fields, time_ns)
