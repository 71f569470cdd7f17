"""Queued records straight to line protocol, a batch at a time, with no Point on the way.

When every destination takes line protocol (the InfluxDB sinks), the encoder thread does not
need a Point per record: for a record of a shape the builder has seen come through clean (its
names need no change, see ``PointBuilder.known_shape``), whose values are plain floats and ints
and whose tag values are plain printable text or ints, the line is a per-shape template filled
with the tag text and the value texts. A batch's values are spelled by one ``orjson.dumps``
call, and each line by one ``%`` format. That is 2-3 µs of the encoder's time per point instead
of 8-12 (no dicts, no Point, and almost nothing left for the garbage collector to walk).

Where the install found a C compiler, ``_line_fill.c`` runs the per-record loop for compact
records of shapes already written (the same checks, the same lists, in C) and fills the lines
from the orjson text without a str per number: 0.8 µs per point instead of 4.5 on the same
machine. Python still makes every decision: the C loop asks ``_LineShape._tag_part`` about a
tag value it has not seen, and hands back the first record it cannot write as the Python loop
would (a new shape or value type, a tag to clean, a NaN, an int past int64, a field learned since).

Every other record goes through the builder as before (its issues counted, its Point kept).
The batch (:class:`LineBatch`) still reads as a sequence of Points: a lane that needs one (a
partial write's refused line, a JSON spool file) gets it built on demand, the same Point the
builder would have made. ``tests/encoding/test_line_batches.py`` checks lines and Points
against the builder and ``encode_lines``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from .line_protocol import (
    _KEY_ESCAPES,
    _MEASUREMENT_ESCAPES,
    MAX_SERIES_KEY_BYTES,
    FloatFields,
    StandardTags,
    _escape_key,
    encode_lines,
    field_keys_text,
    reads_as_one_line,
)
from .points import KnownShape, Point, PointBuilder, QueuedShape, is_compact, queued_shape
from .values import INT64_MAX, INT64_MIN

try:
    import orjson
except ImportError:  # a dependency; without it the batch path is off (the builder's path is used)
    orjson = None  # type: ignore[assignment]

try:  # the C loops (_line_fill.c), built where a compiler was found at install; else Python's
    from . import _line_fill  # type: ignore[attr-defined]
except ImportError:
    _line_fill = None

# Bounds on what the encoder remembers: the shapes, and the tag texts of all of them together
# (about 150 B each): a tag whose value never repeats (a step number) must not grow it.
_SHAPE_LIMIT = 1_000
_TAG_TEXT_LIMIT = 200_000


_UNSEEN = object()
_get = dict.__getitem__


class _LineShape:
    """What fills one shape's line: the template, the value types it was made for, each tag's
    text, and what would make it stale (a field learned float or int since)."""

    __slots__ = (
        "measurement",
        "tag_keys",
        "field_keys",
        "n_tags",
        "n_values",
        "types",
        "template",
        "as_float",
        "int_positions",
        "float_set",
        "float_count",
        "learned",
        "new_floats",
        "generation",
        "budget",
        "tag_prefixes",
        "tag_parts",
        "remembered",
        "key_texts",
        "plain",
        "pieces",
        "native",
    )

    def __init__(
        self,
        builder: PointBuilder,
        known: KnownShape,
        tag_keys: tuple[str, ...],
        field_keys: tuple[str, ...],
        types: tuple[type, ...],
        remembered: list[int],
    ) -> None:
        self.measurement = known.measurement
        self.tag_keys = tag_keys
        self.field_keys = field_keys
        self.n_tags = len(tag_keys)
        self.n_values = len(field_keys) + 1  # and the time
        self.types = types
        field_types = types[self.n_tags :]
        self.float_set = known.float_fields
        # Its float fields join the measurement's known floats with its first line (learn_floats),
        # as the builder's do: not before, since a NaN or inf, which is never written, must not.
        self.learned = False
        self.new_floats = tuple(key for key, kind in zip(field_keys, field_types, strict=True) if kind is float)
        self.float_count = len(self.float_set)
        self.generation = builder.generation
        self.budget = known.budget
        # An int logged into a field known as float is written as float (as the builder does).
        self.as_float = tuple(
            kind is int and key in self.float_set for key, kind in zip(field_keys, field_types, strict=True)
        )
        self.int_positions = tuple(i for i, kind in enumerate(field_types) if kind is int)
        self.key_texts = field_keys_text(field_keys)
        fields_part = "".join(
            f"{text.replace('%', '%%')}%s{'i' if kind is int and not floated else ''}"
            for text, kind, floated in zip(self.key_texts, field_types, self.as_float, strict=True)
        )
        standard_text = builder.standard_tail[1]
        head = self.measurement.translate(_MEASUREMENT_ESCAPES).replace("%", "%%")
        self.template = f"{head}%s{standard_text.replace('%', '%%')} {fields_part} %s"
        # The same line in pieces for the C loop (_line_fill.fill): the measurement, then after the
        # tag text and after each value but the time, the text that follows it.
        # (A shape has at least one field: see BatchLineEncoder._new_shape.)
        suffixes = [
            "i" if kind is int and not floated else "" for kind, floated in zip(field_types, self.as_float, strict=True)
        ]
        self.pieces = (
            self.measurement.translate(_MEASUREMENT_ESCAPES),
            f"{standard_text} {self.key_texts[0]}",
            *(suffix + text for suffix, text in zip(suffixes, self.key_texts[1:], strict=False)),
            f"{suffixes[-1]} ",
        )
        self.tag_prefixes = tuple(f",{key.translate(_KEY_ESCAPES)}=" for key in tag_keys)
        # Per tag: value -> its ",key=value" text ("" when empty, None when the builder must clean it).
        self.tag_parts: tuple[dict[Any, str | None], ...] = tuple({} for _ in tag_keys)
        self.remembered = remembered  # the encoder's count of tag texts in all its shapes
        # No '"' in a field key: with no raw newline (tag values are printable, values numbers),
        # a line a server that splits lines on newlines (VictoriaMetrics) reads as it is, and
        # one a format-2 spool file can hold.
        self.plain = not any('"' in key for key in field_keys)
        # The C loop copies the lines' text as UTF-8: names holding a lone surrogate (which the
        # name rules let through, and the sink sends as "?") stay with the Python loop.
        self.native = self.plain and all(map(_is_utf8, (*self.pieces, *self.tag_prefixes)))

    def native_spec(self) -> tuple[Any, ...]:
        """What the C loop (_line_fill.collect) reads of this shape, in its order; made after the
        shape's first line, so its int-or-float choices are the ones its lines are written with."""
        kinds = bytes(
            ord("f") if kind is float else ord("F") if floated else ord("i")
            for kind, floated in zip(self.types[self.n_tags :], self.as_float, strict=True)
        )
        return (
            self,
            self.types,
            self.n_tags,
            self.tag_parts,
            MAX_SERIES_KEY_BYTES // 8 - self.budget,  # the longest tag text tag_text() lets through
            kinds,
            self.generation,
            self.float_set if self.int_positions else None,  # only shapes with int fields depend on it
            self.float_count,
            self._tag_part,
        )

    def learn_floats(self, builder: PointBuilder) -> None:
        # Which fields the server holds as integer is asked now: the shape may have been made
        # batches before its first line, and learn_int_field called in between.
        self.float_set.update(key for key in self.new_floats if not builder.is_int_field(self.measurement, key))
        self.float_count = len(self.float_set)
        self.learned = True

    def current(self, builder: PointBuilder) -> bool:
        """Whether the int-or-float choices still hold (only shapes with int fields depend on them)."""
        return not self.int_positions or (
            self.generation == builder.generation and self.float_count == len(self.float_set)
        )

    def tag_text(self, values: tuple[Any, ...]) -> str | None:
        """The caller tags' ``,key=value`` text for these values; None when the builder must
        look at them (a backslash or a control character to clean, a series key near its bound)."""
        try:
            parts = list(map(_get, self.tag_parts, values))  # one ",key=value" per tag, remembered
        except KeyError:
            parts = [self._tag_part(i, value) for i, value in enumerate(values)]
        try:
            text = "".join(parts)  # type: ignore[arg-type]
        except TypeError:  # a None among them: a value to clean
            return None
        if 8 * (self.budget + len(text)) > MAX_SERIES_KEY_BYTES:
            return None  # the builder cuts it (and says so)
        return text

    def _tag_part(self, i: int, value: Any) -> str | None:
        known = self.tag_parts[i]
        part = known.get(value, _UNSEEN)
        if part is _UNSEEN:
            if type(value) is int:
                # Past int64 the builder decides (str() of a 4,300-digit int raises, and an
                # exception here would fail the whole batch).
                part = self.tag_prefixes[i] + str(value) if INT64_MIN <= value <= INT64_MAX else None
            elif not value:
                part = ""  # an empty tag value is left out
            elif "\\" in value or not value.isprintable():
                part = None
            else:
                part = self.tag_prefixes[i] + _escape_key(value)
            known[value] = part
            self.remembered[0] += 1
        return part  # type: ignore[return-value]

    def point(self, values: tuple[Any, ...], time_ns: int, tail: tuple[int, str], standard: dict[str, str]) -> Point:
        """The Point the builder makes of these values (see PointBuilder._build_shaped)."""
        tags = StandardTags()
        for key, value in zip(self.tag_keys, values, strict=False):
            text = str(value) if type(value) is int else value
            if text:
                tags[key] = text
        tags.update(standard)
        tags.tail = tail
        field_values = values[self.n_tags :]
        fields: dict[str, Any]
        if not self.int_positions:
            floats = FloatFields(zip(self.field_keys, field_values, strict=True))
            floats.key_texts = self.key_texts
            fields = floats
        else:
            fields = {
                key: float(value) if floated else value
                for key, value, floated in zip(self.field_keys, field_values, self.as_float, strict=True)
            }
        return Point(self.measurement, tags, fields, time_ns)


