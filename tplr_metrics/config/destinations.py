"""Where a logger's points go: from arguments and environment to the one sink the pipeline feeds.

In order:

* ``sinks=[...]``: kind names (``"influxdb"``, ``"local"``, ``"jsonl"``, ...), ``{"kind": ...,
  "params": {...}}`` mappings, or Sink objects;
* ``TPLR_METRICS_SINKS_CONFIG``: a TOML, YAML or JSON file (or inline JSON) with a ``sinks`` list
  of ``{kind, params}`` tables, or one ``log_store: {kind, params}`` table;
* ``TPLR_METRICS_SINKS=influxdb,local``: kind names with their default params;
* otherwise the configured InfluxDB server (url/host argument, INFLUXDB_URL/INFLUXDB_HOST), and
  with no server configured the local store at ``$TPLR_METRICS_HOME/metrics.sqlite``, so a
  fresh machine gets a working logger instead of an error.

Several sinks are grouped in a :class:`~tplr_metrics.sinks.multiplex.MultiplexSink`, whose
children the pipeline gives a delivery lane each. A sink
whose optional extra (tensorboard, wandb) is not installed is skipped with one warning; when
none is left, points go where they would with nothing configured (the server, else the local
store), so a missing package never costs a run its metrics. The ``influxdb`` kinds start from
the logger's own server arguments; a sink's params override them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..sinks.base import Sink
from ..sinks.local import LocalStoreSink
from ..sinks.multiplex import MultiplexSink
from ..sinks.registry import (
    SinkSpec,
    SinkUnavailableError,
    check_params,
    create_sink,
    get_factory,
    influx_from_params,
    split_spec,
)
from .settings import ConfigurationError, ServerSettings, build_influx_sink, resolve_server, server_configured

logger = logging.getLogger("tplr_metrics")

SINK_NAMES = ("influxdb", "influxdb-v1", "local", "jsonl", "mlflow", "multiplex", "stdout", "tensorboard", "wandb")
SINKS_VARIABLE = "TPLR_METRICS_SINKS"
CONFIG_VARIABLE = "TPLR_METRICS_SINKS_CONFIG"
LOG_STORE_KEY = "log_store"
TOP_LEVEL_KEYS = ("sinks", LOG_STORE_KEY)
_INFLUX_KINDS = ("influxdb", "influxdb-v1")


def sink_names_from_env(environ: Mapping[str, str]) -> list[str]:
    text = environ.get(SINKS_VARIABLE) or ""
    return [part.strip() for part in text.split(",") if part.strip()]


# --- configuration files ----------------------------------------------------------------------


def parse_sinks_config(text: str, suffix: str, where: str) -> list[SinkSpec]:
    """The ``sinks`` list of a TOML (``[[sinks]]``), YAML or JSON document, or its one
    ``log_store: {kind, params}`` (the evsys-style key) as a list of one."""
    suffix = suffix.lower()
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                try:
                    import tomli as tomllib
                except ImportError:
                    raise ConfigurationError(f"{where}: TOML needs Python 3.11+ or the tomli package") from None
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigurationError(f"{where}: YAML needs PyYAML (pip install pyyaml), or use TOML") from None
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigurationError(f"{where}: use a .toml, .yaml, .yml or .json file")
    except ConfigurationError:
        raise
    except Exception as exc:  # each parser has its own error type; all mean "not a valid file"
        raise ConfigurationError(f"{where}: not valid {suffix.lstrip('.').upper()}: {exc}") from None
    if isinstance(data, Mapping):
        extra = sorted(str(k) for k in data if k not in TOP_LEVEL_KEYS)
        if extra:
            raise ConfigurationError(
                f"{where}: unknown top-level key(s) {', '.join(extra)} (expected: sinks, or log_store)"
            )
        if "sinks" in data and LOG_STORE_KEY in data:
            raise ConfigurationError(f"{where}: give 'sinks' or 'log_store', not both")
        if LOG_STORE_KEY in data:
            store = data[LOG_STORE_KEY]
            if not isinstance(store, (str, Mapping)):
                raise ConfigurationError(
                    f"{where}: log_store must be a {{kind, params}} table or a kind name, not {store!r}"
                )
            return [store]
        data = data.get("sinks")
    if not isinstance(data, list) or not data:
        raise ConfigurationError(f"{where}: expected a non-empty 'sinks' list of {{kind, params}}")
    for item in data:
        if not isinstance(item, (str, Mapping)):
            raise ConfigurationError(f"{where}: each sink is a kind name or a {{kind, params}} table, not {item!r}")
    return list(data)


def load_sinks_config(value: str, where: str = CONFIG_VARIABLE) -> list[SinkSpec]:
    """A config file's path, or inline JSON (a value starting with ``[`` or ``{``)."""
    text = value.strip()
    if text.startswith(("[", "{")):
        return parse_sinks_config(text, ".json", f"{where} (inline JSON)")
    path = Path(text).expanduser()
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    return parse_sinks_config(content, path.suffix, f"{where} {path}")


