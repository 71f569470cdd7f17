"""compare: the config diff of two simulated runs that differ in one hyperparameter, their
curves overlaid, and JSONL runs compared by path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tplr_metrics import MetricsLogger, open_log_store
from tplr_metrics.cli import main
from tplr_metrics.commands.compare import config_diff
from tplr_metrics.simulation import SimulationOptions, run_simulation
from tplr_metrics.viz.run_data import RunData

from .test_plot import png_size


def simulated_run(lr: float, seed: int) -> str:
    """One simulated miner logging through the default destination (the local store here)."""
    options = SimulationOptions(
        miners=1,
        validators=0,
        evaluators=0,
        windows=8,
        window_seconds=0.0,
        seed=seed,
        health=False,
        logger_options={"config": {"lr": lr, "batch_size": 64, "optimizer": "adamw"}, "flush_interval": 50},
    )
    summary = run_simulation(options)
    assert summary.dropped == 0 and summary.written == summary.logged
    return summary.runs[0].runtime_id


def test_compare_two_simulated_runs(isolated_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = simulated_run(3e-4, seed=1), simulated_run(1e-3, seed=2)
    capsys.readouterr()
    out = tmp_path / "cmp.png"
    plotting = __import__("importlib").util.find_spec("matplotlib") is not None
    argv = ["compare", first, second[:8], "--x-key", "window", "--out", str(out)]
    assert main(argv if plotting else [*argv, "--no-plot"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "config differences (1 of 3 keys):"
    # Runs labelled by name (role/uid by default), the short id added as both are miner/0.
    assert lines[1].split() == ["KEY", "miner/0", f"({first[:8]})", "miner/0", f"({second[:8]})"]
    assert lines[2].split() == ["lr", "0.0003", "0.001"]
    assert len(lines) == 3  # batch_size and optimizer are the same: not listed
    if plotting:
        assert "plotting training_step_v2.loss" in captured.err
        assert png_size(out) == (1000, 4 * 320)  # the default: up to 4 metrics both runs have

    assert main(["compare", first, second, "--json", "--no-plot"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["differences"] == {"lr": ["0.0003", "0.001"]} and report["keys_compared"] == 3


def test_compare_overlays_the_same_metric(isolated_env: Path) -> None:
    pytest.importorskip("matplotlib")
    from tplr_metrics.commands._run_inputs import read_named
    from tplr_metrics.viz.plotting import plot_runs

    first, second = simulated_run(3e-4, seed=3), simulated_run(1e-3, seed=4)
    args = __import__("argparse").Namespace(store=None, from_influx=False)
    runs = read_named(args, [first, second])
    figure = plot_runs(runs, ["training_step_v2.loss"], x_key="window")
    lines = figure.axes[0].get_lines()
    assert [str(line.get_label()) for line in lines] == [f"miner/0 ({first[:8]})", f"miner/0 ({second[:8]})"]
    assert all(len(line.get_xdata()) == 8 for line in lines)


def test_compare_jsonl_runs_by_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, lr in (("run-a", 0.1), ("run-b", 0.2)):
        store = open_log_store("jsonl", log_dir=str(tmp_path / name / "logs"))
        store.log_hyperparams({"lr": lr, "model": {"layers": 2}})
        for step in range(5):
            store.log_metrics({"loss": lr * step}, step)
        assert store.close(10)
    assert main(["compare", str(tmp_path / "run-a"), str(tmp_path / "run-b"), "--no-plot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["KEY", "run-a", "run-b"] and lines[2].split() == ["lr", "0.1", "0.2"]
    assert main(["compare", str(tmp_path / "run-a"), "nope-run", "--no-plot"]) == 2
    assert "no run 'nope-run'" in capsys.readouterr().err


def test_config_diff_counts_absent_keys_and_normalizes_numbers() -> None:
    a = RunData("a", "a", config={"lr": "0.001", "seed": 1, "tags": ["x"]})
    b = RunData("b", "b", config={"lr": 0.001, "seed": 2})
    assert config_diff([a, b]) == {"seed": ["1", "2"], "tags": ['["x"]', "-"]}


def test_compare_json_keeps_value_types_and_null_for_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, params in (("run-a", {"lr": 0.1, "layers": 2, "warmup": True}), ("run-b", {"lr": 0.2, "layers": 4})):
        store = open_log_store("jsonl", log_dir=str(tmp_path / name / "logs"))
        store.log_hyperparams(params)
        store.log_metrics({"loss": 1.0}, 0)
        assert store.close(10)
    assert main(["compare", str(tmp_path / "run-a"), str(tmp_path / "run-b"), "--no-plot", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["differences"] == {"layers": [2, 4], "lr": [0.1, 0.2], "warmup": [True, None]}


def test_store_runs_are_labelled_by_name(isolated_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--list and compare show a run's name (its run_name), not its run_id's first 8 characters."""
    ids = []
    for name, lr in (("baseline", 0.1), ("bigger-lr", 0.2)):
        logger = MetricsLogger(
            role="miner", uid=0, prefix="M", run_name=name, config={"lr": lr}, runtime_id=f"{name}-0000-id"
        )
        logger.log("loss", {"window": 1}, {"loss": lr})
        logger.close(10)
        ids.append(logger.runtime_id)
    assert main(["plot", "--run-id", ids[0], ids[1], "--list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"baseline  (run {ids[0]})") and f"bigger-lr  (run {ids[1]})" in out
    assert main(["compare", ids[0], ids[1], "--no-plot"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["KEY", "baseline", "bigger-lr"]
