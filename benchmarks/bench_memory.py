"""Memory with the queue full: RSS while 600,000 points wait behind a destination that never
answers (a server that is down without refusing connections), Templar's validator_scores shape.

Run: ``python benchmarks/bench_memory.py [--queued N] [--code CHECKOUT] [--rounds R]``; prints JSON.
Each round runs in a fresh process (so one round's heap does not carry into the next): it imports
the package, starts a logger (``spool=False``, ``max_queue_size=N``, its one writer blocked in
``write``), logs N + 50,000 points with fresh tag and field dicts per call (as Templar does; the
values come from a list of 256 samples, so what is measured is what the logger keeps per point,
not the caller's floats), and reports the process's RSS before the first ``log()`` and at the
end, the growth per queued record; then, in the same process, the caller's median ``log()`` of
the same calls into a sink that stores nothing. ``--code`` measures another
checkout (a ``git worktree`` of an older commit) the same way; give it twice to interleave.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def one_round(queued: int) -> dict[str, Any]:
    import gc

    import psutil

    from tplr_metrics import MetricsLogger, WriteResult

    class NeverAnswers:
        name = "never"

        def __init__(self) -> None:
            self.gate = threading.Event()

        def write(self, points: Sequence[Any]) -> Any:
            self.gate.wait()
            return WriteResult.all_stored(len(points))

        def flush(self) -> None:
            return None

        def close(self) -> None:
            return None

    samples = [(str(i), i // 16, (i // 16) * 20, *(float(f"0.{i:03d}{k}") for k in range(6))) for i in range(256)]
    sink = NeverAnswers()
    m = MetricsLogger(uid=7, prefix="V", role="validator", sink=sink, spool=False, max_queue_size=queued)
    gc.collect()
    process = psutil.Process()
    rss0 = process.memory_info().rss
    log = m.log
    for i in range(queued + 50_000):
        uid, window, step, a, b, c, d, e, f = samples[i % 256]
        log(
            "validator_scores",
            {"eval_uid": uid, "window": window, "global_step": step},
            {
                "gradient_score": a,
                "binary_indicator": b,
                "binary_moving_avg": c,
                "sync_score": d,
                "final_score": e,
                "weight": f,
            },
        )
    rss = process.memory_info().rss
    depth = m.stats()["queue_depth"]
    sink.gate.set()
    m.close(120)
    return {
        "rss_before_mib": round(rss0 / 2**20, 1),
        "rss_with_queue_full_mib": round(rss / 2**20, 1),
        "queued": depth,
        "bytes_per_queued_record": round((rss - rss0) / max(1, depth)),
    }


def caller_median(points: int = 200_000) -> float:
    """log() median into a sink that stores nothing, the same fresh-dict calls."""
    from tplr_metrics import MetricsLogger, WriteResult

    class Null:
        name = "null"

        def write(self, batch: Sequence[Any]) -> Any:
            return WriteResult.all_stored(len(batch))

        def flush(self) -> None:
            return None

        def close(self) -> None:
            return None

    m = MetricsLogger(uid=7, prefix="V", role="validator", sink=Null(), spool=False)
    log = m.log
    clock = time.perf_counter_ns
    durations = []
    for i in range(points):
        t0 = clock()
        log(
            "validator_scores",
            {"eval_uid": "5", "window": i // 256, "global_step": i // 256},
            {
                "gradient_score": 0.1,
                "binary_indicator": 1.0,
                "binary_moving_avg": 0.5,
                "sync_score": 0.9,
                "final_score": 0.4,
                "weight": 0.01,
            },
        )
        durations.append(clock() - t0)
    m.close(30)
    durations.sort()
    return round(durations[len(durations) // 2] / 1000, 3)


def run_child(code: Path, queued: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(code))
    with tempfile.TemporaryDirectory(prefix="tplr-bench-mem-") as home:
        env["TPLR_METRICS_HOME"] = home
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--queued", str(queued)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=home,
        ).stdout
    return dict(json.loads(out))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queued", type=int, default=600_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", type=Path, action="append", help="checkout(s) to measure (default: this one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = one_round(args.queued)
        result["caller_median_us"] = caller_median()
        print(json.dumps(result))
        return 0
    codes = args.code or [REPO]
    report: dict[str, Any] = {"queued": args.queued, "rounds": args.rounds, "checkouts": {}}
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for code in codes:  # interleaved, so that the machine's noise hits every checkout alike
            runs.setdefault(str(code), []).append(run_child(code, args.queued))
    for code, rounds in runs.items():
        commit = subprocess.run(["git", "-C", code, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        report["checkouts"][code] = {
            "commit": commit.stdout.strip(),
            "median": {
                key: statistics.median(r[key] for r in rounds)
                for key in ("rss_with_queue_full_mib", "bytes_per_queued_record", "caller_median_us", "rss_before_mib")
            },
            "rounds": rounds,
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
