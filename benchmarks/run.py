"""Issue 2 benchmark: what MetricsLogger costs the caller and how fast its points land.

Run: ``python benchmarks/run.py [--points N] [--rounds R] [--out FILE] [--stable-series]``. It logs Templar's
``validator_scores`` shape through MetricsLogger into VictoriaMetrics (api="v2") and InfluxDB 1.x
(api="v1"), reads every run back from the server, and measures the anchors in the same process,
so that the ratios hold on a noisy, shared machine:

* caller cost of ``log()`` (pipeline running; and with a sink that does nothing);
* points landed per second, and points lost (logged - read back), per server;
* client CPU per point (this process, all threads), per run;
* anchor (a): influxdb-client's batching ``WriteApi`` fed hand-built ``Point`` objects
  (VictoriaMetrics only: InfluxDB 1.6.7 serves no /api/v2/write);
* anchor (b): the same lines encoded beforehand, POSTed sequentially in 5,000-line batches over
  one requests session (MetricsLogger and anchor (a) write 5,000-point batches too);
* per-point encode cost: PointBuilder.build + encode_line vs influxdb-client's
  ``Point(...).to_line_protocol()``.

Every measured run gets a fresh server (tests/servers.py: free loopback port, temp dir, warmed up
with a small write, stopped afterwards) and its own runtime_id and database, so neither read-backs
nor a growing index carry over from one run to the next. The tags and fields are generated before
any timing starts. One JSON document goes to stdout and to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import influxdb_client
import psutil
import requests
from influxdb_client import InfluxDBClient, WriteOptions
from influxdb_client import Point as ClientPoint
from null_sink import NullSink  # benchmarks/null_sink.py

import tplr_metrics
from tplr_metrics import MetricsLogger, encode_line
from tplr_metrics.encoding.line_batches import BatchLineEncoder
from tplr_metrics.encoding.points import PointBuilder, expand_queued, register_shape

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.servers import InfluxDB1, ServerProcess, VictoriaMetrics  # noqa: E402

# --- the shape: Templar's validator_scores, one point per evaluated peer and window --------

MEASUREMENT = "validator_scores"
PREFIX = "V"
STORED_MEASUREMENT = PREFIX + MEASUREMENT
FIELDS = ("gradient_score", "binary_indicator", "binary_moving_avg", "sync_score", "final_score", "weight")
PEERS = 256  # a subnet's peers: eval_uid cycles through them, then the window advances
UID = 7
POST_BATCH = 5_000
CLIENT_OPTIONS = {"batch_size": 5_000, "flush_interval": 1_000}
WARMUP_POINTS = 5_000
#: Issue 14's targets: (figure, "at least" or "at most", value). Issue 2's "landed >= 5x influxdb-client"
#: is reported without a target: where the server sets the pace no client can reach it.
TARGETS: dict[str, tuple[str, float]] = {
    "victoriametrics_landed_ours_over_preserialized_post": ("at least", 0.8),
    "influxdb1_landed_ours_over_preserialized_post": ("at least", 0.8),
    "victoriametrics_client_cpu_per_point_influxdb_client_over_ours": ("at least", 8.0),
    "victoriametrics_client_cpu_us_per_point_ours": ("at most", 5.0),
    "victoriametrics_caller_median_us_ours": ("at most", 1.0),
    "victoriametrics_caller_mean_us_ours": ("at most", 1.5),
}

Tags = dict[str, Any]
Fields = dict[str, float]
Sample = tuple[Tags, Fields]


def make_samples(n: int, seed: int, stable_series: bool = False) -> list[Sample]:
    """The tags and fields of n points: one (eval_uid, window) series per point, as in Templar;
    with ``stable_series`` the window stays put, so the points share 256 series (a what-if that
    takes the servers' series creation out of the figures)."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    for i in range(n):
        window = 0 if stable_series else i // PEERS
        tags: Tags = {"eval_uid": str(i % PEERS), "window": window, "global_step": window * 20}
        samples.append((tags, {name: rng.random() for name in FIELDS}))
    return samples


def standard_tags(run_id: str) -> dict[str, str]:
    """The tags MetricsLogger adds to every point, as open_logger() sets them."""
    return {
        "uid": str(UID),
        "prefix": PREFIX,
        "version": tplr_metrics.__version__,
        "runtime_id": run_id,
        "role": "validator",
        "group": "validator",
        "job_type": "validation",
    }


@contextmanager
def open_logger(run_id: str, **destination: Any) -> Iterator[MetricsLogger]:
    """A validator's MetricsLogger, its spool in a temp dir; closed and the dir removed on exit."""
    with tempfile.TemporaryDirectory(prefix="tplr-bench-spool-") as spool_dir:
        metrics = MetricsLogger(
            uid=UID,
            prefix=PREFIX,
            runtime_id=run_id,
            role="validator",
            group="validator",
            job_type="validation",
            spool_dir=spool_dir,
            # The anchors' batch: a validator's default is 10,000 points a write, and the same
            # points in 10,000-line bodies cost VictoriaMetrics more than in 5,000-line ones
            # (0.64-0.83 s against 0.41-0.68 s per 100,000 stable-series points, POSTed).
            batch_size=POST_BATCH,
            **destination,
        )
        try:
            yield metrics
        finally:
            metrics.close()


def new_run(label: str) -> tuple[str, str]:
    """A fresh runtime_id, and a database/bucket name of its own."""
    run_id = f"bench-{label}-{uuid.uuid4().hex[:12]}"
    return run_id, "bench_" + run_id.replace("-", "_")


def our_lines(samples: Sequence[Sample], run_id: str) -> list[str]:
    """The points of a run encoded with our encoder, timestamped now (outside any timing)."""
    builder = PointBuilder(standard_tags(run_id), PREFIX, lambda *issue: None)
    lines = []
    for tags, fields in samples:
        point = builder.build((MEASUREMENT, tags, fields, time.time_ns(), None, None))
        assert point is not None
        lines.append(encode_line(*point))
    return lines


def client_point(run_id: str, tags: Tags, fields: Fields, time_ns: int) -> ClientPoint:
    """The same point built by hand, the way influxdb-client's users write one."""
    return (
        ClientPoint(STORED_MEASUREMENT)
        .tag("uid", UID)
        .tag("prefix", PREFIX)
        .tag("version", tplr_metrics.__version__)
        .tag("runtime_id", run_id)
        .tag("role", "validator")
        .tag("group", "validator")
        .tag("job_type", "validation")
        .tag("eval_uid", tags["eval_uid"])
        .tag("window", tags["window"])
        .tag("global_step", tags["global_step"])
        .field("gradient_score", fields["gradient_score"])
        .field("binary_indicator", fields["binary_indicator"])
        .field("binary_moving_avg", fields["binary_moving_avg"])
        .field("sync_score", fields["sync_score"])
        .field("final_score", fields["final_score"])
        .field("weight", fields["weight"])
        .time(time_ns)
    )


# --- servers ----------------------------------------------------------------------------


class Target(Protocol):
    """One running server as the benchmark uses it: where to write, how to count a run back."""

    name: str
    api: str
    write_path: str
    server: ServerProcess

    def prepare(self, database: str) -> None: ...

    def write_params(self, database: str) -> dict[str, str]: ...

    def read_back(self, run_id: str, database: str, expected: int) -> int: ...


class VictoriaMetricsTarget:
    name = "victoriametrics"
    api = "v2"
    write_path = "/api/v2/write"

    def __init__(self, server: VictoriaMetrics) -> None:
        self.server = server

    def prepare(self, database: str) -> None:
        return None

    def write_params(self, database: str) -> dict[str, str]:
        return {"bucket": database, "org": "bench", "precision": "ns"}

    def read_back(self, run_id: str, database: str, expected: int) -> int:
        """Samples of the run's gradient_score series (polled: VictoriaMetrics makes rows
        searchable a moment after it acknowledged them)."""
        match = f'{{__name__="{STORED_MEASUREMENT}_gradient_score",runtime_id="{run_id}"}}'
        return self.server.count_samples(match, expected=expected, timeout=30.0)


class InfluxDB1Target:
    name = "influxdb1"
    api = "v1"
    write_path = "/write"

    def __init__(self, server: InfluxDB1) -> None:
        self.server = server

    def prepare(self, database: str) -> None:
        self.server.create_database(database)

    def write_params(self, database: str) -> dict[str, str]:
        return {"db": database, "precision": "ns"}

    def read_back(self, run_id: str, database: str, expected: int) -> int:
        return self.server.count(STORED_MEASUREMENT, "gradient_score", database, where=f"runtime_id = '{run_id}'")


@contextmanager
def fresh_server(kind: str) -> Iterator[Target]:
    """A new server in a temp dir, warmed up with one small pre-serialized write, then stopped."""
    target: Target
    if kind == "victoriametrics":
        with VictoriaMetrics() as vm:
            target = VictoriaMetricsTarget(vm)
            post_lines(target, make_samples(WARMUP_POINTS, seed=0), "warmup")
            yield target
    else:
        with InfluxDB1() as influx:
            target = InfluxDB1Target(influx)
            post_lines(target, make_samples(WARMUP_POINTS, seed=0), "warmup")
            yield target


class Clocks:
    """Wall time, this process's CPU time (all threads) and the server's CPU time, from now."""

    def __init__(self, target: Target | None = None) -> None:
        self._server = psutil.Process(target.server.proc.pid) if target and target.server.proc else None
        self._server_cpu = self._server_cpu_s()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def _server_cpu_s(self) -> float:
        if self._server is None:
            return 0.0
        times = self._server.cpu_times()
        return times.user + times.system

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        figures = {"seconds": round(wall, 3), "client_cpu_s": round(time.process_time() - self._cpu, 3)}
        if self._server is not None:
            figures["server_cpu_s"] = round(self._server_cpu_s() - self._server_cpu, 2)
        return figures


# --- measurements -----------------------------------------------------------------------


def percentiles_us(durations_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(durations_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] / 1000, 3)

    mean = round(statistics.fmean(ordered) / 1000, 3)
    return {"median": at(0.5), "mean": mean, "p99": at(0.99), "p999": at(0.999), "max": round(ordered[-1] / 1000, 1)}


def landed(logged: int, read_back: int, clocks: dict[str, float]) -> dict[str, Any]:
    return {
        **clocks,
        "logged": logged,
        "read_back": read_back,
        "lost": logged - read_back,
        "points_per_s": round(read_back / clocks["seconds"]),
        "client_cpu_us_per_point": round(clocks["client_cpu_s"] / logged * 1e6, 2),
    }


def log_samples(metrics: MetricsLogger, samples: Sequence[Sample]) -> tuple[list[int], bool]:
    """log() every sample as a validator does after a window, then flush(); (log() durations, flushed)."""
    durations: list[int] = []
    clock = time.perf_counter_ns
    log = metrics.log
    for tags, fields in samples:
        t0 = clock()
        log(MEASUREMENT, tags, fields)
        durations.append(clock() - t0)
    return durations, metrics.flush(timeout=300)


def measure_ours(target: Target, samples: Sequence[Sample]) -> dict[str, Any]:
    """MetricsLogger into the server: caller cost per log(), first log() to flush() landed, loss."""
    run_id, database = new_run("ours")
    target.prepare(database)
    destination = {"url": target.server.url, "api": target.api, "database": database, "sinks": ["influxdb"]}
    with open_logger(run_id, **destination) as metrics:
        clocks = Clocks(target)
        durations, flushed = log_samples(metrics, samples)
        elapsed = clocks.stop()
        stats = metrics.stats()
    return {
        **landed(len(samples), target.read_back(run_id, database, len(samples)), elapsed),
        "flush_returned": flushed,
        "caller_us": percentiles_us(durations),
        "stats": {key: stats.get(key) for key in ("logged", "written", "dropped", "rejected", "retried")},
    }


def measure_ours_null_sink(samples: Sequence[Sample]) -> dict[str, Any]:
    """MetricsLogger with a sink that does nothing: the pure caller cost of log()."""
    with open_logger(new_run("null")[0], sink=NullSink()) as metrics:
        clocks = Clocks()
        durations, flushed = log_samples(metrics, samples)
        elapsed = clocks.stop()
    return {"caller_us": percentiles_us(durations), **elapsed, "flush_returned": flushed}


def measure_client_batching(target: Target, samples: Sequence[Sample]) -> dict[str, Any]:
    """Anchor (a): influxdb-client's batching WriteApi fed hand-built Points, timed to close()."""
    run_id, database = new_run("client")
    target.prepare(database)
    client = InfluxDBClient(url=target.server.url, token="bench", org="bench")
    write_api = client.write_api(write_options=WriteOptions(**CLIENT_OPTIONS))
    durations: list[int] = []
    clock = time.perf_counter_ns
    clocks = Clocks(target)
    for tags, fields in samples:
        t0 = clock()
        write_api.write(bucket=database, record=client_point(run_id, tags, fields, time.time_ns()))
        durations.append(clock() - t0)
    write_api.close()
    client.close()
    elapsed = clocks.stop()
    return {
        **landed(len(samples), target.read_back(run_id, database, len(samples)), elapsed),
        "caller_us": percentiles_us(durations),
        "write_options": CLIENT_OPTIONS,
    }


def post_lines(target: Target, samples: Sequence[Sample], label: str) -> tuple[str, str, dict[str, float]]:
    """POST the samples, encoded beforehand, in POST_BATCH-line bodies over one session."""
    run_id, database = new_run(label)
    target.prepare(database)
    lines = our_lines(samples, run_id)
    bodies = ["\n".join(lines[i : i + POST_BATCH]).encode() for i in range(0, len(lines), POST_BATCH)]
    url = target.server.url + target.write_path
    params = target.write_params(database)
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    with requests.Session() as session:
        clocks = Clocks(target)
        statuses = [session.post(url, params=params, data=body, headers=headers).status_code for body in bodies]
        elapsed = clocks.stop()
    if any(status != 204 for status in statuses):
        raise RuntimeError(f"{target.name} refused a pre-serialized batch: HTTP {sorted(set(statuses))}")
    return run_id, database, elapsed


def measure_preserialized(target: Target, samples: Sequence[Sample]) -> dict[str, Any]:
    """Anchor (b): the same lines encoded beforehand, POSTed in 5,000-line batches, one session."""
    run_id, database, elapsed = post_lines(target, samples, "post")
    read_back = target.read_back(run_id, database, len(samples))
    return {**landed(len(samples), read_back, elapsed), "batch_lines": POST_BATCH}


def per_point_us(n: int, repeats: int, work: Callable[[], None]) -> float:
    """Best of `repeats` runs of `work` over n points, in µs per point (the least noisy figure)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        work()
        best = min(best, time.perf_counter_ns() - started)
    return round(best / n / 1000, 3)


def measure_encoders(samples: Sequence[Sample], repeats: int = 5) -> dict[str, Any]:
    """Per-point cost of building and encoding one validator_scores line, ours vs influxdb-client."""
    run_id = new_run("encode")[0]
    time_ns = time.time_ns()
    builder = PointBuilder(standard_tags(run_id), PREFIX, lambda *issue: None)
    records = [(MEASUREMENT, tags, fields, time_ns, None, None) for tags, fields in samples]

    def ours() -> None:
        for record in records:
            encode_line(*builder.build(record))  # type: ignore[misc]

    # What the pipeline does when every destination takes line protocol: records queued compact,
    # encoded a batch of 1,000 at a time with no Point (encoding/line_batches.py).
    shape = register_shape(MEASUREMENT, tuple(samples[0][0]), FIELDS)
    assert shape is not None
    compact = [(shape.id, time_ns, *tags.values(), *fields.values()) for tags, fields in samples]
    batch_builder = PointBuilder(standard_tags(run_id), PREFIX, lambda *issue: None)
    batches = BatchLineEncoder(batch_builder, lambda record: batch_builder.build(expand_queued(record)))

    def ours_batches() -> None:
        for i in range(0, len(compact), 1_000):
            batches.encode(compact[i : i + 1_000])

    def theirs() -> None:
        for tags, fields in samples:
            client_point(run_id, tags, fields, time_ns).to_line_protocol()

    ours_us = per_point_us(len(samples), repeats, ours)
    batches_us = per_point_us(len(samples), repeats, ours_batches)
    theirs_us = per_point_us(len(samples), repeats, theirs)
    ours_line = encode_line(*builder.build(records[0]))  # type: ignore[misc]
    theirs_line = client_point(run_id, *samples[0], time_ns).to_line_protocol()
    return {
        "points": len(samples),
        "best_of": repeats,
        "ours_build_plus_encode_line_us": ours_us,
        "influxdb_client_point_to_line_protocol_us": theirs_us,
        "influxdb_client_over_ours": round(theirs_us / ours_us, 2),
        "ours_batch_line_encoder_us": batches_us,
        "influxdb_client_over_ours_batch_line_encoder": round(theirs_us / batches_us, 2),
        # the same tags, fields and time; influxdb-client sorts the tags, we keep their order
        "same_line_content": sorted(ours_line.replace(" ", ",").split(","))
        == sorted(theirs_line.replace(" ", ",").split(",")),
    }


# --- one round, ratios, report ----------------------------------------------------------


def measure_round(samples: Sequence[Sample], rotate: int) -> dict[str, Any]:
    """Every landed-throughput run once, each on a fresh server, in an order rotated per round."""
    runs: list[tuple[str, str, Callable[[Target, Sequence[Sample]], dict[str, Any]]]] = [
        ("victoriametrics", "preserialized_post", measure_preserialized),
        ("victoriametrics", "ours", measure_ours),
        ("victoriametrics", "influxdb_client_batching", measure_client_batching),
        ("influxdb1", "preserialized_post", measure_preserialized),
        ("influxdb1", "ours", measure_ours),
    ]
    k = rotate % len(runs)
    results: dict[str, dict[str, Any]] = {"victoriametrics": {}, "influxdb1": {}}
    for kind, name, measure in runs[k:] + runs[:k]:
        log_progress(f"{kind}: {name}")
        with fresh_server(kind) as target:
            results[kind][name] = measure(target, samples)
    return {"victoriametrics": results["victoriametrics"], "influxdb1": results["influxdb1"]}


def round_ratios(figures: dict[str, Any]) -> dict[str, float]:
    vm, influx1 = figures["victoriametrics"], figures["influxdb1"]
    return {
        "victoriametrics_landed_ours_over_influxdb_client_batching": vm["ours"]["points_per_s"]
        / vm["influxdb_client_batching"]["points_per_s"],
        "victoriametrics_landed_ours_over_preserialized_post": vm["ours"]["points_per_s"]
        / vm["preserialized_post"]["points_per_s"],
        "influxdb1_landed_ours_over_preserialized_post": influx1["ours"]["points_per_s"]
        / influx1["preserialized_post"]["points_per_s"],
        "caller_median_influxdb_client_over_ours": vm["influxdb_client_batching"]["caller_us"]["median"]
        / vm["ours"]["caller_us"]["median"],
        # Not targets. What the client spends per point, whatever the server's pace:
        "victoriametrics_client_cpu_per_point_influxdb_client_over_ours": vm["influxdb_client_batching"][
            "client_cpu_us_per_point"
        ]
        / vm["ours"]["client_cpu_us_per_point"],
        # and the most the first ratio could be while the server is the bottleneck.
        "victoriametrics_landed_preserialized_post_over_influxdb_client_batching": vm["preserialized_post"][
            "points_per_s"
        ]
        / vm["influxdb_client_batching"]["points_per_s"],
        # Figures in µs, not ratios (the machine's speed is in the report's environment):
        "victoriametrics_client_cpu_us_per_point_ours": vm["ours"]["client_cpu_us_per_point"],
        "victoriametrics_caller_median_us_ours": vm["ours"]["caller_us"]["median"],
        "victoriametrics_caller_mean_us_ours": vm["ours"]["caller_us"]["mean"],
    }


def ratios(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over rounds of each same-round ratio, against its target."""
    per_round = [round_ratios(r) for r in rounds]
    out: dict[str, Any] = {}
    for name in per_round[0]:
        values = [r[name] for r in per_round]
        entry: dict[str, Any] = {"value": round(statistics.median(values), 2)}
        if len(values) > 1:
            entry["per_round"] = [round(v, 2) for v in values]
        if name in TARGETS:
            direction, target = TARGETS[name]
            entry["target"] = f"{direction} {target}"
            entry["met"] = entry["value"] >= target if direction == "at least" else entry["value"] <= target
        out[name] = entry
    return out


def version_of(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=REPO)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "tplr_metrics": tplr_metrics.__version__,
        "git_head": version_of(["git", "rev-parse", "--short", "HEAD"]),
        "tplr_metrics_uncommitted_changes": bool(
            subprocess.run(
                ["git", "status", "--porcelain", "tplr_metrics"], capture_output=True, text=True, cwd=REPO
            ).stdout.strip()
        ),
        "influxdb_client": influxdb_client.__version__,
        "influxd": version_of(["influxd", "version"]),
        "pure_python_loop_ns": pure_python_loop_ns(),
    }


