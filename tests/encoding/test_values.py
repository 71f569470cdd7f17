"""Templar's value rules, exactly, and the rules beyond them (property-tested)."""

from __future__ import annotations

import decimal
import fractions
import math
import types

from hypothesis import given
from hypothesis import strategies as st

from tplr_metrics import MetricsLogger
from tplr_metrics.encoding.values import config_tags, process_fields, process_value, tag_value


class FakeNumpyScalar:
    """Behaves like numpy.float32 / torch 0-d tensors: a number behind .item()."""

    def __init__(self, value: object) -> None:
        self.value = value

    def item(self) -> object:
        return self.value


class Indexable:
    def __index__(self) -> int:
        return 7


def test_templar_table() -> None:
    assert process_value(3) == 3 and type(process_value(3)) is int
    assert process_value(2.5) == 2.5 and type(process_value(2.5)) is float
    assert process_value([1, 2, 3]) == "[1, 2, 3]"
    assert process_value([1.0, 2.0, 6.0]) == {"mean": 3.0, "min": 1.0, "max": 6.0, "median": 2.0}
    assert process_value([1, 2.5]) == {"mean": 1.75, "min": 1.0, "max": 2.5, "median": 1.75}
    assert process_value([]) == 0.0
    assert process_value("abc") == "abc"
    assert process_value(None) == 0.0 and type(process_value(None)) is float
    assert process_value({"a": 1}) == "{'a': 1}"


def test_exposed_on_the_logger_class_for_templar_call_sites() -> None:
    assert MetricsLogger.process_value([1, 2]) == "[1, 2]"


def test_bool_becomes_int() -> None:
    assert process_value(True) == 1 and type(process_value(True)) is int
    assert process_value(False) == 0 and type(process_value(False)) is int


def test_number_likes_become_numbers_not_strings() -> None:
    assert process_value(FakeNumpyScalar(0.25)) == 0.25
    assert type(process_value(FakeNumpyScalar(4))) is int
    assert process_value(FakeNumpyScalar(True)) == 1
    assert process_value(Indexable()) == 7
    assert process_value(decimal.Decimal("1.5")) == 1.5
    assert process_value(fractions.Fraction(1, 4)) == 0.25
    # A list of numpy ints is still Templar's "list of ints" string, with plain ints in it.
    assert process_value([FakeNumpyScalar(1), FakeNumpyScalar(2)]) == "[1, 2]"


def test_list_with_non_numbers_becomes_its_string() -> None:
    assert process_value([1.5, "x"]) == "[1.5, 'x']"


def test_non_finite_values_are_dropped_and_reported() -> None:
    seen: list[tuple[str, str]] = []
    out = process_fields(
        {"a": math.nan, "b": math.inf, "c": 1.0, "l": [1.0, math.nan, 3.0]},
        lambda cause, field, detail: seen.append((cause, field)),
    )
    assert out == {"c": 1.0, "l_mean": 2.0, "l_min": 1.0, "l_max": 3.0, "l_median": 2.0}
    assert ("non_finite", "a") in seen and ("non_finite", "b") in seen


def test_ints_beyond_int64_become_floats() -> None:
    seen: list[str] = []
    out = process_fields({"big": 2**70}, lambda cause, field, detail: seen.append(cause))
    assert out == {"big": float(2**70)} and seen == ["int_overflow"]


def test_tag_values() -> None:
    assert tag_value(None) == ""
    assert tag_value(12) == "12"
    assert tag_value(FakeNumpyScalar(3)) == "3"


def test_config_tags_take_public_scalars_only() -> None:
    config = types.SimpleNamespace(lr=0.1, name="run", _secret="x", nested={"a": 1}, flag=True, none=None)
    assert config_tags(config) == {"config_lr": "0.1", "config_name": "run", "config_flag": "True"}
    assert config_tags({"batch": 32}) == {"config_batch": "32"}
    assert config_tags(object()) == {}
    assert config_tags(None) == {}


any_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=True)
    | st.builds(FakeNumpyScalar, st.floats() | st.integers()),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=10) | st.integers(), any_value, max_size=6))
def test_any_fields_become_storable_values_without_raising(fields: dict[object, object]) -> None:
    out = process_fields(fields)  # type: ignore[arg-type]
    for key, value in out.items():
        assert isinstance(key, str)
        assert type(value) in (int, float, str)
        if type(value) is float:
            assert math.isfinite(value)
        if type(value) is int:
            assert -(2**63) <= value < 2**63
