"""Sinks by kind: the built-ins, ``register_sink()``, and the ``tplr_metrics.sinks`` entry points.

A sink is anything with the :class:`~tplr_metrics.sinks.base.Sink` protocol: a ``name``, and
``write(points) -> WriteResult`` (never raising), ``flush()`` and ``close()``; ``start_run(RunInfo)``
and ``end_run(status)`` are optional hooks. A *factory* builds one from keyword params (a class
is a factory); a factory that builds a LogStore of the user's instead (the five ``log_*``/``close``
methods) gets it wrapped as a sink (:mod:`tplr_metrics.sinks.user_store`). A kind is resolved in this order:

1. the built-ins (``influxdb``, ``influxdb-v1``, ``local``, ``jsonl``, ``mlflow``,
   ``multiplex``, ``stdout``, ``tensorboard``, ``wandb``), whose modules are imported only when that kind is built;
2. factories given to :func:`register_sink` in this process;
3. the entry-point group ``tplr_metrics.sinks``, walked once, on the first lookup that needs it,
   so an installed package adds a sink without a fork::

       [project.entry-points."tplr_metrics.sinks"]
       kafka = "my_package.sinks:KafkaSink"

Params are checked against the factory's signature before it is called: an unknown or missing
one is a :class:`~tplr_metrics.config.settings.ConfigurationError` that names it. A sink whose optional
dependency is not installed raises :class:`SinkUnavailableError` (a :class:`MissingExtraError`
for our extras); where several sinks are configured, that one is skipped with one log line.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

from ..config.settings import ConfigurationError, ServerSettings
from .base import Sink
from .param_types import check_param_types
from .user_store import LOG_STORE_METHODS, UserStoreSink, is_log_store

logger = logging.getLogger("tplr_metrics")

ENTRY_POINT_GROUP = "tplr_metrics.sinks"

#: Builds a sink from keyword params; a Sink class is one.
SinkFactory = Callable[..., Any]

#: One sink as configuration gives it: a kind name, ``{"kind": ..., "params": {...}}``, or a Sink.
SinkSpec = str | Mapping[str, Any] | Sink

# Built-ins by kind: "module:attribute", imported on first use so that optional extras
# (tensorboard, wandb, mlflow) cost nothing until asked for.
_BUILTINS: dict[str, str] = {
    "influxdb": "tplr_metrics.sinks.registry:influxdb_sink",
    "influxdb-v1": "tplr_metrics.sinks.registry:influxdb_v1_sink",
    "local": "tplr_metrics.sinks.registry:local_sink",
    "jsonl": "tplr_metrics.sinks.jsonl:JsonlSink",
    "mlflow": "tplr_metrics.sinks.mlflow:MlflowSink",
    "multiplex": "tplr_metrics.sinks.registry:multiplex_sink",
    "stdout": "tplr_metrics.sinks.stdout:StdoutSink",
    "tensorboard": "tplr_metrics.sinks.tensorboard:TensorBoardSink",
    "wandb": "tplr_metrics.sinks.wandb:WandbSink",
}

#: Params the registry passes itself when a factory takes them; not listed as user params.
_INJECTED = ("environ",)

_lock = threading.Lock()
_registered: dict[str, SinkFactory] = {}
_entry_points: dict[str, importlib.metadata.EntryPoint] | None = None


class SinkUnavailableError(ConfigurationError):
    """The sink's code or a package it needs cannot be imported here."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class MissingExtraError(SinkUnavailableError):
    """A built-in sink whose optional extra is not installed."""

    def __init__(self, kind: str, extra: str, cause: BaseException | str) -> None:
        super().__init__(
            kind,
            f"sink {kind!r} needs the optional extra {extra!r} (pip install 'tplr_metrics[{extra}]'): {cause}",
        )
        self.extra = extra


