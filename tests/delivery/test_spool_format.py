"""The spool's line format: every point a lane can hold reads back exactly as it was written."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tplr_metrics.delivery.spool import decode_points, encode_point, encode_points, name_of_run, run_of
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
    assert run_of(name) == runtime_id or runtime_id != run_of(runtime_id)  # <id>-2 style suffixes aside
