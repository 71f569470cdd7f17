"""The local store as the logger's destination: chosen with no server, next to InfluxDB, run
statuses, bad files and concurrent processes. Every assertion reads the store file back."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import ConfigurationError, MetricsLogger, Point, Rejection, WriteResult
from tplr_metrics.sinks.local import LocalStoreSink
from tplr_metrics.sinks.multiplex import MultiplexSink
from tplr_metrics.store.database import Store

from ..memory_sink import MemorySink
from ..servers import InfluxDB1

REPO = Path(__file__).resolve().parents[2]


def store_rows(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def log_points(m: MetricsLogger, n: int, measurement: str = "validator_scores") -> None:
    for i in range(n):
        m.log(measurement, {"eval_uid": i % 16, "window": i // 16}, {"score": i / 7, "n": i})


def test_no_server_means_the_local_store(isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tplr_metrics")
    config = {"netuid": 3}
    m = MetricsLogger(role="validator", uid=7, prefix="V", group="g", job_type="validation", config=config)
    path = isolated_env / "metrics.sqlite"
    assert isinstance(m.sink, LocalStoreSink) and m.sink.path == path
    assert any(str(path) in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    log_points(m, 500)
    assert m.close(10)
    assert m.stats()["written"] == 500
    (run,) = store_rows(
        path, "SELECT run_id, status, role, uid, prefix, group_name, job_type, version, config, ended_at FROM runs"
    )
    assert run[:8] == (m.runtime_id, "ok", "validator", "7", "V", "g", "validation", m.version)
    assert '"config_netuid": "3"' in run[8] and run[9] is not None
    assert store_rows(path, "SELECT count(*), min(measurement) FROM points") == [(500, "Vvalidator_scores")]
    assert store_rows(path, "SELECT DISTINCT json_extract(tags, '$.runtime_id') FROM points") == [(m.runtime_id,)]


def test_sinks_env_keeps_a_local_copy_next_to_influxdb(
    influx1: InfluxDB1, unique_db: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFLUXDB_URL", influx1.url)
    monkeypatch.setenv("INFLUXDB_API", "v1")
    monkeypatch.setenv("INFLUXDB_DATABASE", unique_db)
    monkeypatch.setenv("TPLR_METRICS_SINKS", "influxdb, local")
    m = MetricsLogger(role="miner", uid=1)
    assert isinstance(m.sink, MultiplexSink) and m.server is not None
    log_points(m, 300)
    assert m.close(20)
    assert influx1.count("validator_scores", "score", unique_db) == 300
    assert store_rows(isolated_env / "metrics.sqlite", "SELECT count(*) FROM points") == [(300,)]
    assert store_rows(isolated_env / "metrics.sqlite", "SELECT status FROM runs") == [("ok",)]


def test_sinks_argument_takes_names_and_sink_objects(isolated_env: Path) -> None:
    memory = MemorySink()
    m = MetricsLogger(sinks=["local", memory], flush_interval=50)
    log_points(m, 100)
    assert m.close(10)
    assert len(memory.points) == 100 and memory.ended == ["ok"]
    assert store_rows(isolated_env / "metrics.sqlite", "SELECT count(*) FROM points") == [(100,)]


@pytest.mark.parametrize(
    ("sinks", "env", "message"),
    [
        (["local", "kafka"], {}, "unknown sink 'kafka'"),
        (None, {"TPLR_METRICS_SINKS": "local,nope"}, "TPLR_METRICS_SINKS: unknown sink 'nope'"),
        (["influxdb"], {}, "names influxdb, but no InfluxDB server configured"),
        (["local", "local"], {}, "named twice"),
        ([42], {}, "takes names"),
    ],
)
def test_bad_sink_choices_are_clear_errors(
    sinks: Any, env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=message):
        MetricsLogger(sinks=sinks)


class ScriptedSink:
    """A real sink whose answers are given up front (or that raises): multiplex semantics."""

    def __init__(self, name: str, answer: Any) -> None:
        self.name = name
        self.answer = answer
        self.batches = 0

    def write(self, points: Sequence[Point]) -> WriteResult:
        self.batches += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        result: WriteResult = self.answer(len(points))
        return result

    def flush(self) -> None:
        return None

    def close(self) -> None:
        raise OSError("close failed")


def test_multiplex_stores_a_point_only_when_every_child_did() -> None:
    points = [Point("m", {}, {"f": float(i)}, i) for i in range(6)]
    stored = ScriptedSink("a", lambda n: WriteResult.all_stored(n, nbytes=10))
    partial = ScriptedSink(
        "b", lambda n: WriteResult(stored=n - 3, rejected=[Rejection(0, "bad_line", "no")], retry=[1, 2])
    )
    unnamed = ScriptedSink("c", lambda n: WriteResult(stored=n - 1, rejected=[Rejection(None, "bad_request", "x")]))
    sink = MultiplexSink([stored, partial, unnamed])
    result = sink.write(points)
    assert sorted(result.retry) == [1, 2]
    assert [(r.index, r.cause) for r in result.rejected] == [(0, "bad_line"), (None, "bad_request")]
    assert result.rejected[0].reason.startswith("b: ")
    assert result.stored == 2 and result.stored + len(result.rejected) + len(result.retry) == 6
    assert "b:" in (result.error or "") and result.nbytes == 10
    sink.close()  # a child failing to close does not stop the others
    assert sink.child_counts[0]["errors"] == 1 and sink.child_counts[1]["rejected"] == 1


def test_a_raising_child_never_stops_the_local_copy(isolated_env: Path) -> None:
    broken = ScriptedSink("broken", RuntimeError("boom"))
    m = MetricsLogger(sinks=["local", broken], flush_interval=50, retry_interval=50, max_retry_time=300)
    log_points(m, 200)
    assert m.close(1) is False  # the broken lane could not deliver
    lanes = m.stats()["lanes"]
    assert lanes["local"]["written"] == 200 and lanes["broken"]["written"] == 0
    assert store_rows(isolated_env / "metrics.sqlite", "SELECT count(*) FROM points") == [(200,)]  # once
    assert lanes["broken"]["spooled"] == 200 and lanes["local"]["spooled"] == 0  # kept for the next process
    assert m.accounting()["balanced"]


def test_a_corrupt_store_drops_counted_with_one_error_naming_the_file(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    isolated_env.mkdir(parents=True)
    path = isolated_env / "metrics.sqlite"
    path.write_bytes(b"\x00garbage, not SQLite" * 500)
    m = MetricsLogger(flush_interval=50, batch_size=50)
    log_points(m, 300)
    assert m.close(10) is False  # all refused: close() says so
    stats = m.stats()
    assert stats["rejected"] == {"store_corrupt": 300} and stats["written"] == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and str(path) in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    assert path.read_bytes().startswith(b"\x00garbage")  # never overwritten


def test_an_unwritable_store_is_retried_then_dropped_counted(
    isolated_env: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated_env.parent.mkdir(parents=True, exist_ok=True)
    blocker = isolated_env.parent / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("TPLR_METRICS_HOME", str(blocker / "home"))  # its parent is a file
    m = MetricsLogger(flush_interval=50, retry_interval=50, max_retry_time=400)
    log_points(m, 100)
    started = time.monotonic()
    m.close(10)
    assert time.monotonic() - started < 5
    stats = m.stats()
    assert stats["dropped"] == {"retries_exhausted": 100} and stats["retried"] >= 100
    assert str(blocker / "home" / "metrics.sqlite") in (stats["last_error"] or "")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "cannot be written" in r.getMessage()]
    assert len(errors) == 1


def script(body: str) -> str:
    """A python -c program that imports this checkout's tplr_metrics."""
    return f"import sys\nsys.path.insert(0, {str(REPO)!r})\n" + textwrap.dedent(body)