def require_module(kind: str, extra: str, module: str) -> Any:
    """Import an optional dependency, or raise MissingExtraError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(kind, extra, exc) from None


def normalize_kind(kind: str) -> str:
    """``InfluxDB_V1`` and ``influxdb-v1`` are one kind."""
    return kind.strip().lower().replace("_", "-")


# --- registration and discovery ----------------------------------------------------------------


_F = TypeVar("_F", bound=SinkFactory)


@overload
def register_sink(kind: str, factory: None = None, *, replace: bool = False) -> Callable[[_F], _F]: ...
@overload
def register_sink(kind: str, factory: SinkFactory, *, replace: bool = False) -> SinkFactory: ...
def register_sink(
    kind: str, factory: SinkFactory | None = None, *, replace: bool = False
) -> SinkFactory | Callable[[_F], _F]:
    """Make ``kind`` build sinks with ``factory`` in this process (built-in names are reserved).

    ``register_sink("kafka", KafkaSink)``, or as a decorator on the class or factory function:
    ``@register_sink("kafka")``; either form returns the factory unchanged."""
    key = _check_kind(kind)
    if factory is None:

        def decorate(target: _F) -> _F:
            _register(key, target, replace)
            return target

        return decorate
    _register(key, factory, replace)
    return factory


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not normalize_kind(kind):
        raise ConfigurationError(f"a sink kind must be a non-empty string, not {kind!r}")
    key = normalize_kind(kind)
    if key in _BUILTINS:
        raise ConfigurationError(f"sink kind {key!r} is built in; pick another name")
    return key


def _register(key: str, factory: SinkFactory, replace: bool) -> None:
    if not callable(factory):
        raise ConfigurationError(f"the factory for sink {key!r} must be callable, not {factory!r}")
    with _lock:
        if key in _registered and not replace:
            raise ConfigurationError(f"sink kind {key!r} is already registered (pass replace=True to replace it)")
        _registered[key] = factory


def unregister_sink(kind: str) -> None:
    with _lock:
        _registered.pop(normalize_kind(kind), None)


def _discovered() -> dict[str, importlib.metadata.EntryPoint]:
    """The entry points of our group, walked once (``refresh_entry_points`` walks again)."""
    global _entry_points
    with _lock:
        if _entry_points is not None:
            return _entry_points
        found: dict[str, importlib.metadata.EntryPoint] = {}
        try:
            points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        except Exception as exc:  # a broken dist-info somewhere must not break logging
            logger.warning("could not read the %s entry points: %r", ENTRY_POINT_GROUP, exc)
            points = []
        for point in points:
            key = normalize_kind(point.name)
            if key in _BUILTINS:
                logger.warning("entry point %s ignored: %r is a built-in sink kind", point.value, key)
            elif key in found and found[key].value != point.value:
                logger.warning("entry point %s ignored: sink kind %r comes from %s", point.value, key, found[key].value)
            else:
                found.setdefault(key, point)
        _entry_points = found
        return found


def refresh_entry_points() -> None:
    """Walk the entry points again on the next lookup (after installing a package at run time)."""
    global _entry_points
    with _lock:
        _entry_points = None


def available_sinks() -> dict[str, str]:
    """Every kind this process can build, with where it comes from."""
    kinds = dict.fromkeys(_BUILTINS, "built-in")
    with _lock:
        kinds.update(dict.fromkeys(_registered, "registered"))
    for key, point in _discovered().items():
        kinds.setdefault(key, f"entry point {point.value}")
    return kinds


def get_factory(kind: str) -> SinkFactory:
    """The factory for a kind; unknown kinds are a ConfigurationError listing the known ones."""
    key = normalize_kind(kind) if isinstance(kind, str) else ""
    target = _BUILTINS.get(key)
    if target is not None:
        module_name, _, attribute = target.partition(":")
        factory: SinkFactory = getattr(importlib.import_module(module_name), attribute)
        return factory
    with _lock:
        registered = _registered.get(key)
    if registered is not None:
        return registered
    point = _discovered().get(key)
    if point is None:
        raise ConfigurationError(f"unknown sink {kind!r} (known: {', '.join(available_sinks())})")
    try:
        loaded: SinkFactory = point.load()
    except ImportError as exc:
        raise SinkUnavailableError(key, f"sink {key!r} (entry point {point.value}) cannot be imported: {exc}") from None
    except Exception as exc:
        raise ConfigurationError(f"sink {key!r} (entry point {point.value}) failed to load: {exc!r}") from None
    if not callable(loaded):
        raise ConfigurationError(f"entry point {point.value} for sink {key!r} is not callable")
    return loaded


# --- building ---------------------------------------------------------------------------------


def factory_params(factory: SinkFactory) -> tuple[list[str], list[str], bool]:
    """(accepted, required, takes **kwargs) keyword params of a factory."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return [], [], True  # a builtin or C callable: nothing to check against
    accepted: list[str] = []
    required: list[str] = []
    var_keyword = False
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            if name in _INJECTED:
                continue
            accepted.append(name)
            if param.default is inspect.Parameter.empty:
                required.append(name)
    return accepted, required, var_keyword


