"""The five dashboards, as data: what each panel asks of the measurements Templar logs."""

from __future__ import annotations

import re

from ..catalog import BENCHMARK_TASKS, HEALTH_MEASUREMENT, SYSTEM_MEASUREMENT, measurement
from .model import Annotation, Dashboard, Panel, Query, Row

#: Curves that jump window to window get a moving average of this many intervals.
SMOOTH = 5

MINER_STEP = measurement("miner", "training_step_v2")
V_WINDOW = measurement("validator", "validator_window_v2")
V_SCORES = measurement("validator", "validator_scores")
V_OPENSKILL = measurement("validator", "validator_openskill")
V_SLASH = measurement("validator", "validator_slash")
V_INACTIVITY = measurement("validator", "validator_inactivity")
V_SYNC = measurement("validator", "validator_sync_score")
V_GRADIENTS = measurement("validator", "validator_gradient_stats")
V_TIMING = measurement("validator", "timing")
E_TASK = measurement("evaluator", "benchmark_task")
E_SUMMARY = measurement("evaluator", "benchmark_summary")
E_CUSTOM = measurement("evaluator", "custom_evaluation")

#: Host figures: the per-node ``system`` measurement (any prefix) and, for Templar's own
#: validators, the with_system_metrics fields on their window measurement.
SYSTEM_SOURCE = rf"^[A-Za-z]?{SYSTEM_MEASUREMENT}$|^{re.escape(V_WINDOW)}$"
HEALTH_SOURCE = rf"{HEALTH_MEASUREMENT}$"  # a unique name: any prefix a logger adds

#: Healthy ranges: green inside, yellow past a warning, red past the limit.
ZERO = ((None, "green"), (1, "red"))  # a count that should stay 0 (integers: 1 is "above 0")


def _floor(warn: float, bad: float) -> tuple[tuple[float | None, str], ...]:
    """Red under ``bad``, yellow under ``warn``, green above."""
    return ((None, "red"), (bad, "yellow"), (warn, "green"))


def _ceiling(warn: float, bad: float) -> tuple[tuple[float | None, str], ...]:
    """Green under ``warn``, yellow up to ``bad``, red above."""
    return ((None, "green"), (warn, "yellow"), (bad, "red"))


#: A Templar window (about 7 blocks of 12 s), for staleness: green under 2 windows, red from 5.
WINDOW_MS = 84_000
STALE = _ceiling(2 * WINDOW_MS, 5 * WINDOW_MS)


def _last_seen(measurement_name: str, field: str, who: str) -> Panel:
    """When each uid's last point landed, and how long before the range's end (coloured)."""
    return Panel(
        "Last seen per uid",
        f"Time of each {who}'s last {measurement_name} point and its age at the end of the range: green "
        "under 2 windows (168 s), yellow, red from 5 windows (420 s). A silent node stays listed, ageing.",
        (Query(measurement_name, (field,), "last", ("uid",), shape="lastseen"),),
        kind="table",
        thresholds=STALE,
        sort_desc="age",
    )


def _per_peer(title: str, description: str, measurement_name: str, *fields: str) -> Panel:
    """A sortable table: the latest point per evaluated peer (and validator), by its first field."""
    return Panel(
        title,
        description,
        (Query(measurement_name, fields, "last", ("eval_uid", "uid"), shape="latest"),),
        kind="table",
        sort_desc=fields[0],
    )


def _runs_and_versions(measurement_name: str, field: str, regex: bool = False) -> tuple[Annotation, ...]:
    """Run starts (each runtime_id's first point) and version changes (each version's first point)."""
    return (
        Annotation(
            "Run starts",
            measurement_name,
            field,
            text="runtime_id",
            tags=("role", "uid", "version"),
            first_of="runtime_id",
            color="green",
            regex=regex,
        ),
        Annotation(
            "Version changes",
            measurement_name,
            field,
            text="version",
            tags=("role", "uid"),
            first_of="version",
            color="purple",
            regex=regex,
        ),
    )


PER_UID = "$tag_uid"
PER_NODE = "$tag_role $tag_uid"


def _series(
    measurement_name: str,
    *fields: str,
    by: tuple[str, ...] = ("uid",),
    aggregate: str = "mean",
    smooth: int = 0,
    alias: str = "",
    regex: bool = False,
) -> Query:
    if not alias:
        tags = " ".join(f"$tag_{tag}" for tag in by)
        alias = (f"$col {tags}" if len(fields) != 1 else tags) if tags else "$col"
    return Query(measurement_name, fields, aggregate, by, smooth, "timeseries", regex, alias.strip())


