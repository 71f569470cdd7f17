"""Line protocol encoding against the spec, property-tested with a reference parser."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tplr_metrics.encoding.line_protocol import (
    MAX_STRING_BYTES,
    clean_key,
    clean_measurement,
    encode_line,
    truncate_string,
)
from tplr_metrics.encoding.points import Point, PointBuilder


def _read_name(line: str, pos: int, stops: str, specials: str) -> tuple[str, int]:
    """Read an escaped name up to an unescaped stop char (the spec's unescaping)."""
    out = []
    while pos < len(line) and line[pos] not in stops:
        ch = line[pos]
        if ch == "\\" and pos + 1 < len(line) and line[pos + 1] in specials:
            out.append(line[pos + 1])
            pos += 2
            continue
        out.append(ch)
        pos += 1
    return "".join(out), pos


def parse_line(line: str) -> Point:
    """A reference parser for one line, written from the spec, independent of the encoder."""
    measurement, pos = _read_name(line, 0, ", ", ", ")
    tags: dict[str, str] = {}
    while line[pos] == ",":
        key, pos = _read_name(line, pos + 1, "=", ",= ")
        assert line[pos] == "="
        value, pos = _read_name(line, pos + 1, ", ", ",= ")
        tags[key] = value
    assert line[pos] == " ", line
    pos += 1
    fields: dict[str, Any] = {}
    while True:
        key, pos = _read_name(line, pos, "=", ",= ")
        assert line[pos] == "="
        pos += 1
        if line[pos] == '"':
            pos += 1
            chars = []
            while line[pos] != '"':
                if line[pos] == "\\" and line[pos + 1] in '"\\':
                    pos += 1
                chars.append(line[pos])
                pos += 1
            fields[key] = "".join(chars)
            pos += 1
        else:
            end = pos
            while end < len(line) and line[end] not in ", ":
                end += 1
            text = line[pos:end]
            if text.endswith("i"):
                fields[key] = int(text[:-1])
            elif text in ("true", "false"):
                fields[key] = text == "true"
            else:
                fields[key] = float(text)
            pos = end
        if pos < len(line) and line[pos] == ",":
            pos += 1
            continue
        break
    time_ns = 0
    if pos < len(line):
        assert line[pos] == " "
        time_ns = int(line[pos + 1 :])
    return Point(measurement, tags, fields, time_ns)


def test_escaping_matches_the_spec() -> None:
    line = encode_line("m e,a=", {"t k,=": "v a,l=ue"}, {"f k,=": 'say "hi" \\ bye', "n": 3, "x": 1.5}, 42)
    assert line == 'm\\ e\\,a=,t\\ k\\,\\==v\\ a\\,l\\=ue f\\ k\\,\\=="say \\"hi\\" \\\\ bye",n=3i,x=1.5 42'


def test_empty_tag_values_are_left_out() -> None:
    assert encode_line("m", {"a": "", "b": "1"}, {"f": 1.0}, 5) == "m,b=1 f=1.0 5"


def test_newlines_in_names_become_spaces() -> None:
    assert clean_measurement("a\nb") == ("a b", "newline_in_name")
    assert clean_key("k\r\nx") == ("k  x", "newline_in_name")


def test_ambiguous_backslashes_become_slashes_others_stay() -> None:
    assert clean_key("C:\\path") == ("C:\\path", None)
    assert clean_key("end\\")[0] == "end/"
    assert clean_key("a\\,b")[0] == "a/,b"
    assert clean_key("a\\\\b")[0] == "a/\\b"


def test_reserved_keys_and_comment_lines() -> None:
    assert clean_key("time") == ("time_", "reserved_key")
    assert clean_key("time", is_tag_value=True) == ("time", None)
    assert clean_measurement("#m")[0] == "_m"
    assert clean_measurement("\x000")[0] == "_0"  # InfluxDB 1.x drops a leading NUL
    assert clean_measurement("a\x00b") == ("a b", "control_char_in_name")  # a control character is a space
    assert clean_measurement("\tm")[0] == "_m" and clean_measurement("\t#m")[0] == "_#m"  # 1.x strips a tab
    assert clean_measurement(" m")[0] == "_m"
    assert clean_key("\tk") == ("_k", "leading_space_in_key")
    assert clean_key(" v", is_tag_value=True)[0] == " v"  # a tag value is escaped, never stripped


def test_long_strings_are_truncated_on_a_character_boundary() -> None:
    text = "é" * MAX_STRING_BYTES
    cut, truncated = truncate_string(text)
    assert truncated and len(cut.encode()) <= MAX_STRING_BYTES and cut == "é" * (MAX_STRING_BYTES // 2)
    assert truncate_string("short") == ("short", False)


names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
field_values = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
)


@given(
    names,
    st.dictionaries(names, names, max_size=5),
    st.dictionaries(names, field_values, min_size=1, max_size=5),
    st.integers(min_value=-(2**62), max_value=2**62),
)
def test_clean_names_round_trip_through_the_reference_parser(
    measurement: str, tags: dict[str, str], fields: dict[str, Any], time_ns: int
) -> None:
    measurement = clean_measurement(measurement)[0]
    tags = {clean_key(k)[0]: clean_key(v, is_tag_value=True)[0] for k, v in tags.items()}
    fields = {clean_key(k)[0]: v for k, v in fields.items()}
    parsed = parse_line(encode_line(measurement, tags, fields, time_ns))
    assert parsed == Point(measurement, tags, fields, time_ns)


raw_text = st.text(max_size=15)  # anything, lone surrogates and control characters included


@given(
    raw_text,
    st.dictionaries(raw_text, raw_text, max_size=5),
    st.dictionaries(raw_text, raw_text | st.floats(), max_size=5),
)
def test_no_input_can_inject_a_point_tag_or_field(
    measurement: str, tags: dict[str, str], fields: dict[str, Any]
) -> None:
    builder = PointBuilder({"role": "validator"}, "", lambda *issue: None)
    point = builder.build((measurement, tags, fields, 1, None, None))
    if point is None:
        return
    line = encode_line(*point).encode("utf-8", "replace").decode("utf-8")
    parsed = parse_line(line)
    assert len(parsed.tags) == len([v for v in point.tags.values() if v])
    assert len(parsed.fields) == len(point.fields)
    assert parsed.time_ns == 1
