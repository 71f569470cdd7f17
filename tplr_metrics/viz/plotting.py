"""Curves of several runs on shared axes, and the smoothing behind them (extra ``plot``).

The smoothing functions are pure and need nothing but Python; matplotlib is imported only
inside :func:`plot_runs`, which returns the ``Figure`` (one subplot per metric, one line per
run) for the caller to save or show. Every smoothing keeps one value per input point:

* ``ema``: exponential moving average with span N (alpha = 2 / (N + 1)), started at the first
  value so the start is not pulled toward zero;
* ``sma``: trailing mean of the last N points (fewer at the start);
* ``gaussian``: centred Gaussian kernel with sigma = N / 4, cut at 2 sigma (about N points
  wide), weights renormalized at the edges.

The x axis is ``step``, ``time``, ``window`` or any numeric key of the records (``epoch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .run_data import RunData, Sample

if TYPE_CHECKING:
    from matplotlib.figure import Figure

X_KEYS = ("step", "time", "window")  # besides any numeric key of the records (epoch, ...)
SMOOTHINGS = ("ema", "sma", "gaussian")
#: How many metrics a plot without --metrics draws.
DEFAULT_METRICS = 4
PLOT_EXTRA_HINT = "needs the optional extra 'plot' (pip install 'tplr_metrics[plot]')"


class PlotExtraMissing(ImportError):
    """matplotlib is not installed."""


def ema(values: Sequence[float], window: int) -> list[float]:
    if window < 1:
        raise ValueError("window must be at least 1")
    alpha = 2.0 / (window + 1.0)
    out: list[float] = []
    current = 0.0
    for i, value in enumerate(values):
        current = value if i == 0 else alpha * value + (1.0 - alpha) * current
        out.append(current)
    return out


def sma(values: Sequence[float], window: int) -> list[float]:
    if window < 1:
        raise ValueError("window must be at least 1")
    out: list[float] = []
    total = 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def gaussian(values: Sequence[float], window: int) -> list[float]:
    if window < 1:
        raise ValueError("window must be at least 1")
    sigma = window / 4.0
    radius = int(2.0 * sigma)
    if radius == 0:
        return list(values)
    weights = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    n = len(values)
    out: list[float] = []
    for i in range(n):
        total = norm = 0.0
        for k in range(max(0, i - radius), min(n, i + radius + 1)):
            w = weights[k - i + radius]
            total += w * values[k]
            norm += w
        out.append(total / norm)
    return out


SMOOTHERS: dict[str, Callable[[Sequence[float], int], list[float]]] = {"ema": ema, "sma": sma, "gaussian": gaussian}


def parse_smoothing(text: str) -> tuple[str, int | None]:
    """``--smooth``: a kind (its window from --window), or an integer N meaning sma over N points
    (the moving-average window other tools' ``--smooth N`` means)."""
    if text in SMOOTHERS:
        return text, None
    try:
        window = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {', '.join(SMOOTHINGS)} or a window (an integer >= 1)") from None
    if window < 1:
        raise ValueError(f"window {window} must be at least 1")
    return "sma", window


def smooth(values: Sequence[float], kind: str | None, window: int) -> list[float]:
    if kind is None:
        return list(values)
    try:
        return SMOOTHERS[kind](values, window)
    except KeyError:
        raise ValueError(f"unknown smoothing {kind!r} (use {', '.join(SMOOTHINGS)})") from None


def metric_key(name: str) -> str:
    """What two spellings of one metric share: ``train.loss`` and ``train/loss`` are one metric."""
    return name.replace("/", ".")


def rank_metrics(names: Iterable[str], limit: int = DEFAULT_METRICS) -> list[str]:
    """Losses first (what a look at training runs is usually about), then by name; of two
    spellings of one metric (``train.loss``, ``train/loss``) the first seen."""
    spelled: dict[str, str] = {}
    for name in names:
        spelled.setdefault(metric_key(name), name)
    ranked = sorted(spelled, key=lambda key: (0 if "loss" in key.split(".")[-1] else 1, key))
    return [spelled[key] for key in ranked[:limit]]


def default_metrics(runs: Sequence[RunData], limit: int = DEFAULT_METRICS) -> list[str]:
    """Up to ``limit`` metrics every run has, losses first; a metric one run names
    ``train.loss`` and another ``train/loss`` is one of them (named as the first run has it)."""
    if not runs:
        return []
    common = {metric_key(name) for name in runs[0].series}
    for run in runs[1:]:
        common &= {metric_key(name) for name in run.series}
    return rank_metrics((name for name in runs[0].series if metric_key(name) in common), limit)


def xy(run: RunData, metric: str, x_key: str) -> tuple[list[float], list[float], int]:
    """The metric's (x, y) in x order, and how many points had no x of that kind (left out).

    ``step`` falls back to point order when a series has no step at all (a preview's samples:
    their order in the whole run); ``time`` is seconds
    since the run's first point; ``window`` leaves out points without a window; any other key
    is the record's number of that name (``epoch``), points without it left out.
    """
    found = run.find(metric)
    samples: list[Sample] = run.series[found] if found else []
    pairs: list[tuple[float, float, float]] = []
    missing = 0
    if x_key == "time":
        start = min((s.time_s for values in run.series.values() for s in values), default=0.0)
        pairs = [(s.time_s - start, s.time_s, s.value) for s in samples]
    elif x_key == "step":
        if samples and all(s.step is None for s in samples):
            pairs = [(float(i) if s.order is None else s.order, s.time_s, s.value) for i, s in enumerate(samples)]
        else:
            for s in samples:
                if s.step is None:
                    missing += 1
                else:
                    pairs.append((float(s.step), s.time_s, s.value))
    elif x_key == "window":
        for s in samples:
            if s.window is None:
                missing += 1
            else:
                pairs.append((float(s.window), s.time_s, s.value))
    else:
        for s in samples:
            x = s.coords.get(x_key) if s.coords else None
            if x is None:
                missing += 1
            else:
                pairs.append((x, s.time_s, s.value))
    pairs.sort(key=lambda p: (p[0], p[1]))
    return [p[0] for p in pairs], [p[2] for p in pairs], missing


def import_pyplot(show: bool) -> Any:
    """pyplot for --show (an interactive backend); the caller of plot_runs needs none."""
    try:
        import matplotlib

        if not show:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotExtraMissing(f"{PLOT_EXTRA_HINT}: {exc}") from None
    return plt


#: matplotlib backends that draw into files only: --show with one of them has no window to open.
FILE_BACKENDS = frozenset(("agg", "cairo", "pdf", "pgf", "ps", "svg", "template"))


def has_display(plt: Any) -> bool:
    """Whether pyplot (from ``import_pyplot(True)``) can open a window: matplotlib falls back
    to a file backend when there is no display, and then ``show()`` does nothing."""
    return str(plt.get_backend()).lower() not in FILE_BACKENDS


def plot_runs(
    runs: Sequence[RunData],
    metrics: Sequence[str],
    *,
    x_key: str = "step",
    smoothing: str | None = None,
    window: int = 10,
    title: str | None = None,
    warn: Callable[[str], None] | None = None,
    figure_factory: Callable[..., Any] | None = None,
) -> Figure:
    """One subplot per metric, one line per run that has it (labelled by run), shared x axis.

    With ``smoothing``, each line is the smoothed series (same number of points as the raw
    one). ``warn`` hears about runs without a metric and points without the x key.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotExtraMissing(f"{PLOT_EXTRA_HINT}: {exc}") from None
    if not metrics:
        raise ValueError("name at least one metric to plot")
    if smoothing is not None and smoothing not in SMOOTHERS:
        raise ValueError(f"unknown smoothing {smoothing!r} (use {', '.join(SMOOTHINGS)})")
    say = warn or (lambda message: None)
    make = figure_factory or Figure
    figure = make(figsize=(10.0, 3.2 * len(metrics)), dpi=100, layout="constrained")
    axes = figure.subplots(nrows=len(metrics), ncols=1, sharex=True, squeeze=False)[:, 0]
    x_label = {"time": "time since the run's first point (s)"}.get(x_key, x_key)
    for run in runs:
        if not run.series:
            say(f"{run.label} ({run.source}): no metrics in it")
    for ax, metric in zip(axes, metrics, strict=True):
        drawn = 0
        for run in runs:
            if run.find(metric) is None:
                if run.series:
                    say(f"{run.label}: no metric {metric!r}")
                continue
            xs, ys, missing = xy(run, metric, x_key)
            if missing:
                say(f"{run.label}: {missing} point(s) of {metric!r} have no {x_key}; left out")
            if not xs:
                continue
            marker = "o" if len(xs) <= 30 else None  # a short series (a few val points) stays visible
            ax.plot(xs, smooth(ys, smoothing, window), label=run.label, linewidth=1.4, marker=marker, markersize=3)
            drawn += 1
        suffix = f" ({smoothing}, window {window})" if smoothing else ""
        ax.set_title(metric + suffix, fontsize=10, loc="left")
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", alpha=0.6)
    axes[-1].set_xlabel(x_label)
    if title:
        figure.suptitle(title)
    return figure


__all__ = [
    "DEFAULT_METRICS",
    "PLOT_EXTRA_HINT",
    "PlotExtraMissing",
    "SMOOTHERS",
    "SMOOTHINGS",
    "X_KEYS",
    "default_metrics",
    "ema",
    "metric_key",
    "gaussian",
    "has_display",
    "import_pyplot",
    "parse_smoothing",
    "plot_runs",
    "rank_metrics",
    "sma",
    "smooth",
    "xy",
]
