"""JSONL written by other trainers plots as written: nested and flat records (.jsonl.gz too),
slash names typed either way, --x-key epoch, --smooth N, default metrics, --show without a
display, and two runs of one file name labelled by their directories."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics.cli import main
from tplr_metrics.viz.plotting import sma
from tplr_metrics.viz.run_data import read_jsonl

from .test_plot import line_data


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(record) + "\n" for record in records)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def nested_run(path: Path, scale: float = 1.0) -> Path:
    """Steps 0..190 by 10, two epochs of 100 steps; a val record at the end of each epoch."""
    records: list[dict[str, Any]] = []
    for step in range(0, 200, 10):
        records.append({"step": step, "epoch": step // 100, "metrics": {"train": {"loss": scale * 2.0 / (1 + step)}}})
        if step % 100 == 90:
            val = {"loss": scale * 1.5 - step / 1000, "acc": 0.7 + step / 1000}
            records.append({"_type": "epoch_end", "step": step, "epoch": step // 100, "metrics": {"val": val}})
    return write_lines(path, records)


def own_run(path: Path, scale: float = 1.0) -> Path:
    """The same curves in the JSONL sink's own shape (what the reader took before), so a test
    of the flags fails on the flag alone."""
    records: list[dict[str, Any]] = []
    for step in range(0, 200, 10):
        records.append(
            {"ts": 1.0 + step, "step": step, "split": "train", "metrics": {"loss": scale * 2.0 / (1 + step)}}
        )
        if step % 100 == 90:
            records.append({"ts": 1.0 + step, "step": step, "split": "val", "metrics": {"loss": scale * 1.5}})
    return write_lines(path, records)


def flat_run(path: Path) -> Path:
    return write_lines(path, [{"step": s, "train/loss": 1.8 - s / 10, "lr": 1e-4 * (s + 1)} for s in range(10)])


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the CLI draws, to check their lines."""
    pytest.importorskip("matplotlib")
    import tplr_metrics.commands.plot as plot_command

    drawn: list[Any] = []
    real = plot_command.plot_runs

    def keep(*args: Any, **kwargs: Any) -> Any:
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(plot_command, "plot_runs", keep)
    return drawn


