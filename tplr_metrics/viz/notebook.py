"""Notebook helpers: a JSONL log as one row per point, a pandas DataFrame when pandas is
installed (the ``plot`` extra) and a list of dicts otherwise, so a notebook filters and
smooths with the tools it already has.

    df = read_jsonl("runs/exp_a")                  # run, metric, step, epoch, window, time_s, value
    loss = df[df.metric == "train/loss"]           # nested, flat and our own logs alike
    loss.assign(smooth=loss.value.rolling(20, min_periods=1).mean()).plot(x="step", y=["value", "smooth"])

For the RunData itself (what ``tplr-metrics plot`` draws, with :func:`..plotting.plot_runs`),
use :func:`read_run`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

from .run_data import RunData
from .run_data import read_jsonl as read_run

#: The columns of every row, in order.
COLUMNS = ("run", "metric", "step", "epoch", "window", "time_s", "value")


def frame_name(name: str) -> str:
    """A metric's name in a frame: its parts joined by ``/`` whatever the log wrote, so a nested
    ``{"metrics": {"train": {"loss": ..}}}``, a flat ``{"train/loss": ..}`` and our own
    ``train.loss`` are all ``train/loss`` (``lr`` stays ``lr``)."""
    return name.replace(".", "/")


def rows(run: RunData, metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One dict per point of ``run`` (of ``metrics`` only, names found as :meth:`RunData.find`
    finds them), metric by metric in the order logged, named as :func:`frame_name` says;
    ``None`` where a point has no step, epoch or window."""
    names = run.metric_names() if metrics is None else [n for n in (run.find(m) for m in metrics) if n]
    out: list[dict[str, Any]] = []
    for name in names:
        for s in run.series[name]:
            epoch = s.coords.get("epoch") if s.coords else None
            out.append(
                {
                    "run": run.label,
                    "metric": frame_name(name),
                    "step": s.step,
                    "epoch": None if epoch is None else int(epoch) if epoch.is_integer() else epoch,
                    "window": s.window,
                    "time_s": s.time_s,
                    "value": s.value,
                }
            )
    return out


def read_jsonl(path: str | os.PathLike[str], metrics: Sequence[str] | None = None) -> Any:
    """A JSON Lines log (``.jsonl``, ``.jsonl.gz`` or a directory's newest) as a pandas
    DataFrame with :data:`COLUMNS`, or, without pandas, the same rows as a list of dicts."""
    table = rows(read_run(path), metrics)
    try:
        pandas = importlib.import_module("pandas")  # optional: the plot extra brings it
    except ImportError:
        return table
    return pandas.DataFrame(table, columns=list(COLUMNS))


__all__ = ["COLUMNS", "frame_name", "read_jsonl", "read_run", "rows"]
