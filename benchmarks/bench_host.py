"""Issue 5 benchmark: the extra caller cost of with_system_metrics / with_gpu_metrics over a plain log().

Run: ``python benchmarks/bench_host.py [--calls N] [--rounds R] [--out FILE]``.

One MetricsLogger with a sink that keeps nothing (the caller's cost does not depend on the
destination), its encoder parked during the timed loops (huge batch_size and flush_interval;
a flush after each round drains the queue, untimed), the host sample warm. Each round times N
calls of each variant, in a shuffled order; the extra cost of a flag is the median over rounds of the
paired difference (variant - plain) in the same round, so drift on a shared machine cancels.

Anchors measured in the same run: an empty method call, HostMetrics.cached() alone, and what
sampling on every call costs the way Templar did it (psutil.cpu_percent + virtual_memory).

One JSON document goes to stdout and to benchmarks/results/host.json (git-ignored).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from null_sink import NullSink  # benchmarks/null_sink.py

import tplr_metrics
from tplr_metrics import MetricsLogger

REPO = Path(__file__).resolve().parent.parent
TARGET_EXTRA_US = 2.0
VARIANTS = {
    "plain": (False, False),
    "with_system_metrics": (True, False),
    "with_gpu_metrics": (False, True),
    "both": (True, True),
}


def loop_ns(call: Callable[[], object], n: int) -> float:
    """Mean ns per call of ``call`` over n calls."""
    gc.collect()
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(n):
        call()
    return (clock() - started) / n


def measure_log(m: MetricsLogger, calls: int, rounds: int, seed: int) -> dict[str, list[float]]:
    tags = {"eval_uid": "17", "window": 1234, "global_step": 99}
    fields = {"l2_norm": 0.5, "avg_l2_norm": 0.4, "avg_abs_diff": 0.01, "max_diff": 0.2}
    log = m.log

    def caller(system: bool, gpu: bool) -> Callable[[], None]:
        def call() -> None:
            log("validator_sync_score", tags, fields, with_system_metrics=system, with_gpu_metrics=gpu)

        return call

    calls_by_variant = {name: caller(*flags) for name, flags in VARIANTS.items()}
    for call in calls_by_variant.values():  # warm: the first host use takes the first sample
        loop_ns(call, 1_000)
    m.flush()
    rng = random.Random(seed)
    per_round: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        order = list(VARIANTS)
        rng.shuffle(order)
        for name in order:
            per_round[name].append(loop_ns(calls_by_variant[name], calls))
        m.flush()  # drain, untimed, so the queue stays short
    return per_round


def us(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values) / 1000, 4),
        "min": round(min(values) / 1000, 4),
        "max": round(max(values) / 1000, 4),
    }


def anchors(m: MetricsLogger, calls: int) -> dict[str, Any]:
    class Empty:
        def method(self, a: bool, b: bool) -> None:
            return None

    empty = Empty()
    host = m._host
    noop = min(loop_ns(lambda: empty.method(True, True), calls) for _ in range(20))
    cached = min(loop_ns(lambda: host.cached(True, True), calls) for _ in range(20))
    psutil.cpu_percent(interval=None)

    def templar_system_sample() -> None:
        psutil.cpu_percent()
        mem = psutil.virtual_memory()
        _ = (mem.used / 1024**2, mem.total / 1024**2)

    per_call_sampling = min(loop_ns(templar_system_sample, 200) for _ in range(5))
    return {
        "empty_method_call_us": round(noop / 1000, 4),
        "host_cached_call_us": round(cached / 1000, 4),
        "templar_style_system_sample_per_call_us": round(per_call_sampling / 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "host.json")
    args = parser.parse_args(argv)

    m = MetricsLogger(
        sink=NullSink(),
        role="validator",
        uid=7,
        prefix="V",
        batch_size=10**9,  # the encoder wakes on a full batch or the interval: neither, while timing
        flush_interval=10**9,
        max_queue_size=10**7,
    )
    try:
        per_round = measure_log(m, args.calls, args.rounds, args.seed)
        anchor = anchors(m, args.calls)
        gpu_state = m._host.nvml_state
        stats = m.stats()
    finally:
        m.close()

    extra = {
        name: us([v - p for v, p in zip(per_round[name], per_round["plain"], strict=True)])
        for name in VARIANTS
        if name != "plain"
    }
    report = {
        "benchmark": "bench_host",
        "what": "caller cost of MetricsLogger.log() per call, warm host sample, null sink, encoder parked",
        "tplr_metrics": tplr_metrics.__version__,
        "python": platform.python_version(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]},
        "settings": {"calls_per_round": args.calls, "rounds": args.rounds, "host_metrics_interval_s": 2.0},
        "gpu": {
            "nvml_state": gpu_state,
            "note": "no GPU fields here; the GPU flag reads the same cached tuple either way"
            if gpu_state != "ready"
            else "NVML fields present",
        },
        "log_us": {name: us(values) for name, values in per_round.items()},
        "extra_over_plain_us": extra,
        "target_extra_us": TARGET_EXTRA_US,
        "meets_target": all(v["median"] < TARGET_EXTRA_US for v in extra.values()),
        "anchors": anchor,
        "dropped": stats["dropped_total"],
    }
    text = json.dumps(report, indent=2)
    print(text)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    except OSError as exc:
        print(f"could not write {args.out}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
