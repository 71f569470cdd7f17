"""Host and GPU figures for ``with_system_metrics`` / ``with_gpu_metrics``, sampled off the caller's thread.

One sampler thread per :class:`HostMetrics` (a daemon, started by the first use, stopped by
``close()``) reads psutil, NVML and, where the caller already uses it, torch's CUDA allocator every
``interval`` seconds. It publishes ready-made field mappings, one per combination of the two flags,
so ``log()`` neither samples, merges nor locks: :meth:`HostMetrics.cached` picks a tuple entry.
Published mappings are never mutated afterwards (plain dicts typed ``Mapping``: the encoder merges
a dict several times faster than a ``MappingProxyType``).

Nothing here raises into the caller. Without an NVIDIA driver or GPU there are no GPU fields, one
warning, and ``stats()["sanitized"]["gpu_unavailable"] == 1``.

After ``os.fork()`` the child starts over: its first use takes a fresh sample and starts its own
sampler thread. NVML state inherited from a parent that had initialized it is not touched in the
child (a thread may have held NVML's locks at the fork), so such a child has no NVML fields.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config.settings import ConfigurationError
from ..delivery.stats import PipelineStats

logger = logging.getLogger("tplr_metrics")

_MB = 1024.0 * 1024.0

HostFields = Mapping[str, float | int]
HostTags = Mapping[str, str]
#: What ``log()`` attaches to a point: host fields and host tags, either possibly None.
HostView = tuple[HostFields | None, HostTags | None]
_Views = tuple[HostView, HostView, HostView, HostView]  # indexed by system + 2 * gpu

_NO_VIEW: HostView = (None, None)
_NO_VIEWS: _Views = (_NO_VIEW, _NO_VIEW, _NO_VIEW, _NO_VIEW)


@dataclass(frozen=True)
class GpuSample:
    """One GPU this process may use: CUDA's logical index, its tags and its figures."""

    index: int
    tags: HostTags
    fields: HostFields


@dataclass(frozen=True)
class HostSample:
    """One reading of the host: the sys_* fields and every visible GPU."""

    system: HostFields
    gpus: tuple[GpuSample, ...]


_EMPTY_SAMPLE = HostSample({}, ())


