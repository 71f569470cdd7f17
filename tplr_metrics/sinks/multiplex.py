"""Several destinations under one name (e.g. InfluxDB plus a local copy).

A logger never writes through this class: it gives each child a delivery lane of its own
(``tplr_metrics.delivery.lane``), so a child that is down, slow or raising never delays,
blocks or duplicates the others, and each child's figures are in ``stats()["lanes"]``.

``write`` serves code that uses the sink on its own: a point is reported stored when **every**
child stored it; a point one child wants retried is handed back for retry (to every child again,
harmless where each child stores a point once per series and time); a point a child refused is
counted rejected with that child's name in the reason. A child that raises never stops the
others: its failure is counted in :attr:`MultiplexSink.child_counts` and its points are retried.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence

from ..encoding.points import Point
from .base import Rejection, RunInfo, Sink, WriteResult, end_run, start_run

logger = logging.getLogger("tplr_metrics")


class MultiplexSink:
    """Writes each batch to all children; the first child is the primary in names and logs.

    A logger never calls ``write`` on it: it gives each child a delivery lane of its own (see
    ``tplr_metrics.delivery.lane``). ``write`` serves code that uses the sink on its own."""

    is_multiplex = True  # the pipeline opens one lane per child

    def __init__(self, children: Sequence[Sink]) -> None:
        if not children:
            raise ValueError("MultiplexSink needs at least one child sink")
        self.children = list(children)
        self.name = "+".join(str(getattr(child, "name", "sink")) for child in self.children)
        self._lock = threading.Lock()
        #: Per child (by position): stored, retry, rejected and errors (exceptions raised).
        self.child_counts: list[Counter[str]] = [Counter() for _ in self.children]
        self._warned: set[int] = set()

    def after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock at the fork."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MultiplexSink([{', '.join(repr(child) for child in self.children)}])"

    def _child_name(self, position: int) -> str:
        return str(getattr(self.children[position], "name", f"sink{position}"))

    def _failed(self, position: int, what: str, exc: BaseException) -> None:
        with self._lock:
            self.child_counts[position]["errors"] += 1
            first = position not in self._warned
            self._warned.add(position)
        if first:
            name = self._child_name(position)
            logger.warning("%s raised %s in %s; the other sinks go on", name, type(exc).__name__, what)

    def write(self, points: Sequence[Point]) -> WriteResult:
        n = len(points)
        retry: set[int] = set()
        named: dict[int, Rejection] = {}
        unnamed: list[Rejection] = []
        errors: list[str] = []
        retry_after: float | None = None
        nbytes = 0
        for position, child in enumerate(self.children):
            name = self._child_name(position)
            try:
                result = child.write(points)
            except Exception as exc:
                self._failed(position, "write", exc)
                result = WriteResult.all_retry(n, f"{type(exc).__name__}: {exc}")
            nbytes += result.nbytes
            retry.update(result.retry)
            child_unnamed: list[Rejection] = []
            for rejection in result.rejected:
                tagged = Rejection(rejection.index, rejection.cause, f"{name}: {rejection.reason}")
                if rejection.index is None:
                    child_unnamed.append(tagged)
                else:
                    named.setdefault(rejection.index, tagged)
            if len(child_unnamed) > len(unnamed):  # children's unnamed refusals may overlap: keep the most
                unnamed = child_unnamed
            if result.retry:
                errors.append(f"{name}: {result.error or 'retry'}")
                if result.retry_after is not None:
                    retry_after = max(retry_after or 0.0, result.retry_after)
            with self._lock:
                counts = self.child_counts[position]
                counts["stored"] += result.stored
                counts["retry"] += len(result.retry)
                counts["rejected"] += len(result.rejected)
        for index in retry:  # sent again to every child; a refusal is counted when it is final
            named.pop(index, None)
        rejected = sorted(named.values(), key=lambda r: r.index or 0)
        room = max(0, n - len(retry) - len(rejected))
        rejected.extend(unnamed[:room])
        return WriteResult(
            stored=n - len(retry) - len(rejected),
            rejected=rejected,
            retry=sorted(retry),
            retry_after=retry_after,
            error="; ".join(errors) or None,
            nbytes=nbytes,
        )

    def flush(self) -> None:
        for position, child in enumerate(self.children):
            try:
                child.flush()
            except Exception as exc:
                self._failed(position, "flush", exc)

    def close(self) -> None:
        for position, child in enumerate(self.children):
            try:
                child.close()
            except Exception as exc:
                self._failed(position, "close", exc)

    def start_run(self, run: RunInfo) -> None:
        for position, child in enumerate(self.children):
            try:
                start_run(child, run)
            except Exception as exc:
                self._failed(position, "start_run", exc)

    def end_run(self, status: str) -> None:
        for position, child in enumerate(self.children):
            try:
                end_run(child, status)
            except Exception as exc:
                self._failed(position, "end_run", exc)


__all__ = ["MultiplexSink"]
