"""The mlflow sink: a run that MlflowClient reads back from a file: tracking URI (no server)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tplr_metrics import open_log_store
from tplr_metrics.sinks.registry import MissingExtraError, create_sink


def _extra_or_skip() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the mlflow extra is not installed; .ci/run must install '.[mlflow]'")
        pytest.skip("the mlflow extra is not installed (pip install 'tplr_metrics[mlflow]')")


def test_metrics_params_and_an_artifact_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _extra_or_skip()
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    ckpt = tmp_path / "ckpt" / "step-4.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    store = open_log_store("mlflow", tracking_uri=uri, experiment="exp", tags={"team": "llm"})
    store.log_hyperparams({"lr": 3e-4, "optimizer": {"name": "adamw", "betas": [0.9, 0.95]}})
    for step in range(5):
        store.log_metrics({"loss": 1.0 / (step + 1)}, step)
    store.log_metrics({"val/loss": 0.7}, 4, split="val")
    store.log_hyperparams({"warmup": 10})
    store.log_artifact("checkpoint", ckpt)
    store.log_artifact("remote", "s3://bucket/model.pt")
    assert store.close(10)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("exp")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/loss")] == [(4, 0.7)]
    assert run.data.params == {
        "lr": "0.0003",
        "optimizer.name": "adamw",
        "optimizer.betas": "[0.9, 0.95]",
        "warmup": "10",
    }
    assert run.data.tags["team"] == "llm" and run.data.tags["tplr.run_id"] == store.run_id
    assert run.data.tags["artifact.remote"] == "s3://bucket/model.pt"
    assert run.info.status == "FINISHED"
    listed = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
    assert listed == ["checkpoint/step-4.pt"]


def test_without_the_extra_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")] + ["mlflow"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tplr_metrics\[mlflow\]'"):
        create_sink("mlflow", tracking_uri=(tmp_path / "m").as_uri())


def test_picked_when_only_the_tracking_uri_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _extra_or_skip()
    from mlflow.tracking import MlflowClient

    for name in ("WANDB_PROJECT", "WANDB_MODE", "TENSORBOARD_LOGDIR"):
        monkeypatch.delenv(name, raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = open_log_store()
    for _ in range(5):
        store({"train/loss": 0.5})
    assert store.close(10)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tplr_metrics")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1, 2, 3, 4]


def test_the_experiment_name_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _extra_or_skip()
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    store = open_log_store("mlflow", tracking_uri=uri)
    store({"train/loss": 0.5})
    assert store.close(10)
    store = open_log_store("mlflow", tracking_uri=uri, experiment="named")  # the param wins
    store({"train/loss": 0.25})
    assert store.close(10)
    client = MlflowClient(tracking_uri=uri)
    for name, value in (("from-env", 0.5), ("named", 0.25)):
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None, name
        (run,) = client.search_runs([experiment.experiment_id])
        assert [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")] == [value]
    assert client.get_experiment_by_name("tplr_metrics") is None