def _stat(
    title: str,
    field: str,
    description: str,
    unit: str = "short",
    decimals: int | None = 0,
    thresholds: tuple[tuple[float | None, str], ...] = (),
) -> Panel:
    """A stat panel: the latest value of a validator-window field, one per validator uid."""
    query = Query(V_WINDOW, (field,), "last", ("uid",), shape="latest", alias="validator $tag_uid")
    return Panel(
        title,
        description,
        (query,),
        unit=unit,
        kind="stat",
        decimals=decimals,
        width=4,
        height=4,
        thresholds=thresholds,
    )


def _text_stat(title: str, tag: str, description: str, width: int = 4) -> Panel:
    """A stat panel showing a tag of each validator's latest window as text (version, window)."""
    query = Query(V_WINDOW, ("current_block", tag), "last", ("uid",), shape="latest")
    return Panel(title, description, (query,), kind="stat", width=width, height=4, text_field=tag)


def miners() -> Dashboard:
    step = MINER_STEP
    return Dashboard(
        slug="miners",
        title="tplr-metrics / Miners",
        description=f"Templar miners ({step}): loss, throughput, gather and timings per miner uid.",
        annotations=_runs_and_versions(step, "loss"),
        rows=(
            Row(
                "Training",
                (
                    Panel(
                        "Loss per miner",
                        "Training loss each window (mean per interval), with a moving average over "
                        f"{SMOOTH} intervals: the trend is the thick line.",
                        (_series(step, "loss", smooth=SMOOTH),),
                    ),
                    Panel(
                        "Tokens per second per miner",
                        "Training throughput of each miner; smoothed because it jumps with gather time.",
                        (_series(step, "tokens_per_sec", smooth=SMOOTH),),
                        unit="short",
                    ),
                ),
            ),
            Row(
                "Gather",
                (
                    Panel(
                        "Gather success rate per miner",
                        "Share of peers whose gradients the miner gathered this window (100% = all).",
                        (_series(step, "gather_success_rate", smooth=SMOOTH),),
                        unit="percent",
                        min=0,
                        max=100,
                        thresholds=_floor(80, 50),
                    ),
                    Panel(
                        "Peers gathered per miner",
                        "How many peers' gradients each window's gather returned.",
                        (_series(step, "n_gather_peers"),),
                        decimals=0,
                    ),
                ),
            ),
            Row(
                "Timings",
                (
                    Panel(
                        "Window time per miner",
                        "Wall time of a whole window per miner: a rising line is a miner falling behind.",
                        (_series(step, "window_total_time", smooth=SMOOTH),),
                        unit="s",
                    ),
                    Panel(
                        "Where a window's time goes",
                        "Mean seconds of each phase over the selected miners.",
                        (
                            _series(
                                step,
                                "gather_time",
                                "peer_update_time",
                                "compression_time",
                                "put_time",
                                "model_update_time",
                                by=(),
                            ),
                        ),
                        unit="s",
                    ),
                ),
            ),
            Row(
                "Latest",
                (
                    Panel(
                        "Latest values per miner",
                        "The last logged loss, throughput and gather rate of every selected miner.",
                        (
                            Query(
                                step,
                                ("loss", "tokens_per_sec", "gather_success_rate", "window_total_time"),
                                "last",
                                ("uid",),
                                shape="latest",
                            ),
                        ),
                        kind="table",
                        width=12,
                    ),
                    Panel(
                        "Training Throughput – TOP 20",
                        "The 20 miners with the highest mean tokens/s over the range, fastest first.",
                        (Query(step, ("tokens_per_sec",), "mean", ("uid",), shape="latest", top=20),),
                        unit="short",
                        kind="table",
                        sort_desc="tokens_per_sec",
                    ),
                ),
            ),
            Row(
                "By global step",
                (
                    Panel(
                        "Loss – by global_step",
                        "Training loss with the miner's global_step on the x axis (not time), one line per miner: "
                        "miners that train at different speeds compare step for step.",
                        (Query(step, ("loss",), "last", ("global_step", "uid"), shape="latest"),),
                        kind="trend",
                        x="global_step",
                        series="uid",
                        width=24,
                    ),
                ),
            ),
            Row("Staleness", (_last_seen(step, "loss", "miner"),)),
        ),
    )


