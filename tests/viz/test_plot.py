"""Plots: smoothing as pure functions, figures whose lines hold the logged points, PNGs of the
requested size from JSONL, the local store and a real InfluxDB, and the missing-extra path."""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tplr_metrics import open_log_store
from tplr_metrics.cli import main
from tplr_metrics.viz.plotting import SMOOTHERS, ema, gaussian, sma
from tplr_metrics.viz.run_data import read_influx_run, read_jsonl

from ..servers import InfluxDB1
from ..store.test_log_store import write_acceptance_run

# --- smoothing -----------------------------------------------------------------------------


def test_smoothing_by_hand() -> None:
    assert sma([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert sma([1.0, 2.0, 3.0], 10) == [1.0, 1.5, 2.0]
    assert ema([1.0, 2.0, 3.0], 1) == [1.0, 2.0, 3.0]  # span 1: no smoothing
    assert ema([0.0, 3.0], 2) == [0.0, 2.0]  # alpha = 2/3
    assert gaussian([0.0, 0.0, 6.0, 0.0, 0.0], 1) == [0.0, 0.0, 6.0, 0.0, 0.0]  # sigma 1/4: no neighbours
    impulse = gaussian([0.0] * 6 + [1.0] + [0.0] * 6, 6)  # sigma 1.5, cut at 3 points
    assert impulse[6] == max(impulse) and impulse[5] == pytest.approx(impulse[7]) and impulse[2] == 0.0
    assert sum(impulse) == pytest.approx(1.0)
    for smoother in SMOOTHERS.values():
        with pytest.raises(ValueError):
            smoother([1.0], 0)
        assert smoother([], 5) == []


@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), max_size=60),
    st.integers(min_value=1, max_value=40),
    st.sampled_from(sorted(SMOOTHERS)),
)
def test_smoothing_keeps_length_and_range(values: list[float], window: int, kind: str) -> None:
    out = SMOOTHERS[kind](values, window)
    assert len(out) == len(values)
    if values:
        slack = 1e-6 * (1 + max(abs(v) for v in values))
        assert min(values) - slack <= min(out) and max(out) <= max(values) + slack
        constant = SMOOTHERS[kind]([values[0]] * len(values), window)
        assert all(math.isclose(v, values[0], rel_tol=1e-9, abs_tol=1e-9) for v in constant)


