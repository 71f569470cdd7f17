"""The batch line encoder (records straight to lines, Points built only when asked for) against
the builder and encode_lines one record at a time: the same lines, the same Points (value types
included), the same issues, for dict records and compact ones alike. Every test runs twice: with
the C loops (_line_fill.c) and with the pure-Python ones they stand in for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tplr_metrics.encoding import line_batches
from tplr_metrics.encoding.line_batches import BatchLineEncoder, LineBatch
from tplr_metrics.encoding.line_protocol import encode_lines
from tplr_metrics.encoding.points import Point, PointBuilder, QueuedShape, expand_queued, is_compact, register_shape

from .test_fast_path import _typed, runs


@pytest.fixture(scope="module", autouse=True, params=["c", "python"])
def loops(request: pytest.FixtureRequest) -> Iterator[str]:
    """The encoder's per-record loops: the C ones (where the install built them) or Python's."""
    built = line_batches._line_fill
    if request.param == "c" and built is None:
        pytest.skip("the C loops (tplr_metrics/encoding/_line_fill.c) were not built: no C compiler at install")
    line_batches._line_fill = built if request.param == "c" else None
    yield request.param
    line_batches._line_fill = built


def _compact(record: Any, shapes: dict[Any, QueuedShape]) -> Any:
    """The record as log() queues it while a backlog waits (plain dicts, no host metrics)."""
    measurement, tags, fields, time_ns, host_fields, host_tags = record
    if host_fields or host_tags or type(tags) is not dict or type(fields) is not dict:
        return record
    key = (measurement, tuple(tags), tuple(fields))
    shape = shapes.get(key) or shapes.setdefault(key, register_shape(*key))  # type: ignore[arg-type]
    return (shape.id, time_ns, *tags.values(), *fields.values())


def _encoder(builder: PointBuilder) -> BatchLineEncoder:
    def build(record: Any) -> Point | None:
        if is_compact(record):
            record = expand_queued(record)
        return builder.build(record)

    return BatchLineEncoder(builder, build)


def _same_points(got: list[Point], want: list[Point]) -> None:
    assert got == want
    for g, w in zip(got, want, strict=True):
        assert g.measurement == w.measurement and g.time_ns == w.time_ns
        assert list(g.tags.items()) == list(w.tags.items())
        assert _typed(g.fields) == _typed(w.fields)


@settings(max_examples=400)
@given(runs(), st.booleans())
def test_batches_encode_what_the_builder_and_encode_lines_do(
    run: tuple[dict[str, str], str, list[Any]], compact: bool
) -> None:
    standard, prefix, steps = run
    issues: list[tuple[str, ...]] = []
    want_issues: list[tuple[str, ...]] = []
    ours = PointBuilder(standard, prefix, lambda *issue: issues.append(issue))
    theirs = PointBuilder(standard, prefix, lambda *issue: want_issues.append(issue))
    encoder = _encoder(ours)
    shapes: dict[Any, QueuedShape] = {}
    pending: list[Any] = []

    def settle() -> None:
        if not pending:
            return
        batch = encoder.encode([_compact(r, shapes) if compact else r for r in pending])
        want = [p for p in (theirs.build(r) for r in pending) if p is not None]
        assert issues == want_issues
        assert batch.lines == encode_lines(want)
        _same_points(list(batch), want)
        pending.clear()

    # Each record three times: the builder writes the first of a shape, the batch path's Python
    # loop the second, and with the C loops built, they write the third.
    for step in steps:
        if step[0] == "log":
            pending += [step[1], step[1], step[1]]
            continue
        settle()
        for builder in (ours, theirs):
            getattr(builder, f"learn_{step[0]}_field")(step[1], step[2])
    settle()


def _validator_records(n: int, window: int = 5) -> list[Any]:
    fields = ("gradient_score", "weight")
    return [
        (
            "validator_scores",
            {"eval_uid": str(i % 7), "window": window, "empty": ""},
            dict.fromkeys(fields, i / 3),
            i,
            None,
            None,
        )
        for i in range(n)
    ]


def test_the_validator_shape_is_written_without_points() -> None:
    builder = PointBuilder({"uid": "17", "role": "validator"}, "V", lambda *issue: None)
    encoder = _encoder(builder)
    records = _validator_records(5)
    batch = encoder.encode(records)
    assert batch._shapes[0] is None and all(
        shape is not None for shape in batch._shapes[1:]
    )  # the first teaches the shape
    assert batch.plain_lines
    assert batch.lines[1] == (
        "Vvalidator_scores,eval_uid=1,window=5,uid=17,role=validator "
        "gradient_score=0.3333333333333333,weight=0.3333333333333333 1"
    )
    # Points are built only when asked for, and then as the builder builds them.
    assert sum(type(made) is Point for made in batch._made) == 1
    reference = PointBuilder({"uid": "17", "role": "validator"}, "V", lambda *issue: None)
    _same_points(list(batch), [p for p in map(reference.build, records) if p is not None])


def test_subsets_and_joined_batches_keep_lines_and_points_together() -> None:
    builder = PointBuilder({"uid": "1"}, "", lambda *issue: None)
    encoder = _encoder(builder)
    a = encoder.encode(_validator_records(6))
    b = encoder.encode(_validator_records(4, window=6))
    part = a.subset([5, 1, 3])
    assert part.lines == [a.lines[5], a.lines[1], a.lines[3]]
    assert list(part) == [a[5], a[1], a[3]]
    whole = LineBatch.joined([a, b])
    assert whole.lines == a.lines + b.lines and list(whole) == list(a) + list(b)
    assert a[-1] == a[5] and list(a[1:3]) == [a[1], a[2]]
    with pytest.raises(IndexError):
        a[6]


def test_a_value_the_builder_must_look_at_goes_through_the_builder() -> None:
    """NaN, a tag value to clean, a string field: counted and changed by the builder, as ever."""
    issues: list[str] = []
    builder = PointBuilder({}, "", lambda cause, *rest: issues.append(cause))
    encoder = _encoder(builder)
    records = [
        ("m", {"t": "a"}, {"x": 1.0}, 1, None, None),
        ("m", {"t": "a"}, {"x": float("nan"), "y": 1.0}, 2, None, None),  # another shape: NaN dropped
        ("m", {"t": "a"}, {"x": float("nan")}, 3, None, None),  # no field left
        ("m", {"t": "b\\"}, {"x": 2.0}, 4, None, None),  # a backslash at the end
        ("m", {"t": "c"}, {"x": 3}, 5, None, None),  # an int into a float field
        ("m", {"t": "c"}, {"x": 3}, 6, None, None),
    ]
    batch = encoder.encode(records)
    assert batch.lines == ["m,t=a x=1.0 1", "m,t=a y=1.0 2", "m,t=b/ x=2.0 4", "m,t=c x=3.0 5", "m,t=c x=3.0 6"]
    assert "nan_or_inf" in " ".join(issues) or issues  # the builder counted them
    assert batch._shapes[-1] is not None  # the int-into-float shape is written directly once known


def test_a_field_learned_int_changes_how_a_known_shape_is_written() -> None:
    builder = PointBuilder({}, "", lambda *issue: None)
    encoder = _encoder(builder)
    encoder.encode([("m", {}, {"x": 1.0}, 1, None, None)])
    assert encoder.encode([("m", {}, {"x": 2}, 2, None, None)] * 2).lines == ["m x=2.0 2"] * 2
    builder.learn_int_field("m", "x")
    assert encoder.encode([("m", {}, {"x": 2}, 3, None, None)] * 2).lines == ["m x=2i 3"] * 2


def test_a_nan_logged_into_an_int_field_does_not_make_it_float() -> None:
    """An attack: {x: nan} made the batch path count x as a float field before the builder
    dropped the NaN, so later ints of x were written 7.0 and InfluxDB refused them all (the
    int field x exists). A field joins the known floats only with a float actually written."""
    ours = PointBuilder({}, "", lambda *issue: None)
    theirs = PointBuilder({}, "", lambda *issue: None)
    encoder = _encoder(ours)
    records = [
        ("m", {}, {"x": 1, "y": 1.0}, 1, None, None),
        ("m", {}, {"x": float("nan"), "y": 1.0}, 2, None, None),
        ("m", {}, {"x": float("inf"), "y": 2.0}, 3, None, None),
        ("m", {}, {"x": 7, "y": 3.0}, 4, None, None),
        ("m", {}, {"x": 8, "y": 4.0}, 5, None, None),
    ]
    lines = encoder.encode(records).lines + encoder.encode(records[3:]).lines
    assert lines == encode_lines([p for p in map(theirs.build, records + records[3:]) if p is not None])
    assert lines[-1] == "m x=8i,y=4.0 5"


def test_tag_texts_that_never_repeat_do_not_grow_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tag whose value is new every point (a step number) is remembered for a while, then
    forgotten with everything else: the encoder's memory is bounded across all its shapes."""
    from tplr_metrics.encoding import line_batches

    monkeypatch.setattr(line_batches, "_TAG_TEXT_LIMIT", 2_000)
    builder = PointBuilder({}, "", lambda *issue: None)
    encoder = _encoder(builder)
    step = 0
    for _ in range(50):
        records = []
        for _ in range(500):
            step += 1
            records.append((f"m{step % 3}", {"step": step, "run": "r"}, {"x": 1.0}, step, None, None))
        lines = encoder.encode(records).lines
        assert lines[-1] == f"m{step % 3},step={step},run=r x=1.0 {step}"
        held = sum(len(parts) for shape in encoder._by_key.values() for parts in shape.tag_parts)
        assert held == encoder._remembered[0] <= 2_000 + 2 * 500


