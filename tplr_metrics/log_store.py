"""A LogStore-style facade for training loops, over :class:`~tplr_metrics.logger.MetricsLogger`.

::

    store = open_log_store("jsonl", log_dir="./outputs/run-001/logs")
    store.log_hyperparams({"lr": 3e-4, "batch_size": 64})
    for step in range(steps):
        store.log_metrics({"loss": loss}, step)                 # split="train"
    store.log_metrics({"loss": val_loss}, step, split="val")
    store.log_artifact("checkpoint", "ckpt/step-1000.pt")
    store.close()

    store({"train/loss": loss, "lr": lr})   # call-style, as wandb.log: steps 0, 1, 2, ... or step=

Each call becomes one point through the logger's pipeline (queue, batching, retries, spool),
so the same calls land in InfluxDB, the local store, JSONL, TensorBoard or W&B; the mapping is
in :mod:`tplr_metrics.encoding.log_points`. ``step`` is a field, not a tag: a tag per step would make one
InfluxDB series per step (a long run reaches the server's series limit), while a field keeps
one series per split and run and still orders and plots by step. (Templar tags ``window`` and
``global_step`` because it groups by them in dashboards; plain ``MetricsLogger.log`` still can.)

The logger starts on the first call that is not ``log_hyperparams``, so hyperparams logged
before it become the run's config (``config_<key>`` tags on every point, the run's config in
the local store); hyperparams logged later land as ``hyperparams`` points, which
``tplr-metrics compare`` reads too.

Rank-aware: only rank 0 logs (``rank=``, else ``torch.distributed`` when the caller has
imported and initialized it, else RANK, else LOCAL_RANK); other ranks get a LogStore that
builds no sink and does nothing, unless ``all_ranks=True``. Like ``MetricsLogger.log``, the
``log_*`` methods never raise into the training loop: bad input is dropped and counted in
``stats()``. The one exception is a call after ``close()``, which raises
:class:`LogStoreClosedError`: that is a bug in the caller's code, not bad data.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from .config.auto_sink import DISABLED_VARIABLE, disabled, pick_sink
from .config.destinations import CONFIG_VARIABLE, resolve_destination
from .config.secrets import looks_secret
from .config.settings import ConfigurationError
from .delivery.stats import PipelineStats
from .encoding import log_points
from .encoding.values import coerce_scalar
from .logger import MetricsLogger
from .sinks.base import Sink
from .sinks.registry import check_params, factory_params, get_factory, normalize_kind
from .sinks.user_store import UserStoreSink

logger = logging.getLogger("tplr_metrics")

#: MetricsLogger arguments the facade sets itself.
_RESERVED_OPTIONS = ("sink", "sinks")

#: In a call-style ``store({...})``, a key starting with one of these and ``/`` is in that split.
KNOWN_SPLITS = ("train", "val", "validation", "eval", "test")


class LogStoreClosedError(RuntimeError):
    """A LogStore was used after ``close()``."""


def detect_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank: torch.distributed if already imported and initialized (never
    imported here), else RANK, else LOCAL_RANK, else 0."""
    environ = os.environ if environ is None else environ
    dist = sys.modules.get("torch.distributed")
    if dist is not None:
        try:
            if dist.is_available() and dist.is_initialized():
                return int(dist.get_rank())
        except Exception:  # a half-initialized process group: fall back to the environment
            pass
    for name in ("RANK", "LOCAL_RANK"):
        text = (environ.get(name) or "").strip()
        if text:
            try:
                return int(text)
            except ValueError:
                logger.warning("%s=%r is not a number; ignored", name, text)
    return 0


def _as_step(step: Any) -> int | None:
    if isinstance(step, bool):
        return None
    if isinstance(step, int):
        return step
    value = coerce_scalar(step)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _metric_value(value: Any) -> Any:
    """Numbers as float, so an int now and a float later never conflict in InfluxDB."""
    value = coerce_scalar(value)
    if isinstance(value, (bool, int)):
        return float(value)
    return value


def _config_dict(config: Any) -> dict[str, Any]:
    """The run's config: public attributes, none whose name looks secret (see config/secrets.py)."""
    if config is None:
        return {}
    try:
        items = dict(config) if isinstance(config, Mapping) else vars(config)
    except TypeError:
        return {}
    return {k: v for k, v in items.items() if isinstance(k, str) and not k.startswith("_") and not looks_secret(k)}