def validators() -> Dashboard:
    return Dashboard(
        slug="validators",
        title="tplr-metrics / Validators",
        description="Templar validators: window losses, improvement, per-peer scores and weights, slashes, "
        "inactivity and timings.",
        annotations=(
            *_runs_and_versions(V_WINDOW, "current_block"),
            Annotation("Slashes", V_SLASH, "reason", text="reason", tags=("uid", "eval_uid"), color="red"),
        ),
        rows=(
            Row(
                "Now",
                (
                    _text_stat(
                        "Version",
                        "version",
                        "The version each validator runs (its latest window's version tag): the version banner.",
                        width=8,
                    ),
                    _text_stat("Window", "window", "The window of each validator's latest point."),
                    _text_stat("Global Step", "global_step", "The global step of each validator's latest window."),
                    _stat("Current block", "current_block", "The chain block of each validator's latest window."),
                    _stat("Active peers", "active_miners_count", "Peers active in the latest window."),
                    _stat("Total Peers", "total_peers", "Peers in the subnet at the latest window."),
                    _stat(
                        "Gather Success Rate",
                        "gather_success_rate",
                        "Share of peers whose gradients the validator gathered in the latest window.",
                        unit="percent",
                        thresholds=_floor(80, 50),
                    ),
                    _stat("Learning Rate", "inner_lr", "The inner learning rate at the latest window.", decimals=None),
                    _stat(
                        "Evaluated UIDs", "evaluated_uids_count", "Peers the validator evaluated in the latest window."
                    ),
                ),
            ),
            Row(
                "Window losses",
                (
                    Panel(
                        "Loss before / after the update",
                        "Loss on the validator's own and on random data, before and after applying "
                        "the gathered gradients (mean per interval).",
                        (
                            _series(
                                V_WINDOW,
                                "loss_own_before",
                                "loss_own_after",
                                "loss_random_before",
                                "loss_random_after",
                            ),
                        ),
                    ),
                    Panel(
                        "Loss improvement",
                        "Relative loss reduction from the gathered update (own and random data), with a "
                        f"moving average over {SMOOTH} intervals: it is noisy window to window.",
                        (_series(V_WINDOW, "loss_own_improvement", "loss_random_improvement", smooth=SMOOTH),),
                        unit="percentunit",
                    ),
                ),
            ),
            Row(
                "Gather and learning rate",
                (
                    Panel(
                        "Validator Gather Success Rate – Detailed",
                        "Share of peers whose gradients each validator gathered per window, with a moving "
                        f"average over {SMOOTH} intervals; red under 50%, yellow under 80%. Active, total and "
                        "skipped peers are under Slashes and inactivity.",
                        (_series(V_WINDOW, "gather_success_rate", smooth=SMOOTH),),
                        unit="percent",
                        min=0,
                        max=100,
                        thresholds=_floor(80, 50),
                    ),
                    Panel(
                        "Learning rates",
                        "The inner (per-step) and outer (per-window) learning rates of each validator.",
                        (_series(V_WINDOW, "inner_lr", "outer_lr"),),
                    ),
                ),
            ),
            Row(
                "Scores and weights per evaluated peer",
                (
                    Panel(
                        "Final score per eval_uid",
                        "The validator's final score of each evaluated peer (eval_uid).",
                        (_series(V_SCORES, "final_score", by=("eval_uid",)),),
                    ),
                    Panel(
                        "Weight per eval_uid",
                        "Normalized weight the validator gives each evaluated peer.",
                        (_series(V_SCORES, "weight", by=("eval_uid",)),),
                        unit="percentunit",
                    ),
                    Panel(
                        "Gradient score per eval_uid",
                        "Loss improvement a peer's gradient brings, smoothed: single windows are noisy.",
                        (_series(V_SCORES, "gradient_score", by=("eval_uid",), smooth=SMOOTH),),
                    ),
                    Panel(
                        "OpenSkill ordinal per eval_uid",
                        "mu - 3*sigma of each peer's OpenSkill rating: the conservative skill estimate.",
                        (_series(V_OPENSKILL, "ordinal", by=("eval_uid",)),),
                    ),
                ),
            ),
            Row(
                "Per-peer tables",
                (
                    _per_peer(
                        "Evaluated UID Weights",
                        "The latest weight each validator gives each evaluated peer (eval_uid), highest first.",
                        V_SCORES,
                        "weight",
                    ),
                    _per_peer(
                        "Current scores per eval_uid",
                        "The latest final, gradient and sync score of each evaluated peer; sort by any column.",
                        V_SCORES,
                        "final_score",
                        "gradient_score",
                        "sync_score",
                        "binary_indicator",
                        "binary_moving_avg",
                    ),
                    _per_peer(
                        "Current OpenSkill ordinal per eval_uid",
                        "The latest OpenSkill rating of each evaluated peer: ordinal (mu - 3 sigma), mu, sigma.",
                        V_OPENSKILL,
                        "ordinal",
                        "mu",
                        "sigma",
                    ),
                    Panel(
                        "Validator losses per window (table)",
                        "Loss before and after the update, one row per window and validator, newest first.",
                        (
                            Query(
                                V_WINDOW,
                                ("loss_own_before", "loss_own_after", "loss_random_before", "loss_random_after"),
                                "last",
                                ("window", "uid"),
                                shape="latest",
                            ),
                        ),
                        kind="table",
                        sort_desc="window",
                    ),
                ),
            ),
            Row(
                "By window",
                (
                    Panel(
                        "Validator Loss – by window",
                        "Loss before and after the update with the window number on the x axis (not time): "
                        "one line per field and validator, so runs and restarts line up window by window.",
                        (
                            Query(
                                V_WINDOW,
                                ("loss_own_before", "loss_own_after", "loss_random_before", "loss_random_after"),
                                "last",
                                ("window", "uid"),
                                shape="latest",
                            ),
                        ),
                        kind="trend",
                        x="window",
                        series="uid",
                    ),
                    Panel(
                        "Gather success rate – by window",
                        "Share of peers gathered in each window, window number on the x axis, per validator.",
                        (Query(V_WINDOW, ("gather_success_rate",), "last", ("window", "uid"), shape="latest"),),
                        unit="percent",
                        kind="trend",
                        x="window",
                        series="uid",
                        min=0,
                        max=100,
                        thresholds=_floor(80, 50),
                    ),
                ),
            ),
            Row("Staleness", (_last_seen(V_WINDOW, "current_block", "validator"),)),
            Row(
                "Slashes and inactivity",
                (
                    Panel(
                        "Slashes per interval",
                        "How many peers the selected validators slashed in each interval.",
                        (
                            _series(
                                V_SLASH, "score_after", by=("reason_code",), aggregate="count", alias="$tag_reason_code"
                            ),
                        ),
                        kind="bars",
                        decimals=0,
                    ),
                    Panel(
                        "Slash events",
                        "Every slash: which validator, which peer, the score before and after, and why.",
                        (
                            Query(
                                V_SLASH,
                                ("score_before", "score_after", "reason"),
                                by=("uid", "eval_uid", "reason_code"),
                                shape="events",
                            ),
                        ),
                        kind="table",
                    ),
                    Panel(
                        "Inactive peers: score before and after decay",
                        "Score of each peer the validator found inactive, before and after the inactivity "
                        "penalty (the peer's uid is the caller_uid tag; uid is the validator).",
                        (
                            _series(
                                V_INACTIVITY,
                                "score_before",
                                "score_after",
                                by=("caller_uid",),
                                alias="$col peer $tag_caller_uid",
                            ),
                        ),
                    ),
                    Panel(
                        "Active and evaluated peers",
                        "Peers active in the window and how many the validator evaluated.",
                        (_series(V_WINDOW, "active_miners_count", "evaluated_uids_count", "total_skipped"),),
                        decimals=0,
                    ),
                ),
            ),
            Row(
                "Sync and gradients",
                (
                    Panel(
                        "Steps behind per peer",
                        "How many steps each checked peer's model is behind the validator's.",
                        (_series(V_SYNC, "avg_steps_behind", by=("caller_uid",), alias="peer $tag_caller_uid"),),
                    ),
                    Panel(
                        "Max steps behind per peer",
                        "The most steps a checked peer's model was behind the validator's in the window.",
                        (
                            _series(
                                V_SYNC,
                                "max_steps_behind",
                                by=("caller_uid",),
                                aggregate="max",
                                alias="peer $tag_caller_uid",
                            ),
                        ),
                        decimals=0,
                    ),
                    Panel(
                        "Sync: L2 norms and differences",
                        "How far the checked peers' models are from the validator's: L2 norm of the "
                        "difference (and its average), mean absolute and max element difference.",
                        (_series(V_SYNC, "l2_norm", "avg_l2_norm", "avg_abs_diff", "max_diff", by=()),),
                    ),
                    Panel(
                        "Gradient norms",
                        "Mean, median, min and max gradient norm over the evaluated peers, and their spread.",
                        (
                            _series(
                                V_GRADIENTS,
                                "mean_grad_norm",
                                "median_grad_norm",
                                "min_grad_norm",
                                "max_grad_norm",
                                "grad_norm_std",
                            ),
                        ),
                    ),
                    Panel(
                        "Weight norm and gradient-to-weight ratio",
                        "Mean norm of the model's weights, and the mean gradient norm over it (the size of a "
                        "step relative to the weights).",
                        (_series(V_GRADIENTS, "mean_weight_norm", "grad_to_weight_ratio"),),
                    ),
                ),
            ),
            Row(
                "Timings",
                (
                    Panel(
                        "Window time and phases",
                        "Wall time of the window and its phases per validator.",
                        (
                            _series(
                                V_WINDOW,
                                "window_total_time",
                                "gather_time",
                                "evaluation_time",
                                "peer_update_time",
                                "model_update_time",
                            ),
                        ),
                        unit="s",
                    ),
                    Panel(
                        "Timed operations",
                        "Seconds per timed operation (one field per operation in the timing measurement).",
                        (_series(V_TIMING, by=(), alias="$col"),),
                        unit="s",
                    ),
                ),
            ),
        ),
    )