class _CountingLoops:
    """The C loops, counting the records collect() wrote (so a test knows they ran)."""

    def __init__(self, loops: Any) -> None:
        self.loops = loops
        self.written = 0
        self.fill = loops.fill

    def collect(self, records: list[Any], start: int, *rest: Any) -> int:
        stop: int = self.loops.collect(records, start, *rest)
        self.written += stop - start
        return stop


def test_what_the_loops_hand_back_is_written_as_the_builder_writes_it(loops: str) -> None:
    """Compact records of one known shape, and among them each thing the loops must not write
    themselves: NaN and inf, ints past int64, a bool or None where an int or str was, a tag to
    clean, a series key past its bound, a field learned int or float between batches."""
    ours = PointBuilder({"uid": "1"}, "", lambda *issue: None)
    theirs = PointBuilder({"uid": "1"}, "", lambda *issue: None)
    encoder = _encoder(ours)
    counting = _CountingLoops(line_batches._line_fill) if line_batches._line_fill is not None else None
    if counting is not None:
        line_batches._line_fill = counting
    tag_keys = tuple(f"t{i}" for i in range(18))  # more tags than the C loop's stack holds
    shapes: dict[Any, QueuedShape] = {}

    def record(t0: Any, step: Any, x: Any, y: Any, n: int = 7) -> Any:
        tags = {key: f"v{i}" for i, key in enumerate(tag_keys)} | {"t0": t0, "t1": step}
        return _compact(("m", tags, {"x": x, "n": n, "y": y}, 1_750_000_000_000_000_000 + step, None, None), shapes)

    clean = [record("a", i, float(i), i / 3) for i in range(6)]
    awkward = [
        record("a", 10, float("nan"), 1.0),
        record("a", 11, 1.0, float("inf")),
        record("a", 12, 1.0, 2.0, n=2**63),
        record("a", 13, 1.0, 2.0, n=True),  # type: ignore[arg-type]
        record("é ü", 14, 1.0, 2.0),  # not ASCII
        record("b\\", 15, 1.0, 2.0),  # a backslash to clean
        record("ctl\x01", 16, 1.0, 2.0),
        record(None, 17, 1.0, 2.0),
        record("z" * 9_000, 18, 1.0, 2.0),  # near the series key's bound: the builder decides
        record("z" * 70_000, 18, 1.0, 2.0),  # past it: cut by the builder
        record("a", 19, 3, 2.0),  # an int where a float was
        record("a", 20, 1e308, 1e308),  # finite, their sum is not
        record("", 21, 1.0, 2.0),  # an empty tag value is left out
    ]
    try:
        sent: list[Any] = []
        for batch_records, learn in (
            (clean, None),
            ([r for a in awkward for r in (a, *clean[:2])] + clean, None),
            (clean + awkward, ("int", "n")),
            (clean + awkward[-3:] + clean, ("float", "n")),
            (clean, None),
        ):
            batch = encoder.encode(batch_records)
            want = [p for p in map(theirs.build, map(expand_queued, batch_records)) if p is not None]
            assert batch.lines == encode_lines(want)
            _same_points(list(batch), want)
            sent += batch_records
            if learn is not None:
                for builder in (ours, theirs):
                    getattr(builder, f"learn_{learn[0]}_field")("m", learn[1])
        assert any(line.startswith("m,t0=é\\ ü,") for line in encode_lines(map(theirs.build, map(expand_queued, sent))))
    finally:
        if counting is not None:
            line_batches._line_fill = counting.loops
    if counting is not None:
        assert counting.written >= 40  # most clean records were written by the C loop


