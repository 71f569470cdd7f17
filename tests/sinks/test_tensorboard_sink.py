"""The tensorboard sink: event files that TensorBoard's own reader reads back, one directory
per run; without the extra, one clear line and nothing else breaks."""

from __future__ import annotations

import json
import logging
import stat
import sys
from pathlib import Path

import pytest

from tplr_metrics import ConfigurationError, MetricsLogger, open_log_store
from tplr_metrics.sinks.registry import MissingExtraError, create_sink


def _extra_or_skip() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if __import__("os").environ.get("CI"):
            pytest.fail("the tensorboard extra is not installed; .ci/run must install '.[tensorboard]'")
        pytest.skip("the tensorboard extra is not installed (pip install 'tplr_metrics[tensorboard]')")


def test_event_files_read_back_by_tensorboard(tmp_path: Path) -> None:
    _extra_or_skip()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = []
    for lr in (0.1, 0.01):
        store = open_log_store("tensorboard", log_dir=str(tmp_path / "tb"))
        store.log_hyperparams({"lr": lr})
        for step in range(100):
            store.log_metrics({"loss": 4.0 * 0.98**step, "lr": lr}, step)
            if step % 10 == 9:
                store.log_metrics({"loss": 4.2 * 0.98**step}, step, split="val")
        store.log_artifact("ckpt", "/ckpt/99.pt")
        assert store.close(10)
        runs.append(store.run_id)

    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == sorted(runs)  # one directory per run
    run_dir = tmp_path / "tb" / str(runs[0])
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    (event_file,) = run_dir.iterdir()
    assert event_file.name.startswith("events.out.tfevents.") and stat.S_IMODE(event_file.stat().st_mode) == 0o600

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "val/loss"} <= set(tags["scalars"])
    train = acc.Scalars("train/loss")
    assert [e.step for e in train] == list(range(100))
    assert train[10].value == pytest.approx(4.0 * 0.98**10, rel=1e-6)
    assert [e.step for e in acc.Scalars("val/loss")] == list(range(9, 100, 10))
    assert [e.value for e in acc.Scalars("train/lr")] == [pytest.approx(0.1)] * 100
    (text,) = acc.Tensors("hyperparams")
    assert json.loads(text.tensor_proto.string_val[0].decode().strip("`\n")) == {"lr": 0.1}
    assert acc.Tensors("artifacts/ckpt")[0].tensor_proto.string_val[0] == b"file: /ckpt/99.pt"


def test_plain_points_become_scalars_at_their_window(tmp_path: Path) -> None:
    _extra_or_skip()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = MetricsLogger(sinks=[{"kind": "tensorboard", "params": {"log_dir": str(tmp_path), "run_name": "v0"}}])
    for window in range(5):
        for uid in (1, 2):
            m.log("validator_scores", {"window": window, "eval_uid": uid}, {"score": window * uid * 1.0})
    assert m.close(10)
    acc = EventAccumulator(str(tmp_path / "v0"))
    acc.Reload()
    uid2 = acc.Scalars("validator_scores/score{eval_uid=2}")
    assert [(e.step, e.value) for e in uid2] == [(w, w * 2.0) for w in range(5)]


def test_without_the_extra_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")] + ["tensorboard"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tplr_metrics\[tensorboard\]'"):
        create_sink("tensorboard", log_dir=str(tmp_path))
    caplog.set_level(logging.WARNING, logger="tplr_metrics")
    store = open_log_store(
        "multiplex",
        children=[
            {"kind": "tensorboard", "params": {"log_dir": str(tmp_path / "tb")}},
            {"kind": "jsonl", "params": {"log_dir": str(tmp_path / "j")}},
        ],
    )
    store.log_metrics({"loss": 1.0}, 0)
    assert store.close(10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "needs the optional extra 'tensorboard'" in warnings[0]
    assert (tmp_path / "j" / "metrics.jsonl").exists() and not (tmp_path / "tb").exists()
    with pytest.raises(ConfigurationError, match="unknown param logdir"):
        open_log_store("tensorboard", logdir="x")  # params are still checked without the package


def test_a_key_that_carries_its_split_is_not_prefixed_twice(tmp_path: Path) -> None:
    _extra_or_skip()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = open_log_store("tensorboard", log_dir=str(tmp_path), run_name="r")
    store.log_metrics({"val/loss": 1.0}, 3, split="val")
    store.log_metrics({"train/loss": 2.0, "loss_scale": 4.0}, 3)
    store.log_metrics({"val/loss": 5.0}, 4)  # another split's prefix is a name like any other
    assert store.close(10)
    acc = EventAccumulator(str(tmp_path / "r"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["train/loss", "train/loss_scale", "train/val/loss", "val/loss"]
    assert [(e.step, e.value) for e in acc.Scalars("val/loss")] == [(3, 1.0)]


@pytest.mark.parametrize("value", ["soon", None, True, 0, -1.0])
def test_a_bad_flush_secs_is_one_clear_line(tmp_path: Path, value: object) -> None:
    _extra_or_skip()
    with pytest.raises(ConfigurationError) as caught:
        open_log_store("tensorboard", log_dir=str(tmp_path), flush_secs=value)
    message = str(caught.value)
    # a wrong type is caught by the registry (param_types), a wrong value by the sink; both name it
    assert "flush_secs must be a" in message and repr(value) in message and "\n" not in message