def evaluators() -> Dashboard:
    return Dashboard(
        slug="evaluators",
        title="tplr-metrics / Evaluators",
        description="Templar evaluators: benchmark task scores per checkpoint, perplexity and bits per byte.",
        annotations=_runs_and_versions(E_CUSTOM, "average_loss"),
        rows=(
            Row(
                "Benchmarks",
                (
                    Panel(
                        "Benchmark score per task",
                        "Score of each benchmark task (and its metric) at each evaluated checkpoint.",
                        (_series(E_TASK, "score", by=("task", "metric"), alias="$tag_task ($tag_metric)"),),
                        unit="percentunit",
                    ),
                    Panel(
                        "Latest score per task",
                        "The most recent score of every task.",
                        (Query(E_TASK, ("score",), "last", ("task", "metric"), shape="latest"),),
                        kind="table",
                    ),
                ),
            ),
            Row(
                "Per benchmark",
                tuple(
                    Panel(
                        f"{task} ({metric})",
                        f"The {task} score ({metric}) of each evaluated checkpoint, one line per version.",
                        (
                            Query(
                                E_TASK,
                                ("score",),
                                "mean",
                                ("version",),
                                alias="$tag_version",
                                match=(("task", task),),
                            ),
                        ),
                        unit="percentunit",
                        width=8,
                    )
                    for task, metric, _ in BENCHMARK_TASKS
                )
                + (
                    Panel(
                        "All Evals – Latest scores",
                        "The latest score of every task (columns) for every version (rows).",
                        (Query(E_TASK, ("score",), "last", ("version", "task"), shape="latest"),),
                        unit="percentunit",
                        kind="table",
                        width=24,
                        matrix=("version", "task", "score"),
                    ),
                ),
            ),
            Row(
                "Language modelling",
                (
                    Panel(
                        "Perplexity",
                        "Perplexity of the evaluated checkpoint on the held-out set (lower is better).",
                        (_series(E_CUSTOM, "perplexity"),),
                    ),
                    Panel(
                        "Bits per byte",
                        "Bits per byte on the held-out set: comparable across tokenizers.",
                        (_series(E_CUSTOM, "bpb"),),
                    ),
                    Panel(
                        "Evaluation loss",
                        "Average loss on the held-out set.",
                        (_series(E_CUSTOM, "average_loss"),),
                    ),
                    Panel(
                        "Evaluation runtime",
                        "Seconds an evaluation took.",
                        (_series(E_CUSTOM, "runtime_s"),),
                        unit="s",
                    ),
                    Panel(
                        "Tokens and bytes evaluated",
                        "How many tokens and bytes of held-out text each evaluation read (bits per byte "
                        "divides by the bytes).",
                        (_series(E_CUSTOM, "total_tokens", "total_bytes"),),
                        unit="short",
                        decimals=0,
                    ),
                    Panel(
                        "Benchmark tasks per evaluation",
                        "How many benchmark tasks each evaluation ran (a count, not a duration).",
                        (_series(E_SUMMARY, "num_tasks", alias="tasks $tag_uid"),),
                        unit="short",
                        decimals=0,
                    ),
                ),
            ),
        ),
    )


