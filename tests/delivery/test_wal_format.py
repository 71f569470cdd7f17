"""Durable mode's write-ahead log, format 2: log() appends what it was given (a header line says
how its records become points); the next process builds them as the dead one's encoder would."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

import tplr_metrics.delivery.spool as spool_module
from tests.memory_sink import MemorySink
from tplr_metrics import MetricsLogger, Point
from tplr_metrics.delivery.spool import encode_point, encode_record, wal_header, wal_to_points
from tplr_metrics.encoding.points import PointBuilder


def _wal_segments(root: Path) -> list[Path]:
    return sorted(root.rglob("*-wal.jsonl"))


def test_durable_log_appends_the_record_not_the_built_point(isolated_env: Path) -> None:
    """The caller no longer builds the point (value rules, standard tags) to write its WAL line."""
    sink = MemorySink()
    sink.gate.clear()  # nothing is delivered: the WAL segment stays
    m = MetricsLogger(sink=sink, prefix="V", uid=3, durable=True, durable_sync_interval=60)
    try:
        m.log("loss", {"step": 7, "phase": "train"}, {"value": 0.5, "n": 3})
        (segment,) = _wal_segments(isolated_env)
        data = segment.read_bytes()
        assert data.endswith(b"\0")  # a live segment: a memory map over reserved, NUL-filled blocks
        header, line = data.rstrip(b"\0").splitlines()
        assert orjson.loads(header) == {"tplr_wal": 2, "prefix": "V", "tags": m._builder.standard_tags}
        measurement, tags, fields, time_ns = orjson.loads(line)
        assert (measurement, tags, fields) == ("loss", {"step": 7, "phase": "train"}, {"value": 0.5, "n": 3})
        assert abs(time_ns - time.time_ns()) < 60 * 10**9
    finally:
        sink.gate.set()
        assert m.close(10)
    assert [(p.measurement, p.tags["step"], p.tags["uid"], p.fields) for p in sink.points] == [
        ("Vloss", "7", "3", {"value": 0.5, "n": 3})
    ]


class _LineSink(MemorySink):
    accepts_lines = True  # as InfluxDB's sinks: records are queued compact


def test_a_compact_records_wal_line_is_the_record_not_the_dicts_another_thread_changes(isolated_env: Path) -> None:
    """An attack on durable mode's compact path: its WAL line was encoded from the caller's live
    dicts after the record was queued; a None value sent that to the slow encoder, whose loop
    another thread's change of the dict broke (RuntimeError): the point, queued and stored, was
    also counted log_error, and had no WAL line. The line is now made of the queued record."""
    sink = _LineSink()
    sink.gate.clear()  # nothing is delivered: every WAL line stays to be read
    m = MetricsLogger(sink=sink, durable=True, durable_sync_interval=60, batch_size=500)
    fields: dict[str, Any] = {"none": None, "x": 1.0, **{f"f{j}": float(j) for j in range(60)}}
    stop = threading.Event()

    def change() -> None:
        while not stop.is_set():
            for j in range(50):
                fields[f"z{j}"] = 1
            for j in range(50):
                fields.pop(f"z{j}", None)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    thread = threading.Thread(target=change)
    thread.start()
    try:
        for i in range(5_000):
            m.log("m", {"i": str(i)}, fields)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    lines = [line for seg in _wal_segments(isolated_env) for line in seg.read_bytes().rstrip(b"\0").splitlines()[1:]]
    sink.gate.set()
    assert m.close(30)
    stats = m.stats()
    assert stats["logged"] == 5_000 and stats["dropped"] == {} and len(sink.points) == 5_000, stats
    records = [orjson.loads(line) for line in lines]
    assert len(records) == 5_000 and all(r[2]["x"] == 1.0 and "none" in r[2] for r in records)


def test_a_killed_process_segment_with_its_reserved_tail_replays_once(isolated_env: Path, tmp_path: Path) -> None:
    """A SIGKILLed process leaves its segment at its reserved size, the unused part NUL bytes,
    and lines a signal handler appended past a gap: every line is built, no NUL is a bad line."""
    spool = tmp_path / "spool"
    first = MetricsLogger(sink=MemorySink(), spool_dir=spool)
    destination = first._pipeline.lanes[0].spool.root  # type: ignore[union-attr]
    assert first.close(10)
    dead = destination / "killed-run"
    dead.mkdir(mode=0o700)
    header = wal_header("", {"runtime_id": "killed-run"})
    lines = [encode_record(("m", {"i": str(i)}, {"v": float(i)}, 100 + i, None, None)) for i in range(4)]
    data = header + lines[0] + lines[1] + b"\0" * len(lines[2]) + lines[3] + b"\0" * 4096
    (dead / "000000000003-wal.jsonl").write_bytes(data)
    sink = MemorySink()
    m = MetricsLogger(sink=sink, spool_dir=spool)
    assert m.close(10)
    assert sorted(p.time_ns for p in sink.points) == [100, 101, 103]
    assert m.stats()["adopted"] == 3 and m.stats()["rejected_total"] == 0, m.stats()


def test_a_dead_process_format_2_segment_is_built_with_its_header(isolated_env: Path, tmp_path: Path) -> None:
    """A segment left by a killed durable process: its records are built with *its* prefix and
    standard tags (not the adopter's), each adopted and delivered once; a line that does not
    build into a point is quarantined as before."""
    spool = tmp_path / "spool"
    first = MetricsLogger(sink=MemorySink(), spool_dir=spool)
    destination = first._pipeline.lanes[0].spool.root  # type: ignore[union-attr]
    assert first.close(10)
    dead = destination / "dead-run"
    dead.mkdir(mode=0o700)
    header = wal_header("V", {"uid": "3", "runtime_id": "dead-run"})
    records = [("m", {"k": i, "s": "x"}, {"v": i, "w": 2.5}, 1_000 + i, None, None) for i in range(5)]
    host = ("m", {"k": 9}, {"v": 1.0}, 2_000, {"cpu_percent": 3.5}, {"host": "h1"})
    bad = b'["m",{},{"v":null},3000]\n'
    (dead / "000000000001-wal.jsonl").write_bytes(
        header + b"".join(encode_record(r) for r in records) + encode_record(host) + bad
    )
    os.chmod(dead / "000000000001-wal.jsonl", 0o600)

    sink = MemorySink()
    m = MetricsLogger(sink=sink, spool_dir=spool, prefix="Other", uid=8)
    m.close(10)
    standard = {"uid": "3", "runtime_id": "dead-run"}
    assert sink.points[:5] == [
        Point("Vm", {"k": str(i), "s": "x", **standard}, {"v": i, "w": 2.5}, 1_000 + i) for i in range(5)
    ]
    assert sink.points[5] == Point("Vm", {"k": "9", "host": "h1", **standard}, {"v": 1.0, "cpu_percent": 3.5}, 2_000)
    assert len(sink.points) == 6
    stats = m.stats()
    assert stats["adopted"] == 7 and stats["rejected"] == {"corrupt_spool_line": 1}, stats
    assert m.accounting()["balanced"]
    letters = (isolated_env / "dead_letter" / f"{m.runtime_id}.jsonl").read_text().splitlines()
    assert [json.loads(d)["line"] for d in letters] == [bad.decode().strip()]


def test_a_format_1_segment_from_an_older_version_still_replays(isolated_env: Path, tmp_path: Path) -> None:
    """Segments without a header hold built points (format 1): read as they are."""
    spool = tmp_path / "spool"
    first = MetricsLogger(sink=MemorySink(), spool_dir=spool)
    destination = first._pipeline.lanes[0].spool.root  # type: ignore[union-attr]
    assert first.close(10)
    dead = destination / "old-run"
    dead.mkdir(mode=0o700)
    points = [Point("Vm", {"k": str(i), "uid": "3"}, {"v": float(i)}, 10 + i) for i in range(3)]
    (dead / "000000000001-wal.jsonl").write_bytes(b"".join(encode_point(p) for p in points))
    assert wal_to_points((dead / "000000000001-wal.jsonl").read_bytes()) is None
    sink = MemorySink()
    m = MetricsLogger(sink=sink, spool_dir=spool)
    assert m.close(10)
    assert sink.points == points and m.stats()["adopted"] == 3


def test_every_record_log_can_queue_builds_from_its_wal_line_as_the_encoder_builds_it() -> None:
    """Ints past 64 bits, non-str keys, bools, None, NaN, escapes: the WAL line holds what the
    builder needs to make the same point the dead process's encoder made."""
    standard = {"uid": "1", "runtime_id": "r"}
    records = [
        ("m", {1: "a", "b": True}, {"big": 2**70, "ok": 1.5}, 5, None, None),
        ("m", {}, {"s": 'q"uote\n', "t": True, "none": None, "f": 0.1, "i": -3}, 6, None, None),
        ("m x", {"time": "t", "uid": "mine"}, {"nan": float("nan"), "v": 1e-05}, 7, None, None),
        ("m", {"k": None}, {"v": 1.0}, 8, {"gpu0_util": 50.0}, {"gpu": "a100"}),
    ]
    lines = wal_to_points(wal_header("P", standard) + b"".join(encode_record(r) for r in records))
    assert lines is not None
    builder = PointBuilder(standard, "P", lambda *issue: None)
    expected = [builder.build(r) for r in records]
    assert all(p is not None for p in expected)
    assert lines == b"".join(encode_point(p) for p in expected if p is not None)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6) | st.sampled_from(["null", ":null", "NaN"]),
)
_C_BUILT = not hasattr(spool_module.writes_no_null, "__code__")  # else its Python fallback: always False
_PARTS = st.dictionaries(st.text(max_size=4) | st.sampled_from(["null", "time"]), _VALUES, max_size=5)


