"""The spool's line format: every point a lane can hold reads back exactly as it was written."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tplr_metrics.delivery.spool import decode_points, encode_point, encode_points
from tplr_metrics.encoding.points import Point

names = st.text(min_size=1, max_size=12)
values = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=2**64, max_value=2**80)  # past what orjson holds: the stdlib path
    | st.booleans()
    | st.text(max_size=20)
)
points = st.builds(
    Point,
    names,
    st.dictionaries(names, st.text(max_size=12), max_size=4),
    st.dictionaries(names, values, min_size=1, max_size=4),
    st.integers(min_value=-(2**63) + 2, max_value=2**63 - 2),
)


@settings(max_examples=300, derandomize=True)
@given(st.lists(points, max_size=20))
def test_spool_lines_read_back_exactly(batch: list[Point]) -> None:
    decoded, bad = decode_points(encode_points(batch))
    assert bad == 0
    assert decoded == batch
    assert [type(v) for p in decoded for v in p.fields.values()] == [type(v) for p in batch for v in p.fields.values()]
    assert b"".join(encode_point(p) for p in batch) == encode_points(batch)


def test_a_torn_or_malformed_line_is_counted_not_fatal() -> None:
    good = encode_point(Point("m", {}, {"v": 1.0}, 5))
    decoded, bad = decode_points(good + b'["m",{"a":"b"},{"v"\n' + b"[1,2]\n" + good)
    assert decoded == [Point("m", {}, {"v": 1.0}, 5)] * 2 and bad == 2
