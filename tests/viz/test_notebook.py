"""The notebook path: read a log, filter a metric, smooth, plot, save; with pandas a DataFrame,
without it the same rows as dicts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tplr_metrics.viz.notebook import COLUMNS, read_jsonl
from tplr_metrics.viz.plotting import sma
from tplr_metrics.viz.run_data import RunDataError

from .test_other_trainers import flat_run, nested_run, own_run
from .test_plot import png_size


def test_read_filter_smooth_plot_save_with_pandas(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    df = read_jsonl(nested_run(tmp_path / "exp_a" / "log.jsonl"))
    assert isinstance(df, pd.DataFrame) and tuple(df.columns) == COLUMNS and len(df) == 20 + 2 + 2
    val = df[df.metric == "val/loss"]
    assert val.step.tolist() == [90, 190] and val.epoch.tolist() == [0, 1] and set(val.run) == {"exp_a"}
    loss = df[df.metric == "train/loss"]
    loss = loss.assign(smooth=loss.value.rolling(5, min_periods=1).mean())  # what --smooth 5 draws
    assert loss.smooth.tolist() == pytest.approx(sma(loss.value.tolist(), 5))
    ax = loss.plot(x="step", y=["value", "smooth"])
    raw, smoothed = ax.get_lines()
    assert list(raw.get_xdata()) == list(range(0, 200, 10)) and list(smoothed.get_ydata()) == loss.smooth.tolist()
    ax.figure.savefig(tmp_path / "loss.png")
    assert png_size(tmp_path / "loss.png")[0] > 0
    flat = read_jsonl(flat_run(tmp_path / "flat.jsonl.gz"), metrics=["train.loss"])  # found as train/loss
    assert set(flat.metric) == {"train/loss"} and flat.value.tolist() == pytest.approx(
        [1.8 - s / 10 for s in range(10)]
    )


def test_without_pandas_the_rows_are_dicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    table = read_jsonl(flat_run(tmp_path / "flat.jsonl"), metrics=["lr"])
    assert table[0] == {
        "run": "flat",
        "metric": "lr",
        "step": 0,
        "epoch": None,
        "window": None,
        "time_s": 0.0,
        "value": 1e-4,
    }
    assert [row["step"] for row in table] == list(range(10)) and all(tuple(row) == COLUMNS for row in table)
    with pytest.raises(RunDataError, match="no such file or directory"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_the_frame_names_metrics_alike_for_every_layout_and_runs_by_directory(tmp_path: Path) -> None:
    """The README's snippet: read_jsonl("runs/exp_a") then df[df.metric == "train/loss"], whichever
    layout exp_a's train.jsonl has; the run is exp_a (its directory), as the CLI labels it."""
    pd = pytest.importorskip("pandas")
    nested_run(tmp_path / "exp_a" / "train.jsonl")
    flat_run(tmp_path / "exp_b" / "train.jsonl.gz")
    own_run(tmp_path / "exp_c" / "train.jsonl")
    frames = {name: read_jsonl(tmp_path / name) for name in ("exp_a", "exp_b", "exp_c")}
    for name, df in frames.items():
        assert isinstance(df, pd.DataFrame) and set(df.run) == {name}, (name, set(df.run))
        assert len(df[df.metric == "train/loss"]) in (20, 10), name
        assert not any("." in metric for metric in df.metric), name
    assert set(frames["exp_a"].metric) == {"train/loss", "val/loss", "val/acc"}
    assert set(frames["exp_b"].metric) == {"train/loss", "lr"}
    assert set(frames["exp_c"].metric) == {"train/loss", "val/loss"}
    # Names are still looked up either way.
    assert set(read_jsonl(tmp_path / "exp_a", metrics=["val.acc"]).metric) == {"val/acc"}
