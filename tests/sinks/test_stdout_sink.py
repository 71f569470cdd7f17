"""The stdout sink: one readable line per step, as a person reads a training log."""

from __future__ import annotations

import pytest

from tplr_metrics import ConfigurationError, MetricsLogger, open_log_store


def test_one_line_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    store = open_log_store("stdout", logger_options={"flush_interval": 60})
    store.log_hyperparams({"lr": 1e-4})
    for step in range(3, 5):
        store({"train/loss": 0.5 / (step - 2), "lr": 0.0001}, step=step)
    store.log_metrics({"loss": 0.61}, 4, split="val")
    store.log_artifact("ckpt", "/ckpt/4.pt")
    assert store.close(10)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        'hyperparams  {"lr": 0.0001}',
        "step 3  train/loss=0.5  lr=0.0001",
        "step 4  train/loss=0.25  lr=0.0001  val/loss=0.61",
        "artifact ckpt  /ckpt/4.pt",
    ]


def test_plain_points_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    m = MetricsLogger(sinks=[{"kind": "stdout", "params": {"stream": "stderr", "digits": 3}}])
    m.log("validator_scores", {"eval_uid": 2}, {"score": 0.123456})
    assert m.close(10)
    out = capsys.readouterr()
    assert out.out == "" and out.err.splitlines() == ["validator_scores  eval_uid=2  score=0.123"]
    with pytest.raises(ConfigurationError, match="stream must be 'stdout' or 'stderr'"):
        open_log_store("stdout", stream="tty")
