"""Templar's roles and the measurement names the simulator and the dashboards agree on.

Templar's neurons name a measurement ``prefix + name`` with the role's prefix (a validator's
``validator_scores`` lands as ``Vvalidator_scores``).
"""

from __future__ import annotations

from .collect.background import HEALTH_FIELDS, HEALTH_MEASUREMENT, SYSTEM_MEASUREMENT

#: Templar's roles: measurement prefix, group and job_type tags.
ROLES: dict[str, dict[str, str]] = {
    "miner": {"prefix": "M", "group": "miner", "job_type": "mining"},
    "validator": {"prefix": "V", "group": "validator", "job_type": "validation"},
    "evaluator": {"prefix": "E", "group": "evaluations", "job_type": "eval"},
}

#: The logger's own measurements (tplr_metrics_health, system), named where they are produced.
__all__ = ["BENCHMARK_TASKS", "HEALTH_FIELDS", "HEALTH_MEASUREMENT", "ROLES", "SYSTEM_MEASUREMENT", "measurement"]

#: The lm-eval tasks Templar's evaluator scores (``benchmark_task`` points, tag ``task``), with the
#: metric it reports for each and a typical score of a small model (the simulator's start).
BENCHMARK_TASKS: tuple[tuple[str, str, float], ...] = (
    ("arc_challenge", "acc_norm", 0.24),
    ("arc_easy", "acc", 0.42),
    ("hellaswag", "acc_norm", 0.30),
    ("mmlu", "acc", 0.23),
    ("openbookqa", "acc_norm", 0.27),
    ("piqa", "acc", 0.60),
    ("winogrande", "acc", 0.51),
)


def measurement(role: str, name: str) -> str:
    """The stored name of a Templar measurement: ``measurement("validator", "timing") == "Vtiming"``."""
    return ROLES[role]["prefix"] + name
