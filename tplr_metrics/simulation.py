"""Simulated Templar miners, validators and evaluators logging through ``MetricsLogger``.

The engine behind ``tplr-metrics simulate`` and ``telemetry/simulator/*.py``: measurement shapes
follow Templar's neurons (the catalog in the project's shared notes), curves look like a
training run (loss falling with noise, per-peer scores every window, timings, an occasional
slash), and time is compressed: a window lasts ``window_seconds`` of wall time.

Each simulated node owns one logger built with no server arguments, so the library picks the
destination exactly as it would for a real miner; each node is its own run (runtime_id).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from ._version import __version__
from .catalog import BENCHMARK_TASKS, HEALTH_MEASUREMENT, ROLES, SYSTEM_MEASUREMENT
from .collect.background import health_fields
from .logger import MetricsLogger

#: Operations a validator times, with their typical seconds.
TIMED_OPERATIONS = {"gather": 3.0, "evaluation": 12.0, "model_update": 1.5, "peer_update": 1.0, "put": 0.8}


@dataclass
class SimulationOptions:
    """Knobs of one simulation; ``windows`` wins over ``duration`` when both are set."""

    miners: int = 2
    validators: int = 1
    evaluators: int = 1
    peers: int = 16
    window_seconds: float = 0.5
    windows: int | None = None
    duration: float | None = None
    seed: int | None = None
    #: Failure injection: the first miner stops logging after this many windows.
    silent_miner_after: int | None = None
    #: Failure injection: validators slash one peer every N windows (0: never).
    slash_every: int = 5
    #: Evaluators score a checkpoint every N windows.
    eval_every: int = 2
    health: bool = True
    #: The version tag every node logs (Templar's ``tplr.__version__``).
    version: str = __version__
    #: Failure/upgrade injection: before this window every node restarts as a new run (a new
    #: runtime_id) logging ``upgrade_to`` (default: ``version`` with its last number bumped).
    upgrade_at: int | None = None
    upgrade_to: str | None = None
    #: Templar passes its bittensor config to the logger (``config=``), whose scalars become
    #: ``config_*`` tags: the dashboards filter on config_netuid and config_project. A ``config``
    #: in ``logger_options`` replaces this one.
    netuid: int = 3
    project: str = "templar"
    logger_options: dict[str, Any] = field(default_factory=dict)

    def upgrade_version(self) -> str:
        return self.upgrade_to or next_version(self.version)

    def window_count(self) -> int:
        if self.windows is not None:
            return max(1, self.windows)
        if self.duration is not None:
            return max(1, math.ceil(self.duration / max(self.window_seconds, 1e-9)))
        return 10


@dataclass
class RunSummary:
    role: str
    uid: str
    runtime_id: str
    logged: int = 0
    written: int = 0
    dropped: int = 0
    rejected: int = 0
    last_error: str | None = None


@dataclass
class SimulationSummary:
    windows: int
    seconds: float
    logged: int
    written: int
    dropped: int
    rejected: int
    retried: int
    destination: str
    runs: list[RunSummary]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [
            f"simulated {self.windows} windows in {self.seconds:.1f}s: {len(self.runs)} runs, "
            f"{self.logged} points logged, {self.written} written, {self.dropped} dropped, "
            f"{self.rejected} rejected",
            f"destination: {self.destination}",
        ]
        for run in self.runs:
            lines.append(f"  {run.role:<9} uid={run.uid:<4} runtime_id={run.runtime_id} written={run.written}")
        errors = {run.last_error for run in self.runs if run.last_error and run.dropped}
        lines.extend(f"last error: {error}" for error in sorted(errors))
        return "\n".join(lines)


LoggerFactory = Callable[..., MetricsLogger]


def next_version(version: str) -> str:
    """2.1.3 -> 2.1.4; a version not ending in a number gets ".1"."""
    head, _, last = version.rpartition(".")
    if last.isdigit():
        return f"{head}.{int(last) + 1}" if head else str(int(last) + 1)
    return f"{version}.1"


class Node:
    """One simulated process: its logger, its random stream and its per-window behaviour."""

    role = ""

    def __init__(self, uid: int, options: SimulationOptions, rng: random.Random, factory: LoggerFactory) -> None:
        self.uid = uid
        self.options = options
        self.rng = rng
        self.factory = factory
        self.version = options.version
        self.runtime_id = str(uuid.uuid4())
        #: Summaries and counters of the runs this node ended (an upgrade restarts it).
        self.ended: list[tuple[RunSummary, dict[str, Any]]] = []
        self.logger = self.open_logger()
        self.gpu_total_mb = rng.choice((81_559.0, 143_771.0, 24_564.0))
        self.mem_total_mb = rng.choice((257_000.0, 515_000.0, 1_031_000.0))
        self._last_stats: dict[str, Any] = {}
        self._last_stats_at = time.monotonic()

    def open_logger(self) -> MetricsLogger:
        """The node's logger, built as Templar builds it: role tags, version and its config."""
        role = ROLES[self.role]
        options = dict(self.options.logger_options)
        options.setdefault("config", argparse.Namespace(netuid=self.options.netuid, project=self.options.project))
        # The node logs its own health point each (time-compressed) window, not every 10 s.
        options.setdefault("health_every", 0)
        return self.factory(
            uid=self.uid,
            role=self.role,
            prefix=role["prefix"],
            group=role["group"],
            job_type=role["job_type"],
            runtime_id=self.runtime_id,
            version=self.version,
            **options,
        )

    def restart(self, version: str, close_timeout: float) -> None:
        """The process restarts on a new version: the run ends, a new one (runtime_id) begins."""
        self.logger.close(timeout=close_timeout)
        self.ended.append((self.summary(), self.logger.stats()))
        self.version = version
        self.runtime_id = str(uuid.uuid4())
        self.logger = self.open_logger()
        self._last_stats, self._last_stats_at = {}, time.monotonic()

    def step(self, index: int, window: int) -> None:
        raise NotImplementedError

    def noise(self, scale: float) -> float:
        return self.rng.gauss(0.0, scale)

    def log_system(self, window: int, busy: float) -> None:
        """A machine's CPU, memory and GPU figures; busier nodes use more."""
        reserved = self.gpu_total_mb * min(0.99, 0.6 + 0.35 * busy)
        self.logger.log(
            SYSTEM_MEASUREMENT,
            tags={"window": window, "gpu_id": "0", "gpu_name": "NVIDIA H100 80GB HBM3"},
            fields={
                "sys_cpu_usage": min(100.0, max(0.0, 35.0 + 50.0 * busy + self.noise(5.0))),
                "sys_mem_used": self.mem_total_mb * min(0.95, 0.3 + 0.4 * busy + abs(self.noise(0.02))),
                "sys_mem_total": self.mem_total_mb,
                "gpu_mem_allocated_mb": self.gpu_total_mb * min(0.97, 0.5 + 0.4 * busy + abs(self.noise(0.02))),
                "gpu_mem_cached_mb": reserved,
                "gpu_mem_total_mb": self.gpu_total_mb,
                # NVML's view: the allocator's reservation plus the CUDA context, of the device's memory
                "gpu_mem_used_mb": min(self.gpu_total_mb, reserved + 450.0),
                "gpu_mem_capacity_mb": self.gpu_total_mb,
                "gpu_mem_segments": 400 + int(200 * busy) + self.rng.randint(0, 40),
            },
        )

    def log_health(self) -> None:
        """The pipeline-health point of this logger's real counters, in the library's own shape."""
        stats = self.logger.stats()
        now = time.monotonic()
        previous = self._last_stats or stats
        self.logger.log(HEALTH_MEASUREMENT, tags={}, fields=health_fields(previous, stats, now - self._last_stats_at))
        self._last_stats, self._last_stats_at = stats, now

    def summary(self) -> RunSummary:
        stats = self.logger.stats()
        return RunSummary(
            role=self.role,
            uid=str(self.uid),
            runtime_id=self.runtime_id,
            logged=int(stats["logged"]),
            written=int(stats["written"]),
            dropped=int(stats["dropped_total"]),
            rejected=int(stats["rejected_total"]),
            last_error=stats.get("last_error"),
        )


