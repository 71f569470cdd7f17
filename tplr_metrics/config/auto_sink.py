"""Which sink ``open_log_store()`` builds when no kind is named: the one the environment already
points at, in this order (the first that applies wins):

0. ``TPLR_METRICS_SINKS_CONFIG``: the file's ``log_store: {kind, params}`` (or its ``sinks``
   list, as a ``multiplex`` when it names several);
1. ``WANDB_PROJECT`` or ``WANDB_MODE`` set: ``wandb`` (offline unless WANDB_MODE says otherwise);
2. ``MLFLOW_TRACKING_URI``: ``mlflow`` at that URI;
3. ``TENSORBOARD_LOGDIR``: ``tensorboard`` with that log_dir;
4. an InfluxDB server configured (``INFLUXDB_URL`` or ``INFLUXDB_HOST``): ``influxdb``;
5. otherwise the local store.

``TPLR_METRICS_DISABLED=1`` (or true/yes/on) turns every LogStore into one that does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..sinks.registry import split_spec
from .destinations import CONFIG_VARIABLE, load_sinks_config
from .settings import server_configured

DISABLED_VARIABLE = "TPLR_METRICS_DISABLED"
_TRUE = ("1", "true", "yes", "on")


def _set(environ: Mapping[str, str], name: str) -> str:
    return (environ.get(name) or "").strip()


def disabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether TPLR_METRICS_DISABLED asks for no logging at all."""
    environ = os.environ if environ is None else environ
    return _set(environ, DISABLED_VARIABLE).lower() in _TRUE


def pick_sink(environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any], str]:
    """(kind, params, why) for the environment; ``why`` names the variable that decided."""
    environ = os.environ if environ is None else environ
    config = _set(environ, CONFIG_VARIABLE)
    if config:
        specs = load_sinks_config(config)
        why = f"{CONFIG_VARIABLE} names it"
        if len(specs) > 1:
            return "multiplex", {"children": specs}, why
        spec = split_spec(specs[0], CONFIG_VARIABLE)
        if isinstance(spec, tuple):  # a file names kinds; a Sink object cannot come from one
            return spec[0], spec[1], why
    for name in ("WANDB_PROJECT", "WANDB_MODE"):
        if _set(environ, name):
            return "wandb", {}, f"{name} is set"
    if _set(environ, "MLFLOW_TRACKING_URI"):
        return "mlflow", {}, "MLFLOW_TRACKING_URI is set"
    logdir = _set(environ, "TENSORBOARD_LOGDIR")
    if logdir:
        return "tensorboard", {"log_dir": logdir}, "TENSORBOARD_LOGDIR is set"
    if server_configured(None, None, environ):
        return "influxdb", {}, "an InfluxDB server is configured (INFLUXDB_URL/INFLUXDB_HOST)"
    return "local", {}, "nothing else is configured"


__all__ = ["DISABLED_VARIABLE", "disabled", "pick_sink"]
