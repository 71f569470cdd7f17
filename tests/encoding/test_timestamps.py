"""Explicit timestamps: every usual spelling read to the nanosecond, and what the servers cannot
store refused (the point dropped and counted, strict mode raises). Before: a timedelta, an
RFC 3339 string or an out-of-range value silently became "now"."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.encoding.points import timestamp_ns

from ..memory_sink import MemorySink

NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (NS, NS),
        (1_700_000_000.5, 1_700_000_000_500_000_000),
        (dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC), NS - 789),
        (dt.datetime(2023, 11, 14, 22, 13, 20, 123456), NS - 789),  # naive: UTC
        (dt.datetime(2023, 11, 15, 0, 13, 20, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))), NS - 789),
        (dt.date(2023, 11, 14), 1_699_920_000_000_000_000),
        (np.datetime64(NS, "ns"), NS),
        (np.datetime64("2023-11-14T22:13:20.123456789"), NS),
        (np.int64(NS), NS),
        (np.datetime64("2023-11-14", "D"), 1_699_920_000_000_000_000),
        (np.datetime64("2023-11", "M"), 1_698_796_800_000_000_000),
        # The nanosecond nearest the float's own value (before: cut to 256 ns steps).
        (1_700_000_000.123456, round(Fraction(1_700_000_000.123456) * 10**9)),
        (-1.5, -1_500_000_000),
        ("2023-11-14T22:13:20.123456789Z", NS),
        ("2023-11-14T22:13:20Z", NS - 123_456_789),
        ("2023-11-15T00:13:20.123456789+02:00", NS),
        ("1970-01-01T00:00:00Z", 0),
        ("1677-09-21T00:12:43.145224194Z", -(2**63) + 2),  # the first instant InfluxDB stores
        ("2262-04-11T23:47:16.854775806Z", 2**63 - 2),  # and the last
    ],
)
def test_timestamps_are_read_to_the_nanosecond(given: Any, expected: int) -> None:
    assert timestamp_ns(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        dt.timedelta(seconds=5),
        True,
        float("nan"),
        float("inf"),
        "yesterday",
        "2023-11-14",  # a date as text: not RFC 3339
        "2023-13-01T00:00:00Z",
        2**63,
        -(2**63),
        "2262-04-11T23:47:16.854775807Z",  # one past the last
        1e30,
        np.datetime64("NaT"),
        np.datetime64("1600-01-01", "s"),  # numpy's cast to ns wrapped these into 2184 and 1715
        np.datetime64("2300-01-01", "D"),
        object(),
    ],
)
def test_what_cannot_be_stored_is_refused(given: Any) -> None:
    assert timestamp_ns(given) is None


def test_a_point_with_an_unusable_timestamp_is_dropped_and_counted(isolated_env: Path) -> None:
    sink = MemorySink()
    m = MetricsLogger(sinks=[sink], spool=False)
    m.log("when", {}, {"v": 1.0}, timestamp=dt.timedelta(seconds=5))
    m.log("when", {}, {"v": 2.0}, timestamp="2023-11-14T22:13:20.123456789Z")
    assert m.close(5)  # bad input is counted, not a delivery failure
    assert [(p.fields["v"], p.time_ns) for p in sink.points] == [(2.0, NS)]
    assert m.stats()["dropped"] == {"bad_timestamp": 1} and m.accounting()["balanced"]


def test_strict_mode_raises_on_an_unusable_timestamp(isolated_env: Path) -> None:
    m = MetricsLogger(sinks=[MemorySink()], spool=False, strict=True)
    with pytest.raises(ValueError, match=r"measurement 'when'.*timedelta.*bad_timestamp"):
        m.log("when", {}, {"v": 1.0}, timestamp=dt.timedelta(seconds=5))
    m.close(5)
