"""Spool format 2: an InfluxDB lane spools a batch as its line-protocol body and replays the
file's bytes as they are; refusals, damaged files and format-1 files left by older versions
are still delivered or counted point by point. Every test reads the server back:
stored + counted lost == logged."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.delivery import spool as spool_module
from tplr_metrics.delivery import spool_lp

from ..fault_proxy import Fault, fault_proxy
from ..servers import InfluxDB1
from .books import lost, spool_files, spooled_lines


def leave_a_spool(url: str, db: str, points: list[tuple[str, float]], batch_size: int = 1_000) -> dict:
    """A logger whose server answers 503 throughout spools every point and closes: its stats."""
    first = MetricsLogger(url=url, database=db, api="v1", batch_size=batch_size, retry_interval=60_000)
    for i, (measurement, value) in enumerate(points):
        first.log(measurement, {"i": str(i)}, {"v": value})
    assert first.close(timeout=3) is False
    stats = first.stats()
    assert stats["spooled"] == len(points) and first.accounting()["balanced"], stats
    return stats


def dead_letters(home: Path, runtime_id: str) -> list[dict]:
    path = home / "dead_letter" / f"{runtime_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_outage_is_spooled_as_line_protocol_and_replayed_without_decoding_it(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3,000 points logged through an outage are kept as three format-2 files; the next logger
    POSTs their bytes: no spool line is decoded, no point read back or encoded again (before:
    JSON lines, 42 µs a point to decode and 8 to encode again for Templar's shape)."""
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.faults.append(Fault(503, times=1_000_000))
        one = leave_a_spool(proxy.url, unique_db, [("bodies", float(i)) for i in range(3_000)])
        files = spool_files(isolated_env / "spool")
        assert [p.suffix for p in files] == [".lp"] * 3, files
        assert all(p.read_bytes().startswith(b"#tplr-spool 2 lp points=1000 ") for p in files)
        proxy.faults.clear()

        def never(*args: object) -> None:
            raise AssertionError("a format-2 replay decoded or encoded its points")

        monkeypatch.setattr(spool_module, "decode_points", never)
        monkeypatch.setattr(spool_lp, "parse_body", never)
        monkeypatch.setattr("tplr_metrics.sinks.influxdb.encode_lines", never)
        second = MetricsLogger(url=proxy.url, database=unique_db, api="v1")
        assert second.close(timeout=30)
    two = second.stats()
    stored = influx1.count("bodies", "v", unique_db)
    assert stored == two["written"] == two["adopted"] == 3_000 and lost(two) == 0, two
    assert stored + lost(one) == 3_000 and second.accounting()["balanced"]
    assert not spool_files(isolated_env / "spool")


