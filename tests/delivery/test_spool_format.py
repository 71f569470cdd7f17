"""The spool's line format: every point a lane can hold reads back exactly as it was written."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tplr_metrics.delivery import spool_lp
from tplr_metrics.delivery.run_names import MAX_NAME, full_run_id, is_shortened, name_of_run, run_of
from tplr_metrics.delivery.spool import decode_points, encode_point, encode_points
from tplr_metrics.encoding.line_protocol import clean_key, clean_measurement, encode_line, encode_lines
from tplr_metrics.encoding.points import Point

# What the value rules let through: no control character in a name or tag value, no name
# starting with '#', finite floats, 64-bit ints (string field values may hold anything).
clean_text = st.characters(blacklist_categories=("Cs", "Cc"))
names = st.text(clean_text, min_size=1, max_size=12)
measurements = names.filter(lambda name: not name.startswith(("#", " ")))
values = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.text(max_size=20)
)
points = st.builds(
    Point,
    measurements,
    st.dictionaries(names, st.text(clean_text, max_size=12), max_size=4),
    st.dictionaries(names, values, min_size=1, max_size=4),
    st.integers(min_value=-(2**63) + 2, max_value=2**63 - 2),
)


@settings(max_examples=300, derandomize=True)
@given(st.lists(points, max_size=20))
def test_spool_lines_read_back_exactly(batch: list[Point]) -> None:
    decoded, bad = decode_points(encode_points(batch))
    assert bad == []
    assert decoded == batch
    assert [type(v) for p in decoded for v in p.fields.values()] == [type(v) for p in batch for v in p.fields.values()]
    assert b"".join(encode_point(p) for p in batch) == encode_points(batch)
    assert encode_points(batch, at_once=True) == encode_points(batch)  # close()'s C-only loop: same bytes


@pytest.mark.parametrize(
    "line",
    [
        b'["m",{"a":"b"},{"v"',  # torn
        b"[1,2]",
        b'["m",["not","a","dict"],{"v":1.0},1]',  # valid JSON of the wrong shape
        b'["m",{},{"v":null},1]',
        b'["m",{},{},1]',
        b'["",{},{"v":1.0},1]',
        b'["m",{"t":1},{"v":1.0},1]',
        b'["m",{},{"v":1.0},"1"]',
        b'["m",{},{"v":[1]},1]',
        b"null",
        # What log() never lets through, planted in a spool file: each would be refused by the
        # server (counted written by a 1.x answer of dropped=0), or inject a point of its own.
        b'["m",{},{"v":NaN},1]',
        b'["m",{},{"v":1e400},1]',
        b'["m",{},{"v":123456789012345678901234567890},1]',
        b'["m",{},{"v":1.0},-99999999999999999999]',
        b'["#m",{},{"v":1.0},1]',
        b'["m\\ninj v=1 1",{},{"v":1.0},1]',
        b'["m",{"t":"a\\ninj v=7"},{"v":1.0},1]',
        b'["m",{},{"k\\nx":1.0},1]',
    ],
)
def test_a_line_that_is_not_a_valid_point_is_set_aside(line: bytes) -> None:
    good = encode_point(Point("m", {}, {"v": 1.0}, 5))
    decoded, bad = decode_points(good + line + b"\n" + good)
    assert decoded == [Point("m", {}, {"v": 1.0}, 5)] * 2 and bad == [line]


@settings(max_examples=300, derandomize=True)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40))
def test_a_runtime_id_is_one_safe_file_name_part_that_reads_back(runtime_id: str) -> None:
    name = name_of_run(runtime_id)
    assert "/" not in name and "\0" not in name and not name.startswith(".")
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", name), name
    if not is_shortened(name):  # a long one: see below
        assert run_of(name) == runtime_id or runtime_id != run_of(runtime_id)  # <id>-2 style suffixes aside


@settings(max_examples=200, derandomize=True)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=100, max_size=400))
def test_a_long_runtime_id_is_shortened_to_a_name_its_points_resolve(runtime_id: str) -> None:
    """Any runtime_id fits a file name (a spool run dir of 300 characters: ENAMETOOLONG), two
    runtime_ids never share a name, and a shortened name resolves back by the points' tag."""
    name = name_of_run(runtime_id)
    assert len(name.encode()) <= MAX_NAME and re.fullmatch(r"[A-Za-z0-9._~-]+", name), name
    assert name_of_run(runtime_id + "x") != name
    if is_shortened(name):
        point = Point("m", {"runtime_id": runtime_id}, {"v": 1.0}, 1)
        assert full_run_id(run_of(name), [point]) == runtime_id
        stranger = Point("m", {"runtime_id": "another run"}, {"v": 1.0}, 1)
        assert full_run_id(run_of(name), [stranger]) == run_of(name)
    else:
        assert run_of(name) == runtime_id or runtime_id != run_of(runtime_id)


