"""The web UI's figures (``tplr-metrics ui``), against a real server process and headless Chromium.

Run: ``python benchmarks/bench_ui.py [--points N] [--runs N] [--out FILE]``. Needs the ``ui``
extra, selenium, chromium and chromedriver. Prints one JSON document (and writes it to
benchmarks/results/ui.json). Figures, not timed tests; each with its target:

* ``series_1m``: ``GET /api/runs/ID/series`` (LTTB to 2,000 points) of a run of ``--points``
  (1,000,000) points in one metric: the first call (answered from the run's preview, while
  the server reads the run whole in the background), how long until the answers are the whole
  run's (``whole_s``), and the median of 5 later ones (the run cached, only new rows read)
  (target < 1 s);
* ``first_chart``: ``driver.get`` of a run page to its first chart drawn (``data-points`` > 0),
  a fresh server each time, for a 10,000-point run with 4 metrics and for the 1M-point run
  (target < 2 s), and for the 1M-point run until the chart is drawn from the whole run
  (``data-partial="false"``);
* ``runs_list``: ``GET /api/runs`` on a store of ``--runs`` (1,000) runs of 50 points each:
  first call and median of 5 (target < 300 ms);
* ``log_to_page``: ``MetricsLogger.log()`` of one point (flush_interval 100 ms, local store) to
  the open run page's chart showing it, median and max of 20 (target < 1 s);
* ``page_weight``: each page's HTML plus the scripts and styles it loads, uncompressed
  (target < 500 KB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tplr_metrics import MetricsLogger  # noqa: E402
from tplr_metrics.encoding.points import Point  # noqa: E402
from tplr_metrics.sinks.base import RunInfo  # noqa: E402
from tplr_metrics.store.database import Store  # noqa: E402

STATIC = REPO / "tplr_metrics" / "ui" / "static"


def fill_run(store: Store, run_id: str, points: int, metrics: tuple[str, ...] = ("loss",)) -> None:
    run = store.add_run(RunInfo(run_id=run_id, started_at_ns=1_700_000_000_000_000_000, role="miner", uid="1"))
    tags = {"runtime_id": run_id, "role": "miner", "uid": "1"}
    batch: list[Point] = []
    for step in range(points):
        fields = {name: 1.0 / (1 + step) + (step % 13) * 1e-4 + i for i, name in enumerate(metrics)}
        batch.append(Point("train", {**tags, "window": str(step // 100)}, fields, 1_700_000_000_000_000_000 + step))
        if len(batch) == 10_000:
            store.insert_points(run, batch)
            batch = []
    if batch:
        store.insert_points(run, batch)
    store.end_run(run, "ok", 1_700_000_000_000_000_000 + points)


@contextmanager
def ui(store: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tplr_metrics.cli", "ui", "--store", str(store), "--port", "0", "--no-browser"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    try:
        yield line.split(" at ", 1)[1].strip().rstrip("/")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timed_get(url: str) -> tuple[float, Any]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        body = json.load(answer)
    return time.perf_counter() - start, body


def first_and_median(url: str, repeat: int = 5) -> dict[str, float]:
    first, _ = timed_get(url)
    later = [timed_get(url)[0] for _ in range(repeat)]
    return {"first_s": round(first, 4), "median_s": round(statistics.median(later), 4)}


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("google-chrome") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


POINTS_JS = (
    "const c = document.querySelector('div.chart[data-points]:not([data-points=\"0\"])');"
    " return c ? parseInt(c.dataset.points, 10) : 0;"
)


def wait_for(driver: Any, condition: Any, timeout: float = 60.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if condition(driver):
            return time.perf_counter() - start
        time.sleep(0.01)
    raise TimeoutError("the page never showed it")


WHOLE_JS = "return document.querySelector('div.chart[data-partial=\"false\"]') !== null;"


def first_chart(driver: Any, store: Path, run_id: str) -> dict[str, float]:
    with ui(store) as base:
        driver.get(base + "/")  # the scripts cached, as on a second visit; the run not yet read
        start = time.perf_counter()
        driver.get(f"{base}/runs/{run_id}")
        wait_for(driver, lambda d: d.execute_script(POINTS_JS) > 0)
        first = time.perf_counter() - start
        wait_for(driver, lambda d: d.execute_script(WHOLE_JS), timeout=300)
        return {"first_s": round(first, 3), "whole_s": round(time.perf_counter() - start, 3)}


def series_first_and_whole(base: str, run_id: str, metric: str) -> dict[str, Any]:
    url = f"{base}/api/runs/{run_id}/series?metric={metric}&max_points=2000"
    start = time.perf_counter()
    first, body = timed_get(url)
    preview_points = body["total"]
    while body.get("partial"):
        time.sleep(0.25)
        body = timed_get(url)[1]
    whole = time.perf_counter() - start
    later = [timed_get(url)[0] for _ in range(5)]
    return {
        "first_s": round(first, 4),
        "first_from_points": preview_points,
        "whole_s": round(whole, 2),
        "median_s": round(statistics.median(later), 4),
    }


def log_to_page(driver: Any, home: Path) -> dict[str, float]:
    os.environ["TPLR_METRICS_HOME"] = str(home)
    logger = MetricsLogger(role="miner", uid=9, runtime_id="live-bench", flush_interval=100)
    for step in range(10):
        logger.log("train", {"window": step}, {"loss": 1.0 / (1 + step)})
    logger.flush(10)
    delays = []
    with ui(home / "metrics.sqlite") as base:
        driver.get(f"{base}/runs/live-bench")
        wait_for(driver, lambda d: d.execute_script(POINTS_JS) >= 10)
        for step in range(10, 30):
            shown = driver.execute_script(POINTS_JS)
            start = time.perf_counter()
            logger.log("train", {"window": step}, {"loss": 1.0 / (1 + step)})
            wait_for(driver, lambda d, n=shown: d.execute_script(POINTS_JS) > n, timeout=10)
            delays.append(time.perf_counter() - start)
            time.sleep(0.137 * (step % 7))  # land at different moments of the page's 1 s poll
    logger.close(10)
    return {"median_s": round(statistics.median(delays), 3), "max_s": round(max(delays), 3), "n": len(delays)}


def page_weight() -> dict[str, int]:
    out = {}
    for page in ("index.html", "run.html", "compare.html", "table.html"):
        html = (STATIC / page).read_text()
        assets = re.findall(r'(?:src|href)="/static/([^"]+)"', html)
        out[page] = len(html.encode()) + sum((STATIC / name).stat().st_size for name in assets)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ui.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tplr-bench-ui-"))
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    try:
        big = work / "big.sqlite"
        with Store(big) as store:
            start = time.perf_counter()
            fill_run(store, "big-run", args.points)
            fill_run(store, "small-run", 10_000, ("loss", "acc", "lr", "grad_norm"))
            results["fill_s"] = round(time.perf_counter() - start, 1)
        with ui(big) as base:
            series = series_first_and_whole(base, "big-run", "train.loss")
        results["series_1m"] = {"points": args.points, **series, "target_s": 1.0}

        many = work / "many.sqlite"
        with Store(many) as store:
            for i in range(args.runs):
                fill_run(store, f"run-{i:04d}", 50)
        with ui(many) as base:
            results["runs_list"] = {"runs": args.runs, **first_and_median(f"{base}/api/runs"), "target_s": 0.3}

        driver = browser()
        try:
            results["first_chart"] = {
                "run_10k_4_metrics_s": first_chart(driver, big, "small-run")["first_s"],
                "run_1m": first_chart(driver, big, "big-run"),
                "target_s": 2.0,
            }
            results["log_to_page"] = {**log_to_page(driver, work / "home"), "target_s": 1.0}
        finally:
            driver.quit()
        weights = page_weight()
        results["page_weight"] = {"bytes": weights, "max_kb": round(max(weights.values()) / 1000, 1), "target_kb": 500}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
