"""InfluxDB line protocol: escaping and encoding, as the spec and the real servers read it.

Escaping follows the spec: measurement names escape comma and space; tag keys, tag values and
field keys escape comma, equals sign and space; string field values escape double quote and
backslash. Three things the spec cannot express are sanitized instead, so that no input can
inject a second point, tag or field, and what is logged reads back identically:

* a newline, carriage return, tab, NUL or other control character in a name or tag value becomes
  a space (line protocol has no escape for them there, and InfluxDB 1.x strips leading tabs and
  NULs); string field values keep theirs, except for a server that splits lines on them
  (VictoriaMetrics: see ``sinks/influxdb.py``);
* a backslash at the end of a name or tag value, before a character the spec escapes, or before
  ``=`` or ``"`` becomes ``/`` (the servers disagree: 1.x keeps some such backslashes literally
  and drops others, 2.x and VictoriaMetrics unescape them, so no spelling reads back the same
  everywhere); every other backslash is kept;
* a measurement starting with ``#`` (a comment line) or a space, and a key starting with a space
  (InfluxDB 1.x strips leading whitespace), start with ``_`` instead.

Keys InfluxDB refuses (``time``, and 2.x's ``_measurement``, ``_field``, ``_time``) get a
trailing ``_``. String field values longer than :data:`MAX_STRING_BYTES` are truncated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from operator import add

try:
    import orjson
except ImportError:  # a dependency; without it floats are spelled by repr(), as before
    orjson = None  # type: ignore[assignment]

#: InfluxDB's limit for one string field value (64 KiB).
MAX_STRING_BYTES = 64 * 1024

#: InfluxDB's limit for a key: the escaped measurement and tags, then ``#!~#`` and the field
#: key (1.x refuses the line: "max key length exceeded").
MAX_SERIES_KEY_BYTES = 65_535

RESERVED_KEYS = frozenset({"time", "_measurement", "_field", "_time"})

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\"})

# A backslash the servers disagree about: at the end, or before an escaped char or backslash.
# InfluxDB 1.x also drops the backslash of ``\=`` in a measurement and of ``\"`` in either.
_AMBIGUOUS_BACKSLASH_MEASUREMENT = re.compile(r'\\(?=[, =\\"]|$)')
_AMBIGUOUS_BACKSLASH_KEY = re.compile(r'\\(?=[,= \\"]|$)')
_NEWLINES = re.compile(r"[\r\n]")
#: A control character: what the value rules never leave in a name or tag value.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _clean_name(name: str, ambiguous_backslash: re.Pattern[str]) -> tuple[str, str | None]:
    """What measurements and keys share: no newline or other control character, no backslash
    the servers disagree about."""
    cause = None
    if CONTROL_CHARACTER.search(name):
        cause = "newline_in_name" if _NEWLINES.search(name) else "control_char_in_name"
        name = CONTROL_CHARACTER.sub(" ", name)
    if "\\" in name:
        fixed = ambiguous_backslash.sub("/", name)
        if fixed != name:
            name, cause = fixed, "backslash_in_name"
    return name, cause


def clean_measurement(name: str) -> tuple[str, str | None]:
    """The measurement name as it can be stored, and the cause if it had to change."""
    name, cause = _clean_name(name, _AMBIGUOUS_BACKSLASH_MEASUREMENT)
    if name[:1] in ("#", " "):  # a comment line; leading whitespace, which InfluxDB 1.x strips
        name, cause = "_" + name[1:], "leading_char_in_measurement"
    return name, cause


def clean_key(name: str, *, is_tag_value: bool = False) -> tuple[str, str | None]:
    """A tag key, tag value or field key as it can be stored, and the cause if it had to change."""
    name, cause = _clean_name(name, _AMBIGUOUS_BACKSLASH_KEY)
    if not is_tag_value and name[:1] == " ":  # InfluxDB 1.x strips a first field key's leading whitespace
        name, cause = "_" + name[1:], "leading_space_in_key"
    if not is_tag_value and name in RESERVED_KEYS:
        name, cause = name + "_", "reserved_key"
    return name, cause


def series_key_bytes(measurement: str, tags: Mapping[str, str]) -> int:
    """The size of a point's series key as the server counts it (escaped, UTF-8)."""
    key = measurement.translate(_MEASUREMENT_ESCAPES) + "".join(
        "," + k.translate(_KEY_ESCAPES) + "=" + v.translate(_KEY_ESCAPES) for k, v in tags.items() if v
    )
    return len(key.encode("utf-8", "replace"))


def fit_series_key(
    measurement: str, tags: dict[str, str], keep: frozenset[str], fields: Mapping[str, object] = {}
) -> tuple[str, dict[str, str]] | None:
    """Cut the longest tag values not in ``keep`` (then the measurement) until the series key,
    with its longest field key, fits MAX_SERIES_KEY_BYTES; None when it already fits."""
    limit = MAX_SERIES_KEY_BYTES - 4 - max((len(k.translate(_KEY_ESCAPES).encode()) for k in fields), default=0)
    size = series_key_bytes(measurement, tags)
    if size <= limit:
        return None
    tags = dict(tags)
    for key in sorted((k for k in tags if k not in keep), key=lambda k: -len(tags[k])):
        if size <= limit:
            break
        tags[key] = _cut(tags[key], size - limit)
        size = series_key_bytes(measurement, tags)
    if size > limit:
        measurement = _cut(measurement, size - limit) or "_"
    return measurement, tags


def _cut(text: str, over: int) -> str:
    """``text`` shorter by at least ``over`` bytes once escaped (an escaped byte is one or two)."""
    data = text.encode("utf-8")
    return data[: max(0, len(data) - over)].decode("utf-8", "ignore").rstrip("\\")