# --- format 2: a batch kept as its line-protocol body (spool_lp) ------------------------------


def _as_built(point: Point) -> bool:
    """Names as the point builder lets them through (cleaned: no ambiguous backslash, no
    leading space or '#', no reserved key), as every spooled point has them."""
    return (
        clean_measurement(point.measurement)[1] is None
        and all(clean_key(k)[1] is None and clean_key(v, is_tag_value=True)[1] is None for k, v in point.tags.items())
        and all(clean_key(k)[1] is None for k in point.fields)
    )


def _fitting_lines(batch: list[Point]) -> list[str]:
    """The lines the encoder writes for a batch, without those format 2 leaves to format 1."""
    lines = encode_lines(batch)
    return [line for point, line in zip(batch, lines, strict=True) if spool_lp.lines_fit([point], [line])]


@settings(max_examples=300, derandomize=True)
@given(st.lists(points, max_size=20))
def test_a_format_2_file_reads_back_as_the_body_it_was_made_of(batch: list[Point]) -> None:
    lines = _fitting_lines(batch)
    data = spool_lp.encode_file(lines)
    body, count, bad, missing = spool_lp.read_file(data)
    assert bad == [] and count == len(lines) and missing == 0
    assert body == b"".join(line.encode() + b"\n" for line in lines)
    assert spool_lp.count_lines(data) == len(lines)


@settings(max_examples=500, derandomize=True)
@given(points)
def test_a_spooled_line_reads_back_as_a_point_that_encodes_to_it(point: Point) -> None:
    """The slow path (a refusal to sort out, a damaged file) reads a line back into the point
    it is: that point writes the very same line, so nothing sent differs from what was spooled."""
    (line,) = encode_lines([point])
    assume(_as_built(point) and spool_lp.lines_fit([point], [line]))
    back = spool_lp.parse_line(line.encode())
    assert back is not None, line
    assert encode_line(*back) == line
    assert back.time_ns == point.time_ns and back.measurement == point.measurement
    assert [type(v) for v in back.fields.values()] == [type(v) for v in point.fields.values()]


def test_a_batch_with_what_a_body_cannot_hold_stays_in_format_1() -> None:
    raw_newline = Point("m", {}, {"s": "two\nlines"}, 1)
    quote_in_key = Point("m", {}, {'k"q': 1.0}, 1)
    plain = Point("m", {}, {"v": 1.0}, 1)
    for odd in (raw_newline, quote_in_key):
        assert not spool_lp.lines_fit([plain, odd], encode_lines([plain, odd]))
    assert spool_lp.lines_fit([plain], encode_lines([plain]))


GOOD = [Point("m", {"t": "a"}, {"v": float(i)}, 10 + i) for i in range(3)]


@pytest.mark.parametrize(
    "damage",
    ["appended", "edited", "no_header", "torn_header"],
)
def test_a_damaged_format_2_file_keeps_only_its_points(damage: str) -> None:
    """Lines appended after the body are not this process's: quarantined. A body that does not
    match its header is read line by line: a line is kept only when it is a point the encoder
    writes as that line; a planted comment, blank or '#' line is never sent as a point."""
    lines = encode_lines(GOOD)
    data = spool_lp.encode_file(lines)
    junk = [b'["fm",["not","a","dict"],{"pid":1.0},1]', b"m v=NaN 3", b"# a comment"]
    if damage == "appended":
        data += b"".join(j + b"\n" for j in junk)
    elif damage == "edited":
        data = data.replace(b"v=1.0 11", b"v=nan 11") + b"m v=1.0,w=2.0\n"
        junk = [lines[1].replace("v=1.0 11", "v=nan 11").encode(), b"m v=1.0,w=2.0"]
    elif damage == "no_header":
        data = data.split(b"\n", 1)[1] + b"".join(j + b"\n" for j in junk)
    else:
        data = data[:20] + b"\n" + data.split(b"\n", 1)[1]
        junk = [data[:20]]
    body, count, bad, missing = spool_lp.read_file(data)
    assert missing == 0
    kept = [line for line in lines if damage != "edited" or "v=1.0 11" not in line]
    assert body == b"".join(line.encode() + b"\n" for line in kept) and count == len(kept)
    assert bad == junk