def test_a_field_learned_int_is_written_int_though_the_known_floats_count_the_same() -> None:
    """The loops check the builder's generation, not only how many fields are known float: x
    learned int (one float fewer), then a new float field w (one more) leaves the count as it was."""
    ours = PointBuilder({}, "", lambda *issue: None)
    theirs = PointBuilder({}, "", lambda *issue: None)
    encoder = _encoder(ours)
    shapes: dict[Any, QueuedShape] = {}

    def encode(records: list[Any]) -> list[str]:
        batch = encoder.encode([_compact(r, shapes) for r in records])
        assert batch.lines == encode_lines([p for p in map(theirs.build, records) if p is not None])
        return batch.lines

    floats = ("m", {}, {"x": 1.5}, 1, None, None)
    ints = [("m", {}, {"x": 2}, 2, None, None)] * 3
    assert encode([floats, *ints]) == ["m x=1.5 1"] + ["m x=2.0 2"] * 3
    for builder in (ours, theirs):
        builder.learn_int_field("m", "x")
    assert encode([("m", {}, {"w": 1.5}, 3, None, None)] * 2 + ints) == ["m w=1.5 3"] * 2 + ["m x=2i 2"] * 3


def test_a_shape_first_written_after_its_field_was_learned_int_keeps_it_int() -> None:
    """Found by the property test: a shape made while x was known float, but first written (a
    batch later) after x was learned int, joined x to the known floats again, and the next int
    of x went out as 0.0 to a server that holds x as integer."""
    ours = PointBuilder({}, "", lambda *issue: None)
    theirs = PointBuilder({}, "", lambda *issue: None)
    encoder = _encoder(ours)
    for builder in (ours, theirs):
        builder.learn_float_field("m", "x")
    past_range = ("m", {"t": 0}, {"x": 0.0, "y": 1e308, "z": 1e308}, 1, None, None)  # the builder writes it
    clean = ("m", {"t": 0}, {"x": 0.0, "y": 0.0, "z": 0.0}, 2, None, None)
    an_int = ("m", {}, {"x": 0, "y": 0.0, "z": 0.0}, 3, None, None)
    batches = ([past_range] * 3, None), ([clean] * 3 + [an_int], "int")
    for records, learn in batches:
        if learn:
            for builder in (ours, theirs):
                builder.learn_int_field("m", "x")
        lines = encoder.encode(records).lines
        assert lines == encode_lines([p for p in map(theirs.build, records) if p is not None])
    assert lines[-1] == "m x=0i,y=0.0,z=0.0 3"


