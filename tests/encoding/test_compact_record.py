"""log()'s compact record: the C version (_compact_record.c) and the Python one it stands for
give the same answer for every input (a record, None, or False), and both match what the
record must hold: the shape's id, the time, then the values in the dicts' order."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tplr_metrics.encoding import points
from tplr_metrics.encoding.values import IMMUTABLE_TYPES

try:
    from tplr_metrics.encoding._compact_record import compact as compact_c  # type: ignore[import-not-found]
except ImportError:
    compact_c = None

needs_c = pytest.mark.skipif(
    compact_c is None, reason="the C version (tplr_metrics/encoding/_compact_record.c) was not built: no C compiler"
)

keys = st.one_of(st.sampled_from(["a", "b", "loss", "é"]), st.integers(0, 2), st.booleans(), st.just(1.0))
values = st.one_of(
    st.floats(allow_nan=True),
    st.integers(-(2**70), 2**70),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),  # a value to freeze in the call
    st.binary(max_size=2),
)


def test_the_c_version_takes_the_plain_types_python_takes() -> None:
    # _compact_record.c's is_plain() spells this set out: the two must not drift apart.
    assert frozenset({float, int, str, bool, type(None)}) == IMMUTABLE_TYPES


@needs_c
@settings(max_examples=500)
@given(
    st.dictionaries(keys, values, max_size=3),
    st.dictionaries(keys, values, max_size=3),
    st.sampled_from(["m", "n", 5]),
    st.one_of(st.integers(-5, 2**62), st.floats(0, 1), st.none()),
    st.booleans(),
    st.sampled_from(["same", "other tags", "other fields", "other measurement", "no shape", "reordered"]),
)
def test_c_and_python_give_the_same_answer(
    tags: dict[Any, Any], fields: dict[Any, Any], measurement: Any, time_ns: Any, registered: bool, names_are: str
) -> None:
    tag_keys, field_keys = tuple(tags), tuple(fields)
    shape_id = 7 if registered else -1
    names: points.QueuedNames = {
        "same": (shape_id, measurement, tag_keys, field_keys),
        "other tags": (shape_id, measurement, (*tag_keys, "x"), field_keys),
        "other fields": (shape_id, measurement, tag_keys, field_keys[1:]),
        "other measurement": (shape_id, "other", tag_keys, field_keys),
        "no shape": (-1, measurement, tag_keys, field_keys),
        "reordered": (shape_id, measurement, tag_keys[::-1], field_keys[::-1]),
    }[names_are]
    want = points._compact_record_py(names, measurement, tags, fields, time_ns)
    got = compact_c(names, measurement, tags, fields, time_ns)
    assert type(got) is type(want) and got == want
    if type(want) is tuple:
        assert want == (shape_id, time_ns, *tags.values(), *fields.values())
        # Plain values only: the collector need not track it (each young collection traversed
        # every queued record before, about 0.2 µs a point on the logging thread).
        assert not gc.is_tracked(got)
        assert not any(gc.is_tracked(value) for value in got)


@needs_c
def test_the_c_version_answers_each_case() -> None:
    names = (3, "m", ("t",), ("x", "y"))
    assert compact_c(names, "m", {"t": "a"}, {"x": 1.5, "y": 2}, 10) == (3, 10, "a", 1.5, 2)
    assert compact_c(names, "m", {"t": "a"}, {"y": 2, "x": 1.5}, 10) is None  # another order
    assert compact_c(names, "m2", {"t": "a"}, {"x": 1.5, "y": 2}, 10) is None
    assert compact_c(names, "m", {"t": [1]}, {"x": 1.5, "y": 2}, 10) is False  # a value to freeze
    assert compact_c(names, "m", {"t": "a"}, {"x": 1.5, "y": 2}, 1.5) is False  # not an int time
    assert compact_c((-1, *names[1:]), "m", {"t": "a"}, {"x": 1.5, "y": 2}, 10) is False
    with pytest.raises(TypeError):
        compact_c(("m",), "m", {}, {}, 1)


@needs_c
def test_a_collection_while_the_record_is_made_cannot_change_what_it_is_made_of() -> None:
    """Making the record's tuple may run a garbage collection, and Python code with it (here a gc
    callback; in a program, finalizers and other threads). The C version read the dicts' sizes
    before that: a key deleted meanwhile left a hole in the record it returned (a crash)."""
    keys = tuple(f"f{i}" for i in range(30))  # past the tuple free lists: a new tuple, a collection
    names = (3, "m", (), keys)
    fields = dict.fromkeys(keys, 1.5)
    armed = [False]
    meddled = [0]

    def meddle(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and armed[0]:
            armed[0] = False
            meddled[0] += 1
            del fields["f29"]

    threshold = gc.get_threshold()
    gc.callbacks.append(meddle)
    results = []
    try:
        gc.set_threshold(1)  # a collection at nearly every allocation of a tracked object
        for _ in range(20):
            fields["f29"] = 1.5
            armed[0] = True  # nothing is allocated from here into the call
            results.append(compact_c(names, "m", {}, fields, 1))
            armed[0] = False
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(meddle)
    assert meddled[0] >= 5  # collections ran inside the call
    assert all(r is None or r == (3, 1, *[1.5] * 30) for r in results), [repr(r)[:80] for r in results]
