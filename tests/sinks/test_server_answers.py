"""Every server answer read exactly: `written` is what the server stored, every refused point is
rejected with the server's reason for it and kept in the dead letter.

Before: InfluxDB 2.x and 3.x partial writes (1,000 points, 31 refused) gave written 999,
rejected 1 and no dead letter; 1.x answers naming several unparseable lines (and dropped=0)
counted them all as written; retention refusals were counted but never dead-lettered; a 307
split the batch down to single points and dead-lettered all of them as bad data."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.encoding.points import Point
from tplr_metrics.sinks.answers import read_refusal
from tplr_metrics.sinks.base import PointBatch
from tplr_metrics.sinks.influxdb import InfluxV1Sink

from ..answer_fake import REFUSE, answer_fake, refusal_body
from ..servers import InfluxDB1, free_port

# (name, lines sent, answer body, points for a type conflict, named lines, complete)
RECORDED: list[tuple[str, list[str], str, list[Any], set[int], bool]] = [
    (
        "1.x: two unparseable lines, dropped=0 (InfluxDB 1.6.7)",
        ["m v=1 1", "m v= 2", "m v=3 3", "m,t v=4 4", "m v=5 5"],
        '{"error":"partial write: unable to parse \'m v= 2\': missing field value\\nunable to parse '
        "'m,t v=4 4': missing tag value dropped=0\"}",
        [],
        {1, 3},
        True,
    ),
    (
        "1.x: a leading tab is gone from the quoted line",
        ["\t v=1 1", "ok v=3 3"],
        '{"error":"partial write: unable to parse \'v=1 1\': invalid field format dropped=0"}',
        [],
        {0},
        True,
    ),
    (
        "1.x: a quote inside the refused line",
        ['m s="it\'s" 1', "m v=2 2"],
        '{"error":"partial write: unable to parse \'m s=\\"it\'s\\" 1\': bad timestamp dropped=0"}',
        [],
        {0},
        True,
    ),
    (
        "1.x: a field type conflict says which field, not which points (a field's type is per shard)",
        ["c v=1 1", 'c v="s" 2', "c v=3 3"],
        '{"error":"partial write: field type conflict: input field \\"v\\" on measurement \\"c\\" is type '
        'string, already exists as type float dropped=1"}',
        [],
        set(),
        False,
    ),
    (
        "1.x: retention refusals are counted, not named",
        ["r v=1 1", "r v=2 2", "r v=3"],
        '{"error":"partial write: points beyond retention policy dropped=2"}',
        [],
        set(),
        False,
    ),
    (
        "1.x: every point beyond retention",
        ["r v=1 1", "r v=2 2"],
        '{"error":"partial write: points beyond retention policy dropped=2"}',
        [],
        {0, 1},
        True,
    ),
    (
        "1.x: a message cut off before dropped=",
        ["m v= 1", "m v=2 2", "m v=3 3"],
        '{"error":"partial write: unable to parse \'m v= 1\': missing field value\\nunable to pa"}',
        [],
        {0},
        False,
    ),
    (
        "2.x OSS",
        ["a v=1 1", "a refuse_me=1 2", "a v=3 3"],
        refusal_body("v2", [(2, "a refuse_me=1 2", "invalid field value for pid 2")]).decode(),
        [],
        {1},
        True,
    ),
    (
        "2.x: a quoted line whose string value says 'line 2:'",
        ["a v=1 1", 'a s="x line 2: y line 3: z" 2', "a v=3 3"],
        '{"code":"invalid","message":"partial write has occurred, errors encountered on line(s): line 2: '
        'unable to parse \'a s=\\"x line 2: y line 3: z\\" 2\': bad"}',
        [],
        {1},
        True,
    ),
    (
        "Cloud / 3.x Dedicated",
        ["a v=1 1", "a refuse_me=1 2", "a v=3 3", "a refuse_me=1 4"],
        refusal_body(
            "cloud", [(2, "", "Invalid measurement was provided"), (4, "", "Unable to parse timestamp")]
        ).decode(),
        [],
        {1, 3},
        True,
    ),
    (
        "3 Core",
        ["a v=1 1", "a refuse_me=1 2", "a v=3 3"],
        refusal_body("v3", [(2, "a refuse_me=1 2", "invalid column type")]).decode(),
        [],
        {1},
        True,
    ),
    (
        "3 Core, one error as an object",
        ["a v=1 1", "a refuse_me=1 2"],
        '{"error":"partial write of line protocol occurred","data":{"original_line":"a refuse_me=1 2",'
        '"line_number":2,"error_message":"bad"}}',
        [],
        {1},
        True,
    ),
    (
        "a listing capped at 100 lines may leave some out",
        [f"a refuse_me=1 {i}" for i in range(150)],
        refusal_body("v2", [(i + 1, "", "bad") for i in range(150)]).decode(),
        [],
        set(range(100)),
        False,
    ),
]


@pytest.mark.parametrize(("name", "lines", "answer", "points", "named", "complete"), RECORDED, ids=lambda v: "")
def test_recorded_answers_name_exactly_the_refused_lines(
    name: str, lines: list[str], answer: str, points: list[Any], named: set[int], complete: bool
) -> None:
    refusal = read_refusal(answer, lines)
    assert refusal.partial, name
    assert set(refusal.named) == named, name
    assert refusal.complete is complete, name


def test_a_whole_body_refusal_is_not_partial() -> None:
    refusal = read_refusal('{"error":"unable to parse the body"}', ["m v=1 1", "m v=2 2"])
    assert not refusal.partial and not refusal.named


def dead_letters(home: Path, logger: MetricsLogger) -> list[dict[str, Any]]:
    path = home / "dead_letter" / f"{logger.runtime_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("style", ["v2", "cloud", "v3"])
def test_partial_writes_in_each_format_count_what_the_server_stored(style: str, isolated_env: Path) -> None:
    """1,000 points, 31 refused: written == stored by the server, rejected == 31, and 31 dead
    letters, each with the reason the server gave for its own line."""
    bad = set(range(5, 1000, 32)) - {997}
    assert len(bad) == 31
    with answer_fake(style) as fake:
        # One batch, sent by close(): close() answers for the losses since it began (README).
        m = MetricsLogger(
            url=fake.url,
            api="v2",
            database="bucket",
            org="org",
            token="a-test-token-0123",
            batch_size=5_000,
            flush_interval=600_000,
        )
        for i in range(1000):
            fields: dict[str, Any] = {"pid": i, "v": float(i)}
            if i in bad:
                fields[REFUSE] = 1.0
            m.log("answers", {}, fields, timestamp=1_700_000_000_000_000_000 + i)
        assert m.close(timeout=20) is False  # points were refused
        stats = m.stats()
        stored = fake.stored_pids()
    assert stored == sorted(set(range(1000)) - bad)
    assert stats["written"] == len(stored) == 969
    assert stats["rejected_total"] == 31 and m.accounting()["balanced"]
    letters = dead_letters(isolated_env, m)
    assert sorted(d["point"][2]["pid"] for d in letters) == sorted(bad)
    assert all(f"pid {d['point'][2]['pid']}" in d["reason"] for d in letters)


def test_a_redirect_elsewhere_is_a_destination_error_and_nothing_is_refused(isolated_env: Path) -> None:
    """307 to another server: the batch is retried (here, in memory), never split and
    dead-lettered; when the destination answers again, every point lands once."""
    with answer_fake("v2") as fake:
        fake.redirects = [f"http://127.0.0.1:{free_port()}/api/v2/write"] * 3
        m = MetricsLogger(url=fake.url, api="v2", database="b", org="o", retry_interval=50, spool=False)
        for i in range(1000):
            m.log("redirected", {}, {"pid": i}, timestamp=1_700_000_000_000_000_000 + i)
        assert m.close(timeout=20)
        stats = m.stats()
        assert fake.stored_pids() == list(range(1000))
        assert fake.requests <= 3 + 2  # three redirects, then the batch (one or two requests)
    assert stats["written"] == 1000 and stats["rejected_total"] == 0 and stats["retried"] > 0
    assert dead_letters(isolated_env, m) == []


def test_a_redirect_to_the_same_server_is_followed(isolated_env: Path) -> None:
    with answer_fake("v2") as fake:
        fake.redirects = [f"{fake.url}/api/v2/write?bucket=b&org=o&precision=ns"]
        m = MetricsLogger(url=fake.url, api="v2", database="b", org="o", spool=False)
        for i in range(10):
            m.log("followed", {}, {"pid": i}, timestamp=1_700_000_000_000_000_000 + i)
        assert m.close(timeout=10)
        assert fake.stored_pids() == list(range(10)) and fake.requests == 2
    assert m.stats()["retried"] == 0


def batch_of(lines: list[str]) -> PointBatch:
    batch = PointBatch(Point("raw", {}, {"v": 0.0}, i) for i in range(len(lines)))
    batch.lines = lines
    return batch


def test_real_1x_unparseable_lines_and_retention_refusals_are_counted_exactly(
    influx1: InfluxDB1, unique_db: str
) -> None:
    """Lines as the server reads them (sent raw through the sink): several unparseable lines in
    one batch, and points older than the retention policy mixed with new ones; written equals
    what the server stored, and every refused line is named with its reason."""
    influx1.create_database(unique_db)
    influx1.query(f'CREATE RETENTION POLICY "hour" ON "{unique_db}" DURATION 1h REPLICATION 1 DEFAULT')
    now = 1_000_000_000 * int(__import__("time").time())
    lines = [f"ok,k=a pid={i}i {now + i}" for i in range(40)]
    unparseable = {3: "ok pid= 1", 17: "ok,t pid=2i", 29: "ok pid=3i 12x"}
    old = {8, 9, 21, 33}  # two days old: outside the 1 h retention policy
    for i, line in unparseable.items():
        lines[i] = line
    for i in old:
        lines[i] = f"ok,k=a pid={i}i {now - 2 * 86_400 * 1_000_000_000 + i}"
    sink = InfluxV1Sink(influx1.url, database=unique_db, retention_policy="hour")
    try:
        result = sink.write(batch_of(lines))
    finally:
        sink.close()
    stored = influx1.count("ok", "pid", unique_db)
    assert result.stored == stored == 40 - len(unparseable) - len(old)
    by_line = {r.index: r for r in result.rejected}
    assert set(by_line) == set(unparseable) | old and not result.retry
    assert {by_line[i].cause for i in unparseable} == {"bad_line"}
    assert {by_line[i].cause for i in old} == {"outside_retention"}


AWKWARD: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    ("\t", {}, {}),  # a measurement that is a lone tab
    ("\t#m", {}, {}),  # a comment line, once the server strips the tab
    ("#m", {}, {}),
    (" m", {}, {}),
    ("\x00m", {}, {}),
    ("m\\=x", {}, {}),  # 1.x dropped the backslash
    ('m\\"y', {}, {}),
    ("f", {}, {'k\\"q': 1.0}),
    ("f", {}, {"\tk": 1.0}),  # a leading tab in the first field key
    ("long_tag", {"t": "a" * 70_000}, {}),  # past the 65,535-byte series key
    ("m" * 65_500, {}, {}),  # the always-added runtime_id tag pushes it over
    ("collide", {"a\n": "1", "a ": "2"}, {}),
    ("collide", {}, {"time": 1.0, "time_": 2.0}),
    ("collide", {}, {"x": [1.0, 2.0], "x_mean": 9.0}),
    ("collide", {"uid": "3", "caller_uid": "4"}, {}),
    ("ok", {"k": "v"}, {"s": "multi\nline"}),
    ("ok", {"k": "\\"}, {}),
    ("ok,comma", {"k=eq": "v al"}, {}),
    ("ok", {"k": "é" * 20_000}, {}),  # 40,000 bytes of UTF-8: fits
    ("ok", {}, {"s": "x" * 70_000}),  # a string value past 64 KiB: truncated
]


def test_real_1x_awkward_points_are_all_stored_as_documented(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path
) -> None:
    """Twenty awkward points (the issue's measurements): before, the server stored 8 while the
    library said written 19, rejected 1. Now every one is stored, written == stored, and each name
    reads back as the encoder's rules say."""
    m = MetricsLogger(url=influx1.url, database=unique_db, api="v1", uid=7)
    for pid, (measurement, tags, fields) in enumerate(AWKWARD):
        m.log(measurement, tags, {**fields, "pid": pid}, timestamp=1_700_000_000_000_000_000 + pid)
    assert m.close(timeout=30), m.stats()
    stats = m.stats()
    rows = influx1.rows('SELECT "pid" FROM /.*/', unique_db)
    assert sorted(int(r["pid"]) for r in rows) == list(range(len(AWKWARD)))
    assert stats["written"] == len(AWKWARD) and stats["rejected_total"] == 0
    names = {r["_measurement"] for r in rows}
    assert {"_", "_#m", "_m", "m/=x", 'm/"y', "f", "collide", "ok", "ok,comma", "long_tag"} <= names
    collide = influx1.rows('SELECT * FROM "collide"', unique_db)
    columns = set().union(*(r.keys() for r in collide))
    assert {"a ", "a _2", "time_", "time__2", "x_mean", "x_mean_2", "caller_uid", "caller_uid_2"} <= columns
    for cause in ("name_collision", "series_key_truncated", "newline_in_name", "leading_char_in_measurement"):
        assert stats["sanitized"].get(cause), (cause, stats["sanitized"])


@pytest.mark.parametrize(
    "kinds",
    [
        ("conflict", "parse", "ok"),
        ("conflict", "old", "ok"),
        ("in_batch", "ok"),
        ("conflict", "old", "parse", "in_batch", "ok"),
    ],
    ids=["conflict+parse", "conflict+retention", "in-batch-conflicts", "all"],
)
def test_real_1x_answers_that_leave_refusals_out_are_not_trusted(
    influx1: InfluxDB1, unique_db: str, kinds: tuple[str, ...]
) -> None:
    """InfluxDB 1.6.7 names one kind of refusal per answer and leaves the others out: a type
    conflict's answer omits unparseable lines (a field key past the 64 KiB key limit) and points
    outside the retention policy, and in-batch conflicts on new fields of several measurements
    answer dropped=1 for all of them. The rest is sent again until a 2xx answers it, so each mix,
    sent raw through the sink, is counted exactly (the attack's own mixes, through the logger:
    the five-measurement test below and the awkward points above)."""
    import time as clock

    influx1.create_database(unique_db)
    influx1.query(f'CREATE RETENTION POLICY "hour" ON "{unique_db}" DURATION 1h REPLICATION 1 DEFAULT')
    now = clock.time_ns() - 1_000_000_000
    assert influx1.write(unique_db, f'c a="s" {now - 10**6}'.encode())[0] == 204
    lines: list[str] = []
    refused: set[int] = set()
    order = [kinds[i % len(kinds)] for i in range(30)]
    random.Random(1).shuffle(order)
    for i, kind in enumerate(order):
        if kind == "conflict":
            lines.append(f"c,i={i} a=1.0 {now + i}")  # a is a string field here
        elif kind == "old":
            lines.append(f"old,i={i} v=1.0 {now - 3 * 86_400 * 10**9 + i}")  # outside the 1 h policy
        elif kind == "parse":
            lines.append(f"pe,i={i} {'k' * 66_000}=1.0 {now + i}")  # max key length exceeded
        elif kind == "in_batch":
            lines.append(f'm{i % 5} f="s" {now + 10 * i}')  # a new field, two types in one batch
            lines.append(f"m{i % 5} f=1.5 {now + 10 * i + 1}")
        else:
            lines.append(f"ok,i={i} v=1.0 {now + i}")
            continue
        refused.add(len(lines) - 1)
    sink = InfluxV1Sink(influx1.url, database=unique_db)
    try:
        result = sink.write(batch_of(lines))
    finally:
        sink.close()
    stored = sum(influx1.count(m, "v", unique_db) for m in ("ok", "old")) + influx1.count("c", "a", unique_db) - 1
    stored += sum(influx1.count(f"m{k}", "f", unique_db) for k in range(5))
    assert result.stored == stored == len(lines) - len(refused)
    assert {r.index for r in result.rejected} == refused and not result.retry


def test_real_1x_in_batch_conflicts_on_five_measurements(isolated_env: Path) -> None:
    """Two types for a new field in each of five measurements, in one batch to a fresh
    database: InfluxDB 1.6.7 answers dropped=1 for the five refusals. (Before: written 7, stored 6,
    one refused point missing from the dead letter.)"""
    import time as clock

    server = InfluxDB1()
    server.start()
    try:
        m = MetricsLogger(url=server.url, database="t", api="v1", flush_interval=300)
        now = clock.time_ns()
        for k in range(5):
            m.log(f"m{k}", {}, {"f": "s"}, timestamp=now + 10 * k)
            m.log(f"m{k}", {}, {"f": 1.5}, timestamp=now + 10 * k + 1)
        m.log("ok", {}, {"v": 1.0}, timestamp=now)
        m.close(timeout=20)
        stored = sum(server.count(f"m{k}", "f", "t") for k in range(5)) + server.count("ok", "v", "t")
        assert m.stats()["written"] == stored == 6 and m.stats()["rejected_total"] == 5
        assert len(dead_letters(isolated_env, m)) == 5
    finally:
        server.cleanup()


def test_real_1x_a_conflict_in_one_shard_does_not_refuse_the_same_field_in_another(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path
) -> None:
    """InfluxDB 1.x keeps a field's type per shard (a week): m.f is a string in this week's shard
    only. One batch: m f=1.5 now (refused), three m f=1.5 three weeks ago (stored, another
    shard), three n g=1.5 (refused: n.g is a string). The answer names m.f's conflict with a
    count that fits every float m.f of the batch. (Before: those were all taken as refused:
    written 0, and 3 stored points dead-lettered.)"""
    import time as clock

    now = clock.time_ns() - 10**9
    weeks_ago = now - 21 * 86_400 * 10**9
    influx1.create_database(unique_db)
    assert influx1.write(unique_db, f'm f="s" {now - 10**6}\nn g="s" {now - 10**6}'.encode())[0] == 204
    m = MetricsLogger(url=influx1.url, database=unique_db, api="v1", flush_interval=60_000, spool=False)
    m.log("m", {"k": "now"}, {"f": 1.5}, timestamp=now)
    for i in range(3):
        m.log("m", {"k": f"old{i}"}, {"f": 1.5}, timestamp=weeks_ago + i)
        m.log("n", {"k": f"n{i}"}, {"g": 1.5}, timestamp=now + i)
    m.close(timeout=20)
    stored = len(influx1.rows('SELECT * FROM "m","n" WHERE "k" != \'\'', unique_db))
    assert stored == 3 and m.stats()["written"] == 3 and m.stats()["rejected_total"] == 4
    refused = sorted(d["point"][1]["k"] for d in dead_letters(isolated_env, m))
    assert refused == ["n0", "n1", "n2", "now"]


def test_a_runtime_id_never_makes_the_dead_letter_path(isolated_env: Path) -> None:
    """The dead-letter file is named after the runtime_id, escaped: ``../../x`` wrote outside
    ``$TPLR_METRICS_HOME/dead_letter`` (and a 300-character id could not be created)."""
    for runtime_id in ("../../escaped/x", "y" * 300):
        with answer_fake("v2") as fake:
            # The batch goes out inside close() (no interval passes first, even on a slow
            # machine), so close() answers for its refusal.
            m = MetricsLogger(
                url=fake.url,
                api="v2",
                database="b",
                org="o",
                runtime_id=runtime_id,
                spool=False,
                flush_interval=600_000,
            )
            m.log("answers", {}, {"pid": 1, REFUSE: 1.0}, timestamp=1_700_000_000_000_000_000)
            assert m.close(timeout=20) is False
        assert m.stats()["rejected_total"] == 1
        written = [p for p in isolated_env.rglob("*.jsonl") if p.parent.name == "dead_letter"]
        assert len(written) == 1 and written[0].parent == isolated_env / "dead_letter", written
        assert json.loads(written[0].read_text())["point"][2]["pid"] == 1
        assert not (isolated_env.parent / "escaped").exists()
        written[0].unlink()