def _values(record: tuple[Any, ...]) -> tuple[tuple[Any, ...], int]:
    """A direct record's tag and field values, and its time."""
    if is_compact(record):
        return record[2:], record[1]
    return (*record[1].values(), *record[2].values()), record[3]


class LineBatch(Sequence[Point]):
    """A batch's lines, read as its Points too: a Point is built only when asked for."""

    __slots__ = ("lines", "plain_lines", "_made", "_shapes", "_tail", "_standard")

    def __init__(
        self,
        lines: list[str],
        made: list[Any],
        shapes: list[_LineShape | None],
        plain_lines: bool,
        tail: tuple[int, str],
        standard: dict[str, str],
    ) -> None:
        self.lines = lines
        #: No line holds a raw newline or a field key with '"' (nothing to change for a server
        #: that splits lines on newlines, and the batch can be a format-2 spool body as it is).
        self.plain_lines = plain_lines
        self._made = made  # per line: its Point, or the record it is made from (then its shape)
        self._shapes = shapes
        self._tail = tail
        self._standard = standard

    def __len__(self) -> int:
        return len(self.lines)

    def _point(self, i: int) -> Point:
        shape = self._shapes[i]
        if shape is None:
            return self._made[i]  # type: ignore[no-any-return]
        values, time_ns = _values(self._made[i])
        point = shape.point(values, time_ns, self._tail, self._standard)
        self._made[i] = point
        self._shapes[i] = None
        return point

    @overload
    def __getitem__(self, index: int) -> Point: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Point]: ...

    def __getitem__(self, index: int | slice) -> Point | Sequence[Point]:
        if isinstance(index, slice):
            return self.subset(range(len(self.lines))[index])
        if index < 0:
            index += len(self.lines)
        if not 0 <= index < len(self.lines):
            raise IndexError(index)
        return self._point(index)

    def __iter__(self) -> Iterator[Point]:
        return (self._point(i) for i in range(len(self.lines)))

    def subset(self, indices: Sequence[int]) -> LineBatch:
        """The lines at ``indices``, still unbuilt."""
        made, shapes = self._made, self._shapes
        return LineBatch(
            [self.lines[i] for i in indices],
            [made[i] for i in indices],
            [shapes[i] for i in indices],
            self.plain_lines,
            self._tail,
            self._standard,
        )

    @classmethod
    def joined(cls, batches: Sequence[LineBatch]) -> LineBatch:
        """Several batches as one (spooled together at close)."""
        return cls(
            [line for batch in batches for line in batch.lines],
            [made for batch in batches for made in batch._made],
            [shape for batch in batches for shape in batch._shapes],
            all(batch.plain_lines for batch in batches),
            batches[0]._tail,
            batches[0]._standard,
        )