# --- figures and PNGs -------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def line_data(figure: Any) -> list[list[tuple[str, list[float], list[float]]]]:
    return [
        [(str(line.get_label()), list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()]
        for ax in figure.axes
    ]


@pytest.fixture
def logged_run(tmp_path: Path) -> Path:
    log_dir = tmp_path / "outputs" / "run-001" / "logs"
    write_acceptance_run(log_dir)
    return log_dir


@pytest.mark.parametrize("smoothing", [None, "ema", "sma", "gaussian"])
def test_plot_jsonl_with_each_smoothing(
    smoothing: str | None, logged_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    from tplr_metrics.viz.plotting import plot_runs

    run = read_jsonl(logged_run)
    assert run.label == "run-001"
    figure = plot_runs([run], ["train.loss", "val.loss"], smoothing=smoothing, window=5)
    (train,), (val,) = line_data(figure)
    raw_train = [5.0 * 0.97**step for step in range(100)]
    assert train[0] == "run-001" and train[1] == list(range(100)) and len(train[2]) == 100
    assert val[1] == list(range(9, 100, 10)) and len(val[2]) == 10
    expected = raw_train if smoothing is None else SMOOTHERS[smoothing](raw_train, 5)
    assert train[2] == pytest.approx(expected)

    out = tmp_path / "plots" / "loss.png"
    argv = ["plot", "--input", str(logged_run), "--metrics", "train.loss", "val.loss", "--out", str(out)]
    if smoothing:
        argv += ["--smooth", smoothing, "--window", "5"]
    assert main(argv) == 0
    assert png_size(out) == (1000, 640)  # 10 x 3.2 in per metric, at 100 dpi
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert f"wrote {out}" in capsys.readouterr().err


def test_several_inputs_share_the_axes(
    logged_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    from tplr_metrics.viz.plotting import plot_runs

    # A second run, gzipped, in a directory of older logs: the directory picks its newest.
    other = tmp_path / "other"
    other.mkdir()
    (other / "old.jsonl").write_text(json.dumps({"ts": 1.0, "step": 0, "split": "train", "metrics": {"x": 1}}) + "\n")
    os.utime(other / "old.jsonl", (1, 1))
    with gzip.open(other / "run-b.jsonl.gz", "wt") as handle:
        for step in range(0, 100, 2):
            handle.write(
                json.dumps({"ts": 2.0 + step, "step": step, "split": "train", "metrics": {"loss": 1.0}}) + "\n"
            )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    figure = plot_runs([read_jsonl(logged_run), read_jsonl(other)], ["train.loss"], x_key="time")
    ((first, second),) = line_data(figure)
    assert (first[0], second[0]) == ("run-001", "run-b") and len(second[1]) == 50
    assert first[1][0] == 0.0 and first[1] == sorted(first[1])  # seconds since the run's first point

    monkeypatch.chdir(tmp_path)
    argv = ["plot", "--input", str(logged_run), str(other), str(empty), "--metrics", "train.loss", "val.loss"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"empty ({empty}): no metrics in it" in err and "run-b: no metric 'val.loss'" in err
    assert "empty: no metric" not in err
    assert png_size(tmp_path / "plot.png") == (1000, 640)

    assert main(["plot", "--input", str(logged_run), str(other), "--list"]) == 0
    out = capsys.readouterr().out
    assert "  train.loss  100 points" in out and "  val.loss  10 points" in out and "  train.loss  50 points" in out
    assert main(["plot", "--input", str(empty), "--metrics", "train.loss"]) == 1
    assert "none of the inputs has train.loss" in capsys.readouterr().err
    assert main(["plot", "--input", str(tmp_path / "nope.jsonl"), "--metrics", "x"]) == 2


def test_plot_a_local_store_run(isolated_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    store = open_log_store("local")
    for step in range(40):
        store.log_metrics({"loss": 1.0 / (step + 1)}, step)
    assert store.close(10)
    out = tmp_path / "store.png"
    assert main(["plot", "--run-id", str(store.run_id)[:8], "--metrics", "train.loss", "--out", str(out)]) == 0
    assert png_size(out) == (1000, 320)
    assert main(["plot", "--run-id", str(store.run_id), "--list"]) == 0
    assert "train.loss  40 points" in capsys.readouterr().out


def test_plot_from_influx(influx1: InfluxDB1, unique_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from tplr_metrics.viz.plotting import plot_runs

    store = open_log_store("influxdb-v1", url=influx1.url, database=unique_db)
    store.log_hyperparams({"lr": 0.01})
    for step in range(50):
        store.log_metrics({"loss": 2.0 - step / 50}, step)
        if step % 10 == 0:
            store.log_metrics({"loss": 2.1 - step / 50}, step, split="val")
    assert store.close(20)
    assert influx1.count("metrics", "loss", unique_db) == 55  # what landed in the server

    monkeypatch.setenv("INFLUXDB_URL", influx1.url)
    monkeypatch.setenv("INFLUXDB_DATABASE", unique_db)
    run = read_influx_run(str(store.run_id))
    assert run.config["lr"] == 0.01 and len(run.series["train.loss"]) == 50
    ((train,), (val,)) = line_data(plot_runs([run], ["train.loss", "val.loss"]))
    assert train[1] == list(range(50)) and val[1] == [0, 10, 20, 30, 40]
    out = tmp_path / "influx.png"
    argv = ["plot", "--from-influx", "--run-id", str(store.run_id), "--metrics", "train.loss", "--out", str(out)]
    assert main(argv) == 0 and png_size(out) == (1000, 320)


def test_plot_from_influx_takes_a_unique_runtime_id_prefix(
    influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from-influx --run-id PREFIX is resolved against the server's runtime_id tag values
    (before: no such runtime_id, so "(no metrics)"); an ambiguous or unknown one is exit 2."""
    for run_id, steps in (("feed0001-aaaa", 12), ("feed0002-bbbb", 3)):
        store = open_log_store(
            "influxdb-v1", url=influx1.url, database=unique_db, logger_options={"runtime_id": run_id}
        )
        for step in range(steps):
            store.log_metrics({"loss": 1.0 / (step + 1)}, step)
        assert store.close(20)
    monkeypatch.setenv("INFLUXDB_URL", influx1.url)
    monkeypatch.setenv("INFLUXDB_DATABASE", unique_db)
    monkeypatch.setenv("INFLUXDB_API", "v1")
    capsys.readouterr()
    assert main(["plot", "--from-influx", "--run-id", "feed0001", "--list"]) == 0
    out = capsys.readouterr().out
    assert "train.loss  12 points" in out and "(no metrics)" not in out
    assert main(["plot", "--from-influx", "--run-id", "feed", "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run id 'feed' is ambiguous" in err and "feed0001-aaaa, feed0002-bbbb" in err and "\n" not in err
    assert main(["plot", "--from-influx", "--run-id", "zzzz", "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tplr-metrics plot: no run 'zzzz' in InfluxDB ") and unique_db in err


def test_without_the_plot_extra_one_line_and_exit_1(
    logged_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["plot", "--input", str(logged_run), "--metrics", "train.loss"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the optional extra 'plot' (pip install 'tplr_metrics[plot]')" in err[0]
    assert main(["plot", "--input", str(logged_run), "--list"]) == 0  # listing needs no matplotlib
    shutil.rmtree(logged_run)


def test_list_warns_of_lines_it_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "note": "x"}\nnot json\n', encoding="utf-8")
    assert main(["plot", "--input", str(bad), "--list"]) == 0
    captured = capsys.readouterr()
    assert "(no metrics)" in captured.out
    assert f"{bad}: 2 line(s) are not metric objects; skipped" in captured.err, captured.err


def test_an_x_key_no_point_has_is_exit_1_and_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    log = tmp_path / "exp_a" / "train.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps({"step": s, "epoch": 0, "train/loss": 1.0}) + "\n" for s in range(5)))
    out = tmp_path / "w.png"
    assert main(["plot", "--input", str(log), "--x-key", "window", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "tplr-metrics plot: no point of train/loss has a window (see --x-key); nothing to plot"
    ), err
    assert not out.exists()


def test_a_points_numeric_fields_become_samples_of_measurement_field() -> None:
    """Finite numbers only (bools, strings, inf and nan skipped), each series kept apart by its
    measurement, the samples real Samples sharing their point's coords."""
    from tplr_metrics.encoding.points import Point
    from tplr_metrics.viz.run_data import RunData, Sample

    data = RunData("run", "test")
    data.add_point(Point("a", {"window": "3"}, {"f": 1.5, "n": 2, "b": True, "s": "x", "i": math.inf}, 2_000_000_000))
    data.add_point(Point("b", {}, {"f": -0.0, "z": math.nan, "step": 7}, 3_000_000_000))
    data.add_point(Point("a", {"config_lr": "0.1"}, {"f": 2.5}, 4_000_000_000))
    assert sorted(data.series) == ["a.f", "a.n", "b.f", "b.step"]
    first, second = data.series["a.f"]
    assert type(first) is Sample and first == Sample(1.5, 2.0, None, 3, {"f": 1.5, "n": 2.0}, None)
    assert first.coords is data.series["a.n"][0].coords and second.value == 2.5
    assert data.series["b.f"] == [Sample(-0.0, 3.0, 7, None, {"f": -0.0, "step": 7.0}, None)]
    assert data.config == {"lr": "0.1"}


def test_the_collector_is_paused_for_a_read_and_left_as_found() -> None:
    import gc

    from tplr_metrics.commands._run_inputs import collector_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a read that fails")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before: still off
    finally:
        gc.enable()


def test_reads_in_two_threads_leave_the_collector_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving that left the collector off when each read checked and switched it by
    itself: B found it off (A's pause), A ended and switched it on, then B switched it off and,
    having found it off, never on again. A stand-in collector holds B at that point."""
    import threading

    from tplr_metrics.commands import _run_inputs

    a_inside, b_inside, a_may_leave, a_left = (threading.Event() for _ in range(4))

    class Collector:
        enabled = True

        def isenabled(self) -> bool:
            return self.enabled

        def enable(self) -> None:
            self.enabled = True

        def disable(self) -> None:
            if threading.current_thread().name == "b":
                a_left.wait(5)
            self.enabled = False

    collector = Collector()
    monkeypatch.setattr(_run_inputs, "gc", collector)

    def read_a() -> None:
        with _run_inputs.collector_paused():
            a_inside.set()
            a_may_leave.wait(5)
        a_left.set()

    def read_b() -> None:
        a_inside.wait(5)
        with _run_inputs.collector_paused():
            b_inside.set()

    threads = [threading.Thread(target=read_a, name="a"), threading.Thread(target=read_b, name="b")]
    for thread in threads:
        thread.start()
    b_inside.wait(1)
    a_may_leave.set()
    for thread in threads:
        thread.join(10)
    assert collector.enabled
