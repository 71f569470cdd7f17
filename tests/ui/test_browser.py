"""The web UI in a real headless Chromium: what the pages show of a store filled by real
MetricsLogger runs, live growth while another process logs, compare, delete, and that run
names and tags written as markup stay text."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tplr_metrics import MetricsLogger, open_log_store

from .conftest import REPO, UiServer

pytest.importorskip("selenium", reason="selenium is not installed (the dev extra)")
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

MARKUP = "<img src=x onerror=alert(1)>"


def log_run(
    runtime_id: str, *, role: str = "miner", uid: Any = 1, config: dict[str, Any], steps: int = 200, spool: bool = True
) -> None:
    logger = MetricsLogger(role=role, uid=uid, runtime_id=runtime_id, config=config, spool=spool)
    for step in range(steps):
        logger.log("train", {"window": step // 10}, {"loss": 3.0 / (1 + step * 0.05), "acc": step / steps})
    logger.close(10)


@pytest.fixture
def store(isolated_env: Path) -> Path:
    log_run("run-a", config={"lr": 0.1, "batch": 32})
    log_run("run-b", config={"lr": 0.2, "batch": 32})
    log_run("run-v", role="validator", uid=7, config={"lr": 0.1, "batch": 32}, steps=50)
    return isolated_env / "metrics.sqlite"


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 10.0) -> Any:
    # The pages re-render rows and charts as they poll: an element gone stale is tried again.
    waiting = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return waiting.until(condition)


def rows(driver: Any) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run-id]")


def chart_points(driver: Any, metric: str) -> int:
    found = driver.find_elements(By.CSS_SELECTOR, f'div.chart[data-metric="{metric}"]')
    return int(found[0].get_attribute("data-points")) if found else -1


def assert_no_alert(driver: Any) -> None:
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"an alert opened: {text!r}")


def test_run_list_shows_every_run(
    store: Path, ui_server: Callable[..., UiServer], browser: Any, screenshot_dir: Path
) -> None:
    server = ui_server("--store", str(store))
    browser.get(server.url)
    wait(browser, lambda d: len(rows(d)) == 3)
    by_id = {r.get_attribute("data-run-id"): r for r in rows(browser)}
    assert set(by_id) == {"run-a", "run-b", "run-v"}
    cells = [c.text for c in by_id["run-v"].find_elements(By.TAG_NAME, "td")]
    assert cells[1:6] == ["validator/7", "run-v", "ok", "validator", "7"]
    assert cells[8] == "50" and cells[9].startswith("train.loss = ")
    browser.save_screenshot(str(screenshot_dir / "runs.png"))
    # The role filter and the search leave only what matches.
    browser.find_element(By.CSS_SELECTOR, "#filter-role option[value=validator]").click()
    wait(browser, lambda d: [r.get_attribute("data-run-id") for r in rows(d) if r.is_displayed()] == ["run-v"])
    browser.find_element(By.CSS_SELECTOR, "#filter-role option[value='']").click()
    browser.find_element(By.ID, "filter-text").send_keys("run-b")
    wait(browser, lambda d: [r.get_attribute("data-run-id") for r in rows(d) if r.is_displayed()] == ["run-b"])


def test_run_page_draws_a_chart_per_metric(
    store: Path, ui_server: Callable[..., UiServer], browser: Any, screenshot_dir: Path
) -> None:
    server = ui_server("--store", str(store))
    browser.get(server.base + "/runs/run-a")
    wait(browser, lambda d: chart_points(d, "train.loss") > 0 and chart_points(d, "train.acc") > 0)
    assert chart_points(browser, "train.loss") == 200
    assert browser.find_elements(By.CSS_SELECTOR, 'div.chart[data-metric="train.loss"] canvas')
    config = {
        r.get_attribute("data-config-key"): r.text
        for r in browser.find_elements(By.CSS_SELECTOR, "#config tr[data-config-key]")
    }
    assert config == {"batch": "batch 32", "lr": "lr 0.1"}
    # EMA: the raw curve stays (faint) under the smoothed one: two series besides x.
    browser.find_element(By.CSS_SELECTOR, "#smoothing option[value=ema]").click()
    legend = 'div.chart[data-metric="train.loss"] .u-legend .u-series'
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, legend)) == 3)
    browser.find_element(By.ID, "log-scale").click()
    time.sleep(0.5)
    browser.save_screenshot(str(screenshot_dir / "run-ema-log.png"))
    assert browser.find_element(By.ID, "error").text == ""


LIVE_LOGGER = """
import sys, time
from pathlib import Path
from tplr_metrics import MetricsLogger
stop = Path(sys.argv[1])
logger = MetricsLogger(role="miner", uid=5, runtime_id="live-run", flush_interval=100)
step = 0
deadline = time.monotonic() + 60
while not stop.exists() and time.monotonic() < deadline:
    logger.log("train", {"window": step}, {"loss": 1.0 / (1 + step), "step": step})
    step += 1
    time.sleep(0.05)
