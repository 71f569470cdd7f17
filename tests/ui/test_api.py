"""The UI's JSON API and access rules, through Starlette's test client (no browser), and the
commands around it: the one-line hint without the extra, and tplr-metrics delete."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import MetricsLogger
from tplr_metrics.cli import main
from tplr_metrics.ui.downsample import lttb_indices

from .conftest import REPO, UiServer, need_ui_extra


def client_for(source: Any, *, token: str | None = None, loopback: bool = True) -> Any:
    need_ui_extra()
    from starlette.testclient import TestClient

    from tplr_metrics.ui.app import create_app

    # The test client's Host is "testserver": a loopback app is given a loopback base_url.
    return TestClient(create_app(source, token=token, loopback=loopback), base_url="http://127.0.0.1:8765")


@pytest.fixture
def store(isolated_env: Path) -> Path:
    logger = MetricsLogger(role="miner", uid=2, runtime_id="long-run", config={"lr": 0.1})
    for step in range(10_000):
        logger.log("train", {"window": step // 100}, {"loss": 1.0 / (1 + step) + (step % 7) * 1e-3, "step": step})
    logger.close(30)
    return isolated_env / "metrics.sqlite"


def store_client(path: Path, **kwargs: Any) -> Any:
    need_ui_extra()
    from tplr_metrics.ui.sources import StoreSource

    return client_for(StoreSource(path), **kwargs)


def test_lttb_keeps_the_ends_and_the_spike() -> None:
    xs = [float(i) for i in range(10_000)]
    ys = [0.0] * 10_000
    ys[4321] = 100.0
    keep = lttb_indices(xs, ys, 2_000)
    assert len(keep) == 2_000 and keep[0] == 0 and keep[-1] == 9_999 and 4321 in keep
    assert keep == sorted(keep)
    assert lttb_indices(xs[:5], ys[:5], 2_000) == [0, 1, 2, 3, 4]


def test_api_runs_metrics_and_a_downsampled_series(store: Path) -> None:
    client = store_client(store)
    runs = client.get("/api/runs").json()
    assert [r["run_id"] for r in runs["runs"]] == ["long-run"] and runs["deletable"] is True
    run = runs["runs"][0]
    assert run["name"] == "miner/2" and run["points"] == 10_000 and run["config"] == {"lr": "0.1"}
    assert run["headline"]["metric"] == "train.loss" and run["status"] == "ok"
    assert client.get("/api/runs/long-run").json()["run_id"] == "long-run"
    names = [m["name"] for m in client.get("/api/runs/long-run/metrics").json()["metrics"]]
    assert names == ["train.loss", "train.step"]
    series = client.get("/api/runs/long-run/series", params={"metric": "train.loss", "smoothing": "gaussian"}).json()
    assert series["total"] == 10_000 and len(series["x"]) == len(series["y"]) == len(series["smoothed"]) == 2_000
    assert series["x"][0] == 0 and series["x"][-1] == 9_999 and series["y"][0] == 1.0
    small = client.get("/api/runs/long-run/series", params={"metric": "train.loss", "max_points": 50, "x": "window"})
    assert len(small.json()["x"]) == 50 and small.json()["x"][-1] == 99
    assert client.get("/api/runs/nope").status_code == 404
    assert client.get("/api/runs/long-run/series", params={"metric": "train.nope"}).status_code == 404
    assert client.get("/api/runs/long-run/series", params={"metric": "train.loss", "x": "epoch"}).status_code == 400
    assert (
        client.get("/api/runs/long-run/series", params={"metric": "train.loss", "max_points": "x"}).status_code == 400
    )
    assert client.get("/static/../data.py").status_code == 404
    assert client.get("/static/app.py").status_code == 404
    page = client.get("/")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_delete_needs_the_same_origin(store: Path) -> None:
    client = store_client(store)
    assert client.delete("/api/runs/long-run").status_code == 403
    assert client.delete("/api/runs/long-run", headers={"Origin": "http://evil.example"}).status_code == 403
    done = client.delete("/api/runs/long-run", headers={"Origin": "http://127.0.0.1:8765"})
    assert done.status_code == 200 and done.json()["deleted_points"] == 10_000
    assert client.get("/api/runs").json()["runs"] == []


@pytest.mark.parametrize(
    "host",
    [
        "attacker.example:8765",
        "127.0.0.1.evil.example:8765",  # passed a prefix check: a rebound page read and deleted
        "127.evil.example",
        "127.0.0.1evil.example",
        "[::1].evil.example",
        "localhost.evil.example:8765",
    ],
)
def test_a_loopback_server_refuses_a_foreign_host(store: Path, host: str) -> None:
    client = store_client(store)
    assert client.get("/api/runs", headers={"Host": host}).status_code == 403
    gone = client.delete("/api/runs/long-run", headers={"Host": host, "Origin": f"http://{host}"})
    assert gone.status_code == 403


@pytest.mark.parametrize(
    "host", ["localhost:8765", "LOCALHOST:8765", "localhost.", "127.0.0.1", "127.1.2.3:8765", "[::1]:8765"]
)
def test_a_loopback_server_answers_a_loopback_host(store: Path, host: str) -> None:
    assert store_client(store).get("/api/runs", headers={"Host": host}).status_code == 200


def test_a_token_is_checked_on_pages_and_api(store: Path) -> None:
    client = store_client(store, token="s3cret", loopback=False)
    for path in ("/", "/api/runs", "/runs/long-run", "/static/run.js", "/api/runs/long-run/series?metric=train.loss"):
        assert client.get(path).status_code == 401, path
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    page = client.get("/?token=s3cret")
    assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
    assert client.get("/api/runs").status_code == 200  # the cookie the URL left
    no_origin = client.delete("/api/runs/long-run")
    assert no_origin.status_code == 403


def test_jsonl_inputs_are_read_only(tmp_path: Path) -> None:
    need_ui_extra()
    from tplr_metrics.ui.sources import JsonlSource

    log = tmp_path / "run-001" / "metrics.jsonl"
    log.parent.mkdir()
    log.write_text(
        "".join(json.dumps({"step": s, "ts": 1e9 + s, "metrics": {"loss": 1 / (1 + s)}}) + "\n" for s in range(30))
    )
    client = client_for(JsonlSource([log]))
    runs = client.get("/api/runs").json()
    assert [r["run_id"] for r in runs["runs"]] == ["run-001"] and runs["deletable"] is False
    assert len(client.get("/api/runs/run-001/series", params={"metric": "train.loss"}).json()["x"]) == 30
    assert client.delete("/api/runs/run-001", headers={"Origin": "http://127.0.0.1:8765"}).status_code == 409


def test_off_loopback_without_a_token_is_refused_over_http(store: Path, ui_server: Callable[..., UiServer]) -> None:
    import urllib.error
    import urllib.request

    server = ui_server("--store", str(store), "--host", "0.0.0.0")
    base = server.base.replace("0.0.0.0", "127.0.0.1")
    token = server.url.split("?token=", 1)[1]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/api/runs", timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(base + "/api/runs", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200 and json.load(answer)["runs"][0]["run_id"] == "long-run"
    given = ui_server("--store", str(store), "--host", "0.0.0.0", env={"TPLR_METRICS_UI_TOKEN": "from-env"})
    assert given.url.endswith("?token=from-env")
    assert server.stop() == 0  # SIGINT, as Ctrl-C: a clean exit
    errors = server.process.stderr.read() if server.process.stderr else ""
    assert "Traceback" not in errors and "stopped" in errors


def test_without_the_ui_extra_one_line_names_the_install(isolated_env: Path) -> None:
    code = "import sys; sys.modules['uvicorn'] = None; from tplr_metrics.cli import main; sys.exit(main(['ui']))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'tplr_metrics[ui]'" in lines[0]


def test_delete_command(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["delete", "long"]) == 2  # a prefix is not enough to delete
    assert main(["delete", "long-run"]) == 0
    assert "10000 point(s)" in capsys.readouterr().out
    assert main(["delete", "long-run"]) == 2


def test_the_headline_query_walks_one_runs_index(store: Path) -> None:
    import sqlite3

    sql = (
        "EXPLAIN QUERY PLAN SELECT id, run, measurement, time_ns, tags, fields FROM points WHERE run = ?"
        " AND EXISTS (SELECT 1 FROM json_each(points.fields) WHERE key LIKE ?) ORDER BY id DESC LIMIT 1"
    )
    with sqlite3.connect(store) as conn:
        plan = " | ".join(row[3] for row in conn.execute(sql, (1, "%loss%")))
    assert "USING INDEX points_run_id" in plan or "USING COVERING INDEX points_run_id" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_a_logged_table_pages_and_searches(isolated_env: Path) -> None:
    from tplr_metrics import open_log_store

    log = open_log_store("local", logger_options={"runtime_id": "tbl-run"})
    log.log_table("samples", [{"prompt": f"p{i}", "score": i} for i in range(5)], step=1)
    log.log_table("samples", [{"prompt": f"line one\nprompt {i}", "score": i / 2} for i in range(120)], step=2)
    log.close(10)
    client = store_client(isolated_env / "metrics.sqlite")
    listed = client.get("/api/runs/tbl-run/tables").json()["tables"]
    assert [(t["name"], t["versions"], t["rows"], t["step"]) for t in listed] == [("samples", 2, 120, 2)]
    page = client.get("/api/runs/tbl-run/tables/samples", params={"offset": 50, "limit": 50}).json()
    assert page["rows_total"] == page["matching"] == 120 and page["version"] == 1
    assert page["columns"] == ["prompt", "score"]
    assert [r["row"] for r in page["rows"]] == list(range(50, 100))
    assert page["rows"][0]["values"] == {"prompt": "line one\nprompt 50", "score": 25.0}
    found = client.get("/api/runs/tbl-run/tables/samples", params={"q": "PROMPT 11"}).json()
    assert found["matching"] == 11 and [r["row"] for r in found["rows"]] == [11, *range(110, 120)]
    first = client.get("/api/runs/tbl-run/tables/samples", params={"version": 0}).json()
    assert first["rows_total"] == 5 and first["step"] == 1
    assert client.get("/api/runs/tbl-run/tables/nope").status_code == 404
    assert client.get("/api/runs/tbl-run/tables/samples", params={"version": 2}).status_code == 400
    assert client.get("/api/runs/tbl-run/tables/samples", params={"limit": 0}).status_code == 400


def test_run_ids_with_a_slash_answer(isolated_env: Path) -> None:
    from tplr_metrics import open_log_store

    # spool=False: the spool names a folder after the runtime_id, which a "/" breaks (a logger bug).
    log = open_log_store("local", logger_options={"runtime_id": "team/exp/tables", "spool": False})
    for step in range(20):
        log.log_metrics({"loss": 1.0 / (1 + step)}, step)
    log.log_table("samples", [{"text": "a"}], step=19)
    log.close(10)
    client = store_client(isolated_env / "metrics.sqlite")
    assert [r["run_id"] for r in client.get("/api/runs").json()["runs"]] == ["team/exp/tables"]
    assert client.get("/api/runs/team%2Fexp%2Ftables").json()["run_id"] == "team/exp/tables"
    assert [m["name"] for m in client.get("/api/runs/team%2Fexp%2Ftables/metrics").json()["metrics"]] == ["train.loss"]
    series = client.get("/api/runs/team%2Fexp%2Ftables/series", params={"metric": "train.loss"}).json()
    assert series["total"] == 20
    assert client.get("/api/runs/team%2Fexp%2Ftables/tables").json()["tables"][0]["name"] == "samples"
    assert client.get("/api/runs/team%2Fexp%2Ftables/tables/samples").json()["rows_total"] == 1
    assert client.get("/runs/team%2Fexp%2Ftables").status_code == 200
    assert client.get("/runs/team%2Fexp%2Ftables/tables/samples").status_code == 200
    assert client.get("/api/runs/team%2Fexp").status_code == 404
    gone = client.delete("/api/runs/team%2Fexp%2Ftables", headers={"Origin": "http://127.0.0.1:8765"})
    assert gone.status_code == 200 and gone.json()["deleted_points"] == 21


def test_the_run_cache_holds_at_most_its_bound(isolated_env: Path) -> None:
    need_ui_extra()
    from tplr_metrics.ui.sources import StoreSource

    for name in ("c-1", "c-2", "c-3"):
        logger = MetricsLogger(role="miner", uid=1, runtime_id=name)
        for step in range(200):
            logger.log("train", {"window": step}, {"loss": float(step)})
        logger.close(10)
    source = StoreSource(isolated_env / "metrics.sqlite", max_cached_points=450)
    for name in ("c-1", "c-2", "c-3"):
        assert source.series(name, "train.loss", "step", 2000, None, 10)["total"] == 200
    assert list(source._cache) == ["c-2", "c-3"]  # 600 points read, c-1 (least recent) dropped
    assert source.series("c-1", "train.loss", "step", 2000, None, 10)["total"] == 200  # read again, whole
    assert list(source._cache) == ["c-3", "c-1"]
    tiny = StoreSource(isolated_env / "metrics.sqlite", max_cached_points=10)
    assert tiny.series("c-2", "train.loss", "step", 2000, None, 10)["total"] == 200  # the last run stays
    assert list(tiny._cache) == ["c-2"]


def test_a_large_run_answers_from_a_preview_then_whole(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run above PREVIEW_ABOVE points is not read in the request: the first answers come from
    a preview (its small measurements whole, an even sample of the large one, the ends kept)
    marked ``partial``, and once the background read is done the answers are the whole run's,
    the same as a source that read it in the request. The metric has no step: the preview
    draws each sample at its place in the whole run, not at its place among the samples."""
    need_ui_extra()
    from tplr_metrics.ui.sources import StoreSource
    from tplr_metrics.ui.sources import store as store_source

    logger = MetricsLogger(role="miner", uid=2, runtime_id="big-run", config={"lr": 0.1})
    for step in range(6_000):
        logger.log("train", {"window": step // 100}, {"loss": 1.0 / (1 + step)})
        if step % 200 == 0:
            logger.log("eval", {}, {"accuracy": step / 6_000, "step": step})
    assert logger.close(30)
    path = isolated_env / "metrics.sqlite"
    whole = client_for(StoreSource(path)).get("/api/runs/big-run/series", params={"metric": "train.loss"}).json()
    assert whole["total"] == 6_000 and whole["partial"] is None

    monkeypatch.setattr(store_source, "PREVIEW_ABOVE", 1_000)
    monkeypatch.setattr(store_source, "PREVIEW_SAMPLES", 100)
    reading = threading.Event()
    read_whole = store_source.StoreSource._read_whole

    def held_back(self: Any, *args: Any) -> None:
        reading.wait(30)  # the preview is answered before the whole read starts
        read_whole(self, *args)

    monkeypatch.setattr(store_source.StoreSource, "_read_whole", held_back)
    client = client_for(StoreSource(path))
    metrics = client.get("/api/runs/big-run/metrics").json()
    assert metrics["partial"] == {"read": 0, "of": 6_030}
    counts = {m["name"]: m["points"] for m in metrics["metrics"]}
    assert counts["eval.accuracy"] == 30  # a small measurement: whole in the preview
    assert 90 <= counts["train.loss"] <= 100
    preview = client.get("/api/runs/big-run/series", params={"metric": "train.loss"}).json()
    assert preview["partial"] is not None and preview["total"] == counts["train.loss"]
    assert preview["x"][0] == 0 and preview["x"][-1] == 5_999  # the ends of the run
    assert all(0 < b - a < 130 for a, b in zip(preview["x"], preview["x"][1:], strict=False))
    reading.set()
    deadline = time.monotonic() + 30
    while client.get("/api/runs/big-run/metrics").json()["partial"] is not None:
        assert time.monotonic() < deadline, "the whole run was never read"
        time.sleep(0.05)
    after = client.get("/api/runs/big-run/series", params={"metric": "train.loss"}).json()
    assert after == whole
    tables = client.get("/api/runs/big-run/tables").json()
    assert tables["partial"] is None and tables["tables"] == []


def test_a_run_growing_faster_than_a_request_reads_is_caught_up_over_polls(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run first read small, then grown by many points between two requests: each request
    reads at most TOP_UP_ROWS of its new points and says ``partial`` with how far it is, the
    polls that follow catch up, and the answer is then the whole run's. (Before: one request
    read every new row under the source's lock: 19.8 s for 157k -> 600k points, and every
    other request, /api/runs included, waited for it.)"""
    need_ui_extra()
    from tplr_metrics.ui.sources import StoreSource
    from tplr_metrics.ui.sources import store as store_source

    monkeypatch.setattr(store_source, "_PAGE", 200)
    monkeypatch.setattr(store_source, "TOP_UP_ROWS", 600)
    logger = MetricsLogger(role="miner", uid=2, runtime_id="growing", flush_interval=50)
    for step in range(100):
        logger.log("train", {}, {"loss": 1.0 / (1 + step), "step": step})
    assert logger.flush(30)
    client = client_for(StoreSource(isolated_env / "metrics.sqlite"))
    first = client.get("/api/runs/growing/series", params={"metric": "train.loss"}).json()
    assert first["total"] == 100 and first["partial"] is None
    for step in range(100, 2_100):
        logger.log("train", {}, {"loss": 1.0 / (1 + step), "step": step})
    assert logger.close(30)
    answers = []
    while True:
        answer = client.get("/api/runs/growing/series", params={"metric": "train.loss"}).json()
        answers.append((answer["total"], answer["partial"]))
        if answer["partial"] is None:
            break
        assert len(answers) < 10, answers
    assert answers[0] == (700, {"read": 700, "of": 2_100}), answers
    assert [total for total, _ in answers] == [700, 1_300, 1_900, 2_100]
    monkeypatch.undo()  # read whole in one request, as before
    whole = client_for(StoreSource(isolated_env / "metrics.sqlite")).get(
        "/api/runs/growing/series", params={"metric": "train.loss"}
    )
    assert answer == whole.json()
