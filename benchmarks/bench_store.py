"""Issue 3 benchmark: insert throughput of the local store, with readers running at the same time.

Run: ``python benchmarks/bench_store.py [--points N] [--batch N] [--out FILE]``. It writes
Templar's ``validator_scores`` shape (the 7 standard tags uid, prefix, version, runtime_id, role,
group, job_type, plus eval_uid, window and global_step tags; 6 float fields) into a fresh store
in a temp dir through ``LocalStoreSink.write`` (the path a logger's pipeline takes: one
transaction per batch), while a reader process polls the store as ``tplr-metrics watch`` and
``runs`` do (new points since the last id, point counts per run, the runs listing).

Figures (one JSON document on stdout and in benchmarks/results/store.json):

* ``points_per_s``: the headline, sink writes while the reader polls every 50 ms (20 times as
  often as ``watch``'s default; target >= 100,000);
* ``points_per_s_busy_reader``: the same with the reader querying back to back, which on a
  2-core machine mostly measures the two processes sharing the CPU;
* ``points_per_s_stdlib_json``: the same without orjson (the fallback encoder);
* ``points_per_s_no_reader``: the same with no reader, to show what the reader costs;
* anchor ``raw_sqlite_points_per_s``: plain ``executemany`` of the same rows encoded beforehand
  into the same schema and indexes: the floor SQLite sets, measured in the same run;
* ``logger_points_per_s``: end to end, ``MetricsLogger.log()`` to points committed (includes
  the pipeline's value rules and tag building, which run before the sink).

With ``--fill N`` (10,000,000 by default; 0 skips it) it also fills one store with N points, a
1M-point run first and the rest in later runs, through ``LocalStoreSink.write`` (the points are
generated a batch at a time, outside the clock), and reports, in ``fill``:

* ``points_per_s_by_million``: the insert rate of each million (target >= 150,000 throughout);
* ``one_run``: reading the old run the way ``export``/``plot``/``replay`` do (``iter_points``),
  ``export`` itself (CSV to /dev/null) and plot's read of it (``read_store_run``, with the
  garbage collector paused as plot does), each against one ordered query of that run decoded
  the same way into a list (target: reading <= 1.2x of it); plot's also against that query
  with the collector paused too (``plot_read_ratio_both_paused``);
* ``watch_poll``: wall and CPU seconds of one ``watch --run-id`` poll of the old run (nothing
  new: the cost of a poll is what the run gained since, not what the store holds);
* ``refill`` (``--refill N``, 4,000,000 by default): the oldest newer runs, about N points, are
  deleted and N points written again, into the pages SQLite freed (its freelist): trees as large
  as in the fill's last millions, but no new memory. Its ``points_per_s_by_million``;
* ``fresh_memory_s_per_512_mib`` (``--fresh-memory-gib G``, 6 by default): seconds to touch each
  512 MiB of new memory, up to G GiB: what the machine charges for the new pages a growing file
  needs. On the development machine (a sandbox) pages past about 2 GiB cost about 10x.

``TMPDIR=/dev/shm`` puts the store on a tmpfs (the disk's own costs out of the figures).

Every figure is the best of ``--repeat`` runs (the machine is shared; best-of is the least noisy).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import tplr_metrics.store.database as store_module  # noqa: E402
from tplr_metrics import MetricsLogger  # noqa: E402
from tplr_metrics.encoding.points import Point  # noqa: E402
from tplr_metrics.sinks.base import RunInfo  # noqa: E402
from tplr_metrics.sinks.local import LocalStoreSink  # noqa: E402

FIELDS = ("gradient_score", "binary_indicator", "binary_moving_avg", "sync_score", "final_score", "weight")
PEERS = 256
TARGET_POINTS_PER_S = 100_000


def standard_tags(runtime_id: str) -> dict[str, str]:
    return {
        "uid": "7",
        "prefix": "V",
        "version": "2.1.3",
        "runtime_id": runtime_id,
        "role": "validator",
        "group": "validator",
        "job_type": "validation",
    }


def make_points(n: int, runtime_id: str, seed: int = 1) -> list[Point]:
    """validator_scores as the sink receives it: caller tags first, then the standard ones."""
    rng = random.Random(seed)
    std = standard_tags(runtime_id)
    start = time.time_ns()
    points = []
    for i in range(n):
        window = 1_000 + i // PEERS
        tags = {"eval_uid": str(i % PEERS), "window": str(window), "global_step": str(window * 3)}
        tags.update(std)
        fields = {name: rng.random() for name in FIELDS}
        fields["binary_indicator"] = float(rng.choice((-1.0, 1.0)))
        points.append(Point("Vvalidator_scores", tags, fields, start + i * 1_000))
    return points


def reader(path: str, stop: Any, counts: Any, poll_s: float) -> None:
    """Poll like watch (points since the last id) and runs (counts per run) every ``poll_s``
    seconds; back to back when it is 0."""
    while not os.path.exists(path):
        time.sleep(0.01)
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
    last = 0
    queries = 0
    seen = 0
    while not stop.is_set():
        try:
            rows = conn.execute(
                "SELECT id, run, measurement, time_ns, tags, fields FROM points WHERE id > ? ORDER BY id LIMIT 2000",
                (last,),
            ).fetchall()
            if rows:
                last = rows[-1][0]
                seen += len(rows)
            conn.execute("SELECT run, count(*) FROM points GROUP BY run").fetchall()
            conn.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT 20").fetchall()
            queries += 3
            if poll_s:
                stop.wait(poll_s)
        except sqlite3.OperationalError:  # the schema is being created
            time.sleep(0.01)
    counts["queries"] = queries
    counts["rows_read"] = seen
    conn.close()


def run_sink(points: list[Point], batch: int, with_reader: bool, poll_s: float = 0.05) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tplr-bench-store-") as tmp:
        path = Path(tmp) / "home" / "metrics.sqlite"
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        manager = ctx.Manager()
        counts = manager.dict()
        proc = None
        sink = LocalStoreSink(path)
        sink.start_run(RunInfo(run_id=points[0].tags["runtime_id"], started_at_ns=time.time_ns(), role="validator"))
        if with_reader:
            proc = ctx.Process(target=reader, args=(str(path), stop, counts, poll_s))
            proc.start()
            time.sleep(0.5)  # let it start polling
        t0 = time.perf_counter()
        stored = 0
        for i in range(0, len(points), batch):
            result = sink.write(points[i : i + batch])
            stored += result.stored
            assert not result.retry and not result.rejected, result
        elapsed = time.perf_counter() - t0
        stop.set()
        if proc is not None:
            proc.join(30)
        sink.end_run("ok")
        sink.close()
        with sqlite3.connect(path) as check:
            landed = check.execute("SELECT count(*) FROM points").fetchone()[0]
            mode = check.execute("PRAGMA journal_mode").fetchone()[0]
        out = {
            "points": len(points),
            "stored": stored,
            "landed": landed,
            "seconds": round(elapsed, 4),
            "points_per_s": round(len(points) / elapsed),
            "journal_mode": mode,
        }
        if with_reader:
            out["reader_queries"] = counts.get("queries", 0)
            out["reader_rows_read"] = counts.get("rows_read", 0)
        manager.shutdown()
        return out


def run_raw_sqlite(points: list[Point], batch: int) -> dict[str, Any]:
    """The anchor: the same rows, encoded beforehand, into the same schema with executemany."""
    rows, _, _ = store_module.encode_points(1, points)
    with tempfile.TemporaryDirectory(prefix="tplr-bench-raw-") as tmp:
        path = Path(tmp) / "metrics.sqlite"
        store = store_module.Store(path)
        conn = store.conn
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(store_module._INSERT_POINT, rows[i : i + batch])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        store.close()
    return {"points_per_s": round(len(points) / elapsed), "seconds": round(elapsed, 4)}


def run_logger(n: int, runtime_id: str) -> dict[str, Any]:
    """End to end: log() calls until close() returns with every point committed."""
    rng = random.Random(2)
    with tempfile.TemporaryDirectory(prefix="tplr-bench-logger-") as tmp:
        path = Path(tmp) / "metrics.sqlite"
        m = MetricsLogger(
            uid=7, prefix="V", version="2.1.3", role="validator", group="validator", job_type="validation",
            runtime_id=runtime_id, sink=LocalStoreSink(path), max_queue_size=n + 1,
        )  # fmt: skip
        values = [{name: rng.random() for name in FIELDS} for _ in range(PEERS)]
        t0 = time.perf_counter()
        for i in range(n):
            window = 1_000 + i // PEERS
            m.log(
                "validator_scores",
                {"eval_uid": i % PEERS, "window": window, "global_step": window * 3},
                values[i % PEERS],
            )
        m.close(timeout=600)
        elapsed = time.perf_counter() - t0
        stats = m.stats()
        with sqlite3.connect(path) as check:
            landed = check.execute("SELECT count(*) FROM points").fetchone()[0]
    return {
        "points_per_s": round(n / elapsed),
        "seconds": round(elapsed, 4),
        "landed": landed,
        "dropped": stats["dropped_total"],
    }


def _timed(work: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = work()
    return time.perf_counter() - t0, result


def _write_runs(path: Path, sizes: Sequence[int], batch: int, time_offset: int) -> tuple[list[str], list[int]]:
    """One run per size, each through a sink of its own, as loggers write; only ``sink.write`` is
    timed. Returns the runs' runtime ids and the insert rate of each million points."""
    runtime_ids: list[str] = []
    rates: list[int] = []
    clock = 0.0
    since_million = 0
    written = 0
    for size in sizes:
        runtime_id = str(uuid.uuid4())
        runtime_ids.append(runtime_id)
        sink = LocalStoreSink(path)
        sink.start_run(RunInfo(run_id=runtime_id, started_at_ns=time.time_ns(), role="validator"))
        done = 0
        while done < size:
            points = make_points(min(batch, size - done), runtime_id, seed=time_offset + written)
            shift = (time_offset + written) * 1_000  # distinct times across batches (one series per peer)
            points = [Point(p.measurement, p.tags, p.fields, p.time_ns + shift) for p in points]
            seconds, result = _timed(lambda: sink.write(points))  # noqa: B023
            assert result.stored == len(points) and not result.retry, result
            done += len(points)
            written += len(points)
            clock += seconds
            since_million += len(points)
            if since_million >= 1_000_000:
                rates.append(round(since_million / clock))
                clock, since_million = 0.0, 0
        sink.end_run("ok")
        sink.close()
    if since_million:
        rates.append(round(since_million / clock))
    return runtime_ids, rates


