"""The builder's fast path (known shapes, standard tags written once, all-float fields) against
the builder and encoder as they were before it (reference_builder.py): the same points, in the
same order, with the same value types, the same issues, and the same lines."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tplr_metrics.encoding.line_protocol import FloatFields, StandardTags, encode_lines
from tplr_metrics.encoding.points import PointBuilder

from . import reference_builder as reference

_plain_names = st.sampled_from(["loss", "score", "weight", "gradient_score", "final_score", "x", "a_2"])
_awkward_names = st.sampled_from(
    ["time", "time_", "", " lead", "back\\", "a\\,b", "new\nline", "tab\tin", "#hash", "sp ace", "eq=ual", "c,omma"]
)
_standard_names = st.sampled_from(["uid", "role", "prefix", "caller_uid", "caller_role", "uid_2"])
field_keys = st.one_of(_plain_names, _awkward_names, st.text(max_size=4), st.integers(0, 3))
tag_keys = st.one_of(_plain_names, _awkward_names, _standard_names, st.text(max_size=4), st.integers(0, 2))

floats = st.floats() | st.sampled_from([1e308, -1e308, 0.1, -0.0, 1e-5])
ints = st.integers(-(2**63) - 2, 2**63 + 2) | st.integers(0, 300) | st.sampled_from([2**64, -(2**70)])
field_values = st.one_of(
    floats,
    floats,
    ints,
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.just("s" * 17_000),  # 4 bytes a character would be past 64 KiB: it is not
    st.just("\U0001f600" * 16_500),  # 66,000 bytes: cut
    st.lists(floats, max_size=3),
)
tag_values = st.one_of(
    st.integers(0, 300),
    ints,
    st.text(max_size=6),
    st.sampled_from(["", "back\\", "x\\", "ctl\x01", "nl\n", "v a,l=ue", "x" * 9_000, "y" * 6_000, "y" * 70_000]),
    st.none(),
    st.booleans(),
    floats,
)
standard_sets = st.sampled_from(
    [
        {},
        {"uid": "17", "prefix": "V", "role": "validator", "runtime_id": "r1", "job_type": "validator"},
        {"uid": "3", "role": "va lid,ator", "group": "g=1", "version": ""},
        {"role": "back\\", "time": "t"},
        {"uid": "1", "group": "g" * 60_000},  # a caller's tag of 6,000 more: the series key is cut
    ]
)


@st.composite
def shapes(draw: Any) -> tuple[Any, list[Any], list[Any]]:
    clean = draw(st.integers(0, 3)) > 0  # most shapes clean: the ones the fast path takes
    measurement = draw(_plain_names if clean else st.one_of(_plain_names, _awkward_names, st.integers(0, 2)))
    fkeys = draw(st.lists(_plain_names if clean else field_keys, min_size=1, max_size=4, unique=True))
    clean_tags = st.one_of(_plain_names, _standard_names)  # clean names, standard ones among them
    tkeys = draw(st.lists(clean_tags if clean else tag_keys, max_size=3, unique=True))
    return measurement, fkeys, tkeys


@st.composite
def runs(draw: Any) -> tuple[dict[str, str], str, list[Any]]:
    """A builder's standard tags and prefix, and the records it builds: a few shapes, each logged
    several times with fresh values (so later ones take the fast path), learned fields between."""
    standard = draw(standard_sets)
    prefix = draw(st.sampled_from(["", "V", "V", "#"]))
    known = draw(st.lists(shapes(), min_size=1, max_size=3))
    steps: list[Any] = []
    for _ in range(draw(st.integers(1, 16))):
        measurement, fkeys, tkeys = draw(st.sampled_from(known))
        if draw(st.integers(0, 9)) == 0:
            learn = draw(st.sampled_from(["float", "int"]))
            steps.append((learn, f"{prefix}{measurement}", draw(st.sampled_from(fkeys))))
        kind = draw(st.sampled_from(["finite", "finite", "floats", "numbers", "any"]))
        values = {
            "finite": st.floats(-1e6, 1e6),
            "floats": floats,  # NaN, inf, and sums past the float range among them
            "numbers": st.floats(-1e6, 1e6) | st.integers(-5, 5),
            "any": field_values,
        }[kind]
        fields = {k: draw(values) for k in fkeys}
        tags = {k: draw(tag_values) for k in tkeys}
        host = draw(st.sampled_from([None] * 7 + [{"sys_cpu": 1.5}]))
        steps.append(("log", (measurement, tags, fields, 1_750_000_000_000_000_000, host, None)))
    return standard, prefix, steps


def _typed(mapping: Any) -> list[tuple[Any, type, Any]]:
    return [(k, type(v), v) for k, v in mapping.items()]


@settings(max_examples=400)
@given(runs())
def test_fast_path_builds_and_encodes_what_the_reference_does(run: tuple[dict[str, str], str, list[Any]]) -> None:
    standard, prefix, steps = run
    new_issues: list[tuple[str, ...]] = []
    old_issues: list[tuple[str, ...]] = []
    new = PointBuilder(standard, prefix, lambda *issue: new_issues.append(issue))
    old = reference.PointBuilder(standard, prefix, lambda *issue: old_issues.append(issue))
    new_points = []
    old_points = []
    for step in steps:
        if step[0] != "log":
            for builder in (new, old):
                getattr(builder, f"learn_{step[0]}_field")(step[1], step[2])
            continue
        record = step[1]
        got, want = new.build(record), old.build(record)
        assert new_issues == old_issues
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert got == want
        assert got.measurement == want.measurement and got.time_ns == want.time_ns
        assert list(got.tags.items()) == list(want.tags.items())
        assert _typed(got.fields) == _typed(want.fields)
        new_points.append(got)
        old_points.append(want)
    lines = encode_lines(new_points)
    assert lines == reference.encode_lines(old_points)
    assert lines == reference.encode_lines(new_points)  # to the reference, plain dicts


def test_the_validator_scores_shape_takes_the_fast_path() -> None:
    """The shape the fast path is for: the second point of a shape gets the marked dicts."""
    builder = PointBuilder({"uid": "17", "role": "validator"}, "V", lambda *issue: None)
    fields = {"gradient_score": 0.5, "binary_indicator": 1.0, "weight": 0.25}
    tags = [{"eval_uid": uid, "window": 5, "global_step": 15} for uid in range(3)]
    points = [builder.build(("validator_scores", t, dict(fields), 1, None, None)) for t in tags]
    assert all(p is not None and type(p.tags) is StandardTags for p in points)
    assert [type(p.fields) for p in points if p is not None] == [dict, FloatFields, FloatFields]
    assert encode_lines(points) == [  # type: ignore[arg-type]
        f"Vvalidator_scores,eval_uid={uid},window=5,global_step=15,uid=17,role=validator "
        "gradient_score=0.5,binary_indicator=1.0,weight=0.25 1"
        for uid in range(3)
    ]


def test_a_known_shape_still_has_its_series_key_cut() -> None:
    """The fast path's bound counts the standard tags' values too: 60,000 of them and a caller's
    6,000 are past 64 KiB, so the caller's value is cut, as the general path cuts it."""
    issues: list[tuple[str, ...]] = []
    builder = PointBuilder({"uid": "1", "group": "g" * 60_000}, "", lambda *issue: issues.append(issue))
    first = builder.build(("m", {"run": "short"}, {"x": 1.0}, 1, None, None))
    assert first is not None and type(first.tags) is StandardTags and not issues
    cut = builder.build(("m", {"run": "y" * 6_000}, {"x": 2.0}, 1, None, None))
    assert cut is not None and len(cut.tags["run"]) < 6_000 and cut.tags["group"] == "g" * 60_000
    assert [issue[0] for issue in issues] == ["series_key_truncated"]


