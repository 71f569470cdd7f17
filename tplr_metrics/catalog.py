"""Templar's roles and the measurement names the simulator and the dashboards agree on.

Templar's neurons name a measurement ``prefix + name`` with the role's prefix (a validator's
``validator_scores`` lands as ``Vvalidator_scores``).
"""

from __future__ import annotations

#: Templar's roles: measurement prefix, group and job_type tags.
ROLES: dict[str, dict[str, str]] = {
    "miner": {"prefix": "M", "group": "miner", "job_type": "mining"},
    "validator": {"prefix": "V", "group": "validator", "job_type": "validation"},
    "evaluator": {"prefix": "E", "group": "evaluations", "job_type": "eval"},
}

#: The logger's own pipeline measurement (fields queue_depth, written_per_s, dropped, retried,
#: rejected, write_latency_s, spooled), whatever prefix a logger adds to it.
HEALTH_MEASUREMENT = "tplr_metrics_health"
HEALTH_FIELDS = ("queue_depth", "written_per_s", "dropped", "retried", "rejected", "write_latency_s", "spooled")
#: Host and GPU figures of a node, logged once per interval (sys_* and gpu_* fields).
SYSTEM_MEASUREMENT = "system"


def measurement(role: str, name: str) -> str:
    """The stored name of a Templar measurement: ``measurement("validator", "timing") == "Vtiming"``."""
    return ROLES[role]["prefix"] + name
