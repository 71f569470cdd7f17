"""The small protocol every destination implements, and what a write reports back.

The pipeline decides *when* to ship and what to do with the outcome (retry with backoff,
count, drop); a sink decides *how*: it writes one batch and says, point by point, what
happened. A sink is called from the pipeline's writer threads, one batch per call; with
``max_workers > 1`` calls may overlap, so a sink must be safe for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..encoding.points import Point


@dataclass(frozen=True)
class Rejection:
    """A point the destination refused for its content; sending it again cannot help."""

    index: int | None  # position in the batch, None when the server did not say which
    cause: str  # short, stable key for stats(): "field_type_conflict", "bad_line", ...
    reason: str  # the server's own message
    float_field: tuple[str, str] | None = None  # (measurement, field) the server holds as float
    int_field: tuple[str, str] | None = None  # (measurement, field) the server holds as integer


@dataclass
class WriteResult:
    """The outcome of one ``Sink.write``.

    ``stored + len(rejected) + len(retry)`` accounts for every point of the batch; a
    rejection with ``index=None`` stands for one point the server dropped without naming it.
    """

    stored: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    retry: Sequence[int] = ()  # indices to send again later (transient failure)
    retry_after: float | None = None  # the server's Retry-After, seconds
    error: str | None = None  # what went wrong, never containing a secret
    nbytes: int = 0  # request bytes sent, for stats()
    # A request carrying the points to retry went out and got no answer (a read timeout, a
    # connection closed mid-answer): the server may have stored them. Lost later, they are
    # counted in ``dropped_maybe_stored`` too.
    unanswered: bool = False
    sanitized: dict[str, int] = field(default_factory=dict)  # values the sink had to change, by cause
    # The retry can never succeed (e.g. the v2 write path on an InfluxDB 1.x server): without a
    # spool the points are counted dropped (``destination_error``) at once, not retried for
    # the whole retry time; with one they are spooled as any retry is, ``error`` naming the fix.
    hopeless: bool = False
    # No connection could be made (refused: nothing listens there now): nothing was sent. A lane
    # replaying its spool then asks the sink's ``reachable()`` while it waits out its backoff, and
    # sends as soon as the server listens again.
    unreachable: bool = False
    # (measurement, field) the server said it holds as integer (as float), where the refused
    # points were stored after all with that field's whole-number floats sent as ints (its ints
    # as floats): the lane learns them as it learns a rejection's int_field (float_field).
    int_fields: list[tuple[str, str]] = field(default_factory=list)
    float_fields: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def all_stored(cls, n: int, nbytes: int = 0) -> WriteResult:
        return cls(stored=n, nbytes=nbytes)

    @classmethod
    def all_retry(cls, n: int, error: str, retry_after: float | None = None) -> WriteResult:
        return cls(retry=range(n), error=error, retry_after=retry_after)


class PointBatch(list[Point]):
    """A batch as the pipeline hands it to ``Sink.write``: a list of points that, for a sink
    that sets ``accepts_lines = True``, also carries their line protocol in ``lines``, encoded
    on the pipeline's encoder thread so the writer's time goes to the wire."""

    lines: list[str] | None = None


@runtime_checkable
class Sink(Protocol):
    """A destination for points. Implementations must never raise from ``write``."""

    name: str

    def write(self, points: Sequence[Point]) -> WriteResult:
        """Write one batch and report what happened to each point."""
        ...

    def flush(self) -> None:
        """Make what was written durable, where the destination buffers."""
        ...

    def close(self) -> None:
        """Release connections and files. Called once, after the last write."""
        ...


@dataclass(frozen=True)
class RunInfo:
    """Who is logging: what a sink that keeps runs (the local store) records about a logger."""

    run_id: str
    started_at_ns: int
    role: str = ""
    uid: str = ""
    prefix: str = ""
    group: str = ""
    job_type: str = ""
    version: str = ""
    config: dict[str, str] = field(default_factory=dict)
    name: str = ""  # a name for people; default_run_name() when empty


def default_run_name(role: str, uid: str, run_id: str) -> str:
    """``role/uid`` (or whichever of them is set), else the run id's first 8 characters."""
    return "/".join(part for part in (role, uid) if part) or run_id[:8]


def start_run(sink: object, run: RunInfo) -> None:
    """Tell a sink that keeps runs that one starts (sinks without ``start_run`` are skipped)."""
    hook = getattr(sink, "start_run", None)
    if hook is not None:
        hook(run)


def end_run(sink: object, status: str) -> None:
    """Tell a sink that keeps runs how the run ended: ok, failed or cancelled (``crashed`` is
    set by the process that adopts a dead run's spool)."""
    hook = getattr(sink, "end_run", None)
    if hook is not None:
        hook(status)
