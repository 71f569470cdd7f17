"""Where a logger's points go: from arguments and environment to the one sink the pipeline feeds.

* ``sinks=[...]`` (or, when it is not given, ``TPLR_METRICS_SINKS=influxdb,local``) names the
  destinations: ``"influxdb"`` (the configured server), ``"local"`` (the local store) or Sink
  objects. Several are fanned out by a :class:`~tplr_metrics.sinks.multiplex.MultiplexSink`.
* Otherwise: the configured InfluxDB server (url/host argument, INFLUXDB_URL/INFLUXDB_HOST),
  and with no server configured the local store at ``$TPLR_METRICS_HOME/metrics.sqlite``, so
  a fresh machine gets a working logger instead of an error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .settings import ConfigurationError, ServerSettings, build_influx_sink, resolve_server, server_configured
from .sinks.base import Sink
from .sinks.local import LocalStoreSink
from .sinks.multiplex import MultiplexSink

logger = logging.getLogger("tplr_metrics")

SINK_NAMES = ("influxdb", "local")
SINKS_VARIABLE = "TPLR_METRICS_SINKS"


def sink_names_from_env(environ: Mapping[str, str]) -> list[str]:
    text = environ.get(SINKS_VARIABLE) or ""
    return [part.strip() for part in text.split(",") if part.strip()]


def resolve_destination(
    server_args: Mapping[str, Any],
    sinks: Sequence[str | Sink] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Sink, ServerSettings | None]:
    """The sink for a logger built with these server arguments, and the server it talks to."""
    environ = os.environ if environ is None else environ
    from_env = not sinks
    chosen: Sequence[str | Sink] = list(sinks) if sinks else sink_names_from_env(environ)
    if not chosen:
        if server_configured(server_args.get("url"), server_args.get("host"), environ):
            configured = resolve_server(environ=environ, **server_args)
            return build_influx_sink(configured), configured
        return LocalStoreSink(environ=environ), None

    built: list[Sink] = []
    server: ServerSettings | None = None
    seen: set[str] = set()
    for item in chosen:
        if isinstance(item, str):
            key = item.strip().lower()
            if key in seen:
                raise ConfigurationError(f"sink {key!r} is named twice")
            seen.add(key)
            if key == "influxdb":
                try:
                    server = resolve_server(environ=environ, **server_args)
                except ConfigurationError as exc:
                    where = f"{SINKS_VARIABLE} names" if from_env else "sinks= names"
                    raise ConfigurationError(f"{where} influxdb, but {exc}") from None
                built.append(build_influx_sink(server))
            elif key == "local":
                built.append(LocalStoreSink(environ=environ))
            else:
                where = f"{SINKS_VARIABLE}" if from_env else "sinks="
                names = ", ".join(SINK_NAMES)
                raise ConfigurationError(f"{where}: unknown sink {item!r} (use {names} or a Sink object)")
        elif isinstance(item, Sink):
            built.append(item)
        else:
            raise ConfigurationError(f"sinks= takes names ({', '.join(SINK_NAMES)}) or Sink objects, not {item!r}")
    if len(built) == 1:
        return built[0], server
    return MultiplexSink(built), server


__all__ = ["SINK_NAMES", "SINKS_VARIABLE", "resolve_destination"]