def test_nested_and_flat_records_plot_as_written(
    tmp_path: Path, figures: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run = read_jsonl(nested_run(tmp_path / "exp" / "trainer_log.jsonl"))
    assert run.bad_lines == 0 and run.metric_names() == ["train.loss", "val.acc", "val.loss"]
    assert [s.step for s in run.series["val.loss"]] == [90, 190]
    assert [s.value for s in run.series["val.acc"]] == pytest.approx([0.79, 0.89])
    flat = read_jsonl(flat_run(tmp_path / "flat.jsonl.gz"))
    assert flat.bad_lines == 0 and flat.metric_names() == ["lr", "train/loss"]
    assert flat.find("train.loss") == flat.find("train/loss") == "train/loss" and flat.find("val.loss") is None

    out = tmp_path / "p.png"
    argv = ["plot", "--input", str(tmp_path / "exp"), "--metrics", "train.loss", "val.acc", "--out", str(out)]
    assert main(argv) == 0 and out.is_file()
    (train,), (val,) = line_data(figures[-1])
    assert train[1] == list(range(0, 200, 10)) and train[2] == pytest.approx([2.0 / (1 + s) for s in range(0, 200, 10)])
    assert val[1] == [90, 190]
    for name in ("train/loss", "train.loss"):
        argv = ["plot", "--input", str(tmp_path / "flat.jsonl.gz"), "--metrics", name, "lr", "--out", str(out)]
        assert main(argv) == 0
        (loss,), (lr,) = line_data(figures[-1])
        assert loss[1] == list(range(10)) and loss[2] == pytest.approx([1.8 - s / 10 for s in range(10)])
        assert lr[2] == pytest.approx([1e-4 * (s + 1) for s in range(10)])
    assert "not metric objects" not in capsys.readouterr().err


def test_x_key_epoch_and_any_numeric_key(
    tmp_path: Path, figures: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log = nested_run(tmp_path / "exp" / "log.jsonl")
    out = str(tmp_path / "p.png")
    assert main(["plot", "--input", str(log), "--metrics", "val.loss", "--x-key", "epoch", "--out", out]) == 0
    ((val,),) = line_data(figures[-1])
    assert val[1] == [0, 1] and figures[-1].axes[-1].get_xlabel() == "epoch"
    flat = flat_run(tmp_path / "flat.jsonl")
    assert main(["plot", "--input", str(flat), "--metrics", "train/loss", "--x-key", "lr", "--out", out]) == 0
    ((loss,),) = line_data(figures[-1])
    assert loss[1] == pytest.approx([1e-4 * (s + 1) for s in range(10)])
    capsys.readouterr()
    assert main(["plot", "--input", str(log), "--metrics", "val.loss", "--x-key", "nope", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--x-key 'nope': no input has it" in err[0] and "epoch" in err[0]


def test_smooth_with_an_integer_is_a_moving_average(
    tmp_path: Path, figures: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log = own_run(tmp_path / "exp" / "log.jsonl")
    out = str(tmp_path / "p.png")
    assert main(["plot", "--input", str(log), "--metrics", "train.loss", "--smooth", "5", "--out", out]) == 0
    ((train,),) = line_data(figures[-1])
    assert train[2] == pytest.approx(sma([2.0 / (1 + s) for s in range(0, 200, 10)], 5))
    assert figures[-1].axes[0].get_title(loc="left") == "train.loss (sma, window 5)"
    capsys.readouterr()
    for bad in ("0", "five"):  # argparse's usage error, one line
        with pytest.raises(SystemExit) as exited:
            main(["plot", "--input", str(log), "--metrics", "train.loss", "--smooth", bad, "--out", out])
        assert exited.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "argument --smooth" in err[0]
    assert main(["plot", "--input", str(log), "--metrics", "train.loss", "--smooth", "5", "--window", "3"]) == 2
    assert capsys.readouterr().err.strip() == "tplr-metrics plot: --smooth 5 is already the window; drop --window 3"


def test_plot_without_metrics_picks_common_ones_losses_first(
    tmp_path: Path, figures: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    first = own_run(tmp_path / "a" / "log.jsonl")
    second = write_lines(
        tmp_path / "b" / "log.jsonl",
        [{"step": s, "split": "train", "metrics": {"loss": 1.0, "grad_norm": 2.0}} for s in range(5)]
        + [{"step": 4, "split": "val", "metrics": {"loss": 0.5, "acc": 0.5}}],
    )
    assert main(["plot", "--input", str(first), str(second), "--out", str(tmp_path / "p.png")]) == 0
    assert [ax.get_title(loc="left") for ax in figures[-1].axes] == ["train.loss", "val.loss"]
    assert "plotting train.loss, val.loss (choose with --metrics)" in capsys.readouterr().err


def test_show_without_a_display_writes_the_file_and_says_so(
    tmp_path: Path, figures: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.chdir(tmp_path)
    log = own_run(tmp_path / "exp" / "log.jsonl")
    assert main(["plot", "--input", str(log), "--metrics", "val.loss", "--show"]) == 0
    assert (tmp_path / "plot.png").is_file()
    err = capsys.readouterr().err
    assert "--show: no display is available; writing the file instead" in err and "wrote plot.png" in err


def test_two_runs_of_one_file_name_are_labelled_by_directory(tmp_path: Path, figures: list[Any]) -> None:
    own_run(tmp_path / "exp_a" / "train.jsonl", scale=1.0)
    own_run(tmp_path / "exp_b" / "train.jsonl", scale=2.0)
    out = str(tmp_path / "p.png")
    argv = ["plot", "--input", str(tmp_path / "exp_a"), str(tmp_path / "exp_b" / "train.jsonl")]
    assert main([*argv, "--metrics", "train.loss", "--out", out]) == 0
    ((a, b),) = line_data(figures[-1])
    assert (a[0], b[0]) == ("exp_a", "exp_b") and b[2] == pytest.approx([2 * y for y in a[2]])
    assert [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()] == ["exp_a", "exp_b"]


def test_plot_without_metrics_takes_two_spellings_of_a_metric_as_one(
    tmp_path: Path, figures: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A nested run (train.loss) and a flat one (train/loss): one subplot per metric, both runs in it."""
    nested = nested_run(tmp_path / "exp_a" / "train.jsonl")
    write_lines(
        tmp_path / "exp_b" / "train.jsonl.gz",
        [{"step": s * 10, "train/loss": 3.0 - s / 45, "val/loss": 2.0, "lr": 1e-4} for s in range(20)],
    )
    argv = ["plot", "--input", str(nested), str(tmp_path / "exp_b"), "--out", str(tmp_path / "p.png")]
    assert main(argv) == 0
    assert "plotting train.loss, val.loss (choose with --metrics)" in capsys.readouterr().err
    axes = figures[-1].axes
    assert [ax.get_title(loc="left") for ax in axes] == ["train.loss", "val.loss"]
    for ax in axes:
        assert len(ax.get_lines()) == 2  # each run once