def truncate_string(value: str) -> tuple[str, bool]:
    """Cut a string field value to MAX_STRING_BYTES of UTF-8, on a character boundary."""
    if len(value) * 4 <= MAX_STRING_BYTES:
        return value, False
    data = value.encode("utf-8", "replace")
    if len(data) <= MAX_STRING_BYTES:
        return value, False
    return data[:MAX_STRING_BYTES].decode("utf-8", "ignore"), True


def format_field_value(value: int | float | str) -> str:
    """One field value in line protocol (the value must already be storable)."""
    t = type(value)
    if t is float:
        return orjson.dumps(value).decode() if orjson is not None else repr(value)  # as encode_lines spells it
    if t is int:
        return f"{value}i"
    if t is str:
        return '"' + value.translate(_STRING_ESCAPES) + '"'  # type: ignore[union-attr]
    if t is bool:
        return "true" if value else "false"
    raise TypeError(f"not a line protocol field value: {type(value).__name__}")


# Names and tag values repeat from point to point: escape each once. The caches are bounded and
# only ever hold what escaping a given string gives, so sharing them between threads is safe.
_TAG_PAIRS: dict[tuple[str, str], str] = {}
_FIELD_KEYS: dict[str, str] = {}
_CACHE_LIMIT = 200_000


def _escape_key(text: str) -> str:
    """``text.translate(_KEY_ESCAPES)``, which costs 300 ns even for a string with nothing to
    escape (a window number); the three look-ups first cost 60."""
    if "," in text or "=" in text or " " in text:
        return text.translate(_KEY_ESCAPES)
    return text


def _tag_pair(key: str, value: str) -> str:
    if len(_TAG_PAIRS) > _CACHE_LIMIT:
        _TAG_PAIRS.clear()
    pair = _TAG_PAIRS[key, value] = "," + _escape_key(key) + "=" + _escape_key(value)
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


def reads_as_one_line(line: str, field_keys: Iterable[str]) -> bool:
    """Whether a server that ends a line at any raw newline (even in a quoted string value) and
    drops a line whose field key holds a '"' (VictoriaMetrics) reads this line as it is; what a
    format-2 spool body needs too."""
    return "\n" not in line and "\r" not in line and not ('"' in line and any('"' in key for key in field_keys))


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, int | float | str],
    time_ns: int | None = None,
) -> str:
    """Encode one point whose names are already cleaned and whose values are storable.

    Empty tag values are left out, as the spec requires. The same text as ``encode_lines``."""
    return encode_lines([(measurement, tags, fields, time_ns)])[0]


def _float_texts(points: Sequence[tuple[str, Mapping[str, str], Mapping[str, object], int | None]]) -> Iterator[str]:
    """Every float field value of the points, in order, as the shortest text that reads back as
    the same float. One orjson call for a whole batch costs what repr() costs for a few floats:
    2.9 instead of 4.9 µs per point of 6 floats. orjson writes small numbers without an exponent
    (0.00001 where repr writes 1e-05): every server here reads both as the same float."""
    floats = [v for point in points for v in point[2].values() if type(v) is float]
    if orjson is None or not floats:
        return map(repr, floats)
    return iter(orjson.dumps(floats)[1:-1].decode().split(","))


class StandardTags(dict[str, str]):
    """A point's tags that end in its logger's standard tags (``PointBuilder`` makes them): ``tail``
    is (how many, their escaped ``,key=value`` text), so ``encode_lines`` writes those once per
    builder, not seven cache look-ups per point. A plain dict to everyone else."""

    __slots__ = ("tail",)
    tail: tuple[int, str]


class FloatFields(dict[str, "int | float | str"]):  # the values: floats only
    """A point's fields when every value is a float (``PointBuilder`` makes them): ``key_texts`` is each
    field key's escaped text, with its ``=`` (and a ``,`` before all but the first), shared by every
    point of one shape. A plain dict to everyone else."""

    __slots__ = ("key_texts",)
    key_texts: tuple[str, ...]


def standard_tags_text(tags: Mapping[str, str]) -> str:
    """Tags as ``encode_lines`` writes them after the measurement: ``,key=value`` each, escaped."""
    return "".join("," + k.translate(_KEY_ESCAPES) + "=" + v.translate(_KEY_ESCAPES) for k, v in tags.items() if v)


def field_keys_text(keys: Iterable[str]) -> tuple[str, ...]:
    """Field keys as ``encode_lines`` writes them before their values (a ``FloatFields.key_texts``)."""
    return tuple(("," if i else "") + key.translate(_KEY_ESCAPES) + "=" for i, key in enumerate(keys))


def encode_lines(points: Iterable[tuple[str, Mapping[str, str], Mapping[str, object], int | None]]) -> list[str]:
    """``encode_line`` for many points at once (a batch): the lines, in order."""
    points = points if isinstance(points, Sequence) else list(points)
    floats = _float_texts(points)
    pairs = _TAG_PAIRS
    keys = _FIELD_KEYS
    lines = []
    for measurement, tags, fields, time_ns in points:
        parts = [_MEASUREMENTS.get(measurement) or _measurement(measurement)]
        if type(tags) is StandardTags:
            count, text = tags.tail
            for item in islice(tags.items(), len(tags) - count):
                if item[1]:
                    parts.append(pairs.get(item) or _tag_pair(*item))
            parts.append(text)
        else:
            for item in tags.items():
                if item[1]:
                    parts.append(pairs.get(item) or _tag_pair(*item))
        parts.append(" ")
        if type(fields) is FloatFields:
            parts += map(add, fields.key_texts, floats)  # keys first: map stops before taking a float too many
        else:
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