def run_script(body: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script(body), *args], capture_output=True, text=True, timeout=timeout)


def test_run_status_records_how_the_process_ended(isolated_env: Path) -> None:
    scripts = {
        "ok": "m.log('x', {}, {'f': 1})\n",  # never closed: the atexit hook closes it
        "failed": "m.log('x', {}, {'f': 1})\nraise RuntimeError('training crashed')\n",
        "cancelled": "m.log('x', {}, {'f': 1})\nraise KeyboardInterrupt\n",
    }
    for expected, tail in scripts.items():
        proc = run_script(
            "import sys\nfrom tplr_metrics import MetricsLogger\n"
            "seen = []\nsys.excepthook = lambda *a: seen.append(a[0].__name__) or print('hook', a[0].__name__)\n"
            f"m = MetricsLogger(role={expected!r})\n" + tail
        )
        if expected == "failed":
            assert "hook RuntimeError" in proc.stdout  # the previous hook still runs
        rows = store_rows(isolated_env / "metrics.sqlite", "SELECT status FROM runs WHERE role = ?", (expected,))
        assert rows == [(expected,)], proc.stderr
        assert store_rows(isolated_env / "metrics.sqlite", "SELECT count(*) FROM points") != [(0,)]


def test_sigterm_flushes_and_records_cancelled_only_where_the_default_was(isolated_env: Path) -> None:
    body = """
        import signal, sys, time
        from tplr_metrics import MetricsLogger
        if sys.argv[1] == "custom":
            # No print() in the handler: the signal may land inside print("ready") (reentrant stdout).
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
        m = MetricsLogger(role=sys.argv[1], flush_interval=60_000)  # nothing is flushed before exit
        for i in range(1000):
            m.log("x", {}, {"i": i})
        print("ready", flush=True)
        time.sleep(60)
    """
    for kind, code in (("default", 128 + signal.SIGTERM), ("custom", 7)):
        proc = subprocess.Popen([sys.executable, "-c", script(body), kind], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == code
        status = "cancelled" if kind == "default" else "ok"  # a handler of the app's own: not ours to judge
        path = isolated_env / "metrics.sqlite"
        assert store_rows(path, "SELECT status FROM runs WHERE role = ?", (kind,)) == [(status,)]
        (run_id,) = store_rows(path, "SELECT id FROM runs WHERE role = ?", (kind,))[0]
        assert store_rows(path, "SELECT count(*) FROM points WHERE run = ?", (run_id,)) == [(1000,)]


def test_two_processes_logging_into_one_store_lose_nothing(isolated_env: Path) -> None:
    body = """
        import sys
        from tplr_metrics import MetricsLogger
        m = MetricsLogger(role=sys.argv[1], batch_size=200, flush_interval=20)
        for i in range(15_000):
            m.log("validator_scores", {"eval_uid": i % 256, "window": i // 256}, {"score": i / 3, "n": i})
        m.close(60)
        s = m.stats()
        print(s["written"], s["dropped_total"], s["rejected_total"])
    """
    program = script(body)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", program, role], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for role in ("a", "b")
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for (out, err), proc in zip(outputs, procs, strict=True):
        assert proc.returncode == 0, err
        assert out.split() == ["15000", "0", "0"], err
        assert "locked" not in err
    path = isolated_env / "metrics.sqlite"
    counts = store_rows(path, "SELECT r.role, count(p.id) FROM runs r JOIN points p ON p.run = r.id GROUP BY r.role")
    assert sorted(counts) == [("a", 15_000), ("b", 15_000)]
    assert store_rows(path, "SELECT status FROM runs") == [("ok",), ("ok",)]


def test_a_forked_child_is_a_run_of_its_own(isolated_env: Path) -> None:
    body = """
        import os
        from tplr_metrics import MetricsLogger
        m = MetricsLogger(role="parent", flush_interval=20)
        m.log("before", {}, {"i": 1})
        m.flush(10)
        pid = os.fork()
        if pid == 0:
            m.log("child", {}, {"i": 2})
            m.close(10)
            os._exit(0)
        os.waitpid(pid, 0)
        m.log("after", {}, {"i": 3})
        m.close(10)
    """
    proc = run_script(body)
    assert proc.returncode == 0, proc.stderr
    path = isolated_env / "metrics.sqlite"
    assert store_rows(path, "SELECT measurement FROM points ORDER BY id") == [("before",), ("child",), ("after",)]
    # The child has its own run id (and counters): two runs, each ended ok by its own process.
    assert store_rows(path, "SELECT status, count(*) FROM runs") == [("ok", 2)]
    assert len(store_rows(path, "SELECT DISTINCT run FROM points WHERE measurement != 'child'")) == 1
    assert store_rows(path, "SELECT count(DISTINCT run) FROM points") == [(2,)]


def test_children_forked_while_the_parent_writes_its_store_write_at_once(isolated_env: Path) -> None:
    """SQLite must not be mid-transaction in another thread at fork(): the child's copy of its
    lock state then says "locked" and the child waited out its 30 s busy timeout, twice (one
    fork in six took 60 s to exit). Eight children forked while a parent thread writes."""
    body = """
        import multiprocessing as mp, threading, time
        from tplr_metrics import MetricsLogger
        m = MetricsLogger(role="parent", flush_interval=5)
        stop = threading.Event()

        def busy():
            i = 0
            while not stop.is_set():
                m.log("parent", {}, {"i": i}); i += 1
                if i % 50 == 0:
                    time.sleep(0.001)

        def child(k):
            for i in range(100):
                m.log("child", {"k": str(k)}, {"i": i})  # no close(): multiprocessing's finalizer runs

        writer = threading.Thread(target=busy); writer.start(); time.sleep(0.5)
        worst = 0.0
        for k in range(8):
            started = time.monotonic()
            p = mp.get_context("fork").Process(target=child, args=(k,)); p.start(); p.join(45)
            assert p.exitcode == 0, p.exitcode
            worst = max(worst, time.monotonic() - started)
        stop.set(); writer.join()
        assert m.close(30)
        print(round(worst, 2), m.stats()["logged"])
    """
    proc = run_script(body, timeout=240)
    assert proc.returncode == 0, proc.stderr
    worst, parent_logged = proc.stdout.split()
    assert float(worst) < 10, f"a child took {worst} s to exit"  # the busy timeout is 30 s
    path = isolated_env / "metrics.sqlite"
    assert store_rows(path, "SELECT count(*) FROM points WHERE measurement = 'child'") == [(800,)]
    assert store_rows(path, "SELECT count(*) FROM points WHERE measurement = 'parent'") == [(int(parent_logged),)]


def test_no_side_effects_at_import() -> None:
    proc = run_script(
        """
        import signal, sys, threading
        hook = sys.excepthook
        import tplr_metrics, tplr_metrics.store.database, tplr_metrics.sinks.local, tplr_metrics.run_status
        import tplr_metrics.commands.runs, tplr_metrics.commands.watch, tplr_metrics.commands.replay
        assert sys.excepthook is hook and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert threading.active_count() == 1
        print("clean")
        """
    )
    assert proc.stdout.strip() == "clean", proc.stderr
    assert not os.environ.get("TPLR_METRICS_SINKS")


def test_a_process_killed_mid_write_leaves_a_readable_store(isolated_env: Path) -> None:
    body = """
        from tplr_metrics import MetricsLogger
        m = MetricsLogger(role="killed", batch_size=100, flush_interval=5)
        print("ready", flush=True)
        i = 0
        while True:
            m.log("x", {"k": i % 7}, {"i": i})
            i += 1
    """
    proc = subprocess.Popen([sys.executable, "-c", script(body)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    path = isolated_env / "metrics.sqlite"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and store_rows(path, "SELECT count(*) FROM points") < [(2_000,)]:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler, no atexit, maybe mid-transaction
    proc.wait(10)
    assert store_rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert store_rows(path, "SELECT count(*) FROM points")[0][0] >= 2_000
    assert store_rows(path, "SELECT status FROM runs") == [("running",)]  # nobody could say otherwise
    with Store(path) as store:  # and a logger can go on writing into it
        assert store.insert_points(None, [Point("after", {}, {"f": 1.0}, 1)])[0] == 1