def test_names_with_a_lone_surrogate_are_written_as_the_python_loop_writes_them() -> None:
    """An attack: the C loop copies text as UTF-8, and a lone surrogate in a measurement, tag key
    or field key (the name rules let it through; the sink sends it as "?") made it raise, which
    failed the whole batch and counted its drops twice. Such shapes stay with the Python loop."""
    ours = PointBuilder({"uid": "1"}, "", lambda *issue: None)
    theirs = PointBuilder({"uid": "1"}, "", lambda *issue: None)
    encoder = _encoder(ours)
    shapes: dict[Any, QueuedShape] = {}
    records = [
        ("loss\ud800", {}, {"x": 1.0}, 1, None, None),
        ("m", {"t\udcff": "a"}, {"x": 1.0}, 2, None, None),
        ("m", {}, {"x\ud800": 1.0}, 3, None, None),
    ]
    for _ in range(3):
        batch = encoder.encode([_compact(r, shapes) for r in records * 3])
        assert batch.lines == encode_lines([p for p in (theirs.build(r) for r in records * 3) if p is not None])


def test_an_int_tag_past_int64_goes_to_the_builder_and_is_counted_once() -> None:
    """An attack: str() of a 4,300-digit int raises; in the batch path that failed the whole
    batch, and the pipeline's fallback counted the batch's drops a second time."""
    issues: list[str] = []
    want: list[str] = []
    ours = PointBuilder({}, "", lambda cause, *rest: issues.append(cause))
    theirs = PointBuilder({}, "", lambda cause, *rest: want.append(cause))
    failed: list[Any] = []

    def build(record: Any) -> Point | None:  # as the pipeline's _build: errors counted, not raised
        try:
            return ours.build(expand_queued(record) if is_compact(record) else record)
        except ValueError:
            failed.append(record)
            return None

    encoder = BatchLineEncoder(ours, build)
    shapes: dict[Any, QueuedShape] = {}
    taught = ("a", {"t": 1}, {"v": 1.0}, 1, None, None)
    encoder.encode([_compact(taught, shapes)] * 2)
    theirs.build(taught)
    records = [taught, ("b", {}, {"v": float("nan")}, 2, None, None), ("a", {"t": 10**5000}, {"v": 2.0}, 3, None, None)]
    batch = encoder.encode([_compact(r, shapes) for r in records])
    for record in records[:2]:
        theirs.build(record)
    assert batch.lines == ["a,t=1 v=1.0 1"]
    assert issues == want and len(failed) == 1  # the NaN counted once; the huge int failed once


