"""Session-wide real servers, and isolation of every test from the user's home and environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from .servers import InfluxDB1, VictoriaMetrics

# The machines are shared and noisy (2 cores): a slow draw is the machine, not the strategy.
# A test's own @settings keeps these unless it names them itself.
settings.register_profile("shared_machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared_machine")


def _server_or_skip(cls: type, **kwargs: object):  # type: ignore[no-untyped-def]
    binary = cls.binary  # type: ignore[attr-defined]
    if shutil.which(binary) is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{binary} is not installed; .ci/run must install it")
        pytest.skip(f"{binary} is not installed (apt-get install {cls.package})")  # type: ignore[attr-defined]
    return cls(**kwargs)


@pytest.fixture(scope="session")
def influx1() -> Iterator[InfluxDB1]:
    server = _server_or_skip(InfluxDB1)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def victoria() -> Iterator[VictoriaMetrics]:
    server = _server_or_skip(VictoriaMetrics)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No INFLUXDB_* or TPLR_METRICS_* from the machine leaks in; a private home per test."""
    for name in list(os.environ):
        if name.startswith(("INFLUXDB_", "TPLR_METRICS_")):
            monkeypatch.delenv(name)
    home = tmp_path / "tplr_home"
    monkeypatch.setenv("TPLR_METRICS_HOME", str(home))
    return home


def mount_tmpfs(mount: Path, size: str) -> Path:
    """A tmpfs of ``size`` at ``mount``: a disk that fills up. Needs root (CI runs as root);
    the test is skipped otherwise (failed on CI)."""
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"cannot mount a tmpfs: {done.stderr.decode()[:200]}")
        pytest.skip(f"cannot mount a tmpfs (not root?): {done.stderr.decode()[:200]}")
    return mount


def unmount(mount: Path) -> None:
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs."""
    mount = mount_tmpfs(tmp_path / "small_disk", "2M")
    try:
        yield mount
    finally:
        unmount(mount)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until about ``leave`` bytes are free; the filler file (remove it to free the disk)."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb", buffering=0) as f:
        f.write(b"\0" * max(0, free - leave))
        if leave == 0:  # to the last byte: statvfs rounds
            try:
                while True:
                    f.write(b"\0" * 512)
            except OSError:
                pass
    return filler


@pytest.fixture
def unique_db() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-seeds",
        type=int,
        default=0,
        help="run the fault matrix over this many seeds instead of the fixed CI seeds",
    )