logger.close(10)
"""


def test_run_page_grows_while_another_process_logs(
    isolated_env: Path, tmp_path: Path, ui_server: Callable[..., UiServer], browser: Any, screenshot_dir: Path
) -> None:
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", LIVE_LOGGER, str(stop)], cwd=REPO)
    try:
        store = isolated_env / "metrics.sqlite"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (store.exists() and _points_yet(store, "live-run") > 0):
            time.sleep(0.1)
        server = ui_server("--store", str(store))
        browser.get(server.base + "/runs/live-run")
        wait(browser, lambda d: chart_points(d, "train.loss") > 0)
        before = chart_points(browser, "train.loss")
        wait(browser, lambda d: chart_points(d, "train.loss") > before, timeout=3.0)
        assert "live" in browser.find_element(By.ID, "live").text
        browser.save_screenshot(str(screenshot_dir / "run-live.png"))
    finally:
        stop.touch()
        writer.wait(20)
    # The run has ended: the page says so and stops polling.
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-polling") == "stopped", timeout=5.0)
    assert browser.find_element(By.ID, "live").text == ""
    settled = chart_points(browser, "train.loss")
    time.sleep(1.5)
    assert chart_points(browser, "train.loss") == settled


def _points_yet(store: Path, run_id: str) -> int:
    """As _points, for a store the writer may still be creating (the file exists, its tables not yet)."""
    try:
        return _points(store, run_id)
    except sqlite3.OperationalError:
        return 0


def _points(store: Path, run_id: str) -> int:
    with sqlite3.connect(store) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM points WHERE run IN (SELECT id FROM runs WHERE run_id = ?)", (run_id,)
            ).fetchone()[0]
        )


def test_compare_shows_the_one_config_key_that_differs(
    store: Path, ui_server: Callable[..., UiServer], browser: Any, screenshot_dir: Path
) -> None:
    server = ui_server("--store", str(store))
    browser.get(server.base + "/compare?runs=run-a,run-b")
    wait(browser, lambda d: chart_points(d, "train.loss") > 0)
    diff = browser.find_elements(By.CSS_SELECTOR, "table[data-config-diff] tbody tr")
    assert [r.get_attribute("data-config-key") for r in diff] == ["lr"]
    assert [c.text for c in diff[0].find_elements(By.TAG_NAME, "td")] == ["lr", "0.1", "0.2"]
    legend = browser.find_elements(By.CSS_SELECTOR, 'div.chart[data-metric="train.loss"] .u-legend .u-series .u-label')
    labels = [e.text for e in legend][1:]
    assert len(labels) == 2 and all(label.startswith("miner/1") for label in labels) and labels[0] != labels[1]
    browser.save_screenshot(str(screenshot_dir / "compare.png"))
    # A key only one run has shows "missing" for the other.
    browser.get(server.base + "/compare?runs=run-a,run-v")
    wait(browser, lambda d: chart_points(d, "train.loss") > 0)
    assert browser.find_elements(By.CSS_SELECTOR, "table[data-config-diff] tbody tr") == []


def test_delete_removes_the_run_and_its_points(store: Path, ui_server: Callable[..., UiServer], browser: Any) -> None:
    server = ui_server("--store", str(store))
    browser.get(server.url)
    wait(browser, lambda d: len(rows(d)) == 3)
    assert _points(store, "run-b") == 200
    browser.find_element(By.CSS_SELECTOR, 'tr[data-run-id="run-b"] button.delete').click()
    confirm = wait(browser, lambda d: d.switch_to.alert)
    assert "run-b" in confirm.text
    confirm.accept()
    wait(browser, lambda d: sorted(r.get_attribute("data-run-id") for r in rows(d)) == ["run-a", "run-v"])
    assert _points(store, "run-b") == 0
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE run_id = 'run-b'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM points").fetchone()[0] == 250
    browser.refresh()
    wait(browser, lambda d: len(rows(d)) == 2)
    # A deleted run's page says so once and stops polling (it polled its 404s for ever).
    browser.get(f"{server.url}runs/run-b")
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-polling") == "stopped", timeout=5.0)
    assert "run-b" in browser.find_element(By.ID, "error").text


def test_markup_in_names_and_tags_renders_as_text(
    isolated_env: Path, ui_server: Callable[..., UiServer], browser: Any, screenshot_dir: Path
) -> None:
    logger = MetricsLogger(role=MARKUP, uid=MARKUP, runtime_id="xss-run", config={"note": MARKUP, "lr": 0.1})
    for step in range(20):
        logger.log("train", {"window": step, "tag": MARKUP}, {"loss": 1.0 / (1 + step), MARKUP: float(step)})
    logger.close(10)
    log_run("plain-run", config={"lr": 0.2})
    artifacts = open_log_store("local", logger_options={"runtime_id": "xss-run", "role": MARKUP, "uid": MARKUP})
    artifacts.log_artifact(MARKUP, f"/ckpt/{MARKUP}.pt", kind="checkpoint")
    artifacts.close()
    server = ui_server("--store", str(isolated_env / "metrics.sqlite"))
    browser.get(server.url)
    wait(browser, lambda d: len(rows(d)) == 2)
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-run-id="xss-run"]')
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == f"{MARKUP}/{MARKUP}" and cells[4] == MARKUP and cells[5] == MARKUP
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert_no_alert(browser)
    browser.get(server.base + "/runs/xss-run")
    wait(browser, lambda d: chart_points(d, f"train.{MARKUP}") > 0)
    assert browser.find_element(By.ID, "run-name").text == f"{MARKUP}/{MARKUP}"
    config = {
        r.get_attribute("data-config-key"): r.text
        for r in browser.find_elements(By.CSS_SELECTOR, "#config tr[data-config-key]")
    }
    assert config["note"] == f"note {MARKUP}"
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#artifacts tr[data-artifact]"))
    artifact = browser.find_element(By.CSS_SELECTOR, "#artifacts tr[data-artifact]")
    cells = [c.text for c in artifact.find_elements(By.TAG_NAME, "td")]
    assert cells[:3] == [MARKUP, "checkpoint", f"/ckpt/{MARKUP}.pt"]
    tags = {r.get_attribute("data-tag"): r.text for r in browser.find_elements(By.CSS_SELECTOR, "#tags tr[data-tag]")}
    assert tags["role"] == f"role {MARKUP}" and tags["uid"] == f"uid {MARKUP}"
    browser.save_screenshot(str(screenshot_dir / "markup-run.png"))
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert_no_alert(browser)
    browser.get(server.base + "/compare?runs=xss-run,plain-run")
    wait(browser, lambda d: chart_points(d, "train.loss") > 0)
    keys = [
        r.get_attribute("data-config-key")
        for r in browser.find_elements(By.CSS_SELECTOR, "table[data-config-diff] tbody tr")
    ]
    assert keys == ["lr", "note"]
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert_no_alert(browser)


def test_a_token_opens_the_pages_off_loopback(store: Path, ui_server: Callable[..., UiServer], browser: Any) -> None:
    server = ui_server("--store", str(store), "--host", "0.0.0.0")
    assert "?token=" in server.url
    base = server.base.replace("0.0.0.0", "127.0.0.1")
    browser.get(base + "/")
    assert "401" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(server.url.replace("0.0.0.0", "127.0.0.1"))  # the cookie it leaves carries the API calls
    wait(browser, lambda d: len(rows(d)) == 3)
    browser.get(base + "/runs/run-a")
    wait(browser, lambda d: chart_points(d, "train.loss") > 0)
    browser.delete_all_cookies()


def table_rows(driver: Any) -> list[int]:
    return [int(r.get_attribute("data-row")) for r in driver.find_elements(By.CSS_SELECTOR, "#table-view tbody tr")]


def test_a_logged_table_pages_and_narrows_to_a_search(
    isolated_env: Path, ui_server: Callable[..., UiServer], browser: Any, screenshot_dir: Path
) -> None:
    from tplr_metrics import open_log_store

    log = open_log_store("local", logger_options={"runtime_id": "table-run"})
    log.log_metrics({"loss": 1.0}, 0)
    long_text = "word " * 80
    rows = [{"prompt": f"prompt {i}\nsecond line", "completion": long_text + MARKUP, "score": i} for i in range(250)]
    log.log_table("samples", rows, step=3)
    log.close(10)
    server = ui_server("--store", str(isolated_env / "metrics.sqlite"))
    browser.get(server.base + "/runs/table-run")
    link = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, '#tables li[data-table="samples"] a'))
    assert "250 rows" in browser.find_element(By.CSS_SELECTOR, '#tables li[data-table="samples"]').text
    link.click()
    wait(browser, lambda d: table_rows(d) == list(range(50)))
    assert browser.current_url.endswith("/runs/table-run/tables/samples")
    assert "page 1 of 5" in browser.find_element(By.ID, "page-info").text
    browser.find_element(By.ID, "next").click()
    wait(browser, lambda d: table_rows(d) == list(range(50, 100)))  # page 2: the 51st to the 100th row
    assert "rows 51-100 of 250" in browser.find_element(By.ID, "page-info").text
    cells = browser.find_elements(By.CSS_SELECTOR, '#table-view tbody tr[data-row="50"] td')
    assert cells[1].text == "prompt 50\nsecond line"  # the newline kept, as text
    assert cells[1].value_of_css_property("white-space") == "pre-wrap"
    assert cells[2].size["width"] <= 660 and cells[2].size["height"] > 40  # a long cell wraps
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert_no_alert(browser)
    browser.save_screenshot(str(screenshot_dir / "table.png"))
    browser.find_element(By.ID, "search").send_keys("prompt 24")
    wait(browser, lambda d: table_rows(d) == [24, *range(240, 250)])  # back on page 1, only matches
    assert "of 11 matching" in browser.find_element(By.ID, "page-info").text
    assert browser.find_element(By.ID, "next").get_attribute("disabled") is not None
    assert browser.find_element(By.ID, "error").text == ""


def test_a_foreign_jsonl_log_opens_and_grows_while_it_is_written(
    tmp_path: Path, ui_server: Callable[..., UiServer], browser: Any, screenshot_dir: Path
) -> None:
    """Another trainer's layout: {"step", "epoch", "metrics": {"train": {...}}} lines, appended
    by a thread while the page is open."""
    import json
    import threading

    log = tmp_path / "exp-7" / "logs" / "metrics.jsonl"
    log.parent.mkdir(parents=True)

    def line(step: int) -> str:
        record = {"step": step, "epoch": step // 50, "metrics": {"train": {"loss": 3.0 / (1 + step)}}}
        if step % 10 == 0:
            record["metrics"]["val"] = {"loss": 3.5 / (1 + step)}
        return json.dumps(record) + "\n"

    log.write_text("".join(line(s) for s in range(40)))
    stop = threading.Event()

    def append() -> None:
        step = 40
        while not stop.is_set() and step < 2_000:
            with log.open("a") as handle:
                handle.write(line(step))
            step += 1
            stop.wait(0.05)

    server = ui_server("--input", str(log))
    writer = threading.Thread(target=append, daemon=True)
    try:
        browser.get(server.base + "/runs/exp-7")
        wait(browser, lambda d: chart_points(d, "train.loss") >= 40 and chart_points(d, "val.loss") >= 4)
        writer.start()
        before = chart_points(browser, "train.loss")
        wait(browser, lambda d: chart_points(d, "train.loss") > before, timeout=3.0)
        assert "live" in browser.find_element(By.ID, "live").text
        assert browser.find_element(By.ID, "error").text == ""
        browser.save_screenshot(str(screenshot_dir / "jsonl-live.png"))
    finally:
        stop.set()
        writer.join(5)


def test_a_jsonl_sink_directory_opens_with_charts_config_and_tables(
    tmp_path: Path, ui_server: Callable[..., UiServer], browser: Any
) -> None:
    from tplr_metrics import open_log_store

    logs = tmp_path / "run-009" / "logs"
    log = open_log_store("jsonl", log_dir=str(logs))
    log.log_hyperparams({"lr": 3e-4, "optimizer": {"name": "adamw"}})
    for step in range(30):
        log.log_metrics({"loss": 2.0 / (1 + step)}, step)
    log.log_metrics({"loss": 1.5}, 29, split="val")
    log.log_table("samples", [{"prompt": f"p{i}", "score": i} for i in range(3)], step=29)
    log.close(10)
    server = ui_server("--input", str(logs))
    browser.get(server.url)
    wait(browser, lambda d: [r.get_attribute("data-run-id") for r in rows(d)] == ["run-009"])
    browser.get(server.base + "/runs/run-009")
    wait(browser, lambda d: chart_points(d, "train.loss") == 30 and chart_points(d, "val.loss") == 1)
    config = {
        r.get_attribute("data-config-key"): r.text
        for r in browser.find_elements(By.CSS_SELECTOR, "#config tr[data-config-key]")
    }
    assert config["lr"] == "lr 0.0003" and config["optimizer"] == 'optimizer {"name":"adamw"}'
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, '#tables li[data-table="samples"] a')).click()
    wait(browser, lambda d: table_rows(d) == [0, 1, 2])


def test_from_influx_lists_the_runs_and_draws_their_charts(
    isolated_env: Path, influx1: Any, unique_db: str, ui_server: Callable[..., UiServer], browser: Any
) -> None:
    """A real InfluxDB 1.6.7: two logger runs written over v1, read back by runtime_id."""
    import json
    import urllib.error
    import urllib.request

    for run_id, lr in (("influx-a", 0.1), ("influx-b", 0.2)):
        logger = MetricsLogger(
            role="miner", uid=3, runtime_id=run_id, config={"lr": lr}, url=influx1.url, database=unique_db, api="v1"
        )
        for step in range(60):
            logger.log("train", {"window": step // 10, "global_step": step}, {"loss": 2.0 / (1 + step)})
        assert logger.close(20)
    assert influx1.count("train", "loss", unique_db) == 120  # what landed in the server
    env = {"INFLUXDB_URL": influx1.url, "INFLUXDB_DATABASE": unique_db, "INFLUXDB_API": "v1"}
    server = ui_server("--from-influx", env=env)
    with urllib.request.urlopen(server.base + "/api/runs", timeout=10) as answer:
        listed = json.load(answer)
    assert listed["deletable"] is False
    runs = {r["run_id"]: r for r in listed["runs"]}
    assert set(runs) == {"influx-a", "influx-b"}
    assert runs["influx-a"]["points"] == 60 and runs["influx-a"]["name"] == "miner/3"
    assert runs["influx-b"]["config"]["lr"] == "0.2"
    request = urllib.request.Request(
        server.base + "/api/runs/influx-a", method="DELETE", headers={"Origin": server.base}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 409
    browser.get(server.base + "/runs/influx-b")
    wait(browser, lambda d: chart_points(d, "train.loss") > 0)
    assert chart_points(browser, "train.loss") == 60
    browser.get(server.url)
    wait(browser, lambda d: sorted(r.get_attribute("data-run-id") for r in rows(d)) == ["influx-a", "influx-b"])


def test_a_run_id_with_slashes_opens_from_the_list(
    isolated_env: Path, ui_server: Callable[..., UiServer], browser: Any
) -> None:
    log_run("team/exp-1/seed-0", config={"lr": 0.1}, steps=30, spool=False)  # the spool breaks on "/"
    server = ui_server("--store", str(isolated_env / "metrics.sqlite"))
    browser.get(server.url)
    wait(browser, lambda d: [r.get_attribute("data-run-id") for r in rows(d)] == ["team/exp-1/seed-0"])
    browser.find_element(By.CSS_SELECTOR, "a.run-name").click()
    wait(browser, lambda d: chart_points(d, "train.loss") == 30)
    assert browser.current_url.endswith("/runs/team%2Fexp-1%2Fseed-0")
    assert "team/exp-1/seed-0" in browser.find_element(By.ID, "run-meta").text
    assert browser.find_element(By.ID, "error").text == ""