class MinerNode(Node):
    role = "miner"

    def __init__(self, uid: int, options: SimulationOptions, rng: random.Random, factory: LoggerFactory) -> None:
        super().__init__(uid, options, rng, factory)
        self.loss_floor = 2.1 + rng.uniform(0.0, 0.4)
        self.loss_start = 9.0 + rng.uniform(-0.5, 1.5)
        self.decay = rng.uniform(25.0, 60.0)
        self.speed = rng.uniform(3_500.0, 9_000.0)

    def silent(self, index: int) -> bool:
        after = self.options.silent_miner_after
        return after is not None and self.uid == 0 and index >= after

    def step(self, index: int, window: int) -> None:
        if self.silent(index):
            return  # failure injection: this miner went silent
        peers = self.options.peers
        gathered = sorted(self.rng.sample(range(peers), k=max(1, int(peers * self.rng.uniform(0.7, 1.0)))))
        skipped = [p for p in range(peers) if p not in gathered]
        gather = abs(2.0 + self.noise(0.6))
        peer_update = abs(0.8 + self.noise(0.2))
        compression = abs(0.5 + self.noise(0.1))
        put = abs(1.2 + self.noise(0.3))
        model_update = abs(0.9 + self.noise(0.2))
        total = gather + peer_update + compression + put + model_update + 20.0 + self.noise(2.0)
        loss = self.loss_floor + (self.loss_start - self.loss_floor) * math.exp(-index / self.decay)
        self.logger.log(
            "training_step_v2",
            tags={"window": window, "global_step": index},
            fields={
                "loss": max(0.1, loss + self.noise(0.08)),
                "n_gather_peers": len(gathered),
                "gather_success_rate": 100.0 * len(gathered) / peers,
                "gather_peers": json.dumps(gathered),
                "skipped_peers": json.dumps(skipped),
                "window_total_time": total,
                "peer_update_time": peer_update,
                "compression_time": compression,
                "gather_time": gather,
                "put_time": put,
                "model_update_time": model_update,
                "tokens_per_sec": max(0.0, self.speed * (1.0 + index / 400.0) + self.noise(250.0)),
            },
        )
        self.log_system(window, busy=0.8)
        if self.options.health:
            self.log_health()


