"""The store's rows in C (store/_store_rows.c) against the Python loop they replace.

Every row must be the Python loop's, byte for byte: the tags JSON as orjson spells it with sorted
keys and the series as hashlib's blake2b gives it, since stores already hold those values and a
point written again must meet its first copy in (time_ns, series).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tplr_metrics.store.database as store_module
from tplr_metrics.encoding.points import Point

pytestmark = pytest.mark.skipif(store_module._c_rows is None, reason="the C extension _store_rows is not built")


def python_rows(run: int | None, points: list[Point]) -> tuple[list, list, int]:
    saved = store_module._c_rows
    store_module._c_rows = None
    try:
        return store_module.encode_points(run, points)
    finally:
        store_module._c_rows = saved


def blake2b_series(measurement: str, tags_json: bytes) -> int:
    digest = hashlib.blake2b(measurement.encode("utf-8") + b"\0" + tags_json, digest_size=8).digest()
    return int(struct.unpack("<q", digest)[0])


text = st.text(max_size=40)  # lone surrogates, control characters, quotes, backslashes, astral planes
tag_values = st.one_of(text, text, st.integers(), st.none())  # not a str: the Python loop decides
field_values = st.one_of(
    st.floats(),  # NaN and infinities: orjson writes null, the Python loop decides
    st.integers(min_value=-(2**70), max_value=2**70),  # past 64 bits: orjson refuses
    text,
    st.booleans(),
    st.none(),
    st.just("null"),
)
times = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**65),
    st.booleans(),
    st.floats(allow_nan=False),
)
points = st.builds(
    Point,
    st.one_of(st.just("Vvalidator_scores"), text),
    st.dictionaries(text, tag_values, max_size=12) | st.dictionaries(text, text, min_size=60, max_size=70),
    st.dictionaries(text, field_values, max_size=8),
    times,
)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(points, max_size=12), run=st.one_of(st.none(), st.integers(1, 10)))
def test_the_c_rows_are_the_python_rows(batch: list[Point], run: int | None) -> None:
    assert store_module.encode_points(run, batch) == python_rows(run, batch)


def test_a_batch_that_is_not_a_list_is_read_as_one() -> None:
    batch = [Point("m", {"a": "1"}, {"f": 1.5}, 1), Point("m", {"a": "2"}, {"f": float("nan"), "g": 2}, 2)]
    assert store_module.encode_points(3, tuple(batch)) == python_rows(3, batch)


@pytest.mark.parametrize("size", [0, 1, 105, 106, 107, 108, 116, 117, 118, 233, 234, 235, 236, 500, 5000])
def test_the_series_is_blake2b_across_block_edges(size: int) -> None:
    # measurement + NUL + tags JSON crosses blake2b's 128-byte blocks at these sizes: the C hash
    # must carry its counter and keep the last block for the final compression, as hashlib does.
    tags = {"k": "x" * size, "é": '\n"\\\x01'}
    ((_, measurement, _, series, tags_json, _),), _, _ = store_module.encode_points(
        None, [Point("mm", tags, {"f": 1}, 5)]
    )
    assert measurement == "mm"
    assert tags_json == orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode()
    assert series == blake2b_series("mm", tags_json.encode())


def test_the_pinned_series_values_hold_in_c() -> None:
    # The values test_store pins for _series, through the C loop.
    made = store_module.encode_points(
        None,
        [Point("m", {"a": "1"}, {"f": 1}, 1), Point("Vvalidator_scores", {"uid": "7", "eval_uid": "3"}, {"f": 1}, 1)],
    )[0]
    assert [row[3] for row in made] == [1294057985296462352, 1539516276482605285]


def test_fields_whose_serializing_runs_python_code_cannot_change_the_tags_under_the_c_loop() -> None:
    # orjson reads a dataclass's attributes through Python: here that code clears the tags. The
    # C loop read the tags' texts in place and wrote them out after dumps: freed memory (a
    # UnicodeDecodeError of heap bytes, or garbage stored). Both loops take the tags first now.
    tags: dict[str, str] = {}

    @dataclasses.dataclass(slots=True)
    class Meddling:
        x: int = 1

        def __getattribute__(self, name: str) -> object:
            tags.clear()
            _junk = ["Z" * 40 + str(i) for i in range(2_000)]  # reuse the freed memory
            return object.__getattribute__(self, name)

    def batch() -> list[Point]:
        tags["".join(["k", "é" * 30])] = "".join(["v", "ü" * 30])  # made at run time: freed when cleared
        return [Point("m", tags, {"f": Meddling()}, 1)]

    assert store_module.encode_points(1, batch()) == python_rows(1, batch())