def system() -> Dashboard:
    def host(field: str) -> Query:
        return _series(SYSTEM_SOURCE, field, by=("role", "uid"), regex=True, alias=f"{PER_NODE} ($m)")

    return Dashboard(
        slug="system",
        title="tplr-metrics / System & GPU",
        description="CPU, memory and GPU memory of every node, per role and uid (the system measurement, "
        "and the with_system_metrics / with_gpu_metrics fields of validators' windows).",
        annotations=_runs_and_versions(SYSTEM_SOURCE, "sys_cpu_usage", regex=True),
        rows=(
            Row(
                "Host",
                (
                    Panel(
                        "CPU usage", "Host CPU utilisation in percent.", (host("sys_cpu_usage"),), unit="percent", min=0
                    ),
                    Panel("Memory used", "Host memory in use.", (host("sys_mem_used"),), unit="mbytes", min=0),
                ),
            ),
            Row(
                "GPU",
                (
                    Panel(
                        "GPU memory allocated",
                        "Memory held by tensors on the process's GPU.",
                        (host("gpu_mem_allocated_mb"),),
                        unit="mbytes",
                        min=0,
                    ),
                    Panel(
                        "GPU memory reserved",
                        "Memory the allocator reserved (cached) on the GPU; near the total means pressure.",
                        (host("gpu_mem_cached_mb"),),
                        unit="mbytes",
                        min=0,
                    ),
                    Panel(
                        "GPU memory segments",
                        "Allocator segments: a steady climb hints at fragmentation.",
                        (host("gpu_mem_segments"),),
                        decimals=0,
                    ),
                    Panel("GPU memory total", "Total memory of the GPU.", (host("gpu_mem_total_mb"),), unit="mbytes"),
                ),
            ),
        ),
    )


