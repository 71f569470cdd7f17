"""Host metrics for ``with_system_metrics`` / ``with_gpu_metrics``: psutil and pynvml, cached.

log() reads the last sample; a sample older than ``interval`` seconds is refreshed first, so
the cost is paid once per interval, not once per call. Nothing here raises: a machine without
an NVIDIA driver gets no GPU fields, one log line, and a count in stats().
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .stats import PipelineStats

logger = logging.getLogger("tplr_metrics")

_MB = 1024.0 * 1024.0
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class HostMetrics:
    """Cached samples of the host (psutil) and of this process's GPUs (pynvml)."""

    def __init__(self, stats: PipelineStats, interval: float = 2.0) -> None:
        self._stats = stats
        self.interval = interval
        self._lock = threading.Lock()
        self._system: Mapping[str, Any] = _EMPTY
        self._system_at = -1e18
        self._gpu: tuple[Mapping[str, Any], Mapping[str, str]] = (_EMPTY, _EMPTY)
        self._gpu_at = -1e18
        self._nvml_state = "new"  # new | ready | unavailable | closed
        self._nvml_handles: list[tuple[int, Any, str]] = []

    # --- system (psutil) -----------------------------------------------------------------

    def system_fields(self) -> Mapping[str, Any]:
        """Templar's sys_cpu_usage (%), sys_mem_used and sys_mem_total (MB), cached."""
        if time.monotonic() - self._system_at >= self.interval:
            self._refresh_system()
        return self._system

    def _refresh_system(self) -> None:
        with self._lock:
            if time.monotonic() - self._system_at < self.interval:
                return
            try:
                import psutil

                mem = psutil.virtual_memory()
                self._system = MappingProxyType(
                    {
                        "sys_cpu_usage": float(psutil.cpu_percent(interval=None)),
                        "sys_mem_used": mem.used / _MB,
                        "sys_mem_total": mem.total / _MB,
                    }
                )
            except Exception as exc:
                self._stats.sanitize("system_metrics_unavailable")
                self._stats.warn_once("system_metrics", "system metrics unavailable: %s", exc)
            self._system_at = time.monotonic()

    # --- GPU (pynvml, and torch's allocator when the caller already uses it) --------------

    def gpu_sample(self) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        """(fields, tags) for the process's first visible GPU; empty when there is none."""
        if time.monotonic() - self._gpu_at >= self.interval:
            self._refresh_gpu()
        return self._gpu

    def _init_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            visible = _visible_devices(count)
            for logical, physical in enumerate(visible):
                handle = pynvml.nvmlDeviceGetHandleByIndex(physical)
                name = pynvml.nvmlDeviceGetName(handle)
                if isinstance(name, bytes):
                    name = name.decode("utf-8", "replace")
                self._nvml_handles.append((logical, handle, str(name)))
            if not self._nvml_handles:
                raise RuntimeError("no visible NVIDIA GPU")
            self._nvml_state = "ready"
        except Exception as exc:
            self._nvml_state = "unavailable"
            self._stats.sanitize("gpu_unavailable")
            logger.info("GPU metrics unavailable (%s); GPU fields are left out", _short(exc))

    def _refresh_gpu(self) -> None:
        with self._lock:
            if time.monotonic() - self._gpu_at < self.interval:
                return
            self._gpu_at = time.monotonic()
            if self._nvml_state == "new":
                self._init_nvml()
            fields: dict[str, Any] = {}
            tags: dict[str, str] = {}
            if self._nvml_state == "ready":
                logical, handle, name = self._nvml_handles[0]
                fields.update(_nvml_fields(handle))
                tags = {"gpu_id": str(logical), "gpu_name": name}
            fields.update(_torch_allocator_fields())
            if self._nvml_state != "ready" and not fields:
                self._stats.sanitize("gpu_unavailable")
            self._gpu = (MappingProxyType(fields), MappingProxyType(tags))

    def close(self) -> None:
        with self._lock:
            if self._nvml_state == "ready":
                try:
                    import pynvml

                    pynvml.nvmlShutdown()
                except Exception:
                    pass
            self._nvml_state = "closed"


def _visible_devices(count: int) -> list[int]:
    """Physical indices of the GPUs this process may use (CUDA_VISIBLE_DEVICES honoured)."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(range(count))
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part.isdigit():
            break  # UUIDs or an invalid entry: CUDA stops at the first one it cannot use
        if int(part) < count:
            out.append(int(part))
    return out


def _nvml_fields(handle: Any) -> dict[str, Any]:
    import pynvml

    fields: dict[str, Any] = {}
    readers = {
        "gpu_utilization": lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        "gpu_mem_used_mb": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / _MB,
        "gpu_mem_capacity_mb": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).total / _MB,
        "gpu_temperature_c": lambda: float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        "gpu_power_w": lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        "gpu_sm_clock_mhz": lambda: float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
    }
    for name, read in readers.items():
        try:
            fields[name] = read()
        except Exception:
            continue  # not every board reports every figure
    return fields


def _torch_allocator_fields() -> dict[str, Any]:
    """Templar's allocator fields, only when the caller already imported torch and uses CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    try:
        cuda = torch.cuda
        if not cuda.is_initialized():
            return {}
        device = cuda.current_device()
        return {
            "gpu_mem_segments": int(cuda.memory_stats(device).get("segment.all.current", 0)),
            "gpu_mem_allocated_mb": cuda.memory_allocated(device) / _MB,
            "gpu_mem_cached_mb": cuda.memory_reserved(device) / _MB,
            "gpu_mem_total_mb": cuda.max_memory_allocated(device) / _MB,
        }
    except Exception:
        return {}


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
