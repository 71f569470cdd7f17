"""The web UI's fixtures: a real ``tplr-metrics ui`` process, and a headless Chromium driven by
Selenium. Without chromium/chromedriver or the ``ui`` extra the browser tests are skipped (and
fail on CI, whose .ci/run installs them)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"{reason}; .ci/run must install it")
    pytest.skip(reason)


def need_ui_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        _missing("the ui extra is not installed (pip install 'tplr_metrics[ui]')")


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Outside the repository: $UI_SCREENSHOT_DIR or a fresh temporary directory."""
    chosen = os.environ.get("UI_SCREENSHOT_DIR")
    path = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="tplr-ui-screenshots-"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots in {path}", file=sys.stderr)
    return path


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    need_ui_extra()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (the dev extra)")
    found = _chromium()
    if found is None:
        _missing("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    assert found is not None
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class UiServer:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url  # as printed: with ?token=... when there is one
        self.base = url.split("?", 1)[0].rstrip("/")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@pytest.fixture
def ui_server() -> Iterator[Callable[..., UiServer]]:
    """Start ``python -m tplr_metrics.cli ui ... --port 0 --no-browser``; stopped after the test."""
    need_ui_extra()
    started: list[UiServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> UiServer:
        process = subprocess.Popen(
            [sys.executable, "-m", "tplr_metrics.cli", "ui", "--port", "0", "--no-browser", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if "http://" not in line:
            process.kill()
            raise AssertionError(f"ui did not start: {line!r} {process.stderr.read() if process.stderr else ''}")
        server = UiServer(process, line.split(" at ", 1)[1].strip())
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
