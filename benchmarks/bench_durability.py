"""Issue 4 benchmark: what the "never lose a point" guarantees cost, and how fast an outage heals.

Run: ``python benchmarks/bench_durability.py [--points N] [--out FILE]``. Three figures:

* durable mode's caller cost: log() per call (median, p99) with ``durable=True`` against the same
  logger with ``durable=False``, both into a sink that stores nothing, measured in one run: one
  that takes Points (as the local store does) and one that takes line protocol (as InfluxDB's do);
* drain time: N points logged while InfluxDB 1.x is down (they go to the spool), then the server
  starts; the time until ``flush()`` returns True and every point reads back, against the time a
  pre-serialized POST of the same points takes on the same server (the anchor);
* memory bound: RSS growth while 1,000,000 points are logged into a closed port with
  ``max_queue_size=50_000`` and a 2 MiB spool, as bytes per queued record.

One JSON document goes to stdout and to benchmarks/results/durability.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from null_sink import NullLineSink, NullSink  # benchmarks/null_sink.py

import tplr_metrics
from tplr_metrics import MetricsLogger, encode_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.servers import InfluxDB1, free_port  # noqa: E402


def point_args(i: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return (
        "validator_scores",
        {"eval_uid": str(i % 256), "window": i // 256, "global_step": i // 256},
        {
            "gradient_score": 0.1,
            "binary_indicator": 1.0,
            "binary_moving_avg": 0.5,
            "sync_score": 0.9,
            "final_score": 0.4,
            "weight": 0.01,
        },
    )


def caller_cost(durable: bool, calls: int, lines: bool = False) -> dict[str, float]:
    sink = NullLineSink() if lines else NullSink()
    m = MetricsLogger(sink=sink, role="validator", uid=1, durable=durable, flush_interval=200)
    args = [point_args(i) for i in range(calls)]
    durations = []
    for measurement, tags, fields in args:
        t0 = time.perf_counter_ns()
        m.log(measurement, tags, fields)
        durations.append(time.perf_counter_ns() - t0)
    m.close()
    durations.sort()
    return {
        "median_us": durations[len(durations) // 2] / 1000,
        "p99_us": durations[int(len(durations) * 0.99)] / 1000,
    }


def caller_ratios(plain: dict[str, float], durable: dict[str, float]) -> dict[str, Any]:
    return {
        "plain": plain,
        "durable": durable,
        "durable_over_plain_median": round(durable["median_us"] / plain["median_us"], 1),
        "durable_extra_median_us": round(durable["median_us"] - plain["median_us"], 2),
    }


def drain(points: int, home: Path) -> dict[str, Any]:
    server = InfluxDB1(home / "influx")
    db = "drain"
    try:
        m = MetricsLogger(
            url=server.url,
            database=db,
            api="v1",
            role="validator",
            uid=1,
            retry_interval=200,
            max_retry_delay=1_000,
            spool_dir=home / "spool",
        )
        for i in range(points):
            m.log(*point_args(i))
        deadline = time.monotonic() + 120
        while m.stats()["spooled"] < points and time.monotonic() < deadline:
            time.sleep(0.1)
        spooled = m.stats()["spooled"]
        server.start()
        t0 = time.perf_counter()
        flushed = m.flush(timeout=300)
        drain_s = time.perf_counter() - t0
        m.close()
        landed = server.count("validator_scores", "gradient_score", db)

        # The anchor: the same number of points, pre-serialized, POSTed in 5,000-line batches.
        lines = [
            encode_line("anchor_" + measurement, {k: str(v) for k, v in tags.items()}, fields, i + 1)
            for i, (measurement, tags, fields) in enumerate(point_args(i) for i in range(points))
        ]
        bodies = ["\n".join(lines[i : i + 5000]).encode() for i in range(0, len(lines), 5000)]
        t0 = time.perf_counter()
        for body in bodies:
            request = urllib.request.Request(f"{server.url}/write?db={db}&precision=ns", data=body, method="POST")
            urllib.request.urlopen(request, timeout=60).read()
        anchor_s = time.perf_counter() - t0
        return {
            "points": points,
            "spooled_before_start": spooled,
            "flushed": flushed,
            "landed": landed,
            "drain_seconds": round(drain_s, 3),
            "drain_points_per_s": round(points / drain_s),
            "anchor_preserialized_post_seconds": round(anchor_s, 3),
            "drain_vs_anchor_time_ratio": round(drain_s / anchor_s, 2),
        }
    finally:
        server.cleanup()


def memory_bound(home: Path) -> dict[str, Any]:
    process = psutil.Process()
    m = MetricsLogger(
        url=f"http://127.0.0.1:{free_port()}",
        database="d",
        api="v1",
        max_queue_size=50_000,
        spool_max_bytes=2 * 1024 * 1024,
        spool_dir=home / "spool-mem",
    )
    before = process.memory_info().rss
    peak = before
    for i in range(1_000_000):
        m.log(*point_args(i))
        if i % 25_000 == 0:
            peak = max(peak, process.memory_info().rss)
    m.close(timeout=2)
    stats = m.stats()
    growth = peak - before
    return {
        "points": 1_000_000,
        "max_queue_size": 50_000,
        "spool_max_bytes": 2 * 1024 * 1024,
        "rss_growth_mib": round(growth / 2**20, 1),
        "bytes_per_queued_record": round(growth / 50_000),
        "evicted_from_spool": stats["dropped"].get("spool_evicted", 0),
        "dropped_queue_full": stats["dropped"].get("queue_full", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "durability.json")
    parser.add_argument(
        "--caller-only",
        action="store_true",
        help="only the caller cost (with PYTHONPATH=CHECKOUT, another checkout's, to compare)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tplr-bench-") as tmp:
        home = Path(tmp)
        os.environ["TPLR_METRICS_HOME"] = str(home)
        if args.caller_only:
            plain, durable = caller_cost(False, args.calls), caller_cost(True, args.calls)
            plain_lines, durable_lines = caller_cost(False, args.calls, True), caller_cost(True, args.calls, True)
            code = str(Path(tplr_metrics.__file__).parent.parent)
            print(
                json.dumps(
                    {
                        "code": code,
                        "points_sink": {"plain": plain, "durable": durable},
                        "line_sink": {"plain": plain_lines, "durable": durable_lines},
                    }
                )
            )
            return
        memory = memory_bound(home)  # first, while the process's heap is still small
        result = {
            "machine": {"cpus": os.cpu_count()},
            "caller_cost": {
                sink: caller_ratios(caller_cost(False, args.calls, lines), caller_cost(True, args.calls, lines))
                for sink, lines in (("points_sink", False), ("line_sink", True))
            },
            "drain_after_outage": drain(args.points, home),
            "memory_bound": memory,
        }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
