"""A user's own LogStore class (``log_scalar``, ``log_metrics``, ``log_hyperparams``,
``log_artifact``, ``close``) as a sink, so it plugs in where any sink does.

``register_sink("mine", MyStore)`` (or ``@register_sink("mine")`` on the class): the registry sees
that what the factory built is a LogStore rather than a Sink and wraps it here, so
``open_log_store("mine", **params)`` and a ``multiplex`` child ``{kind: mine}`` both work. Each
point the facade logged is handed back to the store as the call it came from:

* ``metrics`` points: ``log_metrics(metrics, step, split=split)``, a key that carries its split
  (``train/loss`` from a call-style ``store({"train/loss": ..})``) without it, as the store builds
  ``split/key`` itself (a store whose ``log_metrics`` takes no ``split`` gets ``val/loss`` for
  ``loss`` in split ``val``; ``train`` keys as they are); a facade ``log_scalar(k, v, step)`` in
  split ``train``: ``log_scalar(k, v, step)``;
* ``hyperparams``: ``log_hyperparams(merged)``; ``artifacts``: ``log_artifact(name, path, kind=)``
  (``kind`` only if it takes it); ``table`` rows: ``log_table(name, rows, step=)`` where the store
  has one, the rows of one call that arrive in one batch together; a store with no ``log_table``
  cannot take them: each row is counted rejected (cause ``log_store_unsupported``, warned once);
* a plain ``MetricsLogger.log`` point: ``log_metrics({"<measurement>/<field>": value}, step)``
  with its numeric fields, at its ``step`` field (else 0).

Calls reach the store from the pipeline's writer thread, one at a time (a lock keeps them
apart), after the training loop's call returned. A call that raises never reaches the training
loop: that point is counted rejected (cause ``log_store_error``, in ``stats()``), the pipeline
warns once, and the other points and sinks go on.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..encoding import log_points
from ..encoding.points import Point
from .base import Rejection, WriteResult

logger = logging.getLogger("tplr_metrics")

#: What makes an object a LogStore rather than a Sink.
LOG_STORE_METHODS = ("log_scalar", "log_metrics", "log_hyperparams", "log_artifact", "close")

ERROR_CAUSE = "log_store_error"
UNSUPPORTED_CAUSE = "log_store_unsupported"

#: How many facade log_scalar calls are remembered until their point arrives.
_SCALARS_KEPT = 4096


def is_log_store(obj: object) -> bool:
    """An object with the five LogStore methods and no Sink ``write``."""
    return all(callable(getattr(obj, name, None)) for name in LOG_STORE_METHODS) and not callable(
        getattr(obj, "write", None)
    )


def _takes(method: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class UserStoreSink:
    """Forwards each point to a user's LogStore object as the call that made it."""

    def __init__(self, name: str, store: Any) -> None:
        self.name = name
        self.store = store
        self._metrics_split = _takes(store.log_metrics, "split")
        self._artifact_kind = _takes(store.log_artifact, "kind")
        self._lock = threading.Lock()
        #: (time_ns, key) of the facade's log_scalar points not yet written, oldest first.
        self._scalars: dict[tuple[int, str], None] = {}
        self._scalars_lock = threading.Lock()
        #: Calls forwarded, and calls that raised, by method name.
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"UserStoreSink({self.name!r}, {type(self.store).__name__})"

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._scalars_lock = threading.Lock()

    def expect_scalar(self, time_ns: int, key: str) -> None:
        """The facade's ``log_scalar`` is about to log ``key`` at ``time_ns``: that point goes back
        to the store as ``log_scalar``, not as a one-key ``log_metrics``."""
        with self._scalars_lock:
            self._scalars[(time_ns, key)] = None
            while len(self._scalars) > _SCALARS_KEPT:  # a point that never came (dropped, strict)
                del self._scalars[next(iter(self._scalars))]

    def _was_scalar(self, time_ns: int, key: str) -> bool:
        with self._scalars_lock:
            return self._scalars.pop((time_ns, key), 0) is None

    def write(self, points: Sequence[Point]) -> WriteResult:
        rejected: list[Rejection] = []
        tables: dict[tuple[str, int, int | None], list[tuple[int, dict[str, Any]]]] = {}
        with self._lock:
            for index, point in enumerate(points):
                table_row = log_points.as_table_row(point)
                if table_row is not None:
                    key = (table_row.table, point.time_ns, table_row.step)
                    tables.setdefault(key, []).append((index, table_row.values))
                    continue
                self._call(index, rejected, *self._as_call(point))
            for (table, _, step), rows in tables.items():
                if callable(getattr(self.store, "log_table", None)):
                    values = [row for _, row in rows]
                    self._call([i for i, _ in rows], rejected, "log_table", (table, values), {"step": step})
                else:
                    reason = f"{type(self.store).__name__} has no log_table; table {table!r} is not stored there"
                    rejected.extend(Rejection(i, UNSUPPORTED_CAUSE, reason) for i, _ in rows)
        return WriteResult(stored=len(points) - len(rejected), rejected=rejected)

    def _as_call(self, point: Point) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        row = log_points.as_metrics(point)
        if row is not None:
            step = 0 if row.step is None else row.step
            if row.split == "train" and len(row.metrics) == 1:
                ((key, value),) = row.metrics.items()
                if self._was_scalar(point.time_ns, key):
                    return "log_scalar", (key, value, step), {}
            if self._metrics_split:
                return "log_metrics", (_without_split(row.metrics, row.split), step), {"split": row.split}
            named = (
                row.metrics
                if row.split == "train"
                else {log_points.split_key(row.split, k): v for k, v in row.metrics.items()}
            )
            return "log_metrics", (named, step), {}
        merged = log_points.as_hyperparams(point)
        if merged is not None:
            return "log_hyperparams", (merged,), {}
        artifact = log_points.as_artifact(point)
        if artifact is not None:
            kwargs = {"kind": artifact["kind"]} if self._artifact_kind else {}
            return "log_artifact", (artifact["name"], artifact["path"]), kwargs
        step = log_points.first_int(log_points.STEP_KEYS, point.fields) or 0
        measurement = log_points.base_measurement(point)
        numbers = {
            f"{measurement}/{k}": v
            for k, v in point.fields.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in log_points.STEP_KEYS
        }
        return "log_metrics", (numbers, step), {}

    def _call(
        self,
        indices: int | list[int],
        rejected: list[Rejection],
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        try:
            getattr(self.store, method)(*args, **kwargs)
            self.calls[method] += 1
        except Exception as exc:
            self.errors[method] += 1
            reason = f"{type(self.store).__name__}.{method} raised {type(exc).__name__}: {exc}"
            for index in [indices] if isinstance(indices, int) else indices:
                rejected.append(Rejection(index, ERROR_CAUSE, reason))

    def flush(self) -> None:
        if callable(getattr(self.store, "flush", None)):
            self._quietly("flush")

    def close(self) -> None:
        self._quietly("close")

    def _quietly(self, method: str) -> None:
        """flush/close of the store: a raise is counted and said once, never passed on."""
        with self._lock:
            try:
                getattr(self.store, method)()
            except Exception as exc:
                self.errors[method] += 1
                if sum(self.errors.values()) == 1:
                    logger.warning("%s: %s.%s raised %r", self.name, type(self.store).__name__, method, exc)


def _without_split(metrics: dict[str, Any], split: str) -> dict[str, Any]:
    """``train/loss`` in split ``train`` as ``loss`` (unless the call also had a ``loss``)."""
    head = f"{split}/"
    named: dict[str, Any] = {}
    for key, value in metrics.items():
        bare = key[len(head) :] if key.startswith(head) and len(key) > len(head) else key
        named[bare if bare == key or bare not in metrics else key] = value
    return named


__all__ = ["ERROR_CAUSE", "UNSUPPORTED_CAUSE", "LOG_STORE_METHODS", "UserStoreSink", "is_log_store"]
