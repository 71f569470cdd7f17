"""Host metrics: real psutil figures, the no-GPU path here, NVML where a driver exists, and
what lands in a real InfluxDB 1.x when points are logged with both flags."""

from __future__ import annotations

import copy
import functools
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from tplr_metrics import ConfigurationError, MetricsLogger
from tplr_metrics.collect.host import HostMetrics, visible_devices
from tplr_metrics.delivery.stats import PipelineStats

from ..servers import InfluxDB1

MB = 1024.0 * 1024.0
SYSTEM_FIELDS = ("sys_cpu_usage", "sys_mem_used", "sys_mem_total")


@functools.cache
def nvml_gpus() -> int:
    """GPUs NVML sees here (0 without a driver): decides which GPU tests run."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import pynvml
        pynvml.nvmlInit()
    except Exception:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def host_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tplr-metrics-host"]


@pytest.fixture
def host() -> Any:
    h = HostMetrics(PipelineStats(), interval=0.1)
    yield h
    h.close()


def test_system_fields_are_real_and_sane(host: HostMetrics) -> None:
    fields, tags = host.cached(True, False)
    assert tags is None and fields is not None
    total = psutil.virtual_memory().total / MB
    assert 0.0 <= fields["sys_cpu_usage"] <= 100.0
    assert fields["sys_mem_total"] == pytest.approx(total, rel=0.01)
    assert 0.0 < fields["sys_mem_used"] <= fields["sys_mem_total"]
    assert fields["sys_cpu_count"] == psutil.cpu_count()
    assert 1.0 < fields["sys_proc_rss_mb"] < total
    for key in ("sys_load_1m", "sys_load_5m", "sys_load_15m"):
        assert 0.0 <= fields[key] < 1000.0
    # Byte rates need two reads: they appear with the sampler's first refresh.
    assert wait_for(lambda: "sys_net_recv_bps" in (host.cached(True, False)[0] or {}))
    fields = host.cached(True, False)[0] or {}
    for key in ("sys_disk_read_bps", "sys_disk_write_bps", "sys_net_recv_bps", "sys_net_sent_bps"):
        if key.startswith("sys_disk") and psutil.disk_io_counters() is None:
            continue
        assert 0.0 <= fields[key] < 1e11, key


def test_the_sampler_refreshes_off_the_callers_thread_and_stops_at_close() -> None:
    host = HostMetrics(PipelineStats(), interval=60.0)
    first = host.cached(True, False)[0]
    assert host.cached(True, False)[0] is first  # a warm read is the cached mapping, nothing sampled
    assert len(host_threads()) == 1
    host.close()
    assert not host_threads()

    host = HostMetrics(PipelineStats(), interval=0.1)
    first = host.cached(True, False)[0]
    assert wait_for(lambda: host.cached(True, False)[0] is not first, timeout=3)
    host.close()
    assert not host_threads()
    assert host.cached(True, True) is not None  # after close: the last sample, no error


def test_no_thread_and_no_sampling_until_first_use() -> None:
    host = HostMetrics(PipelineStats(), interval=0.1)
    assert not host_threads()
    assert host.nvml_state == "new"
    host.close()
    assert host.cached(True, True) == (None, None)  # closed before any use: nothing, no thread
    assert not host_threads()


def test_interval_must_be_a_positive_number() -> None:
    for bad in (0, -1, float("nan"), True, "2"):
        with pytest.raises(ConfigurationError):
            HostMetrics(PipelineStats(), interval=bad)  # type: ignore[arg-type]


def test_no_gpu_here_nothing_raises_one_log_line_counted(host: HostMetrics, caplog: pytest.LogCaptureFixture) -> None:
    if nvml_gpus():
        pytest.skip("this machine has an NVIDIA GPU; the no-GPU path runs where there is none")
    caplog.set_level(logging.INFO, logger="tplr_metrics")
    assert host.cached(False, True) == (None, None)
    assert wait_for(lambda: host.nvml_state == "unavailable")
    time.sleep(0.35)  # several refreshes: still one line, one count
    fields, tags = host.cached(True, True)
    assert tags is None and fields is not None
    assert not [k for k in fields if k.startswith("gpu_")]
    assert host.cached(False, True) == (None, None)
    lines = [r for r in caplog.records if "GPU metrics unavailable" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert host._stats.snapshot(0)["sanitized"] == {"gpu_unavailable": 1}


def test_nvml_figures_where_a_driver_is_present(host: HostMetrics) -> None:
    if not nvml_gpus():
        pytest.skip("no NVIDIA driver or GPU on this machine (NVML cannot initialize)")
    host.cached(False, True)
    assert wait_for(lambda: host.nvml_state == "ready" and host.cached(False, True)[0] is not None)
    fields, tags = host.cached(False, True)
    assert fields is not None and tags is not None
    assert tags["gpu_id"] == "0" and tags["gpu_name"]
    assert 0.0 <= fields["gpu_utilization"] <= 100.0
    assert 0.0 <= fields["gpu_mem_used_mb"] <= fields["gpu_mem_capacity_mb"]
    assert 1000.0 < fields["gpu_mem_capacity_mb"] < 1e7
    for key, low, high in (("gpu_temperature_c", 0, 130), ("gpu_power_w", 0, 2000), ("gpu_sm_clock_mhz", 0, 5000)):
        if key in fields:  # boards may not report every figure
            assert low <= fields[key] <= high, key
    sample = host.sample()
    assert [g.tags["gpu_id"] for g in sample.gpus] == [str(i) for i in range(len(sample.gpus))]
    host.close()
    assert host.nvml_state == "closed"


def test_cuda_visible_devices_as_cuda_reads_it() -> None:
    uuids = ["GPU-aaaa-1", "GPU-bbbb-2", "GPU-cccc-3", "GPU-abcd-4"]
    assert visible_devices(None, uuids) == [0, 1, 2, 3]
    assert visible_devices("2,0", uuids) == [2, 0]
    assert visible_devices("", uuids) == []
    assert visible_devices("-1", uuids) == []
    assert visible_devices("1,7,2", uuids) == [1]  # CUDA stops at the first invalid entry
    assert visible_devices("1,1", uuids) == [1]
    assert visible_devices("GPU-bbbb-2, 3", uuids) == [1, 3]
    assert visible_devices("GPU-c,GPU-a", uuids) == [2]  # "GPU-a" is ambiguous
    assert visible_devices("MIG-xyz", uuids) == []


class FakeCuda:
    """torch.cuda's surface that host.py reads, as the caller's torch would present it."""

    def __init__(self, device: int) -> None:
        self.device = device
        self.current_device_threads: set[str] = set()

    def is_initialized(self) -> bool:
        return True

    def current_device(self) -> int:
        self.current_device_threads.add(threading.current_thread().name)
        return self.device

    def device_count(self) -> int:
        return 2

    def memory_stats(self, index: int) -> dict[str, int]:
        return {"segment.all.current": 10 + index}

    def memory_allocated(self, index: int) -> int:
        return int((index + 1) * 100 * MB)

    def memory_reserved(self, index: int) -> int:
        return int((index + 1) * 200 * MB)

    def max_memory_allocated(self, index: int) -> int:
        return int((index + 1) * 150 * MB)

    def get_device_name(self, index: int) -> str:
        return "Test GPU"


def test_templar_allocator_fields_where_the_caller_uses_torch_cuda(
    host: HostMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    if nvml_gpus():
        pytest.skip("a real driver: NVML names the devices; this checks the CUDA-without-NVML path")
    cuda = FakeCuda(device=1)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    host.cached(True, True)
    assert wait_for(lambda: host.cached(True, True)[1] is not None)
    fields, tags = host.cached(True, True)
    assert tags == {"gpu_id": "1", "gpu_name": "Test GPU"}  # the caller's current device
    assert fields is not None
    assert fields["gpu_mem_segments"] == 11
    assert fields["gpu_mem_allocated_mb"] == pytest.approx(200.0)
    assert fields["gpu_mem_cached_mb"] == pytest.approx(400.0)
    assert fields["gpu_mem_total_mb"] == pytest.approx(300.0)
    assert "sys_cpu_usage" in fields
    # torch's current device is per thread: it is asked on the logging thread, never the sampler's
    assert cuda.current_device_threads == {threading.current_thread().name}
    assert [g.tags["gpu_id"] for g in host.sample().gpus] == ["0", "1"]


def test_torch_is_never_imported(host: HostMetrics, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    class Recorder:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name.split(".")[0] == "torch":
                attempts.append(name)
            return None

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Recorder(), *sys.meta_path])
    host.cached(True, True)
    time.sleep(0.3)
    host.sample()
    assert attempts == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_samples_afresh_with_its_own_thread(host: HostMetrics) -> None:
    parent_fields = host.cached(True, False)[0]
    parent_state = host.nvml_state
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        code = 1
        try:
            fields = host.cached(True, False)[0]
            ok = (
                fields is not None
                and fields is not parent_fields
                and fields["sys_mem_total"] > 0
                and len(host_threads()) == 1
                and host.nvml_state == ("forked" if parent_state == "ready" else parent_state)
            )
            host.close()
            code = 0 if ok and not host_threads() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert host.cached(True, False)[0] is not None  # the parent goes on as before


def test_50_points_with_both_flags_land_with_sane_system_fields(influx1: InfluxDB1, unique_db: str) -> None:
    m = MetricsLogger(url=influx1.url, api="v1", database=unique_db, flush_interval=100, host_metrics_interval=0.2)
    sent: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(50):
        tags = {"eval_uid": str(i), "window": 7}
        fields = {"l2_norm": i * 0.5, "max_steps_behind": i}
        sent.append((tags, fields))
        m.log("validator_sync_score", tags, fields, with_system_metrics=True, with_gpu_metrics=True)
        if i % 10 == 9:
            time.sleep(0.1)  # across a few refreshes of the sample
    originals = copy.deepcopy(sent)
    assert m.close(timeout=30)
    assert sent == originals  # the caller's dicts are untouched

    rows = influx1.rows(f"SELECT * FROM \"validator_sync_score\" WHERE runtime_id = '{m.runtime_id}'", unique_db)
    assert len(rows) == 50
    total = psutil.virtual_memory().total / MB
    for row in rows:
        assert 0.0 <= row["sys_cpu_usage"] <= 100.0
        assert row["sys_mem_total"] == pytest.approx(total, rel=0.01)
        assert 0.0 < row["sys_mem_used"] <= row["sys_mem_total"]
        assert row["sys_cpu_count"] == psutil.cpu_count()
        assert row["l2_norm"] == pytest.approx(int(row["eval_uid"]) * 0.5)
        if not nvml_gpus():
            assert row.get("gpu_id") is None and row.get("gpu_name") is None
            assert not [k for k, v in row.items() if k.startswith("gpu_") and v is not None]
        else:
            assert row["gpu_id"] == "0" and row["gpu_name"] and row["gpu_mem_capacity_mb"] > 0
    stats = m.stats()
    assert stats["written"] == 50 and stats["dropped_total"] == 0 and stats["rejected_total"] == 0
    if not nvml_gpus():
        assert stats["sanitized"].get("gpu_unavailable") == 1