class LogStore:
    """What ``open_log_store`` returns; on a rank that does not log, every call does nothing."""

    def __init__(
        self,
        sink: Sink | None,
        *,
        logger_options: Mapping[str, Any] | None = None,
        quiet_because: str = "not rank 0",
    ) -> None:
        options = dict(logger_options or {})
        self._sink = sink
        self._quiet_because = quiet_because
        self._config = _config_dict(options.pop("config", None))
        options.setdefault("runtime_id", str(uuid.uuid4()))  # each LogStore is its own run
        self._options = options
        self._logger: MetricsLogger | None = None
        self._hyperparams: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._issues: Counter[str] = Counter()
        self._sanitized: Counter[str] = Counter()
        self._warned: set[str] = set()
        self._next_step = 0

    # --- properties ---------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether this process logs (False on ranks other than 0)."""
        return self._sink is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sink(self) -> Sink | None:
        return self._sink

    @property
    def run_id(self) -> str | None:
        """The run's runtime_id (its run id in the local store); None where nothing is logged."""
        return str(self._options["runtime_id"]) if self.active else None

    @property
    def hyperparams(self) -> dict[str, Any]:
        return dict(self._hyperparams)

    def __repr__(self) -> str:
        where = repr(self._sink) if self._sink is not None else f"no-op ({self._quiet_because})"
        return f"LogStore({where}, run_id={self.run_id!r}{', closed' if self._closed else ''})"

    # --- the logger behind it -----------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise LogStoreClosedError(f"LogStore.{what}() after close(): this store is closed; open a new one")

    def _started(self) -> MetricsLogger | None:
        """The logger, built on first use with the hyperparams so far as the run's config."""
        if self._logger is not None or self._sink is None:
            return self._logger
        with self._lock:
            if self._logger is None:
                config = {**self._config, **self._hyperparams}
                self._logger = MetricsLogger(sink=self._sink, config=config or None, **self._options)
                if self._hyperparams:
                    self._logger.log(log_points.HYPERPARAMS, {}, log_points.hyperparams_fields(self._hyperparams))
        return self._logger

    def _bad(self, cause: str, detail: str) -> None:
        with self._lock:
            self._issues[cause] += 1
            first = cause not in self._warned
            self._warned.add(cause)
        if first:
            logger.warning("LogStore: %s; dropped (further cases are only counted in stats())", detail)

    # --- the facade ---------------------------------------------------------------------

    def log_scalar(self, key: str, value: Any, step: int, split: str = "train") -> None:
        """One named scalar at a step (a user's own LogStore gets it back as ``log_scalar``)."""
        self._check_open("log_scalar")
        if self._sink is None:
            return
        self._log_metrics({key: value}, step, split, scalar=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int, split: str = "train") -> None:
        """A dict of metrics at a step; ``split`` (keyword or third argument) tags train vs
        validation rows. A nested dict is flattened (``{"opt": {"lr": 1}}`` -> ``opt/lr``); a value
        that is not a number (None, text, a list) is left out, counted in ``stats()["sanitized"]``."""
        self._check_open("log_metrics")
        if self._sink is None:
            return
        self._log_metrics(metrics, step, split)

    def _note(self, cause: str, detail: str) -> None:
        """A metric left out of a point that is still logged: counted as sanitized, said once."""
        with self._lock:
            self._sanitized[cause] += 1
            first = cause not in self._warned
            self._warned.add(cause)
        if first:
            logger.warning("LogStore: %s; left out (further cases are only counted in stats())", detail)

    def _log_metrics(self, metrics: Mapping[str, Any], step: Any, split: Any, *, scalar: bool = False) -> bool:
        """Log one metrics point; False where the call was dropped."""
        try:
            step_value = _as_step(step)
            if step_value is None:
                self._bad("bad_step", f"step must be an integer, not {step!r}")
                return False
            if not isinstance(metrics, Mapping):
                self._bad("not_a_mapping", f"metrics must be a dict, not {type(metrics).__name__}")
                return False
            split_text = split if isinstance(split, str) and split else str(split or "train")
            fields: dict[str, Any] = {}
            for key, value in _flatten(metrics).items():
                number = _metric_value(value)
                if number is None:
                    self._note("none_value", f"metric {key!r} is None")
                    continue
                if not isinstance(number, float):
                    self._note("not_numeric", f"metric {key!r} is not a number ({type(value).__name__})")
                    continue
                if not math.isfinite(number):
                    with self._lock:
                        self._sanitized["nan"] += 1  # InfluxDB cannot store it; the value rules say so too
                    continue
                fields[key] = number
            if not fields:
                self._bad("no_metrics", "a log_metrics call with no storable metric (empty, or only NaN/inf/None)")
                return False
            fields[log_points.STEP] = step_value  # the step argument wins over a metric named "step"
            started = self._started()
            if started is None:
                return False
            at = time.time_ns()
            if scalar and len(fields) == 2:
                for store in _user_stores(self._sink):
                    store.expect_scalar(at, next(iter(fields)))
            started.log(log_points.METRICS, {log_points.SPLIT: split_text}, fields, timestamp=at)
            return True
        except Exception as exc:
            self._bad("log_error", f"log_metrics failed: {type(exc).__name__}: {exc}")
            return False

    def __call__(self, data: Mapping[str, Any], step: int | None = None, *, split: str | None = None) -> None:
        """``store({"train/loss": 0.5, "lr": 1e-4})``, as with ``wandb.log``: at the store's own
        step (0, 1, 2, ..., one per call), or at ``step=``, from which the count goes on. Without
        ``split=``, a key starting with ``val/`` (or ``train/``, ``eval/``, ``test/``,
        ``validation/``) is in that split and any other key in ``train``; a value that is a list
        of dicts is logged as a table of that name."""
        self._check_open("__call__")
        with self._lock:
            at = self._next_step if step is None else _as_step(step)
        if at is None:
            if self._sink is not None:
                self._bad("bad_step", f"step must be an integer, not {step!r}")
            return
        if self._sink is None:
            with self._lock:
                self._next_step = at + 1
            return
        if not isinstance(data, Mapping):
            self._bad("not_a_mapping", f"a call-style log takes a dict, not {type(data).__name__}")
            return
        logged = False
        by_split: dict[str, dict[str, Any]] = {}
        try:
            for key, value in data.items():
                name = str(key)
                if _is_table(value):
                    logged = self._log_table(name, value, step=at) or logged
                    continue
                if isinstance(value, Mapping):  # {"val": {"loss": 1}} is val/loss, as wandb.log does
                    for inner, leaf in _flatten(value, name).items():
                        by_split.setdefault(self._split_of(inner, split), {})[inner] = leaf
                    continue
                by_split.setdefault(self._split_of(name, split), {})[name] = value
        except Exception as exc:
            self._bad("log_error", f"a call-style log failed: {type(exc).__name__}: {exc}")
        if not by_split and not logged:
            if not data:
                self._bad("no_metrics", "a call-style log of an empty dict")
            return
        for chosen, metrics in by_split.items():
            logged = self._log_metrics(metrics, at, chosen) or logged
        if logged:  # a dropped call takes no step: the next call gets the one it would have had
            with self._lock:
                self._next_step = at + 1

    @staticmethod
    def _split_of(name: str, split: str | None) -> str:
        head = name.partition("/")[0] if "/" in name else ""
        return split if split is not None else (head if head in KNOWN_SPLITS else "train")

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """JSON-serializable values, merged across calls: a later value for a key wins, and nested
        dicts merge key by key (``{"opt": {"lr": 2}}`` keeps ``opt.name`` from an earlier call)."""
        self._check_open("log_hyperparams")
        if self._sink is None:
            return
        try:
            if not isinstance(params, Mapping):
                self._bad("not_a_mapping", f"hyperparams must be a dict, not {type(params).__name__}")
                return
            for key, value in params.items():
                safe, changed = log_points.json_safe(value)
                if changed:
                    with self._lock:
                        self._sanitized["hyperparam_not_json"] += 1
                with self._lock:
                    self._hyperparams[str(key)] = _deep_merge(self._hyperparams.get(str(key)), safe)
            if self._logger is not None:
                self._logger.log(log_points.HYPERPARAMS, {}, log_points.hyperparams_fields(self._hyperparams))
        except Exception as exc:
            self._bad("log_error", f"log_hyperparams failed: {type(exc).__name__}: {exc}")

    def log_artifact(self, name: str, path: str | os.PathLike[str], *, kind: str = "file") -> None:
        """A pointer to an artifact (its absolute path or URI), not its bytes."""
        self._check_open("log_artifact")
        if self._sink is None:
            return
        try:
            if not isinstance(name, str) or not name:
                self._bad("bad_artifact", f"an artifact needs a name, not {name!r}")
                return
            text = os.fspath(path)
            if not isinstance(text, str) or not text:
                self._bad("bad_artifact", f"artifact {name!r} needs a path, not {path!r}")
                return
            if "://" not in text:
                text = os.path.abspath(text)  # a relative path means nothing once the run is over
            started = self._started()
            if started is not None:
                started.log(log_points.ARTIFACTS, {"name": name, "kind": str(kind or "file")}, {"path": text})
        except Exception as exc:
            self._bad("log_error", f"log_artifact failed: {type(exc).__name__}: {exc}")

    def log_table(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
        *,
        columns: Sequence[str] | None = None,
        step: int | None = None,
    ) -> None:
        """A small table (e.g. sample completions and their scores): one point per row, tagged
        ``table`` and ``row``, all with one timestamp so the call reads back as one table."""
        self._check_open("log_table")
        if self._sink is None:
            return
        self._log_table(name, rows, columns=columns, step=step)

    def _log_table(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
        *,
        columns: Sequence[str] | None = None,
        step: int | None = None,
    ) -> bool:
        """Log one table; False where the call was dropped."""
        try:
            if not isinstance(name, str) or not name:
                self._bad("bad_table", f"a table needs a name, not {name!r}")
                return False
            step_value = None if step is None else _as_step(step)
            if step is not None and step_value is None:
                self._bad("bad_step", f"step must be an integer, not {step!r}")
                return False
            if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
                self._bad("bad_table", f"table {name!r}: rows must be a list, not {type(rows).__name__}")
                return False
            prepared: list[dict[str, Any]] = []
            for row in rows:
                if isinstance(row, Mapping):
                    cells = {str(k): v for k, v in row.items()}
                elif columns is not None and isinstance(row, Sequence) and not isinstance(row, (str, bytes)):
                    if len(row) != len(columns):
                        self._bad(
                            "bad_table", f"table {name!r}: a row has {len(row)} values for {len(columns)} columns"
                        )
                        return False
                    cells = {str(c): v for c, v in zip(columns, row, strict=True)}
                else:
                    self._bad("bad_table", f"table {name!r}: rows are dicts, or sequences with columns=")
                    return False
                fields = {k: _cell(v) for k, v in cells.items() if v is not None}
                if step_value is not None:
                    fields[log_points.STEP] = step_value
                prepared.append(fields)
            started = self._started()
            if started is None:
                return False
            now = time.time_ns()
            for index, fields in enumerate(prepared):
                started.log(log_points.TABLE, {"table": name, "row": index}, fields, timestamp=now)
            return bool(prepared)
        except Exception as exc:
            self._bad("log_error", f"log_table failed: {type(exc).__name__}: {exc}")
            return False

    # --- flush, close, stats ------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Return once everything logged so far is stored (False if the timeout passed)."""
        self._check_open("flush")
        return self._logger.flush(timeout) if self._logger is not None else True

    def close(self, timeout: float | None = None) -> bool:
        """Flush and release the sink; later writes raise LogStoreClosedError. Idempotent."""
        return self._close(None, timeout)

    def _close(self, exc_type: type[BaseException] | None, timeout: float | None = None) -> bool:
        if self._closed:
            return True
        if self._sink is not None and self._hyperparams:
            self._started()  # hyperparams alone still land
        self._closed = True
        if self._logger is None:
            if self._sink is not None:
                try:
                    self._sink.close()
                except Exception as exc:
                    logger.warning("LogStore: closing %r failed: %r", self._sink, exc)
            return True
        if exc_type is None:
            return self._logger.close(timeout)
        self._logger.__exit__(exc_type, None, None)  # the run ends failed or cancelled
        return True

    def stats(self) -> dict[str, Any]:
        """The logger's counters, with what the facade itself dropped added in."""
        snapshot = self._logger.stats() if self._logger is not None else PipelineStats().snapshot(0)
        with self._lock:
            issues, sanitized = dict(self._issues), dict(self._sanitized)
        dropped = dict(snapshot["dropped"])
        for cause, n in issues.items():
            dropped[cause] = dropped.get(cause, 0) + n
        snapshot["dropped"] = dropped
        snapshot["dropped_total"] = sum(dropped.values())
        merged_sanitized = dict(snapshot["sanitized"])
        for cause, n in sanitized.items():
            merged_sanitized[cause] = merged_sanitized.get(cause, 0) + n
        snapshot["sanitized"] = merged_sanitized
        return snapshot

    def __enter__(self) -> LogStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(exc_type)