def pure_python_loop_ns(n: int = 2_000_000) -> float:
    """This machine's speed today: ns per iteration of a fixed pure-Python loop (best of 5).
    The shared machine's figures move by 2x between days; the µs figures move with this one."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        total = 0
        for i in range(n):
            total += (i * i) % 7
        best = min(best, time.perf_counter_ns() - started)
    return round(best / n, 1)


def log_progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(n: int, rounds: int, seed: int, stable_series: bool = False) -> dict[str, Any]:
    samples = make_samples(n, seed, stable_series)
    gc.collect()
    gc.freeze()  # the samples live through every run: keep the collector from walking them
    report: dict[str, Any] = {
        "benchmark": "validator_scores (issue 2)",
        "points": n,
        "rounds": rounds,
        "environment": environment(),
        "shape": {
            "measurement": STORED_MEASUREMENT,
            "standard_tags": sorted(standard_tags("")),
            "log_tags": ["eval_uid", "window", "global_step"],
            "float_fields": list(FIELDS),
            "series": (
                "256, window fixed (--stable-series what-if, not Templar's shape)"
                if stable_series
                else "one per point (eval_uid cycles over 256 peers, then window advances), as in Templar"
            ),
        },
        "notes": [
            "seconds: first log()/Point build/POST to flush() returning True / WriteApi+client close() / last "
            "response; points_per_s = read_back / seconds; client_cpu_s and server_cpu_s: CPU used in that "
            "window (this process, all threads; the server); client_cpu_us_per_point = client_cpu_s / logged",
            "InfluxDB 1.6.7 serves no /api/v2/write (1.8+ does) and influxdb-client's WriteApi only writes there, "
            "so anchor (a) runs against VictoriaMetrics only; InfluxDB 1.x gets anchor (b), the pre-serialized "
            "POST to /write",
            "each landed-throughput run has a fresh server; ratios are taken within a round, then the median",
        ],
    }
    log_progress("encoders")
    report["encode_us_per_point"] = measure_encoders(samples[:20_000])
    log_progress("null sink")
    report["caller_null_sink"] = measure_ours_null_sink(samples)
    report["landed"] = [measure_round(samples, rotate=r) for r in range(rounds)]
    first = report["landed"][0]
    report["caller_us"] = {
        "ours_log_pipeline_running_victoriametrics": first["victoriametrics"]["ours"]["caller_us"],
        "ours_log_pipeline_running_influxdb1": first["influxdb1"]["ours"]["caller_us"],
        "ours_log_null_sink": report["caller_null_sink"]["caller_us"],
        "influxdb_client_point_build_plus_write": first["victoriametrics"]["influxdb_client_batching"]["caller_us"],
    }
    report["ratios"] = ratios(report["landed"])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="validator_scores benchmark (issue 2); prints JSON")
    parser.add_argument("--points", type=int, default=100_000, help="points per measured run (default 100000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of landed-throughput runs (default 1)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "latest.json", help="where the JSON goes too"
    )
    parser.add_argument("--seed", type=int, default=2, help="seed of the field values")
    parser.add_argument(
        "--stable-series", action="store_true", help="what-if: keep window fixed, so points share 256 series"
    )
    args = parser.parse_args(argv)
    report = run(args.points, max(1, args.rounds), args.seed, args.stable_series)
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
