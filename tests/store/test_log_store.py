"""The LogStore facade: the acceptance run through jsonl, the same calls into the local store,
rank awareness, bad input counted, writes after close, tables printed back by the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import types
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import ConfigurationError, MetricsLogger, open_log_store
from tplr_metrics.cli import main
from tplr_metrics.log_store import LogStore, LogStoreClosedError, detect_rank


def write_acceptance_run(log_dir: Path, **params: Any) -> LogStore:
    """Hyperparams, 100 train steps, 10 val steps, an artifact (the issue's acceptance run)."""
    store = open_log_store("jsonl", log_dir=str(log_dir), **params)
    store.log_hyperparams({"lr": 3e-4, "batch_size": 64, "optimizer": {"name": "adamw", "betas": [0.9, 0.95]}})
    for step in range(100):
        store.log_metrics({"loss": 5.0 * 0.97**step, "grad_norm": 1.0 + step % 7}, step)
        if step % 10 == 9:
            store.log_metrics({"loss": 5.2 * 0.97**step}, step, split="val")
    store.log_hyperparams({"lr": 1e-4, "warmup": 10})  # merged with the first call
    store.log_artifact("checkpoint", log_dir.parent / "ckpt" / "step-100.pt")
    assert store.close(10)
    return store


def test_acceptance_run_through_jsonl(tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs" / "run-001" / "logs"
    store = write_acceptance_run(log_dir)
    assert sorted(p.name for p in log_dir.iterdir()) == ["artifacts.json", "hyperparams.json", "metrics.jsonl"]

    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 110 and all(set(r) == {"ts", "step", "split", "metrics"} for r in rows)
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in train] == list(range(100))
    assert [r["step"] for r in val] == list(range(9, 100, 10))
    assert train[3]["metrics"] == {"loss": pytest.approx(5.0 * 0.97**3), "grad_norm": 4.0}
    assert set(val[0]["metrics"]) == {"loss"}
    assert all(isinstance(r["ts"], float) for r in rows) and rows[0]["ts"] <= rows[-1]["ts"]

    hyperparams = json.loads((log_dir / "hyperparams.json").read_text())
    assert hyperparams == {
        "lr": 1e-4,
        "batch_size": 64,
        "optimizer": {"name": "adamw", "betas": [0.9, 0.95]},
        "warmup": 10,
    }
    artifacts = json.loads((log_dir / "artifacts.json").read_text())
    assert len(artifacts) == 1 and set(artifacts[0]) == {"name", "path", "kind", "ts"}
    assert artifacts[0]["name"] == "checkpoint" and artifacts[0]["kind"] == "file"
    assert artifacts[0]["path"] == str(tmp_path / "outputs" / "run-001" / "ckpt" / "step-100.pt")

    # Private files in private directories (the ones this sink created).
    for path in log_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in (log_dir, log_dir.parent, tmp_path / "outputs"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory

    for call in (
        lambda: store.log_metrics({"loss": 1.0}, 100),
        lambda: store.log_scalar("loss", 1.0, 100),
        lambda: store.log_hyperparams({"x": 1}),
        lambda: store.log_artifact("a", "b"),
        lambda: store.log_table("t", [{"a": 1}]),
    ):
        with pytest.raises(LogStoreClosedError, match=r"after close\(\)"):
            call()
    assert store.close() is True  # closing twice is fine
    assert len((log_dir / "metrics.jsonl").read_text().splitlines()) == 110


def test_file_names_are_configurable(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    store = open_log_store(
        "jsonl", log_dir=str(logs), metrics_file="m.jsonl", hyperparams_file="h.json", artifacts_file="a.json"
    )
    store.log_hyperparams({"a": 1})
    store.log_scalar("x", 2.0, 0)
    store.log_artifact("model", "s3://bucket/model.pt", kind="model")
    assert store.close(10)
    assert sorted(p.name for p in logs.iterdir()) == ["a.json", "h.json", "m.jsonl"]
    assert json.loads((logs / "a.json").read_text())[0]["path"] == "s3://bucket/model.pt"


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_the_same_calls_land_in_the_local_store(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    store = open_log_store("local", path=str(db), logger_options={"role": "trainer"})
    store.log_hyperparams({"lr": 0.001, "layers": [2, 2]})
    for step in range(20):
        store.log_metrics({"loss": 1.0 / (step + 1)}, step)
    store.log_metrics({"loss": 0.5}, 19, split="val")
    store.log_artifact("ckpt", "/ckpt/19.pt")
    assert store.close(10)
    ((run_id, config, status, role),) = query(db, "SELECT run_id, config, status, role FROM runs")
    assert run_id == store.run_id and status == "ok" and role == "trainer"
    assert json.loads(config) == {"config_lr": "0.001"}  # scalars become the run's config tags
    rows = query(
        db,
        "SELECT json_extract(tags, '$.split'), json_extract(fields, '$.step'), json_extract(fields, '$.loss'),"
        " json_extract(tags, '$.config_lr') FROM points WHERE measurement = 'metrics' ORDER BY id",
    )
    assert len(rows) == 21 and rows[0] == ("train", 0, 1.0, "0.001") and rows[-1][:2] == ("val", 19)
    assert query(db, "SELECT json_type(fields, '$.step') FROM points WHERE measurement = 'metrics' LIMIT 1") == [
        ("integer",)
    ]
    (hyper,) = query(
        db, "SELECT json_extract(fields, '$.hyperparams_json') FROM points WHERE measurement = 'hyperparams'"
    )
    assert json.loads(hyper[0]) == {"lr": 0.001, "layers": [2, 2]}
    assert query(db, "SELECT json_extract(tags, '$.name'), json_extract(fields, '$.path') FROM points "
                 "WHERE measurement = 'artifacts'") == [("ckpt", "/ckpt/19.pt")]  # fmt: skip


def test_only_rank_zero_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    assert detect_rank() == 1
    quiet = open_log_store("jsonl", log_dir=str(tmp_path / "r1"))
    assert not quiet.active and quiet.sink is None
    quiet.log_hyperparams({"a": 1})
    quiet.log_metrics({"loss": 1.0}, 0)
    assert quiet.close()
    assert not (tmp_path / "r1").exists()
    with pytest.raises(LogStoreClosedError):
        quiet.log_metrics({"loss": 1.0}, 1)
    with pytest.raises(ConfigurationError, match="unknown param logdir"):
        open_log_store("jsonl", logdir="x")  # a bad config fails on every rank

    loud = open_log_store("jsonl", log_dir=str(tmp_path / "all"), all_ranks=True)
    loud.log_metrics({"loss": 1.0}, 0)
    assert loud.close(10) and (tmp_path / "all" / "metrics.jsonl").exists()

    monkeypatch.delenv("RANK")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert detect_rank() == 2
    # torch.distributed, when the caller imported and initialized it, is asked first.
    fake = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True, get_rank=lambda: 0)
    monkeypatch.setitem(__import__("sys").modules, "torch.distributed", fake)
    assert detect_rank() == 0
    assert open_log_store("jsonl", log_dir=str(tmp_path / "r0")).active


def test_bad_input_is_counted_never_raised(tmp_path: Path) -> None:
    store = open_log_store("jsonl", log_dir=str(tmp_path))
    store.log_metrics("loss=1", 0)  # type: ignore[arg-type]
    store.log_metrics({"loss": 1.0}, "first")  # type: ignore[arg-type]
    store.log_metrics({"loss": 1.0}, 1.5)  # type: ignore[arg-type]
    store.log_scalar("loss", float("nan"), 2)
    store.log_table("t", "not rows")  # type: ignore[arg-type]
    store.log_hyperparams({"when": object()})
    store.log_metrics({"loss": 2.0}, 3)
    assert store.close(10)
    stats = store.stats()
    assert stats["dropped"]["not_a_mapping"] == 1 and stats["dropped"]["bad_step"] == 2
    assert stats["dropped"]["bad_table"] == 1 and stats["sanitized"]["hyperparam_not_json"] == 1
    assert stats["dropped"]["no_metrics"] == 1 and stats["sanitized"]["nan"] == 1
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["metrics"]) for r in lines] == [(3, {"loss": 2.0})]  # NaN dropped by the value rules


def test_a_table_lands_as_rows_and_prints_back(
    tmp_path: Path, isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"prompt": "2+2=", "completion": "4", "score": 1.0},
        {"prompt": "capital of France", "completion": "Paris", "score": 0.9},
        {"prompt": "haiku", "completion": "old pond / frog", "score": 0.25},
    ]
    for kind, params in (("jsonl", {"log_dir": str(tmp_path / "logs")}), ("local", {})):
        store = open_log_store(kind, **params)
        store.log_table("samples", rows[:1], step=5)
        store.log_table("samples", [[r["prompt"], r["completion"], r["score"]] for r in rows],
                        columns=["prompt", "completion", "score"], step=10)  # fmt: skip
        assert store.close(10)
        source = ["--input", str(tmp_path / "logs")] if kind == "jsonl" else ["--run-id", str(store.run_id)]
        capsys.readouterr()
        assert main(["table", *source]) == 0
        listing = capsys.readouterr().out
        assert listing.split("\n")[1].split()[:3] == ["samples", "2", "3"]
        assert main(["table", "samples", *source]) == 0
        out = capsys.readouterr().out.splitlines()
        assert "step 10" in out[0] and "(3 rows)" in out[0]
        assert out[1].split() == ["ROW", "prompt", "completion", "score"]
        assert out[3].split() == ["1", "capital", "of", "France", "Paris", "0.9"]
        assert main(["table", "samples", "--all", "--json", *source]) == 0
        versions = json.loads(capsys.readouterr().out)
        assert [v["step"] for v in versions] == [5, 10] and versions[1]["rows"] == rows
        assert main(["table", "nope", *source]) == 2
        assert "no table 'nope'" in capsys.readouterr().err


