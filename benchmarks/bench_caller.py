"""What log() costs the training loop: caller median and mean, client CPU per point, and the
worst log() pause with 600,000 records queued (server down), for the validator_scores shape.

Run: ``python benchmarks/bench_caller.py [--points N] [--repeat R]``; prints JSON. To compare with
another checkout, point ``--code`` at its root (its ``tplr_metrics`` is imported instead), e.g.
``git worktree add /tmp/before <commit>`` then ``--code /tmp/before``. Both are measured in one
process run each, the same samples, the same machine.

* caller: ``log()`` durations into a sink that stores nothing (the pipeline running behind);
* client CPU per point: this process's CPU (all threads) from the first ``log()`` until
  ``flush()`` returned, over the points logged;
* worst pause: a sink whose ``write`` blocks (a server that does not answer), ``max_queue_size``
  600,000: log 650,000 points (the queue fills, then drop_oldest), and report the slowest calls
  (a full gen-2 collection walking the queued records shows up here) and the RSS it took.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("gradient_score", "binary_indicator", "binary_moving_avg", "sync_score", "final_score", "weight")


def make_samples(n: int, seed: int = 2) -> list[tuple[dict[str, Any], dict[str, float]]]:
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        tags = {"eval_uid": str(i % 256), "window": i // 256, "global_step": (i // 256) * 20}
        samples.append((tags, {f: rng.random() for f in FIELDS}))
    return samples


class NullSink:
    name = "null"

    def write(self, points: Sequence[Any]) -> Any:
        from tplr_metrics import WriteResult

        return WriteResult.all_stored(len(points))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class NeverAnswers(NullSink):
    name = "never"

    def __init__(self) -> None:
        self.gate = threading.Event()

    def write(self, points: Sequence[Any]) -> Any:
        self.gate.wait()
        return super().write(points)


def percentiles(durations_ns: list[int]) -> dict[str, float]:
    ordered = sorted(durations_ns)
    n = len(ordered)
    return {
        "median": round(ordered[n // 2] / 1000, 3),
        "mean": round(statistics.fmean(ordered) / 1000, 3),
        "p99": round(ordered[int(n * 0.99)] / 1000, 3),
        "p999": round(ordered[int(n * 0.999)] / 1000, 3),
        "max": round(ordered[-1] / 1000, 1),
    }


def caller(samples: list[tuple[dict[str, Any], dict[str, float]]]) -> dict[str, Any]:
    from tplr_metrics import MetricsLogger

    m = MetricsLogger(uid=7, prefix="V", role="validator", sink=NullSink(), spool=False)
    log = m.log
    clock = time.perf_counter_ns
    durations = []
    cpu0 = time.process_time()
    for tags, fields in samples:
        t0 = clock()
        log("validator_scores", tags, fields)
        durations.append(clock() - t0)
    flushed = m.flush(300)
    cpu = time.process_time() - cpu0
    m.close(30)
    return {
        "caller_us": percentiles(durations),
        "client_cpu_us_per_point": round(cpu / len(samples) * 1e6, 2),
        "flush_returned": flushed,
    }


def worst_pause(samples: list[tuple[dict[str, Any], dict[str, float]]], queued: int = 600_000) -> dict[str, Any]:
    import psutil

    from tplr_metrics import MetricsLogger

    sink = NeverAnswers()
    m = MetricsLogger(uid=7, prefix="V", role="validator", sink=sink, spool=False, max_queue_size=queued)
    rss0 = psutil.Process().memory_info().rss
    log = m.log
    clock = time.perf_counter_ns
    durations = []
    for i in range(queued + 50_000):
        tags, fields = samples[i % len(samples)]
        t0 = clock()
        log("validator_scores", tags, fields)
        durations.append(clock() - t0)
    rss = psutil.Process().memory_info().rss - rss0
    depth = m.stats()["queue_depth"]
    sink.gate.set()
    m.close(120)
    worst = sorted(durations)[-5:]
    return {
        "queued_at_end": depth,
        "worst_log_pause_ms": round(worst[-1] / 1e6, 2),
        "five_worst_ms": [round(d / 1e6, 2) for d in worst],
        "rss_growth_mib": round(rss / 2**20, 1),
        "bytes_per_queued_record": round(rss / max(1, depth)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="caller runs; the median run is reported")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose tplr_metrics is measured")
    parser.add_argument("--skip-pause", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.code))
    import tplr_metrics

    samples = make_samples(args.points)
    gc.collect()
    gc.freeze()  # the samples live through every run: keep the collector from walking them
    runs = sorted((caller(samples) for _ in range(args.repeat)), key=lambda r: r["caller_us"]["median"])
    report = {
        "code": str(Path(tplr_metrics.__file__).resolve().parent.parent),
        "commit": os.popen(f"git -C {args.code} rev-parse --short HEAD 2>/dev/null").read().strip(),
        "points": args.points,
        "caller": runs[len(runs) // 2],
        "caller_runs_median_us": [r["caller_us"]["median"] for r in runs],
    }
    if not args.skip_pause:
        report["pause_with_600k_queued"] = worst_pause(samples)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
