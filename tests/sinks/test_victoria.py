"""The v2 write API (/api/v2/write) against a real VictoriaMetrics."""

from __future__ import annotations

import math
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tplr_metrics import MetricsLogger
from tplr_metrics.encoding.line_protocol import clean_key, clean_measurement

from ..servers import VictoriaMetrics


def test_20000_points_read_back_exactly(victoria: VictoriaMetrics, unique_db: str) -> None:
    m = MetricsLogger(
        url=victoria.url,
        database=unique_db,
        org="tplr",
        token="not-checked-by-victoria",
        api="v2",
        role="validator",
        uid=2,
        prefix="V",
        flush_interval=100,
    )
    for i in range(20_000):
        m.log(
            "validator_scores",
            {"eval_uid": str(i % 256), "window": i // 256, "global_step": i // 256},
            {"gradient_score": i * 0.001, "weight": 0.5},
        )
    assert m.close(timeout=120)
    match = f'{{__name__="Vvalidator_scores_gradient_score",runtime_id="{m.runtime_id}"}}'
    assert victoria.count_samples(match, expected=20_000) == 20_000
    assert m.stats()["written"] == 20_000


def test_ints_and_floats_land_as_numbers(victoria: VictoriaMetrics, unique_db: str) -> None:
    with MetricsLogger(url=victoria.url, database=unique_db, api="v2", flush_interval=100) as m:
        m.log("shapes", {"case": unique_db}, {"count": 7, "ratio": 0.25, "flag": True, "stats": [1.0, 3.0]})
    series = {s["metric"]["__name__"]: s["values"][0] for s in victoria.export_when_visible(f'{{case="{unique_db}"}}')}
    assert series == {
        "shapes_count": 7,
        "shapes_ratio": 0.25,
        "shapes_flag": 1,
        "shapes_stats_mean": 2,
        "shapes_stats_min": 1,
        "shapes_stats_max": 3,
        "shapes_stats_median": 2,
    }


def test_a_newline_in_a_string_value_cannot_inject_a_series(victoria: VictoriaMetrics, unique_db: str) -> None:
    """VictoriaMetrics ends a line at a raw newline even inside a quoted string value. Before: the
    payload below stored a forged series injected_metric_gradient_score, and the real point was
    lost while counted written. Now the value's newlines become spaces (counted) for a server
    whose /ping does not say it is InfluxDB, and the real point lands."""
    payload = "text\ninjected_metric,host=prod gradient_score=999 1700000000000000000\n"
    m = MetricsLogger(url=victoria.url, database=unique_db, org="o", token="not-checked", api="v2", spool=False)
    m.log("notes", {"case": unique_db}, {"note": payload, "v": 1.0})
    assert m.close(timeout=30)
    assert victoria.export_when_visible('{__name__=~"injected_metric.*"}', timeout=3) == []
    assert victoria.count_samples(f'{{__name__="notes_v",case="{unique_db}"}}', expected=1) == 1
    assert m.stats()["written"] == 1 and m.stats()["sanitized"] == {"changed_for_victoriametrics": 1}


def as_victoria_reads(value: Any) -> float:
    if not isinstance(value, str):
        return float(value)
    try:
        return float(value) if value == value.strip() and "_" not in value else 0.0
    except ValueError:
        return 0.0


AWKWARD = st.sampled_from(["\t", "\x00", "#", " ", "\\", '"', "=", ",", "\n", "\r"])
text = st.text(st.characters(blacklist_categories=("Cs",)) | AWKWARD, min_size=1, max_size=10)
numbers = (
    st.integers(min_value=-(2**53), max_value=2**53)  # VictoriaMetrics keeps float64
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.booleans()
)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    measurement=text,
    tags=st.dictionaries(text, text, max_size=3),
    fields=st.dictionaries(text, numbers | text, min_size=1, max_size=3),
)
def test_generated_points_reach_victoriametrics_as_their_own_series_only(
    victoria: VictoriaMetrics, measurement: str, tags: dict[str, str], fields: dict[str, Any]
) -> None:
    """The same awkward alphabet as the InfluxDB round trip: every field arrives as
    `<measurement>_<field>` with its value (a string as 0, as VictoriaMetrics reads it), and
    nothing else appears (a string value's newline or a name's control character would have made
    a series of its own)."""
    case = uuid.uuid4().hex
    tags = {"t" + k: v for k, v in tags.items()}
    fields = {"f" + k: v for k, v in fields.items()}
    with MetricsLogger(url=victoria.url, database="rt", api="v2", spool=False) as m:
        m.log(measurement, {**tags, "case": case}, fields, timestamp=1_700_000_000_000_000_000)
    assert m.stats()["written"] == 1, m.stats()
    # VictoriaMetrics' reading: each field a series `<measurement>_<field>`, a string one as 0.
    # A string that spells a number is read as that number; a '"' in a field key became "'".
    values = {clean_key(k)[0].replace('"', "'"): as_victoria_reads(v) for k, v in fields.items()}
    expected = {f"{clean_measurement(measurement)[0]}_{k}": v for k, v in values.items()}
    series = victoria.export_when_visible(f'{{case="{case}"}}')
    got = {s["metric"]["__name__"]: float(s["values"][0]) for s in series}
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert math.isclose(got[name], value, rel_tol=1e-6, abs_tol=1e-30), name


# Floats whose shortest spelling differs between repr() and orjson (the batch encoder's), and
# the extremes: each must read back as the same float.
SPELLINGS = [1e-05, 1.865648384247187e-05, 2.5e-07, -1e-07, 5e-324, 1e-300, 1e16, 1.7976931348623157e308, 0.1]


def test_every_float_spelling_reads_back_as_the_same_float(victoria: VictoriaMetrics, unique_db: str) -> None:
    """As far as VictoriaMetrics keeps floats: about 12 significant digits (1.865648384247187e-05
    reads back as 1.8656483842471e-05 however it is spelled), and a subnormal reads back as 0."""
    with MetricsLogger(url=victoria.url, database=unique_db, api="v2", flush_interval=100) as m:
        m.log("spelled", {"case": unique_db}, {f"v{i}": v for i, v in enumerate(SPELLINGS)})
    series = {s["metric"]["__name__"]: s["values"][0] for s in victoria.export_when_visible(f'{{case="{unique_db}"}}')}
    assert len(series) == len(SPELLINGS)
    for i, v in enumerate(SPELLINGS):
        back = float(series[f"spelled_v{i}"])
        assert back == 0.0 if v == 5e-324 else math.isclose(back, v, rel_tol=1e-11), (v, back)
