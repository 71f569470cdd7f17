"""The jsonl sink on its own: plain MetricsLogger points, a resumed log directory, an unusable one."""

from __future__ import annotations

import json
from pathlib import Path

from tplr_metrics import MetricsLogger, Point, open_log_store
from tplr_metrics.sinks.jsonl import JsonlSink


def test_plain_points_keep_the_export_shape(tmp_path: Path) -> None:
    m = MetricsLogger(sinks=[{"kind": "jsonl", "params": {"log_dir": str(tmp_path / "logs")}}], prefix="M", uid=4)
    m.log("training_step_v2", {"window": 7, "global_step": 70}, {"loss": 2.5, "n_gather_peers": 12})
    assert m.close(10)
    (line,) = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    row = json.loads(line)
    assert set(row) == {"ts", "time_ns", "measurement", "tags", "fields"}
    assert row["measurement"] == "Mtraining_step_v2" and row["fields"] == {"loss": 2.5, "n_gather_peers": 12}
    assert row["tags"]["window"] == "7" and row["tags"]["uid"] == "4" and row["tags"]["runtime_id"] == m.runtime_id


def test_a_resumed_log_directory_appends_and_merges(tmp_path: Path) -> None:
    for lr, steps in ((0.1, range(0, 5)), (0.05, range(5, 8))):
        store = open_log_store("jsonl", log_dir=str(tmp_path / "logs"))
        store.log_hyperparams({"lr": lr, f"phase_{steps[0]}": True})
        for step in steps:
            store.log_scalar("loss", 1.0 / (step + 1), step)
        store.log_artifact(f"ckpt-{steps[-1]}", f"/ckpt/{steps[-1]}.pt")
        assert store.close(10)
    rows = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(8))
    assert json.loads((tmp_path / "logs" / "hyperparams.json").read_text()) == {
        "lr": 0.05,
        "phase_0": True,
        "phase_5": True,
    }
    assert [a["name"] for a in json.loads((tmp_path / "logs" / "artifacts.json").read_text())] == ["ckpt-4", "ckpt-7"]


def test_an_unusable_directory_hands_the_batch_back(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sink = JsonlSink(blocker / "logs")
    result = sink.write([Point("m", {}, {"v": 1.0}, 1)])
    assert result.stored == 0 and list(result.retry) == [0] and "jsonl" in (result.error or "")
    sink.close()
