"""The wandb sink: an offline run directory (nothing uploaded) whose records read back; without
the extra, one clear line and nothing else breaks."""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import open_log_store
from tplr_metrics.sinks.registry import MissingExtraError, create_sink
from tplr_metrics.sinks.wandb import WandbSink


def _extra_or_skip() -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the wandb extra is not installed; .ci/run must install '.[wandb]'")
        pytest.skip("the wandb extra is not installed (pip install 'tplr_metrics[wandb]')")


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a .wandb file: W&B's LevelDB-style log (7-byte header, 32 KiB blocks of
    checksum/length/type chunks) of wandb_internal_pb2.Record messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, pending = 32_768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def item_key(item: Any) -> str:
    """W&B writes a key either as ``key`` or as ``nested_key`` parts."""
    return str(item.key or "/".join(item.nested_key))


def test_an_offline_run_directory_that_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _extra_or_skip()
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")  # no credentials: offline needs none
    store = open_log_store("wandb", log_dir=str(tmp_path / "wb"), project="unit")
    try:
        assert isinstance(store.sink, WandbSink) and store.sink.mode == "offline"
        store.log_hyperparams({"lr": 3e-4, "layers": 4})
        for step in range(30):
            store.log_metrics({"loss": 3.0 * 0.9**step}, step)
            if step % 10 == 9:
                store.log_metrics({"loss": 3.1 * 0.9**step}, step, split="val")
        store.log_artifact("ckpt", "/ckpt/29.pt")
        assert store.close(30)
        run_dir = store.sink.run_dir
    finally:
        wandb.teardown()  # stop the wandb-core process this test started
    assert run_dir is not None and run_dir.parent == tmp_path / "wb" / "wandb"
    assert run_dir.name.startswith("offline-run-")
    (log,) = run_dir.glob("run-*.wandb")

    history: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "config":
            config.update({item_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            summary.update({item_key(i): json.loads(i.value_json) for i in record.summary.update})
    train = [h for h in history if "train/loss" in h]
    val = [h for h in history if "val/loss" in h]
    assert [h["train/step"] for h in train] == list(range(30))
    assert train[5]["train/loss"] == pytest.approx(3.0 * 0.9**5)
    assert [h["val/step"] for h in val] == [9, 19, 29]
    assert config["lr"] == pytest.approx(3e-4) and config["layers"] == 4
    assert summary["artifacts/ckpt"] == "/ckpt/29.pt"


def test_wandb_dir_is_where_the_run_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _extra_or_skip()
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wdir"))
    monkeypatch.setenv("TPLR_METRICS_HOME", str(tmp_path / "home"))
    store = open_log_store("wandb", project="unit")
    try:
        store.log_metrics({"loss": 1.5}, 0)
        assert store.close(30)
        run_dir = store.sink.run_dir  # type: ignore[union-attr]
    finally:
        wandb.teardown()
    assert run_dir is not None and run_dir.parent == tmp_path / "wdir" / "wandb"
    (log,) = run_dir.glob("run-*.wandb")
    history = [
        {item_key(i): json.loads(i.value_json) for i in r.history.item}
        for r in wandb_records(log)
        if r.WhichOneof("record_type") == "history"
    ]
    assert [h["train/loss"] for h in history if "train/loss" in h] == [1.5]
    assert not (tmp_path / "home" / "wandb").exists()


def test_without_the_extra_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'tplr_metrics\[wandb\]'"):
        create_sink("wandb")
    caplog.set_level(logging.WARNING, logger="tplr_metrics")
    store = open_log_store(
        "multiplex", children=["wandb", {"kind": "jsonl", "params": {"log_dir": str(tmp_path / "j")}}]
    )
    store.log_metrics({"loss": 1.0}, 0)
    assert store.close(10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "needs the optional extra 'wandb'" in warnings[0]
    assert json.loads((tmp_path / "j" / "metrics.jsonl").read_text())["metrics"] == {"loss": 1.0}