def test_format_1_files_left_by_an_older_version_are_still_delivered(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.faults.append(Fault(503, times=1_000_000))
        with monkeypatch.context() as old:
            old.setattr(spool_lp, "lines_fit", lambda points, lines: False)  # what an older version wrote
            leave_a_spool(proxy.url, unique_db, [("old_format", float(i)) for i in range(2_500)])
        assert {p.suffix for p in spool_files(isolated_env / "spool")} == {".jsonl"}
        proxy.faults.clear()
        second = MetricsLogger(url=proxy.url, database=unique_db, api="v1")
        assert second.close(timeout=30)
    two = second.stats()
    assert influx1.count("old_format", "v", unique_db) == two["written"] == two["adopted"] == 2_500, two
    assert second.accounting()["balanced"] and not spool_files(isolated_env / "spool")


def test_a_refusal_of_part_of_a_spooled_body_is_counted_point_by_point(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path
) -> None:
    """The server holds ``clash.v`` as an integer: the 100 float points of it in a spooled body
    are refused (a partial write that names no line); the body's 900 others are stored, the 100
    counted rejected and dead-lettered as the points they are. (Not whole numbers: those the
    sink sends again as ints, see test_influx1's test_ints_after_a_float_into_an_integer_field.)"""
    influx1.create_database(unique_db)
    points = [("clash", i + 0.5) if i % 10 == 3 else ("fine", float(i)) for i in range(1_000)]
    with fault_proxy(influx1.port) as proxy:
        proxy.faults.append(Fault(503, times=1_000_000))
        one = leave_a_spool(proxy.url, unique_db, points)
        assert [p.suffix for p in spool_files(isolated_env / "spool")] == [".lp"]
        # The same shard as the spooled points (1.x keeps a field's type per shard: a week).
        status, _ = influx1.write(unique_db, b"clash v=1i %d" % time.time_ns())
        assert status == 204
        proxy.faults.clear()
        second = MetricsLogger(url=proxy.url, database=unique_db, api="v1")
        second.close(timeout=60)
    two = second.stats()
    assert influx1.count("fine", "v", unique_db) == 900 == two["written"], two
    assert influx1.count("clash", "v", unique_db) == 1  # the server's own
    assert two["rejected"] == {"field_type_conflict": 100}, two
    assert two["written"] + lost(two) == 1_000 == two["adopted"] and lost(one) == 0
    assert second.accounting()["balanced"], second.accounting()
    letters = dead_letters(isolated_env, second.runtime_id)
    assert sorted(d["point"][2]["v"] for d in letters) == [i + 0.5 for i in range(3, 1_000, 10)]
    assert {d["cause"] for d in letters} == {"field_type_conflict"}


@pytest.mark.parametrize("damage", ["appended", "edited"])
def test_a_damaged_spooled_body_delivers_its_points_and_quarantines_the_rest(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path, damage: str
) -> None:
    """Two lines appended to a dead process's format-2 file, or one of its lines edited into a
    NaN: what is not a point goes to the dead letter (corrupt_spool_line, counted rejected and
    adopted), every other point lands."""
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.faults.append(Fault(503, times=1_000_000))
        leave_a_spool(proxy.url, unique_db, [("damaged", float(i)) for i in range(2_000)])
        first_file = spool_files(isolated_env / "spool")[0]
        data = first_file.read_bytes()
        if damage == "appended":
            planted = [b'["fm",["not","a","dict"],{"pid":1.0},1]', b"damaged,i=x v=NaN 5"]
            first_file.write_bytes(data + b"".join(line + b"\n" for line in planted))
            expected = 2_000
        else:
            lines = data.split(b"\n")
            planted = [lines[5].replace(b"v=4.0", b"v=NaN")]
            assert planted[0] != lines[5]
            first_file.write_bytes(b"\n".join(lines[:5] + planted + lines[6:]))
            expected = 1_999
        assert spooled_lines(isolated_env / "spool") == 2_000 + (damage == "appended") * 2
        proxy.faults.clear()
        second = MetricsLogger(url=proxy.url, database=unique_db, api="v1")
        second.close(timeout=30)
    two = second.stats()
    assert influx1.count("damaged", "v", unique_db) == expected == two["written"], two
    assert two["rejected"] == {"corrupt_spool_line": len(planted)}, two
    assert two["written"] + lost(two) == two["adopted"] == 2_000 + (damage == "appended") * 2
    assert second.accounting()["balanced"], second.accounting()
    letters = dead_letters(isolated_env, second.runtime_id)
    assert [(d["cause"], d["line"]) for d in letters] == [("corrupt_spool_line", p.decode()) for p in planted]


@pytest.mark.parametrize("damage", ["cut_mid_line", "header_only"])
def test_a_spooled_body_cut_short_counts_the_points_it_lost(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path, damage: str
) -> None:
    """A dead process's format-2 file cut short (mid-line, or down to its header): the points
    still there land, the torn line is quarantined, and the points the header promised beyond
    them are counted dropped (``spool_damaged``), so the books still balance against what was
    spooled. (Before: 2,498 points of three damaged files were gone, counted nowhere.)"""
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.faults.append(Fault(503, times=1_000_000))
        leave_a_spool(proxy.url, unique_db, [("cut", float(i)) for i in range(2_000)])
        files = spool_files(isolated_env / "spool")
        data = files[0].read_bytes()
        promised = int(data.split(b"points=", 1)[1].split(b" ", 1)[0])
        header_end = data.index(b"\n") + 1
        if damage == "cut_mid_line":
            cut = data[: header_end + (len(data) - header_end) // 2]
            assert not cut.endswith(b"\n")
            whole_lines, torn = cut[header_end:].count(b"\n"), 1
        else:
            cut, whole_lines, torn = data[:header_end], 0, 0
        files[0].write_bytes(cut)
        proxy.faults.clear()
        second = MetricsLogger(url=proxy.url, database=unique_db, api="v1")
        second.close(timeout=30)
    two = second.stats()
    stored = influx1.count("cut", "v", unique_db)
    assert stored == two["written"] == 2_000 - promised + whole_lines, two
    assert two["dropped"].get("spool_damaged") == promised - whole_lines - torn, two
    assert two["rejected"].get("corrupt_spool_line", 0) == torn, two
    assert two["adopted"] == 2_000 and second.accounting()["balanced"], second.accounting()