def test_the_c_loop_refuses_a_malformed_spec_instead_of_crashing(loops: str) -> None:
    """An attack called the C entry points with malformed internals: a crash. They are private
    (line_batches.py makes every spec), and still answer with an exception."""
    if loops != "c":
        pytest.skip("the C loop's own checks")
    collect = line_batches._line_fill.collect  # type: ignore[union-attr]
    builder = PointBuilder({}, "", lambda *issue: None)
    record = (5, 1, 1.0)
    good = (None, (float,), 0, (), 100, b"f", 0, None, 0, print)
    assert collect([record], 0, {5: good}, builder, [], [], [], []) == 1
    for bad in (
        good[:5],
        (None, [float], *good[2:]),
        (*good[:5], "f", *good[6:]),
        (*good[:5], b"ff", *good[6:]),
        (*good[:5], b"i", *good[6:]),  # an int kind for a float value
        (None, (float,), 2, *good[3:]),
        (None, (list, float), 1, ({},), 100, b"f", 0, None, 0, print),  # a tag type hashed by Python code
    ):
        with pytest.raises(TypeError, match="malformed shape spec"):
            collect([(5, 1, [], 1.0) if bad[1] == (list, float) else record], 0, {5: bad}, builder, [], [], [], [])
    with pytest.raises(ValueError, match="negative start"):
        collect([record], -1, {5: good}, builder, [], [], [], [])
