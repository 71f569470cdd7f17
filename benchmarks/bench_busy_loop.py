"""What logging costs a busy training loop: a fixed pure-Python workload's speed while it logs
50,000 points/s, against the same workload alone.

Run: ``python benchmarks/bench_busy_loop.py [--rate N] [--chunks N] [--rounds R]``; prints JSON
(and writes benchmarks/results/busy_loop.json).

The workload is a pure-Python loop cut into chunks of about 0.2 ms (it needs the GIL all the
time, as a Python-heavy training step does). Alone, it runs ``--chunks`` chunks. While logging,
after each chunk it logs as many validator_scores points as ``--rate`` says are due by then; the
logger's deferred work (building, encoding the lines, handing them to the sink) is drained with
``flush()`` inside the timed part, so none of it escapes the clock. The sink joins each batch's
lines as the InfluxDB sink does before a POST, and sends nothing: the figure is the client's.

``speed`` = time alone / time while logging (1.0: logging costs the loop nothing; target >= 0.8).
Rounds alternate alone / logging, and the median of each is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tplr_metrics import MetricsLogger, WriteResult  # noqa: E402

FIELDS = ("gradient_score", "binary_indicator", "binary_moving_avg", "sync_score", "final_score", "weight")


class LinesSink:
    """Takes the pipeline's encoded lines and joins them into one body, as a POST would."""

    name = "lines"
    accepts_lines = True

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, points: Sequence[Any]) -> WriteResult:
        lines = getattr(points, "lines", None)
        if lines is not None:
            self.bytes += len("\n".join(lines).encode())
        return WriteResult.all_stored(len(points))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def chunk_of_work(n: int = 2_000) -> int:
    total = 0
    for i in range(n):
        total += (i * i) % 7
    return total


def alone(chunks: int) -> float:
    t0 = time.perf_counter()
    for _ in range(chunks):
        chunk_of_work()
    return time.perf_counter() - t0


def while_logging(chunks: int, rate: int, stable_series: bool) -> tuple[float, int]:
    rng = random.Random(2)
    values = [{f: rng.random() for f in FIELDS} for _ in range(256)]
    m = MetricsLogger(
        uid=7, prefix="V", version="2.1.3", role="validator", group="validator", job_type="validation",
        sink=LinesSink(), max_queue_size=1_000_000,
    )  # fmt: skip
    logged = 0
    t0 = time.perf_counter()
    for _ in range(chunks):
        chunk_of_work()
        due = int((time.perf_counter() - t0) * rate)
        while logged < due:
            window = 7 if stable_series else 1_000 + logged // 256
            m.log(
                "validator_scores",
                {"eval_uid": logged % 256, "window": window, "global_step": window * 20},
                values[logged % 256],
            )
            logged += 1
    assert m.flush(600)
    elapsed = time.perf_counter() - t0
    stats = m.stats()
    m.close(10)
    assert stats["written"] == logged, stats
    return elapsed, logged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=50_000, help="points per second to log (default 50000)")
    parser.add_argument("--chunks", type=int, default=20_000, help="chunks of work per run (about 0.2 ms each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stable-series", action="store_true", help="window fixed: 256 series")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "busy_loop.json"))
    args = parser.parse_args()
    chunk_of_work()
    plain: list[float] = []
    busy: list[float] = []
    points: list[int] = []
    for _ in range(args.rounds):
        plain.append(alone(args.chunks))
        seconds, n = while_logging(args.chunks, args.rate, args.stable_series)
        busy.append(seconds)
        points.append(n)
    speed = statistics.median(plain) / statistics.median(busy)
    report = {
        "benchmark": "a busy pure-Python loop's speed while logging, deferred work drained",
        "rate_points_per_s": args.rate,
        "speed": round(speed, 3),
        "target_speed": 0.8,
        "alone_s": [round(s, 3) for s in plain],
        "logging_s": [round(s, 3) for s in busy],
        "points_logged": points,
        "achieved_points_per_s": [round(n / s) for n, s in zip(points, busy, strict=True)],
        "stable_series": args.stable_series,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