def test_a_long_field_key_counts_in_the_series_key_bound() -> None:
    """An attack: a 60,000-character field key beside a 6,000-character tag value passed the cheap
    bound (it counted 64 characters for the field key) and InfluxDB refused the line; the tag
    value is cut so that the key fits, as for a long tag value alone."""
    issues: list[tuple[str, ...]] = []
    builder = PointBuilder({"uid": "1"}, "", lambda *issue: issues.append(issue))
    key = "k" * 60_000
    for _ in range(2):  # the general path, then the shaped one
        point = builder.build(("m", {"run": "y" * 6_000}, {key: 1.0}, 1, None, None))
        assert point is not None and len(point.tags["run"]) < 6_000
        line = encode_lines([point])[0]
        assert len(line.split(" ")[0].encode()) + 4 + len(key) <= 65_535
    assert [issue[0] for issue in issues] == ["series_key_truncated"] * 2


def test_a_str_enum_key_is_the_text_it_equals_whatever_came_first() -> None:
    """An attack: a ``(str, Enum)`` member equal to ``"loss"`` was stored as ``F.LOSS`` by a fresh
    builder but as ``loss`` by one that had seen ``"loss"`` (its caches find equal keys). Such
    a key is now always the text it equals, as a dict holds it."""
    import enum

    class F(str, enum.Enum):
        LOSS = "loss"
        UID = "peer"

    for seen_plain_first in (False, True):
        builder = PointBuilder({}, "", lambda *issue: None)
        if seen_plain_first:
            builder.build(("m", {"peer": "1"}, {"loss": 1.0}, 1, None, None))
        point = builder.build(("m", {F.UID: "1"}, {F.LOSS: 2.0}, 2, None, None))
        assert point is not None
        assert [str.__str__(k) for k in point.fields] == ["loss"]
        assert [str.__str__(k) for k in point.tags] == ["peer"]
        assert encode_lines([point]) == ["m,peer=1 loss=2.0 2"]