def run_fill(n: int, batch: int, first_run: int = 1_000_000, refill: int = 0, fresh_gib: int = 0) -> dict[str, Any]:
    """A store of ``n`` points: an old run of ``first_run`` points, then newer runs of 1M each.

    With ``refill``: then the oldest newer runs holding at least that many points are deleted
    and as many points written again, into pages the file already holds (SQLite's freelist)."""
    import argparse as _argparse
    import contextlib
    import io

    from tplr_metrics.cli import main as cli_main
    from tplr_metrics.commands._run_inputs import collector_paused
    from tplr_metrics.commands.watch import _Follower
    from tplr_metrics.store.database import PointFilter, _stored_point
    from tplr_metrics.viz.run_data import read_store_run

    with tempfile.TemporaryDirectory(prefix="tplr-bench-fill-") as tmp:
        path = Path(tmp) / "home" / "metrics.sqlite"
        first_run = min(first_run, n)
        sizes = [first_run] + [1_000_000] * ((n - first_run) // 1_000_000)
        if n - sum(sizes) > 0:
            sizes.append(n - sum(sizes))
        runtime_ids, rates = _write_runs(path, sizes, batch, 0)
        old_id = runtime_ids[0]

        store = store_module.Store(path, create=False)
        (run,) = store.find_runs(old_id)
        query = "SELECT id, run, measurement, time_ns, tags, fields FROM points WHERE run = ? ORDER BY id"
        anchor, rows = _timed(lambda: [_stored_point(r) for r in store.conn.execute(query, (run.id,))])
        paged, read = _timed(lambda: list(store.iter_points(PointFilter(runs=[run.id]))))
        assert len(read) == len(rows) == first_run
        del rows, read
        with collector_paused():  # as plot, compare and table read a run
            plot_read, data = _timed(lambda: read_store_run(store, old_id, [run]))
            del data
            anchor_paused, rows = _timed(lambda: [_stored_point(r) for r in store.conn.execute(query, (run.id,))])
            del rows
        env = {"TPLR_METRICS_HOME": str(path.parent)}
        os.environ.update(env)
        with contextlib.redirect_stdout(io.StringIO()):
            exported, code = _timed(
                lambda: cli_main(["export", "--run-id", old_id, "--format", "csv", "--output", os.devnull])
            )
        assert code == 0
        follow = _argparse.Namespace(run_id=old_id, all=False, last=0, measurement=None, json=True)
        follower = _Follower(follow, store)
        polls = 20
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(polls):
            assert follower.poll() == 0
        poll_cpu = (time.process_time() - cpu0) / polls
        poll_wall = (time.perf_counter() - wall0) / polls
        refilled = _refill(store, path, old_id, refill, batch, n) if refill else None
        store.close()
    return {
        "points": n,
        "old_run_points": first_run,
        "points_per_s_by_million": rates,
        "min_points_per_s": min(rates),
        "target_points_per_s": 150_000,
        "one_run": {
            "one_ordered_query_s": round(anchor, 3),
            "one_ordered_query_collector_paused_s": round(anchor_paused, 3),
            "iter_points_s": round(paged, 3),
            "iter_points_ratio": round(paged / anchor, 3),
            "plot_read_s": round(plot_read, 3),
            "plot_read_ratio": round(plot_read / anchor, 3),
            "plot_read_ratio_both_paused": round(plot_read / anchor_paused, 3),
            "export_csv_s": round(exported, 3),
            "export_csv_ratio": round(exported / anchor, 3),
            "target_ratio": 1.2,
        },
        "watch_poll": {"wall_s": round(poll_wall, 6), "cpu_s": round(poll_cpu, 6)},
        "refill": refilled,
        "fresh_memory_s_per_512_mib": fresh_memory(fresh_gib) if fresh_gib else None,
    }


def fresh_memory(gib: int) -> list[float]:
    """Seconds to touch each 512 MiB of new anonymous memory, one byte a page, up to ``gib``
    GiB held at once: the machine's cost of the fresh pages a growing store file needs. Where it
    rises after the first few chunks, so does the fill's insert rate (and, on a tmpfs, not the
    refill's)."""
    import mmap

    held = []
    seconds = []
    for _ in range(gib * 2):
        chunk = mmap.mmap(-1, 512 * 1024 * 1024)
        t0 = time.perf_counter()
        for offset in range(0, len(chunk), mmap.PAGESIZE):
            chunk[offset] = 1
        seconds.append(round(time.perf_counter() - t0, 2))
        held.append(chunk)
    for chunk in held:
        chunk.close()
    return seconds


def _refill(
    store: store_module.Store, path: Path, old_id: str, points: int, batch: int, written: int
) -> dict[str, Any]:
    """Delete the oldest newer runs (``points`` or a little more), then write ``points`` again.

    The rows go into pages the file already holds, so the trees are as large as in the fill's
    last millions but no memory is new: where the fill's rate falls and this one does not, the
    fall was the machine's (a sandbox that makes fresh pages cost; see the README), not SQLite's."""
    newer = sorted((r for r in store.runs() if r.run_id != old_id), key=lambda r: (r.started_at, r.id))
    counts = store.point_counts([r.id for r in newer])
    chosen: list[int] = []
    for row in newer:
        if sum(counts[i] for i in chosen) >= points:
            break
        chosen.append(row.id)
    deleting, deleted = _timed(lambda: store.delete_runs(chosen))
    free_pages = int(store.conn.execute("PRAGMA freelist_count").fetchone()[0])
    held = int(store.conn.execute("SELECT count(*) FROM points").fetchone()[0])
    sizes = [1_000_000] * (points // 1_000_000) + ([points % 1_000_000] if points % 1_000_000 else [])
    _, rates = _write_runs(path, sizes, batch, written)
    return {
        "deleted_points": deleted,
        "delete_s": round(deleting, 1),
        "freelist_pages_after_delete": free_pages,
        "points_held_before": held,
        "points_per_s_by_million": rates,
        "min_points_per_s": min(rates),
    }


def best(results: list[dict[str, Any]]) -> dict[str, Any]:
    return max(results, key=lambda r: r["points_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000, help="points per write (a validator's batch_size)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--poll", type=float, default=0.05, help="the reader's poll interval, seconds (watch: 1.0)")
    parser.add_argument("--fill", type=int, default=10_000_000, help="points of the large store (0: skip it)")
    parser.add_argument(
        "--refill",
        type=int,
        default=4_000_000,
        help="after the fill, delete about this many points and write as many again (0: skip it)",
    )
    parser.add_argument(
        "--fresh-memory-gib",
        type=int,
        default=6,
        help="after the fill, time touching this much new memory, 512 MiB at a time (0: skip it)",
    )
    parser.add_argument("--only-fill", action="store_true", help="only the large store's figures")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "store.json"))
    args = parser.parse_args()

    if args.only_fill:
        text = json.dumps(
            {"fill": run_fill(args.fill, args.batch, refill=args.refill, fresh_gib=args.fresh_memory_gib)}, indent=2
        )
        print(text)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        return
    runtime_id = str(uuid.uuid4())
    points = make_points(args.points, runtime_id)
    with_reader = [run_sink(points, args.batch, True, args.poll) for _ in range(args.repeat)]
    busy_reader = [run_sink(points, args.batch, True, 0.0) for _ in range(args.repeat)]
    no_reader = [run_sink(points, args.batch, False) for _ in range(args.repeat)]
    raw = [run_raw_sqlite(points, args.batch) for _ in range(args.repeat)]
    fast = store_module._orjson
    store_module._orjson = None  # type: ignore[assignment]
    try:
        stdlib = [run_sink(points, args.batch, True, args.poll) for _ in range(args.repeat)]
    finally:
        store_module._orjson = fast
    logger_runs = [run_logger(min(args.points, 100_000), runtime_id) for _ in range(args.repeat)]

    fill = run_fill(args.fill, args.batch, refill=args.refill, fresh_gib=args.fresh_memory_gib) if args.fill else None
    headline = best(with_reader)
    report = {
        "benchmark": "local store insert throughput, validator_scores shape, reader process running",
        "points_per_s": headline["points_per_s"],
        "target_points_per_s": TARGET_POINTS_PER_S,
        "meets_target": headline["points_per_s"] >= TARGET_POINTS_PER_S,
        "encoder": "orjson" if fast is not None else "json",
        "points_per_s_stdlib_json": best(stdlib)["points_per_s"],
        "points_per_s_busy_reader": best(busy_reader)["points_per_s"],
        "points_per_s_no_reader": best(no_reader)["points_per_s"],
        "raw_sqlite_points_per_s": best(raw)["points_per_s"],
        "logger_points_per_s": best(logger_runs)["points_per_s"],
        "fill": fill,
        "runs": {
            "with_reader": with_reader,
            "busy_reader": busy_reader,
            "no_reader": no_reader,
            "raw_sqlite": raw,
            "stdlib_json": stdlib,
            "logger": logger_runs,
        },
        "batch": args.batch,
        "reader_poll_s": args.poll,
        "repeat": args.repeat,
        "shape": {"tags": 10, "fields": 6, "field_type": "float"},
        "machine": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