def test_a_table_with_long_and_multiline_cells_keeps_its_layout(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    completion = "def f(x):\n    return x * 2\n" + "# padding " * 40
    store = open_log_store("local")
    store.log_table("samples", [{"completion": completion, "score": 0.5}, {"completion": "short", "score": 1.0}])
    assert store.close(10)
    capsys.readouterr()
    assert main(["table", "samples", "--run-id", str(store.run_id)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4  # the title, the header, one line per row: no line broken by a newline
    assert out[2].startswith("0    def f(x):\u23ce    return x * 2\u23ce# padding") and "\u2026" in out[2]
    assert out[2].split()[-1] == "0.5" and out[3].split() == ["1", "short", "1"]
    assert len(out[2]) < 100 and out[2].index("0.5") == out[3].index("1", 2)  # cut, and the columns line up
    assert main(["table", "samples", "--run-id", str(store.run_id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["rows"][0]["completion"] == completion  # --json: unchanged


def test_logger_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown MetricsLogger argument"):
        open_log_store("jsonl", log_dir=str(tmp_path), logger_options={"sinks": ["local"]})
    store = open_log_store("jsonl", log_dir=str(tmp_path), logger_options={"prefix": "T", "uid": 3})
    store.log_metrics({"loss": 1.0}, 0)
    assert store.close(10)
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["split"] == "train"  # the prefix ("Tmetrics") is recognized
    assert os.stat(tmp_path / "metrics.jsonl").st_size > 0


def test_plot_names_show_the_split_once(tmp_path: Path) -> None:
    from tplr_metrics.viz.run_data import read_jsonl

    store = open_log_store("jsonl", log_dir=str(tmp_path))
    store.log_metrics({"train/loss": 2.0, "lr": 0.1}, 0)
    store.log_metrics({"val/loss": 1.0}, 0, split="val")
    assert store.close(10)
    assert sorted(read_jsonl(tmp_path / "metrics.jsonl").series) == ["train.loss", "train.lr", "val.loss"]


@pytest.mark.parametrize("kind", ["local", "jsonl", "tensorboard"])
def test_a_store_is_callable_like_wandb_log(kind: str, tmp_path: Path) -> None:
    if kind == "tensorboard":
        pytest.importorskip("tensorboard")
    params: dict[str, Any] = {
        "local": {"path": str(tmp_path / "store.sqlite")},
        "jsonl": {"log_dir": str(tmp_path / "logs")},
        "tensorboard": {"log_dir": str(tmp_path / "tb"), "run_name": "r"},
    }[kind]
    store = open_log_store(kind, **params)
    for i in range(3):
        store({"train/loss": 1.0 / (i + 1), "lr": 10 - i})  # steps 0, 1, 2
    store({"val/loss": 0.25}, step=10)
    store({"train/loss": 0.125})  # 11: the count goes on from the given step
    store({"samples": [{"prompt": "2+2=", "score": 1.0}]})  # a table, at 12
    assert store.close(10)

    if kind == "local":
        rows = query(
            tmp_path / "store.sqlite",
            "SELECT json_extract(tags, '$.split'), json_extract(fields, '$.step'), json_extract(fields, '$.lr'),"
            " json_extract(fields, '$.\"train/loss\"'), json_extract(fields, '$.\"val/loss\"')"
            " FROM points WHERE measurement = 'metrics' ORDER BY id",
        )
        assert rows == [("train", 0, 10.0, 1.0, None), ("train", 1, 9.0, 0.5, None),
                        ("train", 2, 8.0, pytest.approx(1 / 3), None), ("val", 10, None, None, 0.25),
                        ("train", 11, None, 0.125, None)]  # fmt: skip
        assert query(tmp_path / "store.sqlite", "SELECT json_extract(fields, '$.step') FROM points "
                     "WHERE measurement = 'table'") == [(12,)]  # fmt: skip
    elif kind == "jsonl":
        lines = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
        assert [(r["split"], r["step"]) for r in lines] == [("train", 0), ("train", 1), ("train", 2), ("val", 10),
                                                            ("train", 11)]  # fmt: skip
        assert lines[1]["metrics"] == {"train/loss": 0.5, "lr": 9.0}
        (table,) = [json.loads(line) for line in (tmp_path / "logs" / "tables.jsonl").read_text().splitlines()]
        assert table["table"] == "samples" and table["step"] == 12
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path / "tb" / "r"))
        acc.Reload()
        assert [e.step for e in acc.Scalars("train/loss")] == [0, 1, 2, 11]
        assert [(e.step, e.value) for e in acc.Scalars("train/lr")] == [(0, 10.0), (1, 9.0), (2, 8.0)]
        assert [(e.step, e.value) for e in acc.Scalars("val/loss")] == [(10, 0.25)]


def test_a_call_style_log_never_raises(tmp_path: Path) -> None:
    store = open_log_store("jsonl", log_dir=str(tmp_path))
    store("loss=1")  # type: ignore[arg-type]
    store({"loss": 1.0}, step="x")  # type: ignore[arg-type]
    store({"loss": 2.0})
    assert store.close(10)
    assert store.stats()["dropped"]["not_a_mapping"] == 1 and store.stats()["dropped"]["bad_step"] == 1
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["step"] == 0  # the dropped calls took no step
    with pytest.raises(LogStoreClosedError):
        store({"loss": 3.0})


_PICKING = ("WANDB_PROJECT", "WANDB_MODE", "MLFLOW_TRACKING_URI", "TENSORBOARD_LOGDIR")


@pytest.fixture
def no_picking_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _PICKING:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_with_no_kind_the_local_store(no_picking_env: pytest.MonkeyPatch, isolated_env: Path) -> None:
    store = open_log_store()
    assert store.sink is not None and store.sink.name == "local"
    store({"loss": 1.0})
    assert store.close(10)
    assert query(isolated_env / "metrics.sqlite", "SELECT json_extract(fields, '$.step') FROM points "
                 "WHERE measurement = 'metrics'") == [(0,)]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({"WANDB_PROJECT": "p", "MLFLOW_TRACKING_URI": "file:///nowhere"}, "wandb"),
        ({"WANDB_MODE": "disabled"}, "wandb"),
        ({"MLFLOW_TRACKING_URI": "file:///nowhere", "TENSORBOARD_LOGDIR": "/nowhere"}, "mlflow"),
        ({"TENSORBOARD_LOGDIR": "/nowhere", "INFLUXDB_URL": "http://127.0.0.1:9"}, "tensorboard"),
        ({"INFLUXDB_HOST": "127.0.0.1", "INFLUXDB_DATABASE": "d"}, "influxdb"),
    ],
)
def test_with_no_kind_the_environment_picks(no_picking_env: pytest.MonkeyPatch, env: dict[str, str], kind: str) -> None:
    pytest.importorskip({"wandb": "wandb", "mlflow": "mlflow", "tensorboard": "tensorboard"}.get(kind, "json"))
    for name, value in env.items():
        no_picking_env.setenv(name, value)
    store = open_log_store()
    assert store.sink is not None and store.sink.name == kind
    if kind == "wandb":
        assert store.sink.project  # type: ignore[attr-defined] == env.get("WANDB_PROJECT", "tplr_metrics")
    if kind == "tensorboard":
        assert str(store.sink.log_dir)  # type: ignore[attr-defined] == "/nowhere"
    store.sink.close()  # nothing was logged: no run to start


def test_tensorboard_logdir_is_where_the_events_go(no_picking_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    no_picking_env.setenv("TENSORBOARD_LOGDIR", str(tmp_path / "tb"))
    store = open_log_store(run_name="r")
    store({"train/loss": 0.5})
    store({"train/loss": 0.25})
    assert store.close(10)
    acc = EventAccumulator(str(tmp_path / "tb" / "r"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(0, 0.5), (1, 0.25)]


def test_disabled_does_nothing_and_says_so_once(
    no_picking_env: pytest.MonkeyPatch, tmp_path: Path, isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import tplr_metrics.log_store as log_store_module

    no_picking_env.setattr(log_store_module, "_said_disabled", False)
    no_picking_env.setenv("TPLR_METRICS_DISABLED", "1")
    caplog.set_level("INFO", logger="tplr_metrics")
    for kind, params in ((None, {}), ("jsonl", {"log_dir": str(tmp_path / "logs")})):
        store = open_log_store(kind, **params)
        assert not store.active and "TPLR_METRICS_DISABLED" in repr(store)
        store({"loss": 1.0})
        store.log_metrics({"loss": 1.0}, 1)
        assert store.close()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LogStore")]
    assert said == ["LogStore: TPLR_METRICS_DISABLED is set; nothing is logged"]  # not "... so 'local'" first
    assert not (tmp_path / "logs").exists() and not (isolated_env / "metrics.sqlite").exists()
    with pytest.raises(ConfigurationError, match="unknown param logdir"):
        open_log_store("jsonl", logdir="x")  # a bad config still fails


def test_hyperparams_merge_deeply(tmp_path: Path) -> None:
    store = open_log_store("jsonl", log_dir=str(tmp_path))
    store.log_hyperparams({"optimizer": {"name": "adamw", "betas": [0.9, 0.95], "sched": {"kind": "cos"}}})
    store.log_hyperparams({"optimizer": {"lr": 2e-4, "sched": {"warmup": 10}}, "seed": 1})
    store.log_hyperparams({"optimizer": {"betas": [0.8, 0.9]}})  # a list is a value: replaced
    assert store.close(10)
    assert json.loads((tmp_path / "hyperparams.json").read_text()) == {
        "optimizer": {"name": "adamw", "betas": [0.8, 0.9], "lr": 2e-4, "sched": {"kind": "cos", "warmup": 10}},
        "seed": 1,
    }


def test_with_no_kind_the_config_files_log_store_key_picks(
    no_picking_env: pytest.MonkeyPatch, tmp_path: Path, isolated_env: Path
) -> None:
    log_dir = tmp_path / "logs"
    config = tmp_path / "evsys.yaml"
    config.write_text(
        "log_store:\n"
        "  kind: multiplex\n"
        "  params:\n"
        "    children:\n"
        f"      - {{kind: jsonl, params: {{log_dir: '{log_dir}'}}}}\n"
        "      - {kind: local}\n"
    )
    no_picking_env.setenv("TPLR_METRICS_SINKS_CONFIG", str(config))
    no_picking_env.setenv("WANDB_PROJECT", "p")  # the config file comes before the environment
    store = open_log_store()
    store({"train/loss": 0.5})
    assert store.close(10)
    (line,) = (log_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["metrics"] == {"train/loss": 0.5}
    assert query(isolated_env / "metrics.sqlite", "SELECT count(*) FROM points WHERE measurement = 'metrics'") == [(1,)]
    logger = MetricsLogger(flush_interval=50)  # the same file configures a plain logger
    logger.log("m", {}, {"v": 1.0})
    assert logger.close(10)
    assert query(isolated_env / "metrics.sqlite", "SELECT count(*) FROM points WHERE measurement = 'm'") == [(1,)]

    config.write_text("log_store:\n  kind: jsonl\n  params: {logdir: x}\n")
    with pytest.raises(ConfigurationError, match=r"^TPLR_METRICS_SINKS_CONFIG: sink 'jsonl': unknown param logdir"):
        open_log_store()
    config.write_text("log_store: {kind: local}\nsinks: [local]\n")
    with pytest.raises(ConfigurationError, match="'sinks' or 'log_store', not both"):
        open_log_store()


class FileStore:
    """A user's own LogStore (the five methods, no Sink protocol): one JSON line per call."""

    def __init__(self, path: str, fail: bool = False) -> None:
        self.path, self.fail = path, fail

    def _write(self, *call: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(call) + "\n")

    def log_scalar(self, key: str, value: float, step: int) -> None:
        self._write("log_scalar", key, value, step)

    def log_metrics(self, metrics: dict[str, float], step: int, split: str = "train") -> None:
        if self.fail:
            raise RuntimeError("the user's store is down")
        self._write("log_metrics", metrics, step, split)

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self._write("log_hyperparams", params)

    def log_artifact(self, name: str, path: str) -> None:
        self._write("log_artifact", name, path)

    def close(self) -> None:
        self._write("close")


def test_a_users_log_store_class_plugs_in(tmp_path: Path, isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tplr_metrics.sinks.registry import register_sink, unregister_sink

    register_sink("mine")(FileStore)
    try:
        out = tmp_path / "mine.jsonl"
        store = open_log_store("mine", path=str(out))
        store.log_hyperparams({"lr": 0.1})
        store.log_metrics({"loss": 0.5}, 1)
        store({"val/loss": 0.25}, step=2)
        store.log_artifact("ckpt", "/ckpt/1.pt")
        assert store.close(10)
        calls = [json.loads(line) for line in out.read_text().splitlines()]
        assert calls == [
            ["log_hyperparams", {"lr": 0.1}],
            ["log_metrics", {"loss": 0.5}, 1, "train"],
            ["log_metrics", {"loss": 0.25}, 2, "val"],  # the store names val/loss itself
            ["log_artifact", "ckpt", "/ckpt/1.pt"],
            ["close"],
        ]

        # A multiplex child, and one that raises: the loop goes on, the sibling gets every point.
        caplog.set_level("WARNING", logger="tplr_metrics")
        failing = tmp_path / "failing.jsonl"
        children = [{"kind": "mine", "params": {"path": str(failing), "fail": True}}, {"kind": "local"}]
        store = open_log_store("multiplex", children=children)
        for step in range(5):
            store.log_metrics({"loss": 1.0 / (step + 1)}, step)  # never raises into the loop
        assert store.close(10) is False  # False: points were refused (by the raising store), see stats()
        assert query(isolated_env / "metrics.sqlite", "SELECT count(*) FROM points WHERE measurement = 'metrics'") == [
            (5,)
        ]
        assert store.stats()["rejected"] == {"log_store_error": 5}
        warned = [r.getMessage() for r in caplog.records if "the user's store is down" in r.getMessage()]
        assert len(warned) == 1 and "FileStore.log_metrics raised RuntimeError" in warned[0], warned
        assert failing.read_text().splitlines() == ['["close"]']
    finally:
        unregister_sink("mine")


def test_a_users_log_store_gets_each_call_as_it_was_made(
    tmp_path: Path, isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tplr_metrics.sinks.registry import register_sink, unregister_sink

    register_sink("mine")(FileStore)
    try:
        caplog.set_level("WARNING", logger="tplr_metrics")
        out = tmp_path / "mine.jsonl"
        store = open_log_store("mine", path=str(out))
        store.log_scalar("lr", 0.1, 0)
        store({"train/loss": 0.5, "val/loss": 0.6}, step=5)
        store.log_table("t", [{"a": 1}, {"a": 2}], step=2)  # FileStore has no log_table
        store.log_table("t", [{"a": 3}], step=3)
        assert store.close(10) is False  # the table rows were refused, see stats()
        calls = [json.loads(line) for line in out.read_text().splitlines()]
        assert calls == [
            ["log_scalar", "lr", 0.1, 0],
            ["log_metrics", {"loss": 0.5}, 5, "train"],
            ["log_metrics", {"loss": 0.6}, 5, "val"],
            ["close"],
        ]
        stats = store.stats()
        assert stats["rejected"] == {"log_store_unsupported": 3} and stats["written"] == 3
        warned = [r.getMessage() for r in caplog.records if "has no log_table" in r.getMessage()]
        assert len(warned) == 1, warned
    finally:
        unregister_sink("mine")


def test_call_style_bad_values_are_left_out_and_take_no_step(
    tmp_path: Path, isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="tplr_metrics")
    db = tmp_path / "store.sqlite"
    store = open_log_store("local", path=str(db))
    store({"nested": {"a": 1.0}, "val": {"loss": 0.5}})  # step 0: nested/a in train, val/loss in val
    store({})  # dropped: takes no step
    store({"loss": float("nan")})
    store([1])  # type: ignore[arg-type]
    store({"loss": None, "acc": "high", "ok": 2})  # step 1: only ok
    store({"loss": None})
    store({"b": 3.0})  # step 2
    store.log_metrics({"loss": 1.0}, 7, "")  # split as the third argument, never a TypeError
    store.log_scalar("x", "abc", 8)  # text: dropped
    store.log_scalar("y", 1.0, 9, "val")
    assert store.close(10)
    rows = query(
        db,
        "SELECT json_extract(tags, '$.split'), fields FROM points WHERE measurement = 'metrics' ORDER BY id",
    )
    assert [(split, json.loads(fields)) for split, fields in rows] == [
        ("train", {"nested/a": 1.0, "step": 0}),
        ("val", {"val/loss": 0.5, "step": 0}),
        ("train", {"ok": 2.0, "step": 1}),
        ("train", {"b": 3.0, "step": 2}),
        ("train", {"loss": 1.0, "step": 7}),
        ("val", {"y": 1.0, "step": 9}),
    ]
    stats = store.stats()
    assert stats["dropped"]["no_metrics"] == 4 and stats["dropped"]["not_a_mapping"] == 1
    assert stats["sanitized"]["none_value"] == 2 and stats["sanitized"]["not_numeric"] == 2
    said = [r.getMessage() for r in caplog.records]
    assert sum("is None" in m for m in said) == 1 and sum("is not a number" in m for m in said) == 1, said
