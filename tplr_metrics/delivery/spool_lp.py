"""Spool files of format 2: a batch kept as the line-protocol body it is POSTed as.

A lane whose sink takes line protocol (the InfluxDB sinks: ``write_body``) spools a batch as the
lines the encoder made for it, so that a replay sends the file's bytes as they are: no JSON to
decode, no point to validate or encode again (a format-1 file of Templar's validator_scores shape
cost 42 µs a point to read back and 8 µs to encode: 10 s of a 200,000-point drain). A file is::

    #tplr-spool 2 lp points=<N> bytes=<B> blake2b=<32 hex digits of the body's BLAKE2b-128>
    <the body: N lines of line protocol, each ending in a newline, B bytes in all>

named ``<seq>-batch.lp`` (``.from-<run>`` before the suffix once adopted, as for format 1).

Integrity, as for format 1 (a line that is not a valid point is quarantined, the rest delivered):

* a body whose size, line count and digest match its header is the lane's own, written whole
  (temp file, fsync, rename): it is sent as it is;
* anything after the body (lines appended to the file) is not a point this process spooled:
  each such line is quarantined (dead letter, ``corrupt_spool_line``);
* a body that does not match its header (edited, bit rot), or a file without a header, is read
  line by line: a line is kept only when it reads back as a valid point that the encoder writes
  as exactly that line (``parse_line``), so nothing sent is other than what log() could send;
  every other line is quarantined, and the points the header promises beyond the lines there
  (a file cut short, or only its header left) are counted lost as ``spool_damaged``.

Only lines a file can hold unambiguously go in format 2: a batch with a raw newline or carriage
return in a string value, or a ``"`` in a field key (both rewritten for VictoriaMetrics by the
sink at send time, from the point), is spooled in format 1 (``lines_fit``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from ..encoding.line_protocol import encode_line, reads_as_one_line
from ..encoding.points import Point

SUFFIX = "lp"
_MAGIC = b"#tplr-spool 2 lp "
_HEADER = re.compile(rb"^#tplr-spool 2 lp points=(\d{1,12}) bytes=(\d{1,15}) blake2b=([0-9a-f]{32})$")


def _digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def lines_fit(points: Sequence[Point], lines: Sequence[str]) -> bool:
    """Whether a batch's lines can be kept as a format-2 body (see the module's docstring)."""
    if len(points) != len(lines):
        return False
    if getattr(points, "plain_lines", False):
        return True  # checked as they were encoded (a LineBatch)
    return all(reads_as_one_line(line, point.fields) for point, line in zip(points, lines, strict=True))


def encode_file(lines: Sequence[str]) -> bytes:
    """A format-2 file of these lines (each must pass ``lines_fit``)."""
    body = ("\n".join(lines) + "\n").encode("utf-8", "replace") if lines else b""
    return header(len(lines), body) + body


def header(points: int, body: bytes) -> bytes:
    return b"%spoints=%d bytes=%d blake2b=%s\n" % (_MAGIC, points, len(body), _digest(body).encode())


def is_format_2(data: bytes) -> bool:
    return data.startswith(_MAGIC)


def read_file(data: bytes) -> tuple[bytes, int, list[bytes], int]:
    """A format-2 file's body as it can be sent, its line count, the lines to quarantine, and
    how many of the points its header promises are not there at all (a file cut short after
    its writer died: counted lost, ``spool_damaged``, not silently gone)."""
    newline = data.find(b"\n")
    found = _HEADER.match(data[:newline]) if newline >= 0 else None
    if found is not None:
        points, size, digest = int(found.group(1)), int(found.group(2)), found.group(3).decode()
        body = data[newline + 1 : newline + 1 + size]
        if len(body) == size and body.count(b"\n") == points and _digest(body) == digest:
            rest = data[newline + 1 + size :]
            return body, points, [line for line in rest.splitlines() if line.strip()], 0
    # No header, or a body that is not what was written: keep only the lines that are points.
    kept: list[bytes] = []
    bad: list[bytes] = []
    for k, line in enumerate(data.splitlines()):
        if not line.strip() or (k == 0 and found is not None):
            continue  # a header that reads as one: not a point, not a loss
        (kept if parse_line(line) is not None else bad).append(line)
    body = b"".join(line + b"\n" for line in kept)
    promised = int(found.group(1)) if found is not None else 0
    return body, len(kept), bad, max(0, promised - len(kept) - len(bad))


def count_lines(data: bytes) -> int:
    """Points a format-2 file holds besides its header (a torn last line included), or the
    points its header promises where more than that (the file was cut short)."""
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    found = _HEADER.match(data[: max(0, data.find(b"\n"))])
    return max(lines - 1, int(found.group(1))) if found else lines


# --- reading a line back into a point (the slow path: a refusal to sort out, a damaged file) --

_ESCAPED_NAME = r"(?:[^, \\]|\\.)+"  # a measurement: ',' and ' ' escaped
_ESCAPED_KEY = r"(?:[^,= \\]|\\.)+"  # a tag key, tag value or field key: ',', '=' and ' ' escaped
_STRING = r'"(?:[^"\\]|\\.)*"'
_VALUE = rf'(?:{_STRING}|[^,"\s]+)'
_LINE = re.compile(
    rf"({_ESCAPED_NAME})((?:,{_ESCAPED_KEY}={_ESCAPED_KEY})*) "
    rf"({_ESCAPED_KEY}={_VALUE}(?:,{_ESCAPED_KEY}={_VALUE})*) (-?\d{{1,19}})",
    re.DOTALL,
)
_TAG = re.compile(rf",({_ESCAPED_KEY})=({_ESCAPED_KEY})", re.DOTALL)
_FIELD = re.compile(rf"(?:^|,)({_ESCAPED_KEY})=({_VALUE})", re.DOTALL)
_NAME_ESCAPE = re.compile(r"\\([, ])")
_KEY_ESCAPE = re.compile(r"\\([,= ])")
_STRING_ESCAPE = re.compile(r'\\([\\"])')
_FLOAT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"-?\d{1,19}i")


def _value(text: str) -> bool | int | float | str | None:
    if text[0] == '"':
        return _STRING_ESCAPE.sub(r"\1", text[1:-1])
    if text in ("true", "false"):
        return text == "true"
    if _INT.fullmatch(text):
        return int(text[:-1])
    if _FLOAT.fullmatch(text):
        return float(text)
    return None


def parse_line(line: bytes) -> Point | None:
    """The point a spooled line stands for, or None when it is not one the encoder writes: the
    point must pass the spool's checks and encode to exactly this line."""
    from .spool import is_valid_point  # spool imports this module

    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    found = _LINE.fullmatch(text)
    if found is None:
        return None
    measurement = _NAME_ESCAPE.sub(r"\1", found.group(1))
    tags = {_KEY_ESCAPE.sub(r"\1", k): _KEY_ESCAPE.sub(r"\1", v) for k, v in _TAG.findall(found.group(2))}
    fields: dict[str, bool | int | float | str] = {}
    for key, raw in _FIELD.findall(found.group(3)):
        value = _value(raw)
        if value is None:
            return None
        fields[_KEY_ESCAPE.sub(r"\1", key)] = value
    point = Point(measurement, tags, fields, int(found.group(4)))
    try:
        if not is_valid_point(point) or encode_line(*point) != text:
            return None
    except (TypeError, ValueError):
        return None
    return point


def parse_body(body: bytes) -> tuple[list[Point], list[str], list[bytes]]:
    """A body's points and their lines (as sent), and the lines that are not a point."""
    points: list[Point] = []
    lines: list[str] = []
    bad: list[bytes] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        point = parse_line(line)
        if point is None:
            bad.append(line)
        else:
            points.append(point)
            lines.append(line.decode("utf-8"))
    return points, lines, bad