@given(tags=_PARTS, fields=_PARTS)
def test_a_wal_line_that_skips_the_null_search_is_the_line_the_search_would_make(
    tags: dict[str, Any], fields: dict[str, Any]
) -> None:
    """writes_no_null (C where built) lets encode_record skip searching the line for a null: only
    where no value is one orjson writes as null, so the line is the same either way."""
    values = [*tags.values(), *fields.values()]
    plain = all(type(v) in (str, int, bool) or (type(v) is float and math.isfinite(v)) for v in values)
    assert spool_module.writes_no_null(tags, fields) is (plain and _C_BUILT)
    record = ("m", tags, fields, 5, None, None)
    line = record[:4]
    try:
        searched = orjson_line = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # an int past 64 bits
        searched, orjson_line = spool_module._encode_record_slowly(line), None
    else:
        if b"null" in searched:
            searched = spool_module._encode_record_slowly(line)
    # The same line (the search sends a "null" inside a string to the stdlib, which escapes more)
    assert repr(json.loads(encode_record(record))) == repr(json.loads(searched))
    if plain and _C_BUILT and orjson_line is not None:
        assert encode_record(record) == orjson_line  # the search skipped


class _BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


def test_a_key_whose_str_raises_is_counted_once_in_durable_mode(isolated_env: Path) -> None:
    """An attack found it: the WAL line's str() of such a key raised out of log() after the
    record was queued, so the call was counted log_error as well as delivered (3 calls: logged 5,
    written 3, log_error 2). The record is now queued and counted wal_failed (not durable)."""
    sink = MemorySink()
    m = MetricsLogger(sink=sink, durable=True, durable_sync_interval=60)
    m.log("t", {}, {_BadStr(): 1, "v": 2})
    m.log("t", {}, {"v": 3})
    assert m.close(10) is not None
    stats, books = m.stats(), m.accounting()
    assert stats["logged"] == 2 and "log_error" not in stats["dropped"], stats
    assert books["balanced"], books
    assert len(sink.points) + stats["dropped_total"] + stats["rejected_total"] == 2
    assert next(iter(stats["lanes"].values()))["wal_failed"] == 1
