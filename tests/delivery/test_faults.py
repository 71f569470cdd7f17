"""Never lose a point: outages, slow and refusing servers, exit and crash, against real servers.

Each test is bounded in time and stops what it started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tplr_metrics import MetricsLogger

from ..fault_proxy import Fault, fault_proxy
from ..servers import InfluxDB1, free_port
from .books import spool_files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_influx(tmp_path: Path) -> Iterator[InfluxDB1]:
    """A server of this test's own, which it may kill and restart."""
    server = InfluxDB1(tmp_path / "influx")
    server.start()
    yield server
    server.cleanup()


def logger_for(url: str, db: str, **kwargs: Any) -> MetricsLogger:
    kwargs.setdefault("flush_interval", 200)
    kwargs.setdefault("retry_interval", 200)
    kwargs.setdefault("max_retry_delay", 2_000)
    return MetricsLogger(url=url, database=db, api="v1", **kwargs)


def log_steadily(m: MetricsLogger, n: int, seconds: float, measurement: str = "steady") -> list[float]:
    """Log n points spread over about `seconds`; returns each call's duration."""
    durations = []
    per_chunk = max(1, n // 100)
    for i in range(n):
        t0 = time.perf_counter()
        m.log(measurement, {"i": str(i)}, {"v": float(i)})
        durations.append(time.perf_counter() - t0)
        if i % per_chunk == per_chunk - 1:
            time.sleep(seconds / 100)
    return durations


def test_1_server_killed_mid_stream_and_restarted(own_influx: InfluxDB1, unique_db: str) -> None:
    own_influx.create_database(unique_db)
    with fault_proxy(own_influx.port) as proxy:
        m = logger_for(proxy.url, unique_db)
        writer = threading.Thread(target=log_steadily, args=(m, 10_000, 8.0))
        writer.start()
        time.sleep(2.0)
        own_influx.kill()  # SIGKILL, mid-stream
        time.sleep(5.0)
        own_influx.start()  # same data dir, same port
        writer.join()
        assert m.close(timeout=60)
        stats = m.stats()
        assert stats["spooled_total"] > 0, "the outage never reached the spool"
        # No batch the server acknowledged was sent again.
        assert proxy.log.acked_lines == 10_000
    assert own_influx.count("steady", "v", unique_db) == 10_000
    assert stats["written"] == 10_000 and stats["dropped_total"] == 0


def test_2_server_down_at_start_comes_up_10_s_later(tmp_path: Path, unique_db: str) -> None:
    server = InfluxDB1(tmp_path / "late")  # port chosen, not started
    try:
        t0 = time.perf_counter()
        m = logger_for(server.url, unique_db)
        built_in = time.perf_counter() - t0
        started = time.monotonic()
        durations = log_steadily(m, 2_000, 4.0)
        time.sleep(max(0.0, 10.0 - (time.monotonic() - started)))
        server.start()
        assert m.close(timeout=60)
        assert server.count("steady", "v", unique_db) == 2_000
        # Neither the constructor nor log() waited for the server (bounds far above their cost).
        assert built_in < 1.0 and max(durations) < 0.25
    finally:
        server.cleanup()


def test_3_slow_server_keeps_callers_fast_and_memory_bounded(influx1: InfluxDB1, unique_db: str) -> None:
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.delay = 2.0
        m = logger_for(proxy.url, unique_db, batch_size=1_000, max_queue_size=20_000)
        rss_before = psutil.Process().memory_info().rss
        durations = log_steadily(m, 5_000, 3.0)
        assert m.close(timeout=60)
        rss_growth = psutil.Process().memory_info().rss - rss_before
    assert influx1.count("steady", "v", unique_db) == 5_000
    durations.sort()
    assert durations[len(durations) // 2] < 0.001  # the caller never waits for the 2 s answers
    assert rss_growth < 100 * 1024 * 1024


def test_4_429_with_retry_after_and_503_are_honoured(influx1: InfluxDB1, unique_db: str) -> None:
    from ..fault_proxy import Fault

    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.faults = [Fault(429, retry_after=2, times=1), Fault(503, times=2)]
        m = logger_for(proxy.url, unique_db)
        for i in range(3_000):
            m.log("throttled", {"i": str(i)}, {"v": 1.0})
        assert m.close(timeout=60)
        started, answered = proxy.log.started, proxy.log.answered
    assert influx1.count("throttled", "v", unique_db) == 3_000
    assert answered[:3] == [429, 503, 503]
    assert started[1] - started[0] >= 1.9  # Retry-After: 2 was honoured
    assert m.stats()["retried"] > 0


def run_child(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_5a_exit_without_close_delivers_everything(influx1: InfluxDB1, unique_db: str, isolated_env: Path) -> None:
    result = run_child(
        f"""
        from tplr_metrics import MetricsLogger
        m = MetricsLogger(url={influx1.url!r}, database={unique_db!r}, api="v1", flush_interval=60_000)
        for i in range(5_000):
            m.log("unclosed", {{"i": str(i)}}, {{"v": float(i)}})
        # no close(): the interpreter exits with 5,000 points in the queue
        """,
        {"TPLR_METRICS_HOME": str(isolated_env)},
    )
    assert result.returncode == 0, result.stderr
    assert influx1.count("unclosed", "v", unique_db) == 5_000


def sigkill_after(code: str, marker: str, home: Path) -> str:
    """Run ``code`` in a child process, SIGKILL it once it prints a line starting with ``marker``;
    that line."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "TPLR_METRICS_HOME": str(home), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line.startswith(marker), line
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        return line
    finally:
        if child.poll() is None:
            child.kill()


def test_5b_sigkill_in_durable_mode_then_the_next_process_replays(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path
) -> None:
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.delay = 30.0  # nothing gets acknowledged before the kill
        sigkill_after(
            f"""
                    import sys, time
                    from tplr_metrics import MetricsLogger
                    m = MetricsLogger(url={proxy.url!r}, database={unique_db!r}, api="v1", durable=True)
                    for i in range(3_000):
                        m.log("durable", {{"i": str(i)}}, {{"v": float(i)}})
                    print("logged", flush=True)
                    time.sleep(60)
                    """,
            "logged",
            isolated_env,
        )
        assert influx1.count("durable", "v", unique_db) == 0
        # The next process for the same destination picks up the dead one's files.
        proxy.delay = 0.0
        with logger_for(proxy.url, unique_db) as m:
            assert m.flush(timeout=30)
    assert influx1.count("durable", "v", unique_db) == 3_000
    assert m.stats()["adopted"] >= 3_000


def test_5c_sigkill_after_spooling_in_durable_mode_replays_each_point_once(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path
) -> None:
    """Killed after its batches went to batch files but before the WAL segment holding the same
    points was retired: the next process must adopt each point once, not once per file."""
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.faults.append(Fault(503, times=1_000_000))  # the destination refuses until the kill
        sigkill_after(
            f"""
                    import time
                    from tplr_metrics import MetricsLogger
                    m = MetricsLogger(url={proxy.url!r}, database={unique_db!r}, api="v1", durable=True,
                                      durable_sync_interval=60, flush_interval=50, retry_interval=50)
                    for i in range(3_000):
                        m.log("durable_twice", {{"i": str(i)}}, {{"v": float(i)}})
                    while m.stats()["spooled"] < 3_000:
                        time.sleep(0.05)
                    print("spooled", flush=True)
                    time.sleep(60)
                    """,
            "spooled",
            isolated_env,
        )
        kinds = sorted(p.name.split("-")[1] for p in isolated_env.rglob("*.jsonl"))
        assert "wal.jsonl" in kinds and "batch.jsonl" in kinds, kinds  # the points are in both
        proxy.faults.clear()
        m = MetricsLogger(url=proxy.url, database=unique_db, api="v1", durable=True)
        m.log("durable_twice", {"i": "new"}, {"v": -1.0})
        assert m.close(30)
    assert influx1.count("durable_twice", "v", unique_db) == 3_001
    stats = m.stats()
    assert (stats["adopted"], stats["written"]) == (3_000, 3_001), stats
    assert m.accounting()["balanced"]


def test_5e_points_refused_by_a_full_queue_in_durable_mode_stay_lost_after_sigkill(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path
) -> None:
    """A durable log() whose point the full queue refused (counted queue_full) must not leave it
    in the write-ahead log: the next process delivered those too (stored > logged - counted lost)."""
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.delay = 30.0  # the one writer hangs in its first request; the queue fills
        line = sigkill_after(
            f"""
                    from tplr_metrics import MetricsLogger
                    m = MetricsLogger(url={proxy.url!r}, database={unique_db!r}, api="v1", durable=True,
                                      max_queue_size=1_000, batch_size=100, max_workers=1)
                    for i in range(20_000):
                        m.log("refused", {{"i": str(i)}}, {{"v": float(i)}})
                    s = m.stats()
                    print("lost", s["dropped_total"] + s["rejected_total"], s["logged"], flush=True)
                    import time; time.sleep(60)
                    """,
            "lost",
            isolated_env,
        )
        lost, logged = (int(x) for x in line.split()[1:])
        assert logged == 20_000 and lost > 10_000, line  # most were refused
        proxy.delay = 0.0
        m = MetricsLogger(url=proxy.url, database=unique_db, api="v1", durable=True)
        assert m.close(30)
    assert influx1.count("refused", "v", unique_db) == logged - lost == m.stats()["adopted"]


def test_5d_corrupt_lines_in_a_dead_process_spool_are_quarantined_and_the_rest_lands(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path
) -> None:
    """Two bad lines (valid JSON of the wrong shape, a null value) appended to a SIGKILLed durable
    process's write-ahead log: the other 500 points and 100 new ones land; the two lines are in
    the dead letter with cause corrupt_spool_line. (They made the encoder raise, and the file was
    retried for ever ahead of every later batch.)"""
    influx1.create_database(unique_db)
    with fault_proxy(influx1.port) as proxy:
        proxy.faults.append(Fault(503, times=1_000_000))
        sigkill_after(
            f"""
                    import time
                    from tplr_metrics import MetricsLogger
                    m = MetricsLogger(url={proxy.url!r}, database={unique_db!r}, api="v1", durable=True,
                                      durable_sync_interval=60, retry_interval=50)
                    for i in range(500):
                        m.log("quarantine", {{"i": str(i)}}, {{"v": float(i)}})
                    print("logged", flush=True)
                    time.sleep(60)
                    """,
            "logged",
            isolated_env,
        )
        (wal,) = list(isolated_env.rglob("*-wal.jsonl"))
        with wal.open("ab") as f:
            f.write(b'["quarantine",["not","a","dict"],{"v":1.0},1]\n["quarantine",{},{"v":null},2]\n')
        proxy.faults.clear()
        m = MetricsLogger(url=proxy.url, database=unique_db, api="v1")
        for i in range(100):
            m.log("quarantine", {"i": f"new{i}"}, {"v": float(i)})
        m.close(30)  # False when the quarantine fell inside it: two points were refused
    assert influx1.count("quarantine", "v", unique_db) == 600
    stats = m.stats()
    assert stats["rejected"] == {"corrupt_spool_line": 2} and stats["adopted"] == 502, stats
    assert m.accounting()["balanced"], m.accounting()
    letters = [
        json.loads(line) for line in (isolated_env / "dead_letter" / f"{m.runtime_id}.jsonl").read_text().splitlines()
    ]
    assert [(d["cause"], d["line"]) for d in letters] == [
        ("corrupt_spool_line", '["quarantine",["not","a","dict"],{"v":1.0},1]'),
        ("corrupt_spool_line", '["quarantine",{},{"v":null},2]'),
    ]
    assert all(re.search(r"-batch\.from-[0-9a-f-]+\.jsonl$", d["reason"]) for d in letters)  # renamed, run kept


LONG_RUNTIME_ID = "sweep/" + "lr=0.001,batch=512,ü," * 15  # 321 characters, 351 bytes


@pytest.mark.parametrize(
    ("recorded", "runtime_id"),
    [(True, None), (False, None), (True, LONG_RUNTIME_ID)],
    ids=["run-recorded", "run-never-recorded", "long-runtime-id"],
)
def test_5f_points_recovered_from_a_killed_durable_run_keep_their_run(
    isolated_env: Path, recorded: bool, runtime_id: str | None
) -> None:
    """A durable run whose 300 points never reached the local store (another connection held
    it locked) is SIGKILLed; the next logger stores them under the dead run, not its own, and
    the dead run says crashed in `tplr-metrics runs --json`. (Before: under the recovering run,
    and the dead one stayed running for ever.) A runtime_id too long for a file name is
    shortened in the spool and found again from its points (before: ENAMETOOLONG, no spool)."""
    isolated_env.mkdir(mode=0o700)
    store = isolated_env / "metrics.sqlite"
    line = sigkill_after(
        f"""
                import sqlite3
                from tplr_metrics import MetricsLogger
                lock = sqlite3.connect({str(store)!r}, isolation_level=None)
                if not {recorded!r}:
                    lock.execute("BEGIN EXCLUSIVE")  # before the logger records its run
                sink = {{"kind": "local", "params": {{"path": {str(store)!r}, "busy_timeout_s": 0.2}}}}
                m = MetricsLogger(sinks=[sink], durable=True, retry_interval=60_000, runtime_id={runtime_id!r})
                if {recorded!r}:
                    lock.execute("BEGIN EXCLUSIVE")  # the run is recorded (running); its points are not
                for i in range(300):
                    m.log("attributed", {{"i": str(i)}}, {{"v": float(i)}})
                print("logged", m.runtime_id.encode().hex(), flush=True)
                import time; time.sleep(60)
                """,
        "logged",
        isolated_env,
    )
    dead = bytes.fromhex(line.split()[1]).decode()
    assert runtime_id is None or dead == runtime_id
    m = MetricsLogger(sinks=[{"kind": "local", "params": {"path": str(store)}}])
    m.log("attributed", {"i": "recovering"}, {"v": -1.0})
    assert m.close(timeout=30)
    assert m.stats()["adopted"] == 300 and m.stats()["written"] == 301
    listed = subprocess.run(
        [sys.executable, "-m", "tplr_metrics.cli", "runs", "--json", "--store", str(store)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    runs = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert (runs[dead]["status"], runs[dead]["points"]) == ("crashed", 300), runs[dead]
    assert (runs[m.runtime_id]["status"], runs[m.runtime_id]["points"]) == ("ok", 1)


def test_6_one_field_type_conflict_in_5000_dead_letters_one(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path
) -> None:
    influx1.create_database(unique_db)
    assert influx1.write(unique_db, b"conflicted f=0.5 1")[0] == 204  # f is a float field
    with logger_for(influx1.url, unique_db, batch_size=5_000, flush_interval=60_000) as m:
        for i in range(5_000):
            value: Any = "not a number" if i == 1234 else float(i)
            m.log("conflicted", {"i": str(i)}, {"f": value})
    assert influx1.count("conflicted", "f", unique_db) == 5_000  # 4,999 + the seeded one
    stats = m.stats()
    assert stats["written"] == 4_999 and stats["rejected"] == {"field_type_conflict": 1}
    letters = [json.loads(line) for line in (isolated_env / "dead_letter" / f"{m.runtime_id}.jsonl").open()]
    assert len(letters) == 1
    assert letters[0]["point"][1]["i"] == "1234" and "field type conflict" in letters[0]["reason"]
    assert oct((isolated_env / "dead_letter" / f"{m.runtime_id}.jsonl").stat().st_mode & 0o777) == "0o600"


def test_7_a_million_points_with_the_server_down_stay_bounded(isolated_env: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    m = MetricsLogger(
        url=closed,
        database="nowhere",
        api="v1",
        max_queue_size=50_000,
        spool_max_bytes=2 * 1024 * 1024,
        retry_interval=1_000,
        health_every=0,  # counts every point: no health point may join the million
    )
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak = rss_before
    for i in range(1_000_000):
        m.log("outage", {"i": str(i % 1000)}, {"v": float(i)})
        if i % 50_000 == 0:
            peak = max(peak, process.memory_info().rss)
    assert m.flush(timeout=3) is False
    peak = max(peak, process.memory_info().rss)
    m.close(timeout=2)
    stats = m.stats()
    assert stats["logged"] == 1_000_000
    accounted = stats["written"] + stats["rejected_total"] + stats["dropped_total"] + stats["spooled"]
    assert accounted == 1_000_000
    assert stats["dropped"].get("spool_evicted", 0) > 0
    spool_bytes = sum(p.stat().st_size for p in (isolated_env / "spool").rglob("*") if p.is_file())
    assert spool_bytes <= 2 * 1024 * 1024 + 1_000_000  # the bound, plus at most one batch file
    assert peak - rss_before < 200 * 1024 * 1024  # the documented bound for max_queue_size=50,000


def test_8_eight_processes_into_one_server_lose_nothing(influx1: InfluxDB1, unique_db: str, isolated_env: Path) -> None:
    code = f"""
        import sys
        from tplr_metrics import MetricsLogger
        with MetricsLogger(url={influx1.url!r}, database={unique_db!r}, api="v1", flush_interval=100) as m:
            for i in range(2_500):
                m.log("processes", {{"proc": sys.argv[1], "i": str(i)}}, {{"v": 1.0}})
        """
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(n)],
            env={**os.environ, "TPLR_METRICS_HOME": str(isolated_env), "PYTHONPATH": str(REPO)},
        )
        for n in range(8)
    ]
    for child in children:
        assert child.wait(120) == 0
    assert influx1.count("processes", "v", unique_db) == 20_000


def test_replay_spool_delivers_what_a_dead_process_left(influx1: InfluxDB1, unique_db: str, tmp_path: Path) -> None:
    """`tplr-metrics replay --spool DIR` picks up a spool whose owner is gone."""
    spool_root = tmp_path / "spool"
    m = logger_for(f"http://127.0.0.1:{free_port()}", unique_db, spool_dir=spool_root)
    for i in range(1_500):
        m.log("left_behind", {"i": str(i)}, {"v": float(i)})
    assert m.close(timeout=1) is False  # nobody listening: everything stays in the spool
    assert m.stats()["spooled"] == 1_500
    influx1.create_database(unique_db)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tplr_metrics.cli",
            "replay",
            "--spool",
            str(spool_root),
            "--to",
            influx1.url,
            "--api",
            "v1",
            "--database",
            unique_db,
            "--yes",  # it was logged for a server on another port
            "--json",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["written"] == 1_500 and summary["left_in_spool"] == 0
    assert influx1.count("left_behind", "v", unique_db) == 1_500
    assert not spool_files(spool_root)
