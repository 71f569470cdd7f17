"""Peers' published line-protocol cases as a table of our own: what each input becomes on the wire
and how each real server here reads it back.

The inputs come from influxdb-client-python's tests/test_point.py, Telegraf's influx serializer
tests and InfluxDB 1.x's models/points_test.go (escaping of spaces, commas and equals signs;
empty tag keys and values; control characters; backslashes; field types; NaN and infinity;
UTF-8). Where this library differs from a peer on purpose (a newline in a name becomes a space,
not an escape no server reads back; a backslash the servers disagree about becomes '/'), the
expected value says so. Every point carries a `case` tag so each row is found again.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.encoding.line_protocol import encode_line
from tplr_metrics.encoding.points import PointBuilder

from ..servers import InfluxDB1, VictoriaMetrics

INF = float("inf")
# (name, measurement, tags, fields, the line as encoded (without the case tag and time), the
# measurement, tags and fields InfluxDB 1.x reads back; None: the point is not sent at all)
CASES: list[
    tuple[str, str, dict[str, Any], dict[str, Any], str | None, tuple[str, dict[str, str], dict[str, Any]] | None]
] = [
    (
        "plain",
        "h2o",
        {"location": "europe"},
        {"level": 2.2},
        "h2o,location=europe level=2.2",
        ("h2o", {"location": "europe"}, {"level": 2.2}),
    ),
    (
        "space in measurement",
        "h2 o",
        {"location": "europe"},
        {"level": 2},
        "h2\\ o,location=europe level=2i",
        ("h2 o", {"location": "europe"}, {"level": 2}),
    ),
    (
        "comma in measurement",
        "h2,o",
        {"location": "europe"},
        {"level": 2},
        "h2\\,o,location=europe level=2i",
        ("h2,o", {"location": "europe"}, {"level": 2}),
    ),
    (
        "empty tag value left out",
        "h2o",
        {"location": "europe", "log": ""},
        {"level": 2},
        "h2o,location=europe level=2i",
        ("h2o", {"location": "europe"}, {"level": 2}),
    ),
    (
        "equals signs",
        "h=2o",
        {"l=ocation": "e=urope"},
        {"l=evel": 2},
        "h=2o,l\\=ocation=e\\=urope l\\=evel=2i",
        ("h=2o", {"l=ocation": "e=urope"}, {"l=evel": 2}),
    ),
    (
        "control characters become spaces",
        "h\n2\ro\t_data",
        {"new\nline": "new\nline", "t\tab": "t\tab"},
        {"level": 2},
        "h\\ 2\\ o\\ _data,new\\ line=new\\ line,t\\ ab=t\\ ab level=2i",
        ("h 2 o _data", {"new line": "new line", "t ab": "t ab"}, {"level": 2}),
    ),
    (
        "field types",
        "h2o",
        {},
        {"long": 1, "double": 250.69, "float": 35.0, "boolean": False, "string": "string value"},
        'h2o long=1i,double=250.69,float=35.0,boolean=0i,string="string value"',
        ("h2o", {}, {"long": 1, "double": 250.69, "float": 35.0, "boolean": 0, "string": "string value"}),
    ),
    (
        "string escapes",
        "h2o",
        {},
        {"a": "string esc\\ape value", "b": 'string esc"ape value'},
        'h2o a="string esc\\\\ape value",b="string esc\\"ape value"',
        ("h2o", {}, {"a": "string esc\\ape value", "b": 'string esc"ape value'}),
    ),
    (
        "utf-8",
        "weather",
        {"location": "Přerov", "sid": "12345"},
        {"temperature": 30.1},
        "weather,location=Přerov,sid=12345 temperature=30.1",
        ("weather", {"location": "Přerov", "sid": "12345"}, {"temperature": 30.1}),
    ),
    (
        "a trailing backslash becomes /",
        "test",
        {"backslash_tag": "C:\\"},
        {"v": 1},
        "test,backslash_tag=C:/ v=1i",
        ("test", {"backslash_tag": "C:/"}, {"v": 1}),
    ),
    (
        "a backslash before a letter is kept",
        "test",
        {"tag2": "value\\2", "tag4": "value\\4"},
        {"v": 1},
        "test,tag2=value\\2,tag4=value\\4 v=1i",
        ("test", {"tag2": "value\\2", "tag4": "value\\4"}, {"v": 1}),
    ),
    (
        "NaN and infinity are dropped",
        "h2o",
        {},
        {"nan": math.nan, "inf": INF, "level": 2},
        "h2o level=2i",
        ("h2o", {}, {"level": 2}),
    ),
    ("only NaN and infinity: no point", "h2o", {}, {"nan": math.nan, "inf": -INF}, None, None),
    (
        "a space in a field key (Telegraf)",
        "cpu",
        {"host": "localhost"},
        {"x y": 42.0},
        "cpu,host=localhost x\\ y=42.0",
        ("cpu", {"host": "localhost"}, {"x y": 42.0}),
    ),
    (
        "escaped comma and space in measurement (1.x points_test)",
        "cpu,main load",
        {"regions": "east"},
        {"value": 1.0},
        "cpu\\,main\\ load,regions=east value=1.0",
        ("cpu,main load", {"regions": "east"}, {"value": 1.0}),
    ),
    (
        "a comment line (1.x points_test)",
        "#comment",
        {},
        {"value": 1.0},
        "_comment value=1.0",
        ("_comment", {}, {"value": 1.0}),
    ),
    (
        "a string field with a newline (1.x reads it back)",
        "m",
        {},
        {"s": "a\nb"},
        'm s="a\nb"',
        ("m", {}, {"s": "a\nb"}),
    ),
]


def built(measurement: str, tags: dict[str, Any], fields: dict[str, Any]) -> Any:
    return PointBuilder({}, "", lambda *issue: None).build((measurement, tags, fields, 1, None, None))


@pytest.mark.parametrize(("name", "measurement", "tags", "fields", "line", "read"), CASES, ids=[c[0] for c in CASES])
def test_the_encoded_line(
    name: str, measurement: str, tags: dict[str, Any], fields: dict[str, Any], line: str | None, read: Any
) -> None:
    point = built(measurement, tags, fields)
    if line is None:
        assert point is None, name
        return
    assert encode_line(point.measurement, point.tags, point.fields) == line


def test_each_case_reads_back_from_influxdb_1x(influx1: InfluxDB1, unique_db: str) -> None:
    m = MetricsLogger(url=influx1.url, database=unique_db, api="v1", spool=False)
    for n, (_, measurement, tags, fields, _, _) in enumerate(CASES):
        m.log(measurement, {**tags, "case": str(n)}, fields, timestamp=1_700_000_000_000_000_000 + n)
    m.close(timeout=30)
    sent = sum(1 for c in CASES if c[5] is not None)
    assert m.stats()["written"] == sent and m.stats()["rejected_total"] == 0
    rows = {r["case"]: r for r in influx1.rows("SELECT * FROM /.*/ GROUP BY *", unique_db)}
    assert len(rows) == sent
    for n, (name, _, _, _, _, read) in enumerate(CASES):
        if read is None:
            assert str(n) not in rows, name
            continue
        row = rows[str(n)]
        measurement, tags, fields = read
        assert row["_measurement"] == measurement, name
        for key, value in {**tags, **fields}.items():
            assert row[key] == value, (name, key, row)


def test_each_case_reads_back_from_victoriametrics(victoria: VictoriaMetrics, unique_db: str) -> None:
    """VictoriaMetrics' reading: one series `<measurement>_<field>` per field, labels as the tags,
    a string value as 0 (it keeps no strings), a bool as 0/1."""
    m = MetricsLogger(url=victoria.url, database=unique_db, api="v2", org="o", spool=False)
    for n, (_, measurement, tags, fields, _, _) in enumerate(CASES):
        m.log(measurement, {**tags, "case": f"{unique_db}-{n}"}, fields, timestamp=1_700_000_000_000_000_000 + n)
    m.close(timeout=30)
    series = victoria.export_when_visible(f'{{case=~"{unique_db}-.*"}}')
    got = {(s["metric"]["case"], s["metric"]["__name__"]): (s["metric"], s["values"][0]) for s in series}
    expected = {}
    for n, (_, _, _, _, _, read) in enumerate(CASES):
        if read is None:
            continue
        measurement, tags, fields = read
        for key, value in fields.items():
            number = 0.0 if isinstance(value, str) else float(value)
            expected[(f"{unique_db}-{n}", f"{measurement}_{key}")] = (tags, number)
    assert got.keys() == expected.keys()
    for key, (tags, number) in expected.items():
        labels, value = got[key]
        assert math.isclose(float(value), number), key
        assert {k: labels[k] for k in tags} == tags, key