def _deep_merge(old: Any, new: Any) -> Any:
    """``new`` over ``old``, nested dicts merged key by key rather than replaced."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        merged = dict(old)
        for key, value in new.items():
            merged[key] = _deep_merge(merged.get(key), value)
        return merged
    return new


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``outer/inner`` keys, as ``wandb.log`` names them."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def _user_stores(sink: Any) -> list[UserStoreSink]:
    """The user's own LogStores behind a sink (itself, or a multiplex's children)."""
    if isinstance(sink, UserStoreSink):
        return [sink]
    found: list[UserStoreSink] = []
    for child in getattr(sink, "children", None) or ():
        found.extend(_user_stores(child))
    return found


def _is_table(value: Any) -> bool:
    """A list of dicts (one per row) in a call-style log."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and bool(value)
        and all(isinstance(row, Mapping) for row in value)
    )


def _cell(value: Any) -> Any:
    """A table cell as a field: numbers and text as they are, anything else as JSON text."""
    value = coerce_scalar(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    safe, _ = log_points.json_safe(value)
    import json

    return json.dumps(safe, sort_keys=True)


def _check_logger_options(options: Mapping[str, Any]) -> None:
    accepted = set(inspect.signature(MetricsLogger).parameters) - set(_RESERVED_OPTIONS)
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        reserved = [k for k in unknown if k in _RESERVED_OPTIONS]
        hint = " (the store builds the sink from kind and params)" if reserved else ""
        raise ConfigurationError(f"logger_options: unknown MetricsLogger argument(s) {', '.join(unknown)}{hint}")


_said_disabled = False


def open_log_store(
    kind: str | None = None,
    *,
    rank: int | None = None,
    all_ranks: bool = False,
    run_name: str | None = None,
    logger_options: Mapping[str, Any] | None = None,
    **params: Any,
) -> LogStore:
    """A LogStore writing to a sink of ``kind`` built from ``params``.

    ``open_log_store("jsonl", log_dir="./outputs/run-001/logs")``;
    ``open_log_store("multiplex", children=[{"kind": "jsonl", "params": {...}}, {"kind": "local"}])``.
    ``logger_options`` go to the MetricsLogger behind it (role, uid, prefix, config, flush_interval,
    ...). ``run_name`` names the run in ``tplr-metrics runs`` (default: role/uid, else the run
    id's first 8 characters). Unknown params are a ConfigurationError naming them; a sink whose optional extra is not
    installed is skipped with one warning, as ``MetricsLogger(sinks=...)`` does.

    With no kind, the ``log_store`` (or ``sinks``) of the TPLR_METRICS_SINKS_CONFIG file picks
    it, else the environment (see :mod:`tplr_metrics.config.auto_sink`): W&B, MLflow,
    TensorBoard, InfluxDB, else the local store. ``TPLR_METRICS_DISABLED=1`` gives a
    store that does nothing.
    """
    global _said_disabled
    where = "open_log_store"
    if kind is None:
        key, detected, why = pick_sink()
        params = {**detected, **params}
        if not disabled():  # disabled: the only thing said is that nothing is logged
            logger.info("LogStore: no sink kind named; %s, so %r", why, key)
        if why.startswith(CONFIG_VARIABLE):
            where = CONFIG_VARIABLE
    elif not isinstance(kind, str) or not kind.strip():
        raise ConfigurationError(f"open_log_store: kind must be a sink kind such as 'jsonl', not {kind!r}")
    else:
        key = normalize_kind(kind)
    options = dict(logger_options or {})
    if run_name is not None:
        options["run_name"] = run_name
        if "run_name" in factory_params(get_factory(key))[0]:  # TensorBoard, W&B, MLflow: theirs too
            params.setdefault("run_name", run_name)
    _check_logger_options(options)
    if disabled():
        check_params(key, get_factory(key), params)  # a bad config still fails
        if not _said_disabled:
            _said_disabled = True
            logger.info("LogStore: %s is set; nothing is logged", DISABLED_VARIABLE)
        return LogStore(None, logger_options=options, quiet_because=f"{DISABLED_VARIABLE} is set")
    this_rank = detect_rank() if rank is None else rank
    if not all_ranks and this_rank != 0:
        check_params(key, get_factory(key), params)  # a bad config fails on every rank alike
        logger.info("LogStore: rank %s does not log (only rank 0 does unless all_ranks=True)", this_rank)
        return LogStore(None, logger_options=options)
    sink, _ = resolve_destination({}, sinks=[{"kind": key, "params": params}], where=where)
    return LogStore(sink, logger_options=options)


__all__ = ["LogStore", "LogStoreClosedError", "detect_rank", "open_log_store"]