class BatchLineEncoder:
    """Turns a batch of queued records into a LineBatch (see the module's docstring)."""

    def __init__(self, builder: PointBuilder, build: Callable[[Any], Point | None]) -> None:
        self.builder = builder
        self._build = build  # the general path: the pipeline's _build (issues counted, errors caught)
        self._by_key: dict[tuple[Any, ...], _LineShape] = {}
        self._by_queued: dict[int, _LineShape] = {}  # by QueuedShape.id
        self._remembered = [0]  # tag texts held by all the shapes (see _forget)
        # By QueuedShape.id: the native_spec of the shape its last direct line was written with.
        self._fast: dict[int, tuple[Any, ...]] = {}

    def _new_shape(
        self, measurement: Any, tag_keys: tuple[Any, ...], field_keys: tuple[Any, ...], types: tuple[type, ...]
    ) -> _LineShape | None:
        known = self.builder.known_shape(measurement, tag_keys, field_keys)
        if known is None:
            return None
        n = len(tag_keys)
        if not all(kind is str or kind is int for kind in types[:n]):
            return None
        if len(types) == n or not all(kind is float or kind is int for kind in types[n:]):
            return None
        return _LineShape(self.builder, known, tag_keys, field_keys, types, self._remembered)

    def _dict_shape(
        self, measurement: str, tags: dict[Any, Any], fields: dict[Any, Any], types: tuple[type, ...]
    ) -> _LineShape | None:
        key = (measurement, tuple(tags), tuple(fields))
        shape = self._new_shape(measurement, key[1], key[2], types)
        if shape is not None:
            if len(self._by_key) >= _SHAPE_LIMIT:
                self._forget()
            self._by_key[key] = shape
        return shape

    def _queued_shape(self, queued: QueuedShape, types: tuple[type, ...]) -> _LineShape | None:
        shape = self._new_shape(queued.measurement, queued.tag_keys, queued.field_keys, types)
        if shape is not None:
            if len(self._by_queued) >= _SHAPE_LIMIT:
                self._forget()
            self._by_queued[queued.id] = shape
        return shape

    def _forget(self) -> None:
        """Start over: the shapes and their tag texts are rebuilt from the next records."""
        self._by_key.clear()
        self._by_queued.clear()
        self._fast.clear()
        self._remembered[0] = 0

    def encode(self, records: Sequence[Any]) -> LineBatch:
        """The batch's lines, in the records' order (records the builder drops give none)."""
        if self._remembered[0] > _TAG_TEXT_LIMIT:
            self._forget()
        made: list[Any] = []  # per line: the record (written by its shape) or its Point
        shapes: list[_LineShape | None] = []
        tag_texts: list[str] = []  # per direct line
        numbers: list[Any] = []  # per direct line: its field values, then its time
        built: list[Point] = []
        plain = True
        builder = self.builder
        by_queued = self._by_queued
        by_key = self._by_key
        direct = orjson is not None
        isfinite = math.isfinite
        values: tuple[Any, ...] = ()
        time_ns = 0
        native = _line_fill if direct else None
        # The C loop writes what the Python loop below would for compact records of shapes in
        # `fast`, and hands back the first record it cannot (a new shape, a value to look at).
        fast = self._fast
        records = records if type(records) is list else list(records)
        i = 0
        count = len(records)
        while i < count:
            if native is not None and fast:
                start, written = i, len(made)
                try:
                    i = native.collect(records, i, fast, builder, made, shapes, tag_texts, numbers)
                except Exception:  # (MemoryError) the Python loop goes on from the record it failed on
                    i = start + len(made) - written  # collect() adds a record to every list, or to none
                    native = None
                if i == count:
                    break
            record = records[i]
            i += 1
            shape = None
            try:
                first = record[0]
                # The two kinds of queued record (see MetricsLogger.log): compact, or
                # (measurement, tags, fields, time, None, None).
                if not direct or type(record) is not tuple:
                    pass
                elif type(first) is int and type(record[1]) is int:  # compact (see points.is_compact)
                    queued = queued_shape(first)
                    # (Of another length: its dicts changed while log() read them.)
                    if queued is not None and len(record) == queued.size:
                        values = record[2:]
                        types = tuple(map(type, values))
                        shape = by_queued.get(first)
                        if (
                            shape is None
                            or shape.types != types
                            or (shape.int_positions and not shape.current(builder))
                        ):
                            shape = self._queued_shape(queued, types)
                        time_ns = record[1]
                elif type(first) is str and len(record) == 6 and record[4] is None and record[5] is None:
                    tags, fields, time_ns = record[1], record[2], record[3]
                    if type(fields) is dict and type(tags) is dict and type(time_ns) is int:
                        values = (*tags.values(), *fields.values())
                        types = tuple(map(type, values))
                        shape = by_key.get((first, tuple(tags), tuple(fields)))
                        if (
                            shape is None
                            or shape.types != types
                            or (shape.int_positions and not shape.current(builder))
                        ):
                            shape = self._dict_shape(first, tags, fields, types)
                if shape is not None:
                    n = shape.n_tags
                    text = shape.tag_text(values[:n])
                    field_values = values[n:]
                    if text is None or not (
                        _storable(shape, field_values) if shape.int_positions else isfinite(sum(field_values))
                    ):
                        shape = None
                    else:
                        if shape.int_positions and True in shape.as_float:
                            field_values = tuple(
                                float(v) if f else v for v, f in zip(field_values, shape.as_float, strict=True)
                            )
                        if not shape.learned:
                            shape.learn_floats(builder)
            except Exception:  # a bug: the builder's path (which counts what it drops once) takes it
                shape = None
            if shape is not None:
                made.append(record)
                shapes.append(shape)
                tag_texts.append(text)  # type: ignore[arg-type]  # a str when shape is kept
                numbers += field_values
                numbers.append(time_ns)
                plain = plain and shape.plain
                if native is not None and shape.native and type(first) is int:
                    fast[first] = shape.native_spec()
                continue
            point = self._build(record)
            if point is not None:
                made.append(point)
                shapes.append(None)
                built.append(point)
        built_lines = encode_lines(built) if built else []
        if built_lines and plain:
            plain = all(reads_as_one_line(line, point.fields) for line, point in zip(built_lines, built, strict=True))
        lines = self._lines(shapes, tag_texts, numbers, built_lines)
        return LineBatch(lines, made, shapes, plain, builder.standard_tail, builder.standard_tags)

    @staticmethod
    def _lines(
        shapes: list[_LineShape | None], tag_texts: list[str], numbers: list[Any], built_lines: list[str]
    ) -> list[str]:
        """Each line in order: a direct one from its template, a built one as encode_lines wrote it."""
        if _line_fill is not None and numbers:
            try:
                return _line_fill.fill(shapes, tag_texts, orjson.dumps(numbers), built_lines)  # type: ignore[no-any-return]
            except Exception:  # (MemoryError) the same lines from Python
                pass
        texts = orjson.dumps(numbers)[1:-1].decode().split(",") if numbers else []
        next_built = iter(built_lines).__next__
        next_text = iter(tag_texts).__next__
        lines = []
        at = 0
        for shape in shapes:
            if shape is None:
                lines.append(next_built())
                continue
            n = shape.n_values
            lines.append(shape.template % (next_text(), *texts[at : at + n]))
            at += n
        return lines


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _storable(shape: _LineShape, field_values: tuple[Any, ...]) -> bool:
    """Every value stored as it is: floats finite (their sum is, unless one is not, or the sum
    passes the float range, which the builder's path then sorts out), ints within int64."""
    for i in shape.int_positions:
        if not INT64_MIN <= field_values[i] <= INT64_MAX:
            return False
    return math.isfinite(sum(field_values))