class HostMetrics:
    """Cached samples of the host (psutil) and of this process's GPUs (NVML, torch allocator)."""

    def __init__(self, stats: PipelineStats, interval: float = 2.0) -> None:
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not math.isfinite(interval)
            or interval <= 0
        ):
            raise ConfigurationError(f"host_metrics_interval must be a positive number of seconds, not {interval!r}")
        self.interval = float(interval)
        self._stats = stats
        self._system = _SystemReader(stats)
        self._nvml = _Nvml(stats)
        self._latest = _EMPTY_SAMPLE
        self._views: _Views | None = None
        self._device = 0  # CUDA logical index whose figures log() carries: CUDA's default device
        self._poke_gpu = True  # the next GPU point has work to do: ask for NVML, note the device
        self._gpu_wanted = False  # NVML is initialized only once GPU figures are asked for
        self._closed = False
        self._fork_hook_set = False
        self._init_thread_state()

    def _init_thread_state(self) -> None:
        self._lock = threading.Lock()  # sampler state: readers, NVML, publication
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- caller side ---------------------------------------------------------------------

    def cached(self, system: bool, gpu: bool) -> HostView:
        """(fields, tags) for a point logged with these flags, from the last sample."""
        views = self._views
        if views is None:
            views = self._start()
        if gpu and self._poke_gpu:
            views = self._gpu_requested(views)
        if system:
            return views[3] if gpu else views[1]
        return views[2] if gpu else views[0]

    def sample(self) -> HostSample:
        """The last sample with every visible GPU (for the ``system`` measurement)."""
        if self._views is None:
            self._start()
        if not self._gpu_wanted:
            self._gpu_wanted = True
            self._wake.set()
        return self._latest

    def _gpu_requested(self, views: _Views) -> _Views:
        """Once, and once per refresh while torch uses CUDA: runs on the caller's thread because
        torch's current device is per thread (the sampler's would always be device 0)."""
        self._poke_gpu = False
        if not self._gpu_wanted:
            self._gpu_wanted = True
            self._wake.set()  # the sampler starts NVML now rather than at its next tick
        device = _torch_current_device()
        if device is not None and device != self._device:
            self._device = device
            views = _build_views(self._latest, device)
            self._views = views
        return views

    def _start(self) -> _Views:
        """First use: a system sample taken here (so the first point has its fields), then the
        sampler thread, which also initializes NVML (slow on big machines) off the caller."""
        with self._lock:
            if self._views is not None:
                return self._views
            if self._closed:
                return _NO_VIEWS
            views = self._publish(HostSample(self._system.read(), self._latest.gpus))
            self._thread = threading.Thread(target=self._run, name="tplr-metrics-host", daemon=True)
            self._thread.start()
            if not self._fork_hook_set and hasattr(os, "register_at_fork"):
                self._fork_hook_set = True
                os.register_at_fork(after_in_child=_make_fork_hook(weakref.ref(self)))
            return views

    # --- sampler thread ------------------------------------------------------------------

    def _run(self) -> None:
        due = time.monotonic() + self.interval
        while True:
            woken = self._wake.wait(max(0.0, due - time.monotonic()))
            if self._stopping:
                return
            self._wake.clear()
            now = time.monotonic()
            try:
                if now >= due:
                    due = now + self.interval
                    self._refresh(system=True)
                elif woken:
                    self._refresh(system=False)  # GPU figures were just asked for
            except Exception as exc:  # a bug here must not end sampling
                self._stats.warn_once("host_metrics_error", "host metrics sampling failed: %r", exc)

    def _refresh(self, system: bool) -> None:
        with self._lock:
            if self._closed:
                return
            system_fields = self._system.read() if system else self._latest.system
            gpus = self._read_gpus() if self._gpu_wanted else self._latest.gpus
            self._publish(HostSample(system_fields, gpus))

    def _read_gpus(self) -> tuple[GpuSample, ...]:
        cuda = _torch_cuda()
        if cuda is not None:
            self._poke_gpu = True  # let the caller's thread note its current device again
        return _gpu_samples(self._nvml.read(), cuda)

    def _publish(self, sample: HostSample) -> _Views:
        self._latest = sample
        views = _build_views(sample, self._device)
        self._views = views
        return views

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def nvml_state(self) -> str:
        """new, ready, unavailable, forked or closed."""
        return self._nvml.state

    def close(self) -> None:
        """Stop the sampler and shut NVML down; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        with self._lock:
            self._nvml.shutdown()

    def _after_fork_in_child(self) -> None:
        self._init_thread_state()
        if not self._closed:
            self._views = None  # the child's first use samples afresh and starts its own thread
        self._poke_gpu = True
        self._system.after_fork()
        self._nvml.after_fork()


def _make_fork_hook(ref: weakref.ref[HostMetrics]) -> Callable[[], None]:
    def hook() -> None:
        host = ref()
        if host is not None:
            host._after_fork_in_child()

    return hook


def _build_views(sample: HostSample, device: int) -> _Views:
    """The four (fields, tags) answers, merged once here instead of in every log()."""
    system = sample.system or None
    gpu = next((g for g in sample.gpus if g.index == device), None)
    gpu_fields = gpu.fields if gpu is not None and gpu.fields else None
    gpu_tags = gpu.tags if gpu is not None and gpu_fields is not None else None
    both = {**system, **gpu_fields} if system and gpu_fields else (system or gpu_fields)
    return (_NO_VIEW, (system, None), (gpu_fields, gpu_tags), (both, gpu_tags))


# --- psutil ------------------------------------------------------------------------------


class _SystemReader:
    """The sys_* fields. CPU usage and byte rates are differences between two reads."""

    def __init__(self, stats: PipelineStats) -> None:
        self._stats = stats
        self._psutil: Any = None
        self._process: Any = None
        self._cpu_prev = (0.0, 0.0)  # busy and total CPU seconds; zeros make the first figure "since boot"
        self._cpu_usage = 0.0
        self._io_prev: tuple[float, dict[str, float]] | None = None
        self._failed: set[str] = set()

    def read(self) -> dict[str, float | int]:
        fields: dict[str, float | int] = {}
        try:
            if self._psutil is None:
                import psutil

                self._psutil = psutil
        except Exception as exc:
            self._fail("psutil", exc)
            return fields
        readers: tuple[tuple[str, Callable[[Any, dict[str, float | int]], None]], ...] = (
            ("cpu", self._read_cpu),
            ("memory", self._read_memory),
            ("process", self._read_process),
            ("load", self._read_load),
            ("io", self._read_io),
        )
        for name, reader in readers:
            try:
                reader(self._psutil, fields)
            except Exception as exc:  # one missing figure must not cost the others
                self._fail(name, exc)
        return fields

    def _fail(self, what: str, exc: BaseException) -> None:
        if what in self._failed:
            return
        self._failed.add(what)
        self._stats.sanitize("system_metrics_unavailable")
        logger.warning("system metrics (%s) unavailable: %s; those fields are left out", what, _short(exc))

    def _read_cpu(self, psutil: Any, fields: dict[str, float | int]) -> None:
        times = psutil.cpu_times()
        # psutil's own definition: guest time is already counted in user/nice; iowait is idle.
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        busy = total - times.idle - getattr(times, "iowait", 0.0)
        prev_busy, prev_total = self._cpu_prev
        if total > prev_total:
            self._cpu_usage = min(100.0, max(0.0, 100.0 * (busy - prev_busy) / (total - prev_total)))
            self._cpu_prev = (busy, total)
        fields["sys_cpu_usage"] = self._cpu_usage
        fields["sys_cpu_count"] = int(psutil.cpu_count() or 0)

    def _read_memory(self, psutil: Any, fields: dict[str, float | int]) -> None:
        mem = psutil.virtual_memory()
        fields["sys_mem_used"] = mem.used / _MB
        fields["sys_mem_total"] = mem.total / _MB

    def _read_process(self, psutil: Any, fields: dict[str, float | int]) -> None:
        if self._process is None:
            self._process = psutil.Process()
        fields["sys_proc_rss_mb"] = self._process.memory_info().rss / _MB

    def _read_load(self, psutil: Any, fields: dict[str, float | int]) -> None:
        one, five, fifteen = psutil.getloadavg()
        fields["sys_load_1m"] = float(one)
        fields["sys_load_5m"] = float(five)
        fields["sys_load_15m"] = float(fifteen)

    def _read_io(self, psutil: Any, fields: dict[str, float | int]) -> None:
        now = time.monotonic()
        counts: dict[str, float] = {}
        disk = psutil.disk_io_counters()
        if disk is not None:  # None where the kernel exposes no disk (some containers)
            counts["sys_disk_read_bps"] = float(disk.read_bytes)
            counts["sys_disk_write_bps"] = float(disk.write_bytes)
        net = psutil.net_io_counters()
        if net is not None:
            counts["sys_net_recv_bps"] = float(net.bytes_recv)
            counts["sys_net_sent_bps"] = float(net.bytes_sent)
        prev = self._io_prev
        self._io_prev = (now, counts)
        if prev is None or now <= prev[0]:
            return  # a rate needs two reads: the first sample has none
        elapsed = now - prev[0]
        for key, value in counts.items():
            if key in prev[1]:
                fields[key] = max(0.0, (value - prev[1][key]) / elapsed)

    def after_fork(self) -> None:
        self._process = None  # psutil.Process() of the parent


# --- NVML --------------------------------------------------------------------------------


class _Nvml:
    """NVML for the GPUs this process may use: initialized once, shut down at close."""

    def __init__(self, stats: PipelineStats) -> None:
        self._stats = stats
        self.state = "new"  # new | ready | unavailable | forked | closed
        self._lib: Any = None
        self._devices: list[tuple[int, Any, str]] = []  # (CUDA logical index, handle, name)
        self._unsupported: set[tuple[int, str]] = set()

    def read(self) -> list[tuple[int, str, dict[str, float | int]]]:
        if self.state == "new":
            self._start()
        if self.state != "ready":
            return []
        return [(index, name, self._fields(index, handle)) for index, handle, name in self._devices]

    def _start(self) -> None:
        try:
            nvml = _import_pynvml()
            nvml.nvmlInit()
        except Exception as exc:
            self._unavailable(_short(exc))
            return
        self._lib = nvml
        self.state = "ready"
        try:
            self._devices = _visible_handles(nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
        except Exception as exc:
            self.shutdown()
            self._unavailable(_short(exc))
            return
        if not self._devices:
            self.shutdown()
            spec = os.environ.get("CUDA_VISIBLE_DEVICES")
            self._unavailable(f"no GPU visible to this process (CUDA_VISIBLE_DEVICES={spec!r})")
            return
        logger.debug("NVML sees %s", [(i, name) for i, _, name in self._devices])

    def _unavailable(self, reason: str) -> None:
        self.state = "unavailable"
        self._stats.sanitize("gpu_unavailable")
        # Expected on CPU-only machines: one informational line, not a warning.
        logger.info(
            "GPU metrics unavailable (%s); points get no NVML GPU fields "
            "(counted in stats()['sanitized']['gpu_unavailable'])",
            reason,
        )

    def _fields(self, index: int, handle: Any) -> dict[str, float | int]:
        nvml = self._lib
        not_supported = getattr(nvml, "NVMLError_NotSupported", ())
        fields: dict[str, float | int] = {}
        for name, read in _NVML_READERS:
            if (index, name) in self._unsupported:
                continue
            try:
                fields.update(read(nvml, handle))
            except not_supported:
                self._unsupported.add((index, name))  # not every board reports every figure
            except Exception:
                continue  # e.g. a GPU fallen off the bus: left out this time
        return fields

    def shutdown(self) -> None:
        if self.state == "ready":
            try:
                self._lib.nvmlShutdown()
            except Exception:
                pass
        if self.state in ("new", "ready"):
            self.state = "closed"
        self._devices = []

    def after_fork(self) -> None:
        if self.state == "ready":
            self.state = "forked"
            self._devices = []


def _import_pynvml() -> Any:
    module = sys.modules.get("pynvml")
    if module is not None:
        return module
    with warnings.catch_warnings():
        # The "pynvml" distribution is a shim that warns on import; the module is nvidia-ml-py's.
        warnings.simplefilter("ignore", FutureWarning)
        import pynvml
    return pynvml


def _visible_handles(nvml: Any, spec: str | None) -> list[tuple[int, Any, str]]:
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    uuids = [_text(nvml.nvmlDeviceGetUUID(h)) if spec else "" for h in handles]
    return [
        (logical, handles[physical], _text(nvml.nvmlDeviceGetName(handles[physical])))
        for logical, physical in enumerate(visible_devices(spec, uuids))
    ]


def visible_devices(spec: str | None, uuids: Sequence[str]) -> list[int]:
    """NVML indices of the GPUs CUDA lets this process use, in CUDA's logical order.

    ``spec`` is CUDA_VISIBLE_DEVICES: indices or GPU UUIDs (or unique UUID prefixes). Like CUDA,
    the list ends at the first entry that names no device (``-1``, a MIG id, a typo) or repeats one.
    """
    if spec is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if part.isdigit():
            index = int(part)
            if index >= len(uuids):
                break
        else:
            matches = [i for i, uuid in enumerate(uuids) if part and uuid.startswith(part)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in out:
            break
        out.append(index)
    return out


def _nvml_utilization(nvml: Any, handle: Any) -> dict[str, float | int]:
    return {"gpu_utilization": float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)}


def _nvml_memory(nvml: Any, handle: Any) -> dict[str, float | int]:
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    return {"gpu_mem_used_mb": mem.used / _MB, "gpu_mem_capacity_mb": mem.total / _MB}


def _nvml_temperature(nvml: Any, handle: Any) -> dict[str, float | int]:
    return {"gpu_temperature_c": float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))}


def _nvml_power(nvml: Any, handle: Any) -> dict[str, float | int]:
    return {"gpu_power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0}  # milliwatts


def _nvml_sm_clock(nvml: Any, handle: Any) -> dict[str, float | int]:
    return {"gpu_sm_clock_mhz": float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))}


_NVML_READERS: tuple[tuple[str, Callable[[Any, Any], dict[str, float | int]]], ...] = (
    ("utilization", _nvml_utilization),
    ("memory", _nvml_memory),
    ("temperature", _nvml_temperature),
    ("power", _nvml_power),
    ("sm_clock", _nvml_sm_clock),
)


# --- torch (only when the caller imported it and initialized CUDA) -------------------------


def _torch_cuda() -> Any:
    """torch.cuda where the caller imported torch and CUDA is initialized; never imports torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        cuda = torch.cuda
        return cuda if cuda.is_initialized() else None
    except Exception:  # torch half-imported, or a CUDA-less build
        return None