def pipeline_health() -> Dashboard:
    def health(field: str, aggregate: str = "mean") -> Query:
        return _series(HEALTH_SOURCE, field, by=("role", "uid"), aggregate=aggregate, regex=True, alias=PER_NODE)

    return Dashboard(
        slug="pipeline-health",
        title="tplr-metrics / Pipeline health",
        description=f"The logger's own measurement ({HEALTH_MEASUREMENT}): queue, throughput, drops, retries, "
        "rejections, write latency and spool, per role and uid.",
        annotations=_runs_and_versions(HEALTH_SOURCE, "queue_depth", regex=True),
        rows=(
            Row(
                "Flow",
                (
                    Panel(
                        "Queue depth",
                        "Points waiting in the logger's queue: a climb means the server is slower than the caller.",
                        (health("queue_depth", "max"),),
                        decimals=0,
                    ),
                    Panel(
                        "Points written per second",
                        "Points the server accepted per second.",
                        (health("written_per_s"),),
                        unit="short",
                    ),
                    Panel(
                        "Write latency",
                        "Mean seconds per batch write (the worst interval shown).",
                        (health("write_latency_s", "max"),),
                        unit="s",
                        thresholds=_ceiling(1, 5),
                    ),
                    Panel(
                        "Spooled points",
                        "Points sent to the disk spool while the server was unreachable, since the logger started.",
                        (health("spooled", "max"),),
                        decimals=0,
                        thresholds=((None, "green"), (1, "yellow")),
                    ),
                ),
            ),
            Row(
                "Losses",
                (
                    Panel(
                        "Dropped points",
                        "Points the logger gave up on (queue full, retries exhausted) since it started: should stay 0.",
                        (health("dropped", "max"),),
                        decimals=0,
                        thresholds=ZERO,
                    ),
                    Panel(
                        "Retried points",
                        "Points written again after a transient failure, since the logger started.",
                        (health("retried", "max"),),
                        decimals=0,
                        thresholds=((None, "green"), (1, "yellow")),
                    ),
                    Panel(
                        "Rejected points",
                        "Points the server refused (type conflicts, bad lines) since the logger started.",
                        (health("rejected", "max"),),
                        decimals=0,
                        thresholds=ZERO,
                    ),
                ),
            ),
        ),
    )


def all_dashboards() -> list[Dashboard]:
    return [miners(), validators(), evaluators(), system(), pipeline_health()]
