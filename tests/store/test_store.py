"""The local store's file, schema and round trip, read back with plain sqlite3."""

from __future__ import annotations

import math
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tplr_metrics.store.database as store_module
from tplr_metrics import encode_line
from tplr_metrics.encoding.points import Point
from tplr_metrics.sinks.base import RunInfo
from tplr_metrics.store.database import PointFilter, Store, StoreError, default_store_path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_path_follows_tplr_metrics_home(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_store_path() == isolated_env / "metrics.sqlite"
    monkeypatch.delenv("TPLR_METRICS_HOME")
    monkeypatch.setenv("HOME", "/nonexistent-home")
    assert default_store_path() == Path("/nonexistent-home/.tplr_metrics/metrics.sqlite")


def test_new_store_is_private_wal_and_versioned(isolated_env: Path) -> None:
    path = isolated_env / "deeper" / "metrics.sqlite"
    with Store(path) as store:
        store.insert_points(None, [Point("m", {"a": "1"}, {"f": 1.0}, 1)])
        assert mode(path.parent) == 0o700
        assert mode(path) == 0o600
        wal = Path(str(path) + "-wal")
        assert wal.exists() and mode(wal) == 0o600  # SQLite gives -wal/-shm the file's mode
        assert store.journal_mode() == "wal"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent, for every reader
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    assert {"runs", "points", "point_fields", "point_tags"} <= tables


def test_a_version_1_store_gets_the_run_index_when_opened(isolated_env: Path) -> None:
    """A store written before schema 2 (no (run, id) index) is upgraded in place on open, its
    points kept, and the commands' one-run reads use the new index."""
    path = isolated_env / "metrics.sqlite"
    with Store(path) as store:
        store.insert_points(1, [Point("m", {"a": str(i)}, {"f": float(i)}, i) for i in range(10)])
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX points_run_id")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with Store(path, create=False) as store:
        assert [p.fields["f"] for p in store.iter_points(PointFilter(runs=[1]))] == [float(i) for i in range(10)]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION == 3
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "points_run_id" in names


def test_a_version_2_store_gets_run_names_when_opened(isolated_env: Path) -> None:
    """A store written before schema 3 (no runs.name) gets the column in place on open, each run
    already there named role/uid (or its run id's first 8 characters), its points kept."""
    path = isolated_env / "metrics.sqlite"
    with Store(path) as store:
        miner = store.add_run(RunInfo("aaaa-1111-miner", 10, role="miner", uid="3"))
        store.add_run(RunInfo("bbbb-2222-anon", 20))
        store.insert_points(miner, [Point("m", {}, {"f": 1.0}, 1)])
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX runs_name")
    conn.execute("ALTER TABLE runs DROP COLUMN name")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    with Store(path, create=False) as store:
        names = [(r.run_id, r.name) for r in store.runs()]
        assert names == [("bbbb-2222-anon", "bbbb-222"), ("aaaa-1111-miner", "miner/3")]
        assert [r.run_id for r in store.runs_named("miner/3")] == ["aaaa-1111-miner"]
        assert store.count_points(PointFilter(runs=[miner])) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert "runs_name" in {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_types_survive_and_are_visible_to_plain_sqlite(isolated_env: Path) -> None:
    path = isolated_env / "metrics.sqlite"
    point = Point("loss", {"window": "3", "uid": "7"}, {"i": 3, "f": 3.0, "s": 'x"y', "b": True, "big": 2**62}, 5)
    with Store(path) as store:
        assert store.insert_points(None, [point])[0] == 1
        (back,) = store.iter_points(PointFilter())
    assert back.to_point() == point
    assert [type(back.fields[k]) for k in ("i", "f", "s", "b", "big")] == [int, float, str, bool, int]
    conn = sqlite3.connect(path)
    types = dict(conn.execute("SELECT field, type FROM point_fields").fetchall())
    assert types == {"i": "integer", "f": "real", "s": "text", "b": "true", "big": "integer"}
    assert conn.execute("SELECT json_extract(tags, '$.window') FROM points").fetchone()[0] == "3"
    assert conn.execute("SELECT value FROM point_tags WHERE tag = 'uid'").fetchone()[0] == "7"


finite = st.floats(allow_nan=False, allow_infinity=False)
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    finite,
    st.text(st.characters(blacklist_categories=()), max_size=20),  # lone surrogates too: the slow path stores them
    st.booleans(),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    points=st.lists(
        st.builds(
            Point,
            names,
            st.dictionaries(names, names, max_size=4),
            st.dictionaries(names, values, min_size=1, max_size=4),
            st.integers(min_value=-(2**62), max_value=2**62),
        ),
        min_size=1,
        max_size=20,
        unique_by=lambda p: p.time_ns,
    )
)
def test_points_round_trip_to_the_same_line_protocol(isolated_env: Path, points: list[Point]) -> None:
    path = isolated_env / f"rt-{time.monotonic_ns()}.sqlite"
    with Store(path) as store:
        stored, rejected, _ = store.insert_points(None, points)
        assert (stored, rejected) == (len(points), [])
        back = list(store.iter_points(PointFilter()))
    assert [p.to_point() for p in back] == points
    for original, read in zip(points, back, strict=True):
        sorted_tags = dict(sorted(original.tags.items()))
        assert encode_line(read.measurement, read.tags, read.fields, read.time_ns) == encode_line(
            original.measurement, sorted_tags, original.fields, original.time_ns
        )
        for key, value in original.fields.items():
            assert type(read.fields[key]) is type(value)
            if isinstance(value, float):
                assert math.copysign(1, read.fields[key]) == math.copysign(1, value)  # -0.0 stays -0.0


def test_stdlib_encoder_writes_the_same_rows(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    points = [Point("m", {"b": "2", "a": "é"}, {"x": 0.30000000000000004, "n": -5, "s": "q"}, 9)]
    fast = store_module.encode_points(1, points)
    monkeypatch.setattr(store_module, "_orjson", None)
    slow = store_module.encode_points(1, points)
    assert [r[:4] for r in fast[0]] == [r[:4] for r in slow[0]]  # same series hash
    assert [store_module._loads(r[5]) for r in fast[0]] == [store_module._loads(r[5]) for r in slow[0]]


@pytest.mark.parametrize(
    ("measurement", "tags_json", "series"),
    [
        ("m", b'{"a":"1"}', 1294057985296462352),
        ("Vvalidator_scores", b'{"eval_uid":"3","uid":"7"}', 1539516276482605285),
        ("\u00e9\ud800", b"{}", 8678251457958150117),
        ("", b"", 5224996704525874836),
    ],
)
def test_the_series_hash_stays_what_stores_already_hold(measurement: str, tags_json: bytes, series: int) -> None:
    # blake2b-64 of measurement + NUL + tags JSON, little-endian signed, as schema 3 wrote it: a
    # point sent again after an upgrade must meet its first copy in (time_ns, series).
    assert store_module._series(measurement, tags_json) == series
    assert store_module._series(measurement, tags_json) == series  # the cached hasher is not changed


def test_tags_and_fields_are_stored_as_text_whichever_encoder_made_them(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # orjson's rows and the stdlib's are made differently: a reader with plain sqlite3 must get
    # the same TEXT from both, never a BLOB.
    path = isolated_env / "metrics.sqlite"
    with Store(path) as store:
        store.insert_points(None, [Point("m", {"t": "é"}, {"f": 1.5, "n": 2}, 1)])
        monkeypatch.setattr(store_module, "_orjson", None)
        store.insert_points(None, [Point("m", {"t": "é"}, {"f": 1.5, "n": 2}, 2)])
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT typeof(tags), typeof(fields), tags, fields FROM points ORDER BY id").fetchall()
    assert rows == [("text", "text", '{"t":"é"}', '{"f":1.5,"n":2}')] * 2


def test_same_point_twice_is_stored_once_and_same_series_and_time_merges(isolated_env: Path) -> None:
    path = isolated_env / "metrics.sqlite"
    batch = [Point("m", {"t": str(i)}, {"f": float(i)}, 100) for i in range(50)]
    with Store(path) as store:
        store.insert_points(None, batch)
        store.insert_points(None, batch)  # a retried batch
        store.insert_points(None, [Point("m", {"t": "1"}, {"g": 2}, 100)])  # InfluxDB merges fields
        assert store.count_points(PointFilter()) == 50
        merged = [p for p in store.iter_points(PointFilter()) if p.tags == {"t": "1"}]
    assert merged[0].fields == {"f": 1.0, "g": 2}


@pytest.mark.parametrize("size", [1, 2, 99, 100, 101, 250])
def test_a_batch_of_any_size_is_stored_in_order_and_merges_within_itself(isolated_env: Path, size: int) -> None:
    # Rows go in 100 to a statement: the last point repeats the first one's series and time
    # (another statement from 101 on, the same one below), and must merge into it as it would
    # into a stored point.
    batch = [Point("m", {"t": str(i)}, {"f": float(i)}, 1_000 + i) for i in range(size - 1)]
    batch.append(Point("m", {"t": "0"}, {"g": 7}, 1_000) if size > 1 else Point("m", {}, {"f": 1.0}, 5))
    with Store(isolated_env / "metrics.sqlite") as store:
        stored, rejected, _ = store.insert_points(None, batch)
        store.insert_points(None, batch)  # a retried batch changes nothing
        back = list(store.iter_points(PointFilter()))
    assert (stored, rejected) == (size, [])
    assert [p.time_ns for p in back] == [p.time_ns for p in batch[: max(1, size - 1)]]  # ids in batch order
    if size > 1:
        assert back[0].fields == {"f": 0.0, "g": 7}
        assert [p.fields for p in back[1:]] == [p.fields for p in batch[1 : size - 1]]


def test_a_row_sqlite_cannot_hold_is_refused_alone_and_the_rest_of_its_batch_stored(isolated_env: Path) -> None:
    # One point too big for SQLite (here its length limit lowered to 2,000 bytes; 1 GB by
    # default) failed its whole batch, at every retry: the points behind it waited for ever.
    with Store(isolated_env / "metrics.sqlite") as store:
        store.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 2_000)
        batch = [Point("m", {"i": str(i)}, {"f": float(i)}, 1_000 + i) for i in range(250)]
        batch[150] = Point("m", {"i": "150"}, {"s": "x" * 5_000}, 1_150)
        batch[3] = Point("m", {}, {"f": 1.0}, 2**64)  # refused before: the indexes stay the points'
        stored, rejected, _ = store.insert_points(None, batch)
        back = list(store.iter_points(PointFilter()))
    assert stored == 248 == len(back)
    assert [(r.index, r.cause) for r in rejected] == [(3, "bad_time"), (150, "unstorable")]
    assert "too big" in rejected[1].reason
    assert [p.time_ns for p in back] == [p.time_ns for i, p in enumerate(batch) if i not in (3, 150)]


def test_a_measurement_with_a_lone_surrogate_is_stored_with_a_question_mark(isolated_env: Path) -> None:
    # sqlite3 cannot bind a lone surrogate: the point failed its batch and every retry of it, and
    # every point logged after it waited behind it. Line protocol writes it as "?"; so does the store.
    with Store(isolated_env / "metrics.sqlite") as store:
        stored, rejected, _ = store.insert_points(
            None, [Point("ok", {}, {"f": 1.0}, 1), Point("bad\ud800", {"t": "\udfff"}, {"f": 2.0}, 2)]
        )
        not_str, refused, _ = store.insert_points(None, [Point(None, {}, {"f": 1.0}, 3)])  # type: ignore[arg-type]
        back = list(store.iter_points(PointFilter()))
    assert (stored, rejected) == (2, [])
    assert [p.measurement for p in back] == ["ok", "bad?"]
    assert back[1].tags == {"t": "\udfff"}  # a tag keeps it, \u-escaped in the JSON
    assert (not_str, [(r.index, r.cause) for r in refused]) == (0, [(0, "unstorable")])


def test_non_finite_fields_are_left_out_and_a_point_without_fields_refused(isolated_env: Path) -> None:
    with Store(isolated_env / "metrics.sqlite") as store:
        stored, rejected, _ = store.insert_points(
            None,
            [
                Point("m", {}, {"ok": 1.0, "bad": math.nan}, 1),
                Point("m", {}, {"bad": math.inf}, 2),
                Point("m", {}, {"f": 1.0}, 2**64),
            ],
        )
        assert stored == 1
        assert [(r.index, r.cause) for r in rejected] == [(1, "no_fields"), (2, "bad_time")]
        (back,) = store.iter_points(PointFilter())
    assert back.fields == {"ok": 1.0}


def test_runs_are_recorded_and_found_by_prefix(isolated_env: Path) -> None:
    with Store(isolated_env / "metrics.sqlite") as store:
        first = store.add_run(RunInfo("abc-1", 10, role="miner", uid="1", group="g", config={"config_lr": "0.1"}))
        second = store.add_run(RunInfo("abd-2", 20, role="validator"))
        store.end_run(first, "ok", 30)
        rows = store.runs()
        assert [r.run_id for r in rows] == ["abd-2", "abc-1"]  # newest first
        assert rows[1].status == "ok" and rows[1].ended_at == 30 and rows[1].group == "g"
        assert rows[1].config == {"config_lr": "0.1"} and rows[0].status == "running"
        assert [r.id for r in store.find_runs("abc")] == [first]
        assert [r.id for r in store.find_runs("abd-2")] == [second]
        assert store.find_runs("zzz") == []
        with pytest.raises(ValueError, match="ambiguous"):
            store.find_runs("ab")
        assert [r.run_id for r in store.runs(role="miner")] == ["abc-1"]
        assert [r.run_id for r in store.runs(since_ns=15)] == ["abd-2"]


def test_a_corrupt_or_foreign_file_is_named_in_the_error(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    garbage = isolated_env / "metrics.sqlite"
    garbage.write_bytes(b"this is not a database, it is a text file" * 200)
    with pytest.raises(StoreError) as info:
        Store(garbage)
    assert info.value.corrupt and str(garbage) in str(info.value)

    foreign = isolated_env / "other.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a tplr_metrics store") as info:
        Store(foreign)
    assert info.value.corrupt

    with pytest.raises(StoreError, match="no local store here"):
        Store(isolated_env / "missing.sqlite", create=False)
    assert not (isolated_env / "missing.sqlite").exists()


def test_processes_racing_to_create_one_store_all_get_in(isolated_env: Path) -> None:
    # Switching a new file to WAL answers "locked" at once (no busy handler) while another
    # process opens it; the store waits that out instead of failing the logger.
    program = f"""
import os, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tplr_metrics.encoding.points import Point
from tplr_metrics.store.database import Store
start = float(sys.argv[2])
while time.time() < start:
    pass
with Store(sys.argv[1]) as store:
    for i in range(10):
        store.insert_points(None, [Point("m", {{"pid": str(os.getpid())}}, {{"i": i}}, time.time_ns())])
"""
    for trial in range(3):
        path = isolated_env / f"race-{trial}" / "metrics.sqlite"
        start = str(time.time() + 0.5)
        procs = [
            subprocess.Popen([sys.executable, "-c", program, str(path), start], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
        assert sqlite3.connect(path).execute("SELECT count(*) FROM points").fetchone()[0] == 40
