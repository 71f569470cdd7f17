"""Where a logger's points go: from arguments and environment to the one sink the pipeline feeds."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .settings import ServerSettings, build_influx_sink, resolve_server
from .sinks.base import Sink

logger = logging.getLogger("tplr_metrics")


def resolve_destination(
    server_args: Mapping[str, Any],
    sinks: Sequence[str | Sink] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Sink, ServerSettings | None]:
    """The sink for a logger built with these server arguments, and the server it talks to.

    Today: the configured InfluxDB server, or a ConfigurationError naming what to set.
    """
    if sinks:
        raise NotImplementedError("sinks=[...] arrives with the local store")
    server = resolve_server(environ=environ, **server_args)
    return build_influx_sink(server), server