def check_params(kind: str, factory: SinkFactory, params: Mapping[str, Any]) -> None:
    """Unknown or missing params, and values of a type the factory's annotations rule out, are a
    ConfigurationError naming them."""
    accepted, required, var_keyword = factory_params(factory)
    takes = ", ".join(accepted) or "no params"
    unknown = sorted(k for k in params if k not in accepted and k not in _INJECTED)
    if unknown and not var_keyword:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigurationError(f"sink {kind!r}: unknown param{plural} {', '.join(unknown)} (it takes: {takes})")
    missing = [k for k in required if k not in params]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise ConfigurationError(f"sink {kind!r}: missing param{plural} {', '.join(missing)} (it takes: {takes})")
    check_param_types(kind, factory, params)


def create_sink(kind: str, /, environ: Mapping[str, str] | None = None, **params: Any) -> Sink:
    """Build one sink of ``kind`` from ``params`` (checked against its factory's signature)."""
    key = normalize_kind(kind) if isinstance(kind, str) else ""
    factory = get_factory(kind)
    check_params(key, factory, params)
    accepted_injected = _takes(factory, "environ")
    call = dict(params)
    if accepted_injected and environ is not None and "environ" not in call:
        call["environ"] = environ
    try:
        sink = factory(**call)
    except (ConfigurationError, SinkUnavailableError):
        raise
    except ImportError as exc:
        raise SinkUnavailableError(key, f"sink {key!r} cannot be built here: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"sink {key!r}: {exc}") from None
    if not isinstance(sink, Sink) and is_log_store(sink):
        sink = UserStoreSink(key, sink)  # a LogStore of the user's: each point goes back to it as its call
    if not isinstance(sink, Sink):
        raise ConfigurationError(
            f"sink {key!r}: its factory returned {type(sink).__name__}, which is neither a Sink"
            f" (name/write/flush/close) nor a LogStore ({'/'.join(LOG_STORE_METHODS)})"
        )
    return sink


def _takes(factory: SinkFactory, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def parse_spec(item: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """``{"kind": ..., "params": {...}}`` into (kind, params); other keys are an error naming them."""
    extra = sorted(str(k) for k in item if k not in ("kind", "params"))
    if extra:
        raise ConfigurationError(f"{where}: a sink is {{kind, params}}; unknown key(s) {', '.join(extra)}")
    kind = item.get("kind")
    if not isinstance(kind, str) or not kind.strip():
        raise ConfigurationError(f"{where}: a sink needs a kind (a name such as 'jsonl'), not {kind!r}")
    params = item.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigurationError(f"{where}: params of sink {kind!r} must be a mapping, not {type(params).__name__}")
    bad = [k for k in params if not isinstance(k, str)]
    if bad:
        raise ConfigurationError(f"{where}: param names of sink {kind!r} must be strings, not {bad!r}")
    return normalize_kind(kind), dict(params)


def split_spec(item: object, where: str) -> tuple[str, dict[str, Any]] | Sink:
    """One sink spec as (kind, params) - from a name or a {kind, params} mapping - or the Sink
    object it already is."""
    if isinstance(item, str):
        return normalize_kind(item), {}
    if isinstance(item, Mapping):
        return parse_spec(item, where)
    if isinstance(item, Sink):
        return item
    raise ConfigurationError(f"{where} takes names of sinks, {{kind, params}} mappings or Sink objects, not {item!r}")


def build_sinks(
    specs: Sequence[SinkSpec], where: str, environ: Mapping[str, str] | None = None
) -> tuple[list[Sink], list[SinkUnavailableError]]:
    """Build each spec; unavailable ones are skipped (returned, and logged once each)."""
    built: list[Sink] = []
    skipped: list[SinkUnavailableError] = []
    for item in specs:
        spec = split_spec(item, where)
        if not isinstance(spec, tuple):
            built.append(spec)
            continue
        kind, params = spec
        try:
            built.append(create_sink(kind, environ=environ, **params))
        except SinkUnavailableError as exc:
            logger.warning("%s: %s; that sink is skipped, the others go on", where, exc)
            skipped.append(exc)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    return built, skipped


# --- built-in factories that are not a plain class ---------------------------------------------


def influx_from_params(
    params: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    api: str | None = None,
) -> tuple[Sink, ServerSettings]:
    """An InfluxDB sink and its settings: params over ``defaults`` (a logger's args) over INFLUXDB_*."""
    from ..config.settings import build_influx_sink, resolve_server

    merged = {k: v for k, v in (defaults or {}).items() if v is not None}
    merged.update({k: v for k, v in params.items() if v is not None})
    if "bucket" in merged:
        bucket = merged.pop("bucket")
        merged.setdefault("database", bucket)
    if api is not None:
        merged["api"] = api
    server = resolve_server(environ=environ, **merged)
    return build_influx_sink(server), server


def influxdb_sink(
    *,
    url: str | None = None,
    host: str | None = None,
    port: int | str | None = None,
    database: str | None = None,
    bucket: str | None = None,
    token: str | None = None,
    org: str | None = None,
    api: str | None = None,
    username: str | None = None,
    password: str | None = None,
    verify_ssl: bool | None = None,
    ssl_ca_cert: str | None = None,
    timeout_ms: int | None = None,
    gzip: bool | None = None,
    create_database: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Sink:
    """InfluxDB through the v2 write API (``api="v1"`` or INFLUXDB_API=v1 for /write); unset
    params come from INFLUXDB_* variables."""
    params = dict(locals())
    params.pop("environ")
    return influx_from_params(params, environ=environ)[0]


def influxdb_v1_sink(
    *,
    url: str | None = None,
    host: str | None = None,
    port: int | str | None = None,
    database: str | None = None,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    verify_ssl: bool | None = None,
    ssl_ca_cert: str | None = None,
    timeout_ms: int | None = None,
    gzip: bool | None = None,
    create_database: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Sink:
    """InfluxDB 1.x through /write?db= (the database is created when missing, as Telegraf does)."""
    params = dict(locals())
    params.pop("environ")
    return influx_from_params(params, environ=environ, api="v1")[0]


def local_sink(
    *, path: str | None = None, busy_timeout_s: float = 30.0, environ: Mapping[str, str] | None = None
) -> Sink:
    """The local SQLite store ($TPLR_METRICS_HOME/metrics.sqlite unless ``path`` is given)."""
    from .local import LocalStoreSink

    return LocalStoreSink(path, busy_timeout_s=busy_timeout_s, environ=environ)


def multiplex_sink(*, children: Sequence[SinkSpec], environ: Mapping[str, str] | None = None) -> Sink:
    """Fans every batch out to its children; a child whose extra is missing is skipped."""
    from .multiplex import MultiplexSink

    if isinstance(children, (str, Mapping)) or not isinstance(children, Sequence):
        raise ConfigurationError("sink 'multiplex': children must be a list of sinks")
    built, skipped = build_sinks(children, "sink 'multiplex' children", environ)
    if not built:
        if skipped:
            raise SinkUnavailableError(
                "multiplex", f"sink 'multiplex': none of its children is available ({skipped[0]})"
            )
        raise ConfigurationError("sink 'multiplex' needs at least one child")
    return MultiplexSink(built)


__all__ = [
    "ENTRY_POINT_GROUP",
    "MissingExtraError",
    "SinkFactory",
    "SinkSpec",
    "SinkUnavailableError",
    "available_sinks",
    "build_sinks",
    "check_params",
    "create_sink",
    "get_factory",
    "influx_from_params",
    "normalize_kind",
    "parse_spec",
    "refresh_entry_points",
    "register_sink",
    "require_module",
    "unregister_sink",
]
