"""The tplr-metrics commands over the local store: what they print, what they refuse, and what
lands in a real InfluxDB when their output is shipped there."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import MetricsLogger, open_log_store
from tplr_metrics.cli import main
from tplr_metrics.commands import watch as watch_command
from tplr_metrics.commands.replay import render_bar
from tplr_metrics.sinks.base import RunInfo
from tplr_metrics.store.database import Store

from ..servers import InfluxDB1

REPO = Path(__file__).resolve().parents[2]


def _interrupt(seconds: float) -> None:
    raise KeyboardInterrupt


def watch_one_poll(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """``watch`` in this process for one poll: its first sleep is a Ctrl-C."""
    monkeypatch.setattr(watch_command, "time", types.SimpleNamespace(sleep=_interrupt))
    return cli(capsys, "watch", *argv)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr). Leaves logging as it found it."""
    library = logging.getLogger("tplr_metrics")
    handlers, level = list(library.handlers), library.level
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    finally:
        library.handlers[:] = handlers
        library.setLevel(level)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def filled(isolated_env: Path) -> dict[str, Any]:
    """Two finished runs: a miner (5 loss points) and, later, a validator (300 scores + 2 timings)."""
    miner = MetricsLogger(role="miner", uid=1, prefix="M", runtime_id="aaaa-miner")
    for step in range(5):
        miner.log("loss", {"window": step}, {"loss": 2.5 - step / 10, "step": step})
    miner.close(10)
    validator = MetricsLogger(role="validator", uid=9, prefix="V", runtime_id="bbbb-validator")
    for i in range(300):
        validator.log(
            "validator_scores",
            {"eval_uid": i % 30, "window": i // 30},
            {"final_score": i / 300, "weight": 1.0, "binary_indicator": 1},
        )
    validator.log("timing", {"window": 1}, {"gather": 3.5})
    validator.log("timing", {"window": 2}, {"gather": 2.5, "evaluation": 11.0})
    validator.close(10)
    return {"miner": miner, "validator": validator, "path": isolated_env / "metrics.sqlite"}


def test_runs_lists_newest_first_as_table_json_and_csv(filled: dict[str, Any], capsys: Any) -> None:
    code, out, _ = cli(capsys, "runs", "--json")
    assert code == 0
    runs = json.loads(out)
    assert [(r["run_id"], r["role"], r["status"], r["points"]) for r in runs] == [
        ("bbbb-validator", "validator", "ok", 302),
        ("aaaa-miner", "miner", "ok", 5),
    ]
    assert runs[0]["uid"] == "9" and runs[0]["prefix"] == "V" and runs[0]["ended_at"].endswith("Z")
    code, out, _ = cli(capsys, "runs")
    assert code == 0 and "bbbb-validator" in out.splitlines()[1] and "RUN ID" in out
    code, out, _ = cli(capsys, "runs", "--csv", "--role", "miner")
    lines = out.splitlines()
    assert lines[0].startswith("run_id,role,uid,status") and len(lines) == 2 and lines[1].startswith("aaaa-miner,")
    code, out, _ = cli(capsys, "runs", "--json", "--limit", "1", "--since", "1h")
    assert [r["run_id"] for r in json.loads(out)] == ["bbbb-validator"]


def test_runs_run_id_gives_measurements_and_counts(filled: dict[str, Any], capsys: Any) -> None:
    code, out, _ = cli(capsys, "runs", "--run-id", "bbbb", "--json")  # a unique prefix is enough
    assert code == 0
    one = json.loads(out)
    assert one["run_id"] == "bbbb-validator" and one["points"] == 302
    assert [(m["measurement"], m["points"]) for m in one["measurements"]] == [
        ("Vtiming", 2),
        ("Vvalidator_scores", 300),
    ]
    code, out, _ = cli(capsys, "runs", "--run-id", "aaaa-miner")
    assert code == 0 and "Mloss" in out and "MEASUREMENT" in out


def test_runs_have_names_shown_and_accepted_by_run_id(filled: dict[str, Any], capsys: Any) -> None:
    """A run is named by the logger's run_name (default role/uid); runs shows the name, and
    --run-id takes it when one run has it (an ambiguous name is exit 2, naming the runs)."""
    named = MetricsLogger(role="miner", uid=1, runtime_id="cccc-named", run_name="lr-sweep-3")
    named.log("loss", {}, {"loss": 1.0})
    assert named.close(10)
    twin = MetricsLogger(role="miner", uid=1, runtime_id="dddd-twin")  # a second miner/1
    assert twin.close(10)
    code, out, _ = cli(capsys, "runs", "--json")
    assert [(r["run_id"], r["name"]) for r in json.loads(out)] == [
        ("dddd-twin", "miner/1"),
        ("cccc-named", "lr-sweep-3"),
        ("bbbb-validator", "validator/9"),
        ("aaaa-miner", "miner/1"),
    ]
    code, out, _ = cli(capsys, "runs")
    assert out.splitlines()[0].split()[:4] == ["RUN", "ID", "NAME", "ROLE"] and "lr-sweep-3" in out
    code, out, _ = cli(capsys, "runs", "--run-id", "lr-sweep-3", "--json")
    assert code == 0 and json.loads(out)["run_id"] == "cccc-named"
    code, out, _ = cli(capsys, "export", "--run-id", "validator/9")
    assert code == 0 and len(out.splitlines()) == 302
    code, out, err = cli(capsys, "runs", "--run-id", "miner/1")
    assert code == 2 and not out
    assert err.strip() == (
        "tplr-metrics runs: run name 'miner/1' is ambiguous: 2 runs have it (aaaa-miner, dddd-twin); give a run id"
    )


def test_open_log_store_takes_a_run_name(isolated_env: Path, capsys: Any) -> None:
    store = open_log_store("local", run_name="baseline")
    store.log_metrics({"loss": 1.0}, 0)
    assert store.close(10)
    code, out, _ = cli(capsys, "runs", "--run-id", "baseline", "--json")
    assert code == 0 and json.loads(out)["run_id"] == store.run_id


def test_runs_run_id_counts_a_log_stores_metrics_per_split(isolated_env: Path, capsys: Any) -> None:
    store = open_log_store("local", run_name="splits", logger_options={"prefix": "X"})
    store.log_hyperparams({"lr": 0.1})
    for step in range(5):
        store.log_metrics({"loss": 1.0 / (step + 1)}, step)
        if step % 2 == 0:
            store.log_metrics({"loss": 2.0}, step, split="val")
    store({"test/acc": 0.9})
    assert store.close(10)
    code, out, _ = cli(capsys, "runs", "--run-id", "splits", "--json")
    one = json.loads(out)
    assert code == 0 and one["splits"] == [
        {"split": "test", "points": 1},
        {"split": "train", "points": 5},
        {"split": "val", "points": 3},
    ]
    assert [(m["measurement"], m["points"]) for m in one["measurements"]] == [("Xhyperparams", 1), ("Xmetrics", 9)]
    code, out, _ = cli(capsys, "runs", "--run-id", "splits")
    table = out.split("SPLIT")[1].split()
    assert code == 0 and table == ["POINTS", "test", "1", "train", "5", "val", "3"]


def test_tag_filters_runs_export_replay_and_watch(
    filled: dict[str, Any],
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    influx1: InfluxDB1,
    unique_db: str,
) -> None:
    """--tag KEY=VALUE (repeatable, all must hold): the points whose tag KEY is VALUE, or the runs
    having such points; a filter that matches nothing is said on stderr."""
    code, out, _ = cli(capsys, "export", "--tag", "window=1")
    assert code == 0 and len(out.splitlines()) == 32  # 1 miner loss, 30 scores, 1 timing
    assert all(json.loads(line)["tags"]["window"] == "1" for line in out.splitlines())
    code, out, _ = cli(capsys, "export", "--run-id", "aaaa", "--tag", "window=1", "--format", "lp")
    assert code == 0 and len(out.splitlines()) == 1 and out.startswith("Mloss,")
    code, out, _ = cli(capsys, "export", "--tag", "window=1", "--tag", "eval_uid=3")
    assert code == 0 and [json.loads(line)["fields"]["final_score"] for line in out.splitlines()] == [33 / 300]
    code, out, err = cli(capsys, "export", "--tag", "window=99")
    assert code == 1 and not out and "no points matched --tag window=99" in err
    code, out, _ = cli(capsys, "runs", "--tag", "eval_uid=3", "--json")
    assert code == 0 and [(r["run_id"], r["points"]) for r in json.loads(out)] == [("bbbb-validator", 302)]
    code, out, err = cli(capsys, "runs", "--tag", "phase=train")
    assert code == 0 and not out and err.strip().startswith("tplr-metrics runs: no runs match --tag phase=train in ")
    code, out, _ = cli(capsys, "runs", "--run-id", "bbbb", "--tag", "window=1", "--json")
    one = json.loads(out)
    assert one["points"] == 31
    assert [(m["measurement"], m["points"]) for m in one["measurements"]] == [("Vtiming", 1), ("Vvalidator_scores", 30)]
    code, out, err = cli(capsys, "export", "--tag", "window")
    assert code == 2 and "'window' is not KEY=VALUE" in err
    code, out, _ = watch_one_poll(
        monkeypatch, capsys, "--run-id", "bbbb", "--tag", "window=2", "--last", "400", "--json"
    )
    assert code == 0 and len(out.splitlines()) == 31
    assert {json.loads(line)["tags"]["window"] for line in out.splitlines()} == {"2"}
    monkeypatch.setenv("INFLUXDB_URL", influx1.url)
    code, out, err = cli(capsys, "replay", "--tag", "window=1", "--api", "v1", "--database", unique_db, "--json")
    assert code == 0, err
    assert json.loads(out)["written"] == 32 and influx1.count("Vvalidator_scores", "final_score", unique_db) == 30


def test_export_and_prune_draw_progress_on_a_terminal_only(
    filled: dict[str, Any], capsys: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Piped stderr (as here): no progress line. TPLR_METRICS_PROGRESS=1 (a terminal, for tests)
    draws it: export counts points, prune runs, each ending in its total."""
    out = str(tmp_path / "all.jsonl")
    monkeypatch.delenv("TPLR_METRICS_PROGRESS", raising=False)
    code, _, err = cli(capsys, "export", "-o", out)
    assert code == 0 and err == f"exported 307 points to {out}\n"
    monkeypatch.setenv("TPLR_METRICS_PROGRESS", "1")
    code, _, err = cli(capsys, "export", "-o", out)
    assert code == 0 and err.startswith("\rexport [") and "] 307/307 points 100.0%" in err
    code, _, err = cli(capsys, "prune", "--keep-runs", "0")
    assert code == 0 and "\rprune [" in err and "] 2/2 runs 100.0%" in err
    monkeypatch.setenv("TPLR_METRICS_PROGRESS", "0")
    code, _, err = cli(capsys, "export", "-o", out)
    assert code == 1 and "export [" not in err  # nothing left to export, and no progress line


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["runs", "--since", "3x"], "'3x' is not a duration"),
        (["runs", "--run-id", "nope"], "no run 'nope'"),
        (["runs", "--limit", "0"], "must be at least 1"),
        (["export", "--format", "xml"], "unknown format 'xml'"),
        (["export", "--run-id", "zzz"], "no run 'zzz'"),
        (["export", "--since", "yesterday"], "neither a duration"),
        (["replay", "--all"], "no InfluxDB server configured"),
        (["replay", "--url", "http://127.0.0.1:1", "--database", "d"], "say what to replay"),
        (["prune"], "say what to prune"),
        (["watch", "--poll-seconds", "-1"], "must be a positive number"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    filled: dict[str, Any], capsys: Any, argv: list[str], needle: str
) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 2, (out, err)
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"tplr-metrics {argv[0]}")


def test_a_corrupt_store_is_named_and_nothing_is_written(isolated_env: Path, capsys: Any) -> None:
    isolated_env.mkdir(parents=True)
    path = isolated_env / "metrics.sqlite"
    path.write_bytes(b"garbage" * 1000)
    for argv in (["runs"], ["export", "--format", "lp"], ["prune", "--keep-runs", "1"], ["watch"]):
        code, _, err = cli(capsys, *argv)
        assert code == 1 and str(path) in err and len(err.strip().splitlines()) == 1, err
    assert path.read_bytes() == b"garbage" * 1000


def test_no_store_yet_is_an_empty_listing(isolated_env: Path, capsys: Any) -> None:
    code, out, _ = cli(capsys, "runs", "--json")
    assert (code, json.loads(out)) == (0, [])
    assert not isolated_env.exists()  # listing never creates the store


def test_export_formats_keep_values_and_types(filled: dict[str, Any], capsys: Any, tmp_path: Path) -> None:
    code, out, _ = cli(capsys, "export", "--run-id", "bbbb-validator", "--measurement", "Vvalidator_scores")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 300
    assert rows[1]["fields"] == {"final_score": 1 / 300, "weight": 1.0, "binary_indicator": 1}
    assert type(rows[1]["fields"]["binary_indicator"]) is int and rows[1]["tags"]["eval_uid"] == "1"

    target = tmp_path / "out.csv"
    code, _, err = cli(
        capsys, "export", "--run-id", "bbbb", "--measurement", "Vtiming", "--format", "csv", "-o", str(target)
    )
    assert code == 0 and "exported 2 points" in err
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    header, first, second = target.read_text().splitlines()
    columns = header.split(",")
    assert columns[:3] == ["time", "time_ns", "measurement"] and columns[-2:] == ["evaluation", "gather"]
    assert first.endswith(",,3.5") and second.endswith(",11.0,2.5")

    code, out, _ = cli(capsys, "export", "--format", "lp", "--since", "1h", "--until", "2099-01-01T00:00:00Z")
    assert code == 0 and len(out.splitlines()) == 307
    assert any(line.startswith("Mloss,") and "step=3i" in line for line in out.splitlines())
    code, out, err = cli(capsys, "export", "--format", "lp", "--until", "2000-01-01")
    assert code == 1 and out == "" and "no points matched --until 2000-01-01T00:00:00" in err  # an empty window


def test_export_csv_cells_bools_missing_fields_quotes_and_times(isolated_env: Path, capsys: Any) -> None:
    """Each cell as csv reads it back: bools as true/false, a field a point lacks empty, a field
    named as a tag prefixed, quotes and commas quoted, times before 1970 and to the microsecond."""
    from tplr_metrics.encoding.points import Point

    points = [
        Point("m", {"k": 'a,"b"', "f": "tag"}, {"f": 1.5, "b": True, "s": "x,y"}, 1_700_000_000_123_456_789),
        Point("m", {}, {"b": False, "n": 2**62}, -1_500_000_001),  # 1969-12-31T23:59:58.499999Z
        Point("m", {"k": "ü"}, {"n": 0}, 999),
        Point("m", {"k": "cr\rin a tag"}, {"s": "crlf\r\nand lf\n"}, 1000),  # a bare \r went out unquoted
        Point("m", {"nul\x00key": "v"}, {"n": 1}, 1001),  # json_each read this key as "nul"
    ]
    with Store(isolated_env / "metrics.sqlite") as store:
        run = store.add_run(RunInfo("csv-run", 1_000_000_000, role="miner"))
        assert store.insert_points(run, points)[0] == 5
    target = isolated_env / "out.csv"
    code, _, _ = cli(capsys, "export", "--run-id", "csv-run", "--format", "csv", "-o", str(target))
    assert code == 0
    header, *rows = list(csv.reader(target.open(newline="")))
    assert header == ["time", "time_ns", "measurement", "f", "k", "nul\x00key", "b", "field_f", "n", "s"]
    assert rows == [
        ["2023-11-14T22:13:20.123456Z", "1700000000123456789", "m", "tag", 'a,"b"', "", "true", "1.5", "", "x,y"],
        ["1969-12-31T23:59:58.499999Z", "-1500000001", "m", "", "", "", "false", "", str(2**62), ""],
        ["1970-01-01T00:00:00.000000Z", "999", "m", "", "ü", "", "", "", "0", ""],
        ["1970-01-01T00:00:00.000001Z", "1000", "m", "", "cr\rin a tag", "", "", "", "", "crlf\r\nand lf\n"],
        ["1970-01-01T00:00:00.000001Z", "1001", "m", "", "", "v", "", "", "1", ""],
    ]
    assert b"\r\n" not in target.read_bytes().replace(b"crlf\r\n", b"")  # rows end in \n


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "lp"])
def test_export_of_a_row_with_malformed_json_is_a_one_line_error(filled: dict[str, Any], capsys: Any, fmt: str) -> None:
    """A row whose fields another program wrote as malformed JSON: exit 1, one line naming the
    file (csv's column pass let the JSON error out as a traceback)."""
    conn = sqlite3.connect(filled["path"])
    with conn:
        conn.execute("UPDATE points SET fields = '{bad' WHERE id = (SELECT max(id) FROM points)")
    conn.close()
    code, out, err = cli(capsys, "export", "--run-id", "bbbb-validator", "--format", fmt, "-o", os.devnull)
    assert code == 1
    assert err.strip().count("\n") == 0 and "malformed JSON" in err and str(filled["path"]) in err


def test_exported_line_protocol_imports_into_influxdb_1(
    filled: dict[str, Any], capsys: Any, influx1: InfluxDB1, unique_db: str
) -> None:
    code, out, _ = cli(capsys, "export", "--run-id", "bbbb-validator", "--format", "lp")
    assert code == 0
    influx1.create_database(unique_db)
    status, body = influx1.write(unique_db, out.encode())
    assert status == 204, body
    assert influx1.count("Vvalidator_scores", "final_score", unique_db) == 300
    assert influx1.count("Vtiming", "gather", unique_db) == 2
    (row,) = influx1.rows("SELECT * FROM Vvalidator_scores WHERE eval_uid = '1' AND \"window\" = '0'", unique_db)
    assert row["binary_indicator"] == 1 and row["final_score"] == 1 / 300 and row["runtime_id"] == "bbbb-validator"


def test_replay_twice_stores_each_point_once(
    filled: dict[str, Any], capsys: Any, influx1: InfluxDB1, unique_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFLUXDB_URL", influx1.url)
    for _ in range(2):
        code, out, err = cli(capsys, "replay", "--all", "--api", "v1", "--database", unique_db, "--json")
        assert code == 0, err
        assert json.loads(out)["written"] == 307 and json.loads(out)["dropped"] == 0
    assert influx1.count("Vvalidator_scores", "final_score", unique_db) == 300
    assert influx1.count("Mloss", "loss", unique_db) == 5
    rows = influx1.rows("SELECT * FROM Mloss", unique_db)
    conn = sqlite3.connect(filled["path"])
    original = set(
        conn.execute("SELECT time_ns, json_extract(fields, '$.loss') FROM points WHERE measurement = 'Mloss'")
    )
    assert {(r["time"], r["loss"]) for r in rows} == original  # original timestamps, tags and values
    assert {r["runtime_id"] for r in rows} == {"aaaa-miner"} and {r["role"] for r in rows} == {"miner"}
    code, out, _ = cli(capsys, "replay", "--run-id", "aaaa", "--api", "v1", "--database", unique_db)
    assert code == 0 and "replayed 5 of 5 points" in out


def test_replay_to_a_dead_server_fails_with_a_reason(filled: dict[str, Any], capsys: Any) -> None:
    code, out, err = cli(
        capsys, "replay", "--run-id", "aaaa", "--url", "http://127.0.0.1:9", "--database", "d", "--retry-seconds", "0.5"
    )
    assert code == 1 and "5 of 5 points not stored" in err, (out, err)


def test_progress_bar_text() -> None:
    assert render_bar(50, 200, 2.0, width=10) == "replay [##........] 50/200 points  25.0% 25/s"


def test_prune_dry_run_keep_runs_older_than_and_never_a_live_run(
    filled: dict[str, Any], capsys: Any, isolated_env: Path
) -> None:
    path = filled["path"]
    with Store(path) as store:
        old = store.add_run(RunInfo("cccc-old", 1_000_000_000, role="evaluator"))  # started in 1970
        store.end_run(old, "ok", 2_000_000_000)
        store.add_run(RunInfo("dddd-live", 1_500_000_000, role="miner"))  # this process: alive
    code, out, _ = cli(capsys, "prune", "--older-than", "30d", "--dry-run", "--json")
    report = json.loads(out)
    assert code == 0 and [r["run_id"] for r in report["runs"]] == ["cccc-old"] and report["dry_run"]
    assert len(json.loads(cli(capsys, "runs", "--json")[1])) == 4  # nothing went

    code, out, _ = cli(capsys, "prune", "--keep-runs", "1", "--json")
    report = json.loads(out)
    assert code == 0 and sorted(r["run_id"] for r in report["runs"]) == ["aaaa-miner", "cccc-old"]
    assert report["points"] == 5 and report["vacuumed"]
    left = [r["run_id"] for r in json.loads(cli(capsys, "runs", "--json")[1])]
    assert left == ["bbbb-validator", "dddd-live"]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM points").fetchone()[0] == 302
    assert conn.execute("SELECT count(*) FROM points WHERE json_extract(tags, '$.role') = 'miner'").fetchone()[0] == 0


def test_watch_prints_points_as_they_land_and_stops_on_ctrl_c(isolated_env: Path) -> None:
    m = MetricsLogger(role="validator", uid=2, runtime_id="eeee-watched", flush_interval=20)
    m.log("before", {}, {"x": 0})
    assert m.flush(10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tplr_metrics.cli", "watch", "--poll-seconds", "0.05", "--json", "--last", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["measurement"] == "before"  # --last 1: the point already there
        for i in range(50):
            m.log("scores", {"eval_uid": i}, {"score": i / 2})
        m.flush(10)
        lines = [json.loads(proc.stdout.readline()) for _ in range(50)]
        assert [line["fields"]["score"] for line in lines] == [i / 2 for i in range(50)]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    m.close(10)
    assert proc.returncode == 0, err
    assert "following run eeee-watched" in err and "Traceback" not in err


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment as on a fresh machine: an empty HOME, no INFLUXDB_* or TPLR_METRICS_*."""
    home = tmp_path / "empty-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUXDB_", "TPLR_METRICS_"))}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    yield env


def tplr(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tplr_metrics.cli", *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


SIMULATE = ("simulate", "--windows", "3", "--window-seconds", "0.05", "--peers", "8", "--seed", "3", "--json")


def test_acceptance_simulate_on_a_fresh_machine_then_export_and_replay(
    fresh_home: dict[str, str], influx1: InfluxDB1, unique_db: str
) -> None:
    if not (REPO / "tplr_metrics" / "commands" / "simulate.py").exists():
        pytest.skip("tplr-metrics simulate is not there yet")
    done = tplr(fresh_home, *SIMULATE)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    store = Path(fresh_home["HOME"]) / ".tplr_metrics" / "metrics.sqlite"
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600 and stat.S_IMODE(os.stat(store.parent).st_mode) == 0o700
    conn = sqlite3.connect(store)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    statuses = dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
    assert statuses == {run["runtime_id"]: "ok" for run in summary["runs"]}
    listed = json.loads(tplr(fresh_home, "runs", "--json").stdout)
    assert {r["run_id"]: r["points"] for r in listed} == {r["runtime_id"]: r["written"] for r in summary["runs"]}

    validator = next(r for r in listed if r["role"] == "validator")
    lp = tplr(fresh_home, "export", "--run-id", validator["run_id"], "--format", "lp")
    assert lp.returncode == 0, lp.stderr
    influx1.create_database(unique_db)
    status, body = influx1.write(unique_db, lp.stdout.encode())
    assert status == 204, body
    landed = influx1.rows("SELECT * FROM /.*/ GROUP BY *", unique_db)
    assert len(landed) == validator["points"] > 0

    replay_db = unique_db + "_replay"
    env = dict(fresh_home, INFLUXDB_URL=influx1.url, INFLUXDB_API="v1", INFLUXDB_DATABASE=replay_db)
    for _ in range(2):
        replayed = tplr(env, "replay", "--all", "--json")
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["written"] == summary["written"]
    assert len(influx1.rows("SELECT * FROM /.*/ GROUP BY *", replay_db)) == summary["written"]


def test_acceptance_two_simulations_into_one_store_lose_nothing(fresh_home: dict[str, str]) -> None:
    if not (REPO / "tplr_metrics" / "commands" / "simulate.py").exists():
        pytest.skip("tplr-metrics simulate is not there yet")
    argv = [sys.executable, "-m", "tplr_metrics.cli", *SIMULATE[:-3], "--seed"]
    procs = [
        subprocess.Popen(
            [*argv, str(seed), "--json"], env=fresh_home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for seed in (1, 2)
    ]
    written: dict[str, int] = {}
    runs_each = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "locked" not in err, err
        summary = json.loads(out)
        assert summary["dropped"] == 0 and summary["rejected"] == 0
        written.update({r["runtime_id"]: r["written"] for r in summary["runs"]})
        runs_each.append(len(summary["runs"]))
    store = Path(fresh_home["HOME"]) / ".tplr_metrics" / "metrics.sqlite"
    conn = sqlite3.connect(store)
    counted = dict(
        conn.execute(
            "SELECT r.run_id, count(p.id) FROM runs r LEFT JOIN points p ON p.run = r.id GROUP BY r.id"
        ).fetchall()
    )
    assert counted == written and len(counted) == sum(runs_each) and sum(counted.values()) > 0
    assert set(dict(conn.execute("SELECT run_id, status FROM runs").fetchall()).values()) == {"ok"}


def test_run_id_takes_the_integer_id_runs_json_shows(
    filled: dict[str, Any], capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = cli(capsys, "runs", "--json")
    miner = next(r for r in json.loads(out) if r["run_id"] == "aaaa-miner")
    run_id = str(miner["id"])
    code, out, err = cli(capsys, "runs", "--run-id", run_id, "--json")
    assert code == 0, err
    assert json.loads(out)["run_id"] == "aaaa-miner"
    code, out, err = cli(capsys, "export", "--run-id", run_id, "--format", "jsonl")
    assert code == 0, err
    assert [json.loads(line)["fields"]["step"] for line in out.splitlines()] == [0, 1, 2, 3, 4]
    code, out, err = cli(capsys, "table", "--run-id", run_id, "--json")
    assert code == 0, err
    code, _, err = cli(capsys, "plot", "--run-id", run_id, "--metrics", "loss.loss", "--out", str(tmp_path / "p.png"))
    assert code == 0, err
    code, out, err = cli(capsys, "compare", run_id, "bbbb", "--no-plot", "--json")
    assert code == 0, err
    assert json.loads(out)["runs"][0]["source"] == "run aaaa-miner"
    code, out, err = watch_one_poll(monkeypatch, capsys, "--run-id", run_id, "--last", "1", "--json")
    assert code == 0 and "following run aaaa-miner" in err, err
    assert json.loads(out)["fields"]["step"] == 4
    code, _, err = cli(capsys, "runs", "--run-id", "999999")
    assert code == 2 and "no run '999999'" in err


def test_a_missing_store_named_by_store_is_an_error(isolated_env: Path, capsys: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "metrics.sqlite"
    code, out, err = cli(capsys, "runs", "--store", str(missing))
    assert code == 1 and out == "", (out, err)
    assert str(missing) in err and len(err.strip().splitlines()) == 1, err
    assert not missing.parent.exists()


def test_a_selection_that_matches_nothing_says_so(
    filled: dict[str, Any], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = cli(capsys, "export", "--measurement", "NOPE")
    assert code == 1 and out == "", (out, err)
    assert "no points matched" in err and "NOPE" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = cli(capsys, "runs", "--role", "nosuch", "--json")
    assert code == 0 and json.loads(out) == []
    assert "no runs match" in err and "nosuch" in err, err
    code, out, err = watch_one_poll(monkeypatch, capsys, "--run-id", "aaaa", "--measurement", "nosuch")
    assert code == 0 and out == ""
    assert "has no measurement 'nosuch'" in err and "Mloss" in err, err
    # A measurement the run has: no such warning, and its points print.
    code, out, err = watch_one_poll(monkeypatch, capsys, "--run-id", "aaaa", "--measurement", "Mloss", "--last", "1")
    assert code == 0 and "Mloss" in out and "has no measurement" not in err


def test_watch_of_a_missing_store_named_by_store_is_an_error(
    isolated_env: Path, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nonexistent" / "x.sqlite"
    code, out, err = watch_one_poll(monkeypatch, capsys, "--store", str(missing))
    assert code == 1 and out == "", (out, err)
    assert f"no local store at {missing}" in err and len(err.strip().splitlines()) == 1, err
    assert not missing.parent.exists()
    # The default store may be missing (a fresh machine): watch waits for it.
    code, out, err = watch_one_poll(monkeypatch, capsys)
    assert code == 0 and "waiting for points in" in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ("runs", "--run-id", ""),
        ("export", "--run-id", ""),
        ("export", "--run-id", " ", "--format", "csv"),
        ("replay", "--run-id", ""),
        ("watch", "--run-id", ""),
        ("plot", "--run-id", ""),
        ("plot", "--run-id", "aaaa", ""),
        ("compare", "", "aaaa"),
        ("table", "--run-id", ""),
        ("delete", ""),
    ],
)
def test_an_empty_run_id_is_one_line_and_exit_code_2(
    filled: dict[str, Any], capsys: Any, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    # Before: runs/export took "" for every run, watch followed the newest, compare read ".".
    code, out, err = watch_one_poll(monkeypatch, capsys, *argv[1:]) if argv[0] == "watch" else cli(capsys, *argv)
    assert code == 2 and out == "", (out, err)
    assert "empty run id" in err and len(err.strip().splitlines()) == 1, err
    with Store(filled["path"], create=False) as store:
        assert len(store.runs()) == 2  # delete "" deleted nothing