def _torch_current_device() -> int | None:
    cuda = _torch_cuda()
    if cuda is None:
        return None
    try:
        return int(cuda.current_device())
    except Exception:
        return None


def _allocator_fields(cuda: Any, index: int) -> dict[str, float | int]:
    """Templar's fields, same names and meanings (gpu_mem_total_mb is the allocator's peak)."""
    try:
        return {
            "gpu_mem_segments": int(cuda.memory_stats(index).get("segment.all.current", 0)),
            "gpu_mem_allocated_mb": cuda.memory_allocated(index) / _MB,
            "gpu_mem_cached_mb": cuda.memory_reserved(index) / _MB,
            "gpu_mem_total_mb": cuda.max_memory_allocated(index) / _MB,
        }
    except Exception:
        return {}


def _gpu_samples(nvml_devices: list[tuple[int, str, dict[str, float | int]]], cuda: Any) -> tuple[GpuSample, ...]:
    devices = {index: (name, fields) for index, name, fields in nvml_devices}
    if cuda is not None:
        try:
            count = int(cuda.device_count())
        except Exception:
            count = 0
        for index in range(count):
            allocator = _allocator_fields(cuda, index)
            if not allocator:
                continue
            if index not in devices:  # CUDA works but NVML does not (no libnvidia-ml in a container)
                devices[index] = (_torch_device_name(cuda, index), {})
            devices[index][1].update(allocator)
    return tuple(
        GpuSample(index, {"gpu_id": str(index), "gpu_name": name}, fields)
        for index, (name, fields) in sorted(devices.items())
        if fields
    )


def _torch_device_name(cuda: Any, index: int) -> str:
    try:
        return str(cuda.get_device_name(index))
    except Exception:
        return f"CUDA:{index}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
