"""Issue 14 benchmark: how fast a spool drains after an outage, against a POST of the same points.

Run: ``python benchmarks/bench_spool_drain.py [--points N] [--rounds R] [--stable-series] [--out FILE]``.

Each round, on a fresh InfluxDB 1.x (tests/servers.py: free loopback port, temp dir):

1. the server is not running; a MetricsLogger (``api="v1"``, its spool in a temp dir,
   ``retry_interval=200``, ``max_retry_delay=1_000``) logs N points of Templar's validator_scores
   shape, which all go to its spool (polled until ``stats()["spooled"] == N``);
2. the server starts; the clock runs from the moment it answers ``/ping`` until the logger has
   N points written (its own count, polled every 5 ms) and then a ``SELECT count(...)`` of the
   run's points returns N: the drain;
3. the anchor, in the same round on a fresh server of the same kind and settings: the same
   points, encoded beforehand (under another measurement name), POSTed sequentially in 5,000-line
   batches over one connection, the clock stopped when the same count returns N. Each gets an
   empty server: on the Templar shape (a new series every point) the server sets the pace, and one
   already holding the other's 200,000 series took twice as long, so that the order decided the
   ratio. The anchor goes first in even rounds, after the drain in odd ones.

The figure is drain time / anchor time (median of the rounds); a drain includes the replayer's
first backoff wait after the outage (at most ``max_retry_delay``, 1 s here), so ``first_landed``
(the clock when the first point was written) is printed beside it. One JSON document goes to stdout
and to benchmarks/results/spool_drain.json (git-ignored).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.servers import InfluxDB1  # noqa: E402
from tplr_metrics import MetricsLogger, encode_line  # noqa: E402
from tplr_metrics.encoding.points import PointBuilder  # noqa: E402

MEASUREMENT = "validator_scores"
FIELDS = ("gradient_score", "binary_indicator", "binary_moving_avg", "sync_score", "final_score", "weight")
PEERS = 256
POST_BATCH = 5_000
DB = "drain"


def samples(n: int, stable_series: bool, seed: int) -> list[tuple[dict[str, Any], dict[str, float]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        window = 0 if stable_series else i // PEERS
        tags = {"eval_uid": str(i % PEERS), "window": window, "global_step": window * 20}
        out.append((tags, {name: rng.random() for name in FIELDS}))
    return out


def count(server: InfluxDB1, measurement: str) -> int:
    try:
        return server.count(measurement, "gradient_score", DB)
    except (RuntimeError, OSError):
        return 0


def wait_for(
    written: Callable[[], int], server: InfluxDB1, measurement: str, expected: int, t0: float, timeout: float
) -> tuple[float, float | None]:
    """Seconds since t0 until the server holds ``expected`` points (``written()``, polled every
    5 ms, reached it and then a count query returned it: InfluxDB 1.x answers 204 once a point
    is queryable, so polling the server all along would only take its CPU), and the seconds
    until the first point was written."""
    first = None
    deadline = time.perf_counter() + timeout
    while True:
        n = written()
        now = time.perf_counter()
        if n and first is None:
            first = now - t0
        if n >= expected and count(server, measurement) >= expected or now > deadline:
            return time.perf_counter() - t0, first
        time.sleep(0.005)


def post_all(server: InfluxDB1, bodies: list[bytes]) -> None:
    host = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
    try:
        for body in bodies:
            conn.request("POST", f"/write?db={DB}&precision=ns", body, {"Content-Type": "text/plain"})
            response = conn.getresponse()
            response.read()
            if response.status != 204:
                raise RuntimeError(f"anchor POST: HTTP {response.status}")
    finally:
        conn.close()


def anchor(server: InfluxDB1, data: list[tuple[dict[str, Any], dict[str, float]]], seed: int) -> float:
    """The same points under another measurement, encoded before the clock starts, POSTed."""
    n = len(data)
    builder = PointBuilder({"role": "validator", "uid": "1", "runtime_id": f"drain-{seed}"}, "", lambda *a: None)
    lines = []
    base = time.time_ns()
    for i, (tags, fields) in enumerate(data):
        point = builder.build(("anchor_" + MEASUREMENT, tags, fields, base + i, None, None))
        assert point is not None
        lines.append(encode_line(*point))
    bodies = ["\n".join(lines[i : i + POST_BATCH]).encode() for i in range(0, n, POST_BATCH)]
    t1 = time.perf_counter()
    post_all(server, bodies)
    anchor_s, _ = wait_for(lambda: n, server, "anchor_" + MEASUREMENT, n, t1, timeout=600)
    return anchor_s


def anchor_on_a_fresh_server(data: list[tuple[dict[str, Any], dict[str, float]]], seed: int, home: Path) -> float:
    server = InfluxDB1(home / f"influx-anchor-{seed}")
    try:
        server.start()
        server.create_database(DB)
        return anchor(server, data, seed)
    finally:
        server.cleanup()


def one_round(n: int, stable_series: bool, seed: int, home: Path) -> dict[str, Any]:
    """One drain and one anchor, each on a fresh server of its own (a server already holding
    the other's 200,000 series took twice as long: the order decided the ratio); the anchor
    goes first in even rounds."""
    server = InfluxDB1(home / f"influx-{seed}")
    data = samples(n, stable_series, seed)
    anchor_first = seed % 2 == 0
    try:
        anchor_s = anchor_on_a_fresh_server(data, seed, home) if anchor_first else 0.0
        spool_dir = home / f"spool-{seed}"
        m = MetricsLogger(
            url=server.url,
            database=DB,
            api="v1",
            role="validator",
            uid=1,
            runtime_id=f"drain-{seed}",
            retry_interval=200,
            max_retry_delay=1_000,
            spool_dir=spool_dir,
        )
        t_fill = time.perf_counter()
        for tags, fields in data:
            m.log(MEASUREMENT, tags, fields)
        deadline = time.monotonic() + 300
        while m.stats()["spooled"] < n and time.monotonic() < deadline:
            time.sleep(0.05)
        fill_s = time.perf_counter() - t_fill
        spooled = m.stats()["spooled"]
        files = [p for p in spool_dir.rglob("*-batch*") if p.suffix in (".jsonl", ".lp")]
        spool_bytes = sum(p.stat().st_size for p in files)
        spool_files = len(files)
        formats = sorted({"2 (line protocol)" if p.suffix == ".lp" else "1 (JSON lines)" for p in files})

        server.start()
        server.create_database(DB)
        t0 = time.perf_counter()
        drain_s, first_s = wait_for(lambda: m.stats()["written"], server, MEASUREMENT, n, t0, timeout=600)
        m.close()
        stats = m.stats()
        landed = count(server, MEASUREMENT)
        lost = sum(stats["dropped"].values()) + sum(stats["rejected"].values())

        server.cleanup()
        if not anchor_first:
            anchor_s = anchor_on_a_fresh_server(data, seed, home)
        return {
            "anchor_first": anchor_first,
            "spooled_before_start": spooled,
            "spool_files": spool_files,
            "spool_formats": formats,
            "spool_bytes": spool_bytes,
            "fill_seconds": round(fill_s, 3),
            "landed": landed,
            "counted_lost": lost,
            "drain_seconds": round(drain_s, 3),
            "first_landed_seconds": None if first_s is None else round(first_s, 3),
            "anchor_seconds": round(anchor_s, 3),
            "ratio": round(drain_s / anchor_s, 2),
        }
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stable-series", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "spool_drain.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tplr-bench-drain-") as tmp:
        home = Path(tmp)
        os.environ["TPLR_METRICS_HOME"] = str(home)
        rounds = [one_round(args.points, args.stable_series, seed, home) for seed in range(1, args.rounds + 1)]
    ratios = [r["ratio"] for r in rounds]
    result = {
        "machine": {"cpus": os.cpu_count()},
        "server": "influxdb-1.x (v1)",
        "points": args.points,
        "stable_series": args.stable_series,
        "rounds": rounds,
        "drain_seconds_median": statistics.median(r["drain_seconds"] for r in rounds),
        "anchor_seconds_median": statistics.median(r["anchor_seconds"] for r in rounds),
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "target": 1.25,
        "all_landed": all(r["landed"] == args.points and r["counted_lost"] == 0 for r in rounds),
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