class ValidatorNode(Node):
    role = "validator"

    def __init__(self, uid: int, options: SimulationOptions, rng: random.Random, factory: LoggerFactory) -> None:
        super().__init__(uid, options, rng, factory)
        peers = options.peers
        self.mu = {p: 25.0 + rng.gauss(0.0, 1.0) for p in range(peers)}
        self.sigma = dict.fromkeys(range(peers), 8.333)
        self.moving = dict.fromkeys(range(peers), 0.0)
        self.score = dict.fromkeys(range(peers), 0.0)
        self.quality = {p: rng.uniform(0.2, 1.0) for p in range(peers)}
        self.slashed: list[int] = []

    def inactive_peers(self, index: int) -> list[int]:
        """The silent miner once it stopped, and a rotating peer that missed its window."""
        inactive = {(index * 5 + self.uid) % self.options.peers} if index % 3 == 1 else set()
        after = self.options.silent_miner_after
        if after is not None and index >= after:
            inactive.add(0)
        return sorted(inactive)

    def step(self, index: int, window: int) -> None:
        log = self.logger.log
        peers = self.options.peers
        base = {"window": window, "global_step": index}
        inactive = self.inactive_peers(index)
        active = [p for p in range(peers) if p not in inactive]
        evaluated = active[: max(1, min(len(active), 8 + index % 5))] if active else []

        timings = {op: abs(t + self.noise(t / 5)) for op, t in TIMED_OPERATIONS.items()}
        for op, seconds in timings.items():
            log("timing", tags=dict(base), fields={op: seconds})

        loss_before = 2.4 + 7.0 * math.exp(-index / 45.0) + self.noise(0.05)
        own_gain = abs(0.04 + self.noise(0.015))
        random_gain = abs(0.03 + self.noise(0.015))
        for peer in evaluated:
            tags = {"eval_uid": str(peer), "window": window, "global_step": index}
            quality = self.quality[peer]
            gradient_score = quality * 0.01 + self.noise(0.002)
            binary = 1.0 if gradient_score > 0 else -1.0
            self.moving[peer] = 0.95 * self.moving[peer] + 0.05 * binary
            sync_score = min(1.0, max(0.0, 1.0 - abs(self.noise(0.1))))
            self.mu[peer] += (quality - 0.5) * 0.4 + self.noise(0.3)
            self.sigma[peer] = max(1.0, self.sigma[peer] * 0.97)
            ordinal = self.mu[peer] - 3.0 * self.sigma[peer]
            self.score[peer] = max(0.0, ordinal / 25.0 * max(self.moving[peer], 0.0) * sync_score)
            log(
                "validator_openskill",
                tags=tags,
                fields={"mu": self.mu[peer], "sigma": self.sigma[peer], "ordinal": ordinal},
            )
            log(
                "validator_sync_score",
                tags={"uid": str(peer), "window": window, "global_step": index},
                fields={
                    "l2_norm": abs(1.0 + self.noise(0.2)),
                    "avg_l2_norm": abs(1.0 + self.noise(0.05)),
                    "avg_abs_diff": abs(self.noise(1e-4)),
                    "max_diff": abs(self.noise(1e-3)),
                    "avg_steps_behind": abs(self.noise(0.5)),
                    "max_steps_behind": float(self.rng.randint(0, 3)),
                },
                with_system_metrics=True,
                with_gpu_metrics=True,
            )
        total = sum(self.score[p] for p in evaluated) or 1.0
        for peer in evaluated:
            log(
                "validator_scores",
                tags={"eval_uid": str(peer), "window": window, "global_step": index},
                fields={
                    "gradient_score": self.quality[peer] * 0.01 + self.noise(0.002),
                    "binary_indicator": 1.0 if self.moving[peer] >= 0 else -1.0,
                    "binary_moving_avg": self.moving[peer],
                    "sync_score": min(1.0, max(0.0, 1.0 - abs(self.noise(0.1)))),
                    "final_score": self.score[peer],
                    "weight": self.score[peer] / total,
                },
                with_system_metrics=True,
                with_gpu_metrics=True,
            )
        for peer in inactive:
            before = self.score[peer]
            self.score[peer] = before * 0.75
            log(
                "validator_inactivity",
                tags={"uid": str(peer), "window": window, "global_step": index},
                fields={"score_before": before, "score_after": self.score[peer]},
                with_system_metrics=True,
                with_gpu_metrics=True,
            )
        every = self.options.slash_every
        if every > 0 and index % every == every - 1 and evaluated:
            victim = self.rng.choice(evaluated)
            before = self.score[victim]
            self.score[victim] = 0.0
            self.slashed.append(victim)
            log(
                "validator_slash",
                tags={"eval_uid": str(victim), "window": window, "global_step": index, "reason_code": "sync_fail"},
                fields={
                    "score_before": before,
                    "score_after": 0.0,
                    "reason": f"peer {victim} is out of sync: max_steps_behind above the limit",
                },
                with_system_metrics=True,
                with_gpu_metrics=True,
            )
        grads = [abs(0.5 + self.noise(0.2)) for _ in evaluated] or [0.0]
        grads.sort()
        mean_grad = sum(grads) / len(grads)
        log(
            "validator_gradient_stats",
            tags=dict(base),
            fields={
                "mean_grad_norm": mean_grad,
                "max_grad_norm": grads[-1],
                "min_grad_norm": grads[0],
                "median_grad_norm": grads[len(grads) // 2],
                "grad_norm_std": math.sqrt(sum((g - mean_grad) ** 2 for g in grads) / len(grads)),
                "mean_weight_norm": 180.0 + self.noise(0.5),
                "grad_to_weight_ratio": mean_grad / 180.0,
            },
            with_system_metrics=True,
            with_gpu_metrics=True,
        )
        log(
            "validator_window_v2",
            tags=dict(base),
            fields={
                "loss_own_before": loss_before,
                "loss_own_after": loss_before - own_gain,
                "loss_random_before": loss_before + 0.05,
                "loss_random_after": loss_before + 0.05 - random_gain,
                "loss_own_improvement": own_gain / loss_before,
                "loss_random_improvement": random_gain / (loss_before + 0.05),
                "current_block": 5_000_000 + index * 60,
                "evaluated_uids_count": len(evaluated),
                "outer_lr": 0.7,
                "inner_lr": 4e-4 * min(1.0, (index + 1) / 10.0),
                "active_miners_count": len(active),
                "gather_success_rate": 100.0 * len(active) / peers,
                "window_total_time": sum(timings.values()) + 10.0,
                "peer_update_time": timings["peer_update"],
                "gather_time": timings["gather"],
                "evaluation_time": timings["evaluation"],
                "model_update_time": timings["model_update"],
                "total_peers": peers,
                "total_skipped": peers - len(active),
            },
            with_system_metrics=True,
            with_gpu_metrics=True,
        )
        self.log_system(window, busy=0.6)
        if self.options.health:
            self.log_health()


class EvaluatorNode(Node):
    role = "evaluator"

    def step(self, index: int, window: int) -> None:
        every = max(1, self.options.eval_every)
        if index % every == 0:
            self.evaluate(index, window)
        self.log_system(window, busy=0.9 if index % every == 0 else 0.1)
        if self.options.health:
            self.log_health()

    def evaluate(self, index: int, window: int) -> None:
        progress = 1.0 - math.exp(-index / 50.0)
        for task, metric, start in BENCHMARK_TASKS:
            self.logger.log(
                "benchmark_task",
                tags={"task": task, "metric": metric, "global_step": index, "window": window},
                fields={"score": min(1.0, start + 0.15 * progress + self.noise(0.01))},
            )
        self.logger.log(
            "benchmark_summary",
            tags={"global_step": index, "window": window},
            fields={"num_tasks": len(BENCHMARK_TASKS), "global_step": index},
        )
        average_loss = 2.3 + 6.5 * math.exp(-index / 45.0) + self.noise(0.03)
        tokens = 2_000_000 + self.rng.randint(0, 50_000)
        total_bytes = int(tokens * 4.2)
        self.logger.log(
            "custom_evaluation",
            tags={"global_step": index, "window": window, "world_size": 8},
            fields={
                "perplexity": math.exp(average_loss),
                "average_loss": average_loss,
                "bpb": average_loss * tokens / (total_bytes * math.log(2)),
                "runtime_s": abs(120.0 + self.noise(10.0)),
                "total_tokens": tokens,
                "total_bytes": total_bytes,
            },
        )


def build_nodes(options: SimulationOptions, rng: random.Random, factory: LoggerFactory) -> list[Node]:
    """Miners take uids 0..M-1 (they are peers), validators and evaluators the uids after the peers."""
    nodes: list[Node] = []
    try:
        for i in range(options.miners):
            nodes.append(MinerNode(i, options, random.Random(rng.random()), factory))
        base = max(options.peers, options.miners)
        for i in range(options.validators):
            nodes.append(ValidatorNode(base + i, options, random.Random(rng.random()), factory))
        for i in range(options.evaluators):
            uid = base + options.validators + i
            nodes.append(EvaluatorNode(uid, options, random.Random(rng.random()), factory))
    except BaseException:
        for node in nodes:
            node.logger.close(timeout=5.0)
        raise
    return nodes


class Progress:
    """One rewritten line on a terminal; otherwise one short line per window."""

    def __init__(self, stream: TextIO | None, total: int) -> None:
        self.stream = stream
        self.total = total
        self.tty = bool(stream is not None and stream.isatty())

    def update(self, index: int, logged: int) -> None:
        if self.stream is None:
            return
        text = f"window {index + 1}/{self.total}: {logged} points logged"
        if self.tty:
            self.stream.write("\r" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.stream is not None and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_simulation(
    options: SimulationOptions,
    *,
    progress: TextIO | None = None,
    logger_factory: LoggerFactory = MetricsLogger,
    close_timeout: float = 30.0,
) -> SimulationSummary:
    """Run every node for the configured number of windows, then close the loggers."""
    if options.peers < 1:
        raise ValueError("peers must be at least 1")
    if min(options.miners, options.validators, options.evaluators) < 0:
        raise ValueError("node counts cannot be negative")
    if options.window_seconds < 0:
        raise ValueError("window_seconds cannot be negative")
    rng = random.Random(options.seed)
    total = options.window_count()
    nodes = build_nodes(options, rng, logger_factory)
    start_window = rng.randint(10_000, 60_000)
    started = time.monotonic()
    bar = Progress(progress, total)
    windows = 0
    try:
        for index in range(total):
            window_started = time.monotonic()
            if options.upgrade_at is not None and index == options.upgrade_at:
                for node in nodes:
                    node.restart(options.upgrade_version(), close_timeout)
            for node in nodes:
                node.step(index, start_window + index)
            windows += 1
            bar.update(index, sum(node.logger.stats()["logged"] for node in nodes))
            remaining = options.window_seconds - (time.monotonic() - window_started)
            if remaining > 0 and index + 1 < total:
                time.sleep(remaining)
    finally:
        bar.done()
        for node in nodes:
            node.logger.close(timeout=close_timeout)
    runs = [run for node in nodes for run in [*(ended for ended, _ in node.ended), node.summary()]]
    totals = [stats for node in nodes for stats in [*(s for _, s in node.ended), node.logger.stats()]]
    return SimulationSummary(
        windows=windows,
        seconds=round(time.monotonic() - started, 3),
        logged=sum(r.logged for r in runs),
        written=sum(r.written for r in runs),
        dropped=sum(r.dropped for r in runs),
        rejected=sum(r.rejected for r in runs),
        retried=sum(int(s["retried"]) for s in totals),
        destination=repr(nodes[0].logger.sink) if nodes else "nowhere (no nodes)",
        runs=runs,
    )


# --- command-line plumbing shared by ``tplr-metrics simulate`` and telemetry/simulator -----


def add_arguments(parser: argparse.ArgumentParser, role: str | None = None) -> None:
    """The simulation knobs; ``role`` makes a one-role script (one node of it by default)."""
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, metavar="SECONDS", help="how long to run (wall time)")
    length.add_argument("--windows", type=int, metavar="N", help="how many windows to simulate (default 10)")
    if role is None:
        parser.add_argument("--miners", type=int, default=2, metavar="M", help="simulated miners (default 2)")
        parser.add_argument("--validators", type=int, default=1, metavar="V", help="simulated validators (default 1)")
        parser.add_argument("--evaluators", type=int, default=1, metavar="E", help="simulated evaluators (default 1)")
    else:
        parser.add_argument("--count", type=int, default=1, metavar="N", help=f"simulated {role}s (default 1)")
    parser.add_argument("--peers", type=int, default=16, metavar="N", help="peers in the subnet (default 16)")
    parser.add_argument(
        "--window-seconds", type=float, default=0.5, metavar="S", help="wall time of one window (default 0.5)"
    )
    parser.add_argument("--seed", type=int, metavar="N", help="random seed, for repeatable curves")
    if role in (None, "miner", "validator"):
        parser.add_argument(
            "--silent-miner-after",
            type=int,
            metavar="N",
            help="failure injection: miner uid 0 stops logging after N windows (validators mark it inactive)",
        )
    if role in (None, "validator"):
        parser.add_argument(
            "--slash-every", type=int, default=5, metavar="N", help="validators slash a peer every N windows (0: never)"
        )
    if role in (None, "evaluator"):
        parser.add_argument(
            "--eval-every", type=int, default=2, metavar="N", help="evaluators score a checkpoint every N windows"
        )
    parser.add_argument(
        "--templar-version",
        default=__version__,
        metavar="V",
        help=f"the version tag the nodes log (default {__version__}, this library's)",
    )
    parser.add_argument(
        "--upgrade-at",
        type=int,
        metavar="N",
        help="before window N every node restarts as a new run on the version --upgrade-to",
    )
    parser.add_argument(
        "--upgrade-to", metavar="V", help="the version after --upgrade-at (default: the last number bumped)"
    )
    parser.add_argument(
        "--netuid", type=int, default=3, metavar="N", help="config.netuid (tag config_netuid; default 3)"
    )
    parser.add_argument(
        "--project", default="templar", metavar="NAME", help="config.project (tag config_project; default templar)"
    )
    parser.add_argument("--no-health", action="store_true", help=f"do not log {HEALTH_MEASUREMENT} points")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def options_from_args(args: argparse.Namespace, role: str | None = None) -> SimulationOptions:
    counts = {"miners": 0, "validators": 0, "evaluators": 0}
    if role is None:
        counts = {"miners": args.miners, "validators": args.validators, "evaluators": args.evaluators}
    else:
        counts[f"{role}s"] = args.count
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"--{name} cannot be negative")
    if args.peers < 1:
        raise ValueError("--peers must be at least 1")
    if args.window_seconds < 0:
        raise ValueError("--window-seconds cannot be negative")
    if args.windows is not None and args.windows < 1:
        raise ValueError("--windows must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise ValueError("--duration must be positive")
    silent = getattr(args, "silent_miner_after", None)
    if args.upgrade_at is not None and args.upgrade_at < 1:
        raise ValueError("--upgrade-at must be at least 1")
    if not args.templar_version:
        raise ValueError("--templar-version cannot be empty")
    return SimulationOptions(
        miners=counts["miners"],
        validators=counts["validators"],
        evaluators=counts["evaluators"],
        peers=args.peers,
        window_seconds=args.window_seconds,
        windows=args.windows,
        duration=args.duration,
        seed=args.seed,
        silent_miner_after=silent,
        slash_every=getattr(args, "slash_every", 5),
        eval_every=getattr(args, "eval_every", 2),
        health=not args.no_health,
        version=args.templar_version,
        upgrade_at=args.upgrade_at,
        upgrade_to=args.upgrade_to,
        netuid=args.netuid,
        project=args.project,
    )


def print_summary(summary: SimulationSummary, as_json: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(summary.as_dict(), indent=2) + "\n")
    else:
        out.write(summary.text() + "\n")


def script_main(role: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of telemetry/simulator/<role>.py: one role, same engine and destination rules."""
    import logging

    from .config.settings import ConfigurationError

    parser = argparse.ArgumentParser(description=f"Simulate Templar {role}s logging through MetricsLogger.")
    add_arguments(parser, role=role)
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    logging.getLogger("tplr_metrics").addHandler(handler)  # an application: show the library's warnings
    try:
        options = options_from_args(args, role=role)
        summary = run_simulation(options, progress=sys.stderr)
    except (ValueError, ConfigurationError) as exc:
        print(f"{role} simulator: {exc}", file=sys.stderr)
        return 2
    print_summary(summary, args.json)
    return 0 if summary.dropped == 0 else 1
