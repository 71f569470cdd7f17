"""Sinks by kind: a third-party sink found through the entry point, params checked by name,
configuration from Python, the environment and TOML/YAML files, missing extras skipped."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tplr_metrics import ConfigurationError, MetricsLogger, WriteResult, open_log_store
from tplr_metrics.sinks.jsonl import JsonlSink
from tplr_metrics.sinks.local import LocalStoreSink
from tplr_metrics.sinks.multiplex import MultiplexSink
from tplr_metrics.sinks.registry import (
    available_sinks,
    create_sink,
    refresh_entry_points,
    register_sink,
    unregister_sink,
)

from ..memory_sink import MemorySink

PLUGIN = '''
"""A third-party sink: appends every point it receives to a file (so the test reads it back)."""
import json
from tplr_metrics import WriteResult


class FileSink:
    name = "thirdparty"

    def __init__(self, path, *, label="x"):
        self.path = path
        self.label = label
        self.runs = []

    def write(self, points):
        with open(self.path, "a", encoding="utf-8") as handle:
            for p in points:
                handle.write(json.dumps([self.label, p.measurement, p.tags, p.fields]) + "\\n")
        return WriteResult.all_stored(len(points))

    def flush(self):
        pass

    def close(self):
        pass
'''


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed package (a module + its .dist-info with entry_points.txt) on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tplr_thirdparty_sink.py").write_text(PLUGIN)
    info = site / "tplr_thirdparty_sink-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tplr-thirdparty-sink\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tplr_metrics.sinks]\nthirdparty = tplr_thirdparty_sink:FileSink\n")
    monkeypatch.syspath_prepend(str(site))
    refresh_entry_points()
    yield tmp_path
    sys.modules.pop("tplr_thirdparty_sink", None)
    monkeypatch.undo()
    refresh_entry_points()


def read_lines(path: Path) -> list[list[object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_third_party_sink_is_found_through_its_entry_point_and_receives_points(third_party: Path) -> None:
    out = third_party / "points.jsonl"
    assert available_sinks()["thirdparty"] == "entry point tplr_thirdparty_sink:FileSink"
    m = MetricsLogger(sinks=[{"kind": "thirdparty", "params": {"path": str(out), "label": "ep"}}], flush_interval=50)
    for i in range(25):
        m.log("loss_curve", {"split": "train"}, {"loss": 1.0 / (i + 1), "step": i})
    assert m.close(10)
    lines = read_lines(out)
    assert len(lines) == 25 and {line[0] for line in lines} == {"ep"}
    assert [line[3]["step"] for line in lines] == list(range(25))  # type: ignore[index]
    assert lines[0][2]["runtime_id"] == m.runtime_id  # type: ignore[index]


def test_a_third_party_sink_from_the_environment_and_with_a_bad_param(
    third_party: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = third_party / "env.jsonl"
    config = third_party / "sinks.toml"
    config.write_text(f'[[sinks]]\nkind = "thirdparty"\n[sinks.params]\npath = "{out}"\n')
    monkeypatch.setenv("TPLR_METRICS_SINKS_CONFIG", str(config))
    m = MetricsLogger(flush_interval=50)
    m.log("m", {}, {"v": 1.0})
    assert m.close(10)
    assert read_lines(out)[0][1] == "m"
    with pytest.raises(ConfigurationError, match=r"sink 'thirdparty': unknown param colour \(it takes: path, label\)"):
        create_sink("thirdparty", path=str(out), colour="red")


def test_unknown_and_missing_params_are_named() -> None:
    with pytest.raises(ConfigurationError, match=r"sink 'jsonl': unknown params logdir, mode \(it takes: log_dir,"):
        create_sink("jsonl", logdir="x", mode="w")
    with pytest.raises(ConfigurationError, match=r"sinks=: sink 'local': unknown param bucket"):
        MetricsLogger(sinks=[{"kind": "local", "params": {"bucket": "b"}}])
    with pytest.raises(ConfigurationError, match=r"sink 'influxdb-v1': unknown param org"):
        MetricsLogger(sinks=[{"kind": "influxdb-v1", "params": {"url": "http://127.0.0.1:1", "org": "o"}}])
    with pytest.raises(ConfigurationError, match=r"sink 'multiplex': missing param children"):
        create_sink("multiplex")
    with pytest.raises(ConfigurationError, match=r"unknown key\(s\) parms"):
        MetricsLogger(sinks=[{"kind": "local", "parms": {}}])
    with pytest.raises(ConfigurationError, match="unknown sink 'kafka'"):
        open_log_store("kafka")


def test_register_sink_by_name(tmp_path: Path) -> None:
    memory = MemorySink()
    register_sink("memory-test", lambda: memory)
    try:
        with pytest.raises(ConfigurationError, match="already registered"):
            register_sink("memory_test", lambda: memory)
        with pytest.raises(ConfigurationError, match="built in"):
            register_sink("jsonl", lambda: memory)
        m = MetricsLogger(sinks=["memory-test", "local"], flush_interval=50)
        m.log("m", {}, {"v": 1})
        assert m.close(10)
        assert len(memory.points) == 1 and memory.ended == ["ok"]
    finally:
        unregister_sink("memory-test")


def store_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM points").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_sinks_config_file(suffix: str, tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_dir = tmp_path / "logs"
    texts = {
        ".toml": f"""
            [[sinks]]
            kind = "jsonl"
            params = {{ log_dir = "{log_dir}", metrics_file = "m.jsonl" }}

            [[sinks]]
            kind = "local"
        """,
        ".yaml": f"""
            sinks:
              - kind: jsonl
                params: {{log_dir: "{log_dir}", metrics_file: m.jsonl}}
              - kind: local
        """,
        ".json": json.dumps(
            {"sinks": [{"kind": "jsonl", "params": {"log_dir": str(log_dir), "metrics_file": "m.jsonl"}}, "local"]}
        ),
    }
    config = tmp_path / f"sinks{suffix}"
    config.write_text(textwrap.dedent(texts[suffix]))
    monkeypatch.setenv("TPLR_METRICS_SINKS_CONFIG", str(config))
    m = MetricsLogger(flush_interval=50)
    assert isinstance(m.sink, MultiplexSink)
    assert [type(c) for c in m.sink.children] == [JsonlSink, LocalStoreSink]
    for i in range(10):
        m.log("m", {}, {"v": float(i)})
    assert m.close(10)
    assert len((log_dir / "m.jsonl").read_text().splitlines()) == 10
    assert store_count(isolated_env / "metrics.sqlite") == 10


def test_sinks_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sinks]]\nkind = "jsonl"\n[sinks.params]\nlogdir = "x"\n')
    monkeypatch.setenv("TPLR_METRICS_SINKS_CONFIG", str(bad))
    with pytest.raises(ConfigurationError, match=r"TPLR_METRICS_SINKS_CONFIG: sink 'jsonl': unknown param logdir"):
        MetricsLogger()
    bad.write_text("sinks = 3\nother = 1\n")
    with pytest.raises(ConfigurationError, match=r"unknown top-level key\(s\) other"):
        MetricsLogger()
    monkeypatch.setenv("TPLR_METRICS_SINKS", "local")
    with pytest.raises(ConfigurationError, match="not both"):
        MetricsLogger()
    monkeypatch.delenv("TPLR_METRICS_SINKS")
    inline = json.dumps([{"kind": "jsonl", "params": {"log_dir": str(tmp_path)}}])
    monkeypatch.setenv("TPLR_METRICS_SINKS_CONFIG", inline)
    m = MetricsLogger()
    assert isinstance(m.sink, JsonlSink) and m.sink.log_dir == tmp_path
    m.close(5)


def test_a_missing_extra_is_skipped_with_one_line_and_the_others_go_on(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails
    monkeypatch.setitem(sys.modules, "tensorboard.summary", None)
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer", None)
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.event_file_writer", None)
    caplog.set_level(logging.WARNING, logger="tplr_metrics")
    m = MetricsLogger(sinks=["tensorboard", "local"], flush_interval=50)
    assert isinstance(m.sink, LocalStoreSink)
    m.log("m", {}, {"v": 1.0})
    assert m.close(10)
    assert store_count(isolated_env / "metrics.sqlite") == 1
    lines = [r.getMessage() for r in caplog.records if "tensorboard" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "needs the optional extra 'tensorboard' (pip install 'tplr_metrics[tensorboard]')" in lines[0]
    assert "skipped" in lines[0]

    # The only sink named: points go where they would with nothing configured (the local store).
    caplog.clear()
    store = open_log_store("tensorboard", log_dir=str(tmp_path / "tb"))
    assert isinstance(store.sink, LocalStoreSink)
    store.log_metrics({"loss": 1.0}, 0)
    assert store.close(10)
    assert store_count(isolated_env / "metrics.sqlite") == 2
    assert any("points go to LocalStoreSink" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "tb").exists()


def test_register_sink_as_a_decorator_on_a_class_and_a_function(tmp_path: Path) -> None:
    try:

        @register_sink("http-test")
        class LineFileSink:
            name = "http-test"

            def __init__(self, path: str) -> None:
                self.path = path

            def write(self, points: object) -> WriteResult:
                with open(self.path, "a", encoding="utf-8") as handle:
                    for p in points:  # type: ignore[attr-defined]
                        handle.write(json.dumps([p.measurement, p.fields]) + "\n")
                return WriteResult.all_stored(len(points))  # type: ignore[arg-type]

            def flush(self) -> None:
                pass

            def close(self) -> None:
                pass

        @register_sink("http-fn-test")
        def http_fn(path: str) -> LineFileSink:
            return LineFileSink(path)

        assert LineFileSink.__name__ == "LineFileSink" and http_fn.__name__ == "http_fn"  # returned unchanged
        for kind in ("http-test", "http-fn-test"):
            store = open_log_store(kind, path=str(tmp_path / f"{kind}.jsonl"))
            store.log_metrics({"loss": 0.5}, 3)
            assert store.close(10)
            assert read_lines(tmp_path / f"{kind}.jsonl") == [["metrics", {"loss": 0.5, "step": 3}]]
        with pytest.raises(ConfigurationError, match="already registered"):
            register_sink("http-test")(LineFileSink)
    finally:
        unregister_sink("http-test")
        unregister_sink("http-fn-test")


SERVER = {"url": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("kind", "params", "named"),
    [
        ("jsonl", {"log_dir": 3}, "param log_dir must be a string or a path, or None; got 3 (int)"),
        ("local", {"path": ["x"]}, "param path must be a string, or None; got ['x'] (list)"),
        ("local", {"busy_timeout_s": "soon"}, "param busy_timeout_s must be a number; got 'soon' (str)"),
        ("tensorboard", {"flush_secs": "soon"}, "param flush_secs must be a number; got 'soon' (str)"),
        ("tensorboard", {"log_dir": 3}, "param log_dir must be a string or a path, or None; got 3 (int)"),
        ("wandb", {"tags": "a"}, "param tags must be a list, or None; got 'a' (str)"),
        ("mlflow", {"copy_artifacts": "yes"}, "param copy_artifacts must be true or false; got 'yes' (str)"),
        ("mlflow", {"tags": ["a"]}, "param tags must be a mapping, or None; got ['a'] (list)"),
        ("influxdb", {**SERVER, "verify_ssl": "no"}, "param verify_ssl must be true or false, or None; got 'no'"),
        ("influxdb", {**SERVER, "timeout_ms": "soon"}, "param timeout_ms must be an integer, or None; got 'soon'"),
        ("influxdb-v1", {**SERVER, "database": 3}, "param database must be a string, or None; got 3 (int)"),
        ("stdout", {"digits": True}, "param digits must be an integer; got True (bool)"),
    ],
)
def test_a_param_of_the_wrong_type_is_one_line_naming_it(
    kind: str, params: dict[str, object], named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        open_log_store(kind, **params)
    assert str(caught.value).startswith(f"open_log_store: sink {kind!r}: {named}")
    assert "\n" not in str(caught.value) and caught.type is ConfigurationError  # not a TypeError
    with pytest.raises(ConfigurationError, match=rf"^sinks=: sink '{kind}': param "):  # the same through a config
        MetricsLogger(sinks=[{"kind": kind, "params": params}])
    assert list(tmp_path.iterdir()) == []  # nothing was created: no store, no log directory