# --- resolution -------------------------------------------------------------------------------


def _default(server_args: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[Sink, ServerSettings | None]:
    if server_configured(server_args.get("url"), server_args.get("host"), environ):
        configured = resolve_server(environ=environ, **server_args)
        return build_influx_sink(configured), configured
    return LocalStoreSink(environ=environ), None


def resolve_destination(
    server_args: Mapping[str, Any],
    sinks: Sequence[str | Sink | Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
    where: str = "sinks=",
) -> tuple[Sink, ServerSettings | None]:
    """The sink for a logger built with these server arguments, and the server it talks to
    (``where`` names what gave ``sinks`` in error messages)."""
    environ = os.environ if environ is None else environ
    chosen: list[Any]
    if sinks:
        if isinstance(sinks, (str, Mapping)):
            sinks = [sinks]
        chosen = list(sinks)
    else:
        names = sink_names_from_env(environ)
        config = (environ.get(CONFIG_VARIABLE) or "").strip()
        if names and config:
            raise ConfigurationError(f"set {SINKS_VARIABLE} or {CONFIG_VARIABLE}, not both")
        if config:
            chosen, where = list(load_sinks_config(config)), CONFIG_VARIABLE
        elif names:
            chosen, where = list(names), SINKS_VARIABLE
        else:
            return _default(server_args, environ)

    built: list[Sink] = []
    server: ServerSettings | None = None
    seen: set[str] = set()
    skipped: list[str] = []
    for item in chosen:
        spec = split_spec(item, where)
        if not isinstance(spec, tuple):
            built.append(spec)
            continue
        kind, params = spec
        if isinstance(item, str):
            if kind in seen:
                raise ConfigurationError(f"sink {kind!r} is named twice")
            seen.add(kind)
        try:
            if kind in _INFLUX_KINDS:
                check_params(kind, get_factory(kind), params)
                try:
                    sink, server = influx_from_params(
                        params, server_args, environ, api="v1" if kind == "influxdb-v1" else None
                    )
                except TypeError as exc:
                    raise ConfigurationError(f"sink {kind!r}: {exc}") from None
                except ConfigurationError as exc:
                    raise ConfigurationError(f"{where} names {kind}, but {exc}") from None
            else:
                sink = create_sink(kind, environ=environ, **params)
        except SinkUnavailableError as exc:
            logger.warning("%s: %s; that sink is skipped", where, exc)
            skipped.append(kind)
            continue
        except ConfigurationError as exc:
            if str(exc).startswith(where):
                raise
            raise ConfigurationError(f"{where}: {exc}") from None
        built.append(sink)
    if not built:
        sink, server = _default(server_args, environ)
        logger.warning(
            "%s: no configured sink is available (%s skipped); points go to %r instead", where, ", ".join(skipped), sink
        )
        return sink, server
    if skipped:
        logger.info("points go to %s (skipped: %s)", ", ".join(repr(s) for s in built), ", ".join(skipped))
    if len(built) == 1:
        return built[0], server
    return MultiplexSink(built), server


__all__ = [
    "CONFIG_VARIABLE",
    "LOG_STORE_KEY",
    "SINKS_VARIABLE",
    "SINK_NAMES",
    "load_sinks_config",
    "parse_sinks_config",
    "resolve_destination",
]
