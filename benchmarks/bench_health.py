"""The cost of the default tplr_metrics_health measurement (every 10 s to an InfluxDB server).

Run: ``python benchmarks/bench_health.py [--ticks N] [--loggers N]``.

What the default adds to a logger: one background thread (started with the logger, stopped by
close()), and every 10 s one point built from ``stats()``. Measured here, with a sink that keeps
nothing: the time of one health tick (stats + fields + log, what the background thread does), the
extra time to build and close a logger with the thread against one without it (reactivex
imported already; its first import is timed on its own, in a fresh interpreter), the caller's
log() with the thread running and not, and the line-protocol size of one health point.

One JSON document goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from null_sink import NullSink  # benchmarks/null_sink.py

from tplr_metrics import MetricsLogger
from tplr_metrics.catalog import HEALTH_MEASUREMENT
from tplr_metrics.collect.background import health_fields
from tplr_metrics.logger import DEFAULT_HEALTH_EVERY


def tick_us(m: MetricsLogger, ticks: int) -> float:
    previous = m.stats()
    start = time.perf_counter_ns()
    for _ in range(ticks):
        current = m.stats()
        m.log(HEALTH_MEASUREMENT, None, health_fields(previous, current, DEFAULT_HEALTH_EVERY))
        previous = current
    return (time.perf_counter_ns() - start) / ticks / 1000


def build_close_ms(health_every: float, loggers: int) -> float:
    times = []
    for _ in range(loggers):
        start = time.perf_counter_ns()
        MetricsLogger(sink=NullSink(), health_every=health_every, spool=False).close()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


def log_us(health_every: float, calls: int) -> float:
    m = MetricsLogger(sink=NullSink(), health_every=health_every, spool=False, batch_size=10**7, flush_interval=10**7)
    fields = {"loss": 2.5, "tokens_per_sec": 5000.0}
    start = time.perf_counter_ns()
    for i in range(calls):
        m.log("training_step_v2", {"window": i}, fields)
    elapsed = (time.perf_counter_ns() - start) / calls / 1000
    m.close()
    return elapsed


def reactivex_import_ms() -> float:
    code = "import time; t = time.perf_counter(); import reactivex; print((time.perf_counter() - t) * 1000)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--loggers", type=int, default=30)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args(argv)

    m = MetricsLogger(sink=NullSink(), health_every=0, spool=False, batch_size=10**7, flush_interval=10**7)
    tick = statistics.median(tick_us(m, args.ticks) for _ in range(5))
    m.close()
    build_close_ms(DEFAULT_HEALTH_EVERY, 2)  # reactivex imported, caches warm
    with_thread = build_close_ms(DEFAULT_HEALTH_EVERY, args.loggers)
    without = build_close_ms(0, args.loggers)
    log_with = statistics.median(log_us(DEFAULT_HEALTH_EVERY, args.calls) for _ in range(3))
    log_without = statistics.median(log_us(0, args.calls) for _ in range(3))
    fields = health_fields({}, {}, DEFAULT_HEALTH_EVERY)
    line = f"V{HEALTH_MEASUREMENT},role=validator,uid=9,version=2.1.3,runtime_id={'0' * 36} " + ",".join(
        f"{k}={v}i" if isinstance(v, int) else f"{k}={v}" for k, v in fields.items()
    )
    result = {
        "health_every_s": DEFAULT_HEALTH_EVERY,
        "tick_us": round(tick, 2),
        "tick_cpu_share": f"{tick / (DEFAULT_HEALTH_EVERY * 1e6):.2e}",
        "build_close_ms_with_thread": round(with_thread, 3),
        "build_close_ms_without": round(without, 3),
        "reactivex_first_import_ms": round(reactivex_import_ms(), 1),
        "log_us_with_thread": round(log_with, 3),
        "log_us_without": round(log_without, 3),
        "health_point_bytes": len(line.encode()),
        "points_per_day": int(86400 / DEFAULT_HEALTH_EVERY),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
