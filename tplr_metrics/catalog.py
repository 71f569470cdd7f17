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
__all__ = ["HEALTH_FIELDS", "HEALTH_MEASUREMENT", "ROLES", "SYSTEM_MEASUREMENT", "measurement"]


def measurement(role: str, name: str) -> str:
    """The stored name of a Templar measurement: ``measurement("validator", "timing") == "Vtiming"``."""
    return ROLES[role]["prefix"] + name
