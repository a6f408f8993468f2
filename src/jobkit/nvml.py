"""The job's NVIDIA GPUs, read through NVML (``pynvml``, the optional ``gpu`` extra).

Used by the sampler thread only (:mod:`jobkit.sampling`), so ``pynvml`` is
imported there, never when jobkit is::

    visible_devices() ── pynvml imported, nvmlInit once per process (cached, failure too)
        │                └─ no pynvml, no driver, no device: None ("not measured", no ``gpus``)
        ▼  $CUDA_VISIBLE_DEVICES (indices or UUIDs, as the local agent, Slurm and
        │  Kubernetes set it) picks the job's devices, else every device
    Devices.read(pids) ──► one Reading per device: utilization, memory, power

Memory is the job's own where NVML lists its processes (their
``usedGpuMemory`` summed over the sampled pids), else the device's used
memory: in a container NVML's pids are not the job's, and the device's figure
is the honest fallback.  An NVML error while reading is telemetry gone
missing for that device and that sample, never the job's failure.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Device:
    """One GPU the job may use, as NVML names it."""

    index: int
    name: str
    uuid: str
    mem_total_bytes: int
    handle: Any


@dataclass(frozen=True)
class Reading:
    """One device at one instant; ``power_watts`` None where NVML cannot tell."""

    util: float
    mem_bytes: int
    power_watts: float | None


class Devices:
    """The job's devices and the loaded ``pynvml`` module that reads them."""

    def __init__(self, nvml: Any, devices: list[Device]) -> None:
        self.nvml = nvml
        self.devices = devices

    def read(self, pids: Collection[int]) -> list[Reading | None]:
        """One reading per device (None: that device failed this time)."""
        return [self._read(device, pids) for device in self.devices]

    def _read(self, device: Device, pids: Collection[int]) -> Reading | None:
        nvml = self.nvml
        try:
            util = float(nvml.nvmlDeviceGetUtilizationRates(device.handle).gpu)
            mem = _job_memory(nvml, device.handle, pids)
            if mem is None:
                mem = int(nvml.nvmlDeviceGetMemoryInfo(device.handle).used)
        except nvml.NVMLError:
            return None
        try:
            power: float | None = nvml.nvmlDeviceGetPowerUsage(device.handle) / 1000.0
        except nvml.NVMLError:  # NotSupported on many boards: absent, not zero
            power = None
        return Reading(util, mem, power)


def _job_memory(nvml: Any, handle: Any, pids: Collection[int]) -> int | None:
    """Memory the job's processes hold on the device, None if none is listed as theirs."""
    try:
        processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except nvml.NVMLError:
        return None
    used = [p.usedGpuMemory for p in processes if p.pid in pids and p.usedGpuMemory is not None]
    return int(sum(used)) if used else None


def visible_devices(environ: Mapping[str, str] | None = None) -> Devices | None:
    """The job's devices, or None where none can be measured (never an error)."""
    nvml = _nvml()
    if nvml is None:
        return None
    env = os.environ if environ is None else environ
    try:
        count = int(nvml.nvmlDeviceGetCount())
        wanted = _selected(env.get("CUDA_VISIBLE_DEVICES"), count, nvml)
        devices = [_device(nvml, handle) for handle in wanted]
    except nvml.NVMLError:
        return None
    return Devices(nvml, devices) if devices else None


def _selected(variable: str | None, count: int, nvml: Any) -> list[Any]:
    """Handles named by ``CUDA_VISIBLE_DEVICES`` as CUDA reads it: entries up to the
    first that names no device; unset means every device."""
    if variable is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    handles = []
    for entry in (e.strip() for e in variable.split(",")):
        if entry.isdigit() and int(entry) < count:
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)))
        elif entry.startswith(("GPU-", "MIG-")):
            try:
                handles.append(nvml.nvmlDeviceGetHandleByUUID(entry))
            except nvml.NVMLError:
                break
        else:
            break  # "", "-1", a bad index: CUDA sees nothing from here on
    return handles


def _device(nvml: Any, handle: Any) -> Device:
    return Device(
        index=int(nvml.nvmlDeviceGetIndex(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        mem_total_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
        handle=handle,
    )


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@functools.cache
def _nvml() -> Any:
    """``pynvml``, initialised once per process; None if it or the driver is missing.

    Cached because a warm worker runs many jobs: NVML is started once and
    kept, as every NVML tool does, and a machine without it is asked once.
    """
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml
