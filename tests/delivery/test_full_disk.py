"""A full disk (a 2 MiB tmpfs) under a destination, under the spool, under the write-ahead log:
every point is stored once, whole, or counted; the store is read back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tplr_metrics import MetricsLogger

from ..conftest import fill
from ..servers import InfluxDB1
from .books import drain_spool, lost

N = 8_000  # about 1.7 MB of JSONL: it fits once the filler is gone


def jsonl_ids(log_dir: Path) -> list[int]:
    """Every id in the JSONL files; a line that is not whole JSON fails the test."""
    ids = []
    for path in log_dir.rglob("metrics.jsonl"):
        for number, line in enumerate(path.read_bytes().splitlines()):
            try:
                row = json.loads(line)
            except ValueError:
                raise AssertionError(f"{path.name}:{number + 1} is a torn line: {line[:80]!r}") from None
            ids.append(int(row["fields"]["pid"]))
    return ids


def test_a_jsonl_destination_on_a_full_disk_writes_whole_lines_once(small_disk: Path, tmp_path: Path) -> None:
    """The disk fills in the middle of a batch: the part written is taken back, the batch goes to
    the spool (on another disk), and once there is room it lands whole. (Before: the part stayed
    and the retry appended the whole batch again: duplicate ids and torn lines.)"""
    log_dir = small_disk / "logs"
    filler = fill(small_disk, leave=200_000)  # room for about 1,000 of the lines
    sink = {"kind": "jsonl", "params": {"log_dir": str(log_dir)}}
    m = MetricsLogger(sinks=[sink], spool_dir=tmp_path / "spool", retry_interval=50, batch_size=1_000)
    for i in range(N):
        m.log("full", {"k": str(i % 5)}, {"pid": i, "v": float(i)})
    assert not m.flush(timeout=3)  # the disk is full: not all stored
    assert m.stats()["spooled"] > 0  # but safe in the spool
    filler.unlink()
    assert m.close(timeout=60)
    ids = jsonl_ids(log_dir)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} ids stored twice"
    assert len(ids) + lost(m.stats()) == N
    assert m.accounting()["balanced"]


@pytest.fixture(params=[False, True], ids=["spool", "durable"])
def durable(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def influx1_down(tmp_path: Path) -> Iterator[InfluxDB1]:
    """An InfluxDB whose port is chosen but which is not running yet (start() brings it up)."""
    server = InfluxDB1(tmp_path / "late")
    try:
        yield server
    finally:
        server.cleanup()


def spool_leftovers(spool: Path) -> list[Path]:
    return [p for p in spool.rglob("*") if p.name.endswith(".tmp")]


def test_a_spool_on_a_full_disk_accounts_for_every_point(
    small_disk: Path, tmp_path: Path, unique_db: str, influx1_down: InfluxDB1, durable: bool
) -> None:
    """100,000 points into a server that is down, the spool (and, durable, the WAL) on a 2 MiB
    tmpfs, close(timeout=10); then the server returns and a second logger drains the spool:
    delivered + counted lost == logged, exactly, and no temp file is left. (Before: a short write
    cut a batch file to 320 of its 1,000 lines, 83,000 points counted sink_error without any
    eviction tried, 83 empty .tmp files; a failed WAL append lost its point uncounted.)"""
    spool = small_disk / "spool"
    server = influx1_down
    first = MetricsLogger(
        url=server.url, database=unique_db, api="v1", spool_dir=spool, durable=durable, retry_interval=100
    )
    for i in range(100_000):
        first.log("spool_full", {"k": str(i % 10)}, {"v": float(i)})
    first.close(timeout=10)
    one = first.stats()
    assert first.accounting()["balanced"], first.accounting()
    assert one["logged"] == 100_000
    assert spool_leftovers(spool) == []
    server.start()
    two = drain_spool(server.url, unique_db, spool)
    stored = server.count("spool_full", "v", unique_db)
    assert stored == two["written"] == two["adopted"] == one["spooled"]
    assert stored + lost(one) == 100_000, (stored, one["dropped"], one["rejected"])
    assert one["dropped"].get("spool_evicted", 0) + one["dropped"].get("spool_write_failed", 0) > 0  # it was full
    assert spool_leftovers(spool) == []


def test_a_durable_logger_whose_wal_disk_is_full_still_delivers_and_counts(
    small_disk: Path, influx1: InfluxDB1, unique_db: str
) -> None:
    """No room for the write-ahead log at all: each point is counted wal_failed (and logged), and
    goes through the in-memory path to the server, which stores every one."""
    influx1.create_database(unique_db)
    spool = small_disk / "spool"
    m = MetricsLogger(url=influx1.url, database=unique_db, api="v1", spool_dir=spool, durable=True)
    fill(small_disk, leave=0)
    for i in range(2_000):
        m.log("wal_full", {"k": str(i % 10)}, {"v": float(i)})
    assert m.close(timeout=30)
    stats = m.stats()
    assert influx1.count("wal_full", "v", unique_db) == stats["written"] == stats["logged"] == 2_000
    assert stats["wal_failed"] == 2_000
    assert spool_leftovers(spool) == []


def test_a_batch_the_full_spool_cannot_take_is_retried_in_memory(
    small_disk: Path, influx1_down: InfluxDB1, unique_db: str
) -> None:
    """Server down and the spool's disk full to the last byte for a second: the batches are
    retried in memory (the spool tried again before each retry), so when the server returns,
    all 2,000 land and nothing is counted lost. (Before: all 2,000 counted spool_write_failed.)"""
    spool = small_disk / "spool"
    m = MetricsLogger(
        url=influx1_down.url, database=unique_db, api="v1", spool_dir=spool, retry_interval=100, max_retry_delay=300
    )
    filler = fill(small_disk, leave=0)
    for i in range(2_000):
        m.log("retried_in_memory", {"k": str(i % 10)}, {"v": float(i)})
    time.sleep(1.0)
    influx1_down.start()
    assert m.close(timeout=30), m.stats()
    filler.unlink()
    stats = m.stats()
    assert influx1_down.count("retried_in_memory", "v", unique_db) == stats["written"] == 2_000, stats
    assert stats["dropped_total"] == 0 and m.accounting()["balanced"]
    assert spool_leftovers(spool) == []
