"""What a job used, figured from its probes: the summary and the series.

Kept apart from the sampling thread (:mod:`jobkit.sampling`), which only
takes the probes: the figures are plain arithmetic over them, checked
against a real process without a thread, and their keys are
:mod:`jobkit.usage`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from jobkit.usage import MAX_POINTS

__all__ = ["Ended", "Probe", "Tally"]


@dataclass(frozen=True)
class Probe:
    """The job's process tree at one instant."""

    t: float
    """Seconds since the sampler started."""
    cpu: float
    """CPU seconds of the tree since the sampler started (user + system)."""
    rss: int | None
    """Resident bytes of the tree; None where it could not be read."""
    gpus: list[Any] = field(default_factory=list)
    """One :class:`jobkit.nvml.Reading` (or None) per device of the job."""


@dataclass
class _Gpu:
    index: int
    name: str
    uuid: str
    mem_total: int
    util: list[float | None] = field(default_factory=list)
    mem: list[int | None] = field(default_factory=list)
    power: list[float | None] = field(default_factory=list)
    util_sum: float = 0.0
    util_n: int = 0
    util_max: float = 0.0
    mem_last: int = 0
    mem_peak: int = 0
    power_sum: float = 0.0
    power_n: int = 0
    power_max: float = 0.0


class Tally:
    """The summary and the series, from probes added in time order.

    Kept apart from the thread so the figures can be checked against a real
    process without one.  The summary keys are :mod:`jobkit.usage`'s.
    """

    def __init__(
        self, started_at: float, devices: list[Any] | None = None, *, shared: bool = False
    ) -> None:
        self.started_at = started_at
        self.shared = shared
        """The job holds a fraction of its GPUs: their figures include other jobs'."""
        self.t: list[float] = []
        self.cpu_util: list[float] = []
        self.rss: list[int | None] = []
        self.gpus = [
            _Gpu(d.index, d.name, d.uuid, d.mem_total_bytes) for d in devices or ()
        ] or None
        self.last_t = 0.0
        self.cpu = 0.0
        self.max_cpu_util = 0.0
        self.rss_sum = 0
        self.rss_n = 0
        self.peak_rss = 0
        self.samples = 0
        self.thinned = 0
        """How many times the series was halved: the sampler's interval doubles as often."""

    def add(self, probe: Probe) -> None:
        cpu = max(probe.cpu, self.cpu)  # a child caught between exit and reaping reads low
        span = probe.t - self.last_t
        util = (cpu - self.cpu) / span if span > 0 else 0.0
        if span >= 0.05:  # shorter spans are clock-tick noise, not a utilization
            self.max_cpu_util = max(self.max_cpu_util, util)
        self.cpu, self.last_t = cpu, probe.t
        self.samples += 1
        if probe.rss is not None:
            self.rss_sum += probe.rss
            self.rss_n += 1
            self.peak_rss = max(self.peak_rss, probe.rss)
        self.t.append(round(probe.t, 3))
        self.cpu_util.append(round(util, 3))
        self.rss.append(probe.rss)
        gpus = self.gpus or []
        readings = [*probe.gpus, *[None] * (len(gpus) - len(probe.gpus))]  # one per t, always
        for gpu, reading in zip(gpus, readings, strict=False):
            gpu.util.append(None if reading is None else reading.util)
            gpu.mem.append(None if reading is None else reading.mem_bytes)
            gpu.power.append(None if reading is None else reading.power_watts)
            if reading is None:
                continue
            gpu.util_sum += reading.util
            gpu.util_n += 1
            gpu.util_max = max(gpu.util_max, reading.util)
            gpu.mem_last = reading.mem_bytes
            gpu.mem_peak = max(gpu.mem_peak, reading.mem_bytes)
            if reading.power_watts is not None:
                gpu.power_sum += reading.power_watts
                gpu.power_n += 1
                gpu.power_max = max(gpu.power_max, reading.power_watts)
        if len(self.t) > MAX_POINTS:
            self.thin()

    def thin(self) -> None:
        """Keep every other point (the series' figures stay in the running totals)."""
        self.t, self.cpu_util, self.rss = self.t[::2], self.cpu_util[::2], self.rss[::2]
        for gpu in self.gpus or ():
            gpu.util, gpu.mem, gpu.power = gpu.util[::2], gpu.mem[::2], gpu.power[::2]
        self.thinned += 1

    def summary(self, *, final: bool, sampler_cpu: float, peak_rss: int = 0) -> dict[str, Any]:
        wall, cpu = round(self.last_t, 3), round(self.cpu, 3)
        mean = cpu / wall if wall > 0 else 0.0  # a job under a millisecond: not measurable
        summary: dict[str, Any] = {
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "mean_cpu_util": round(mean, 3),
            "max_cpu_util": round(max(self.max_cpu_util, mean), 3),
            "peak_rss_bytes": max(self.peak_rss, peak_rss),
            "mean_rss_bytes": self.rss_sum // self.rss_n if self.rss_n else 0,
            "samples": self.samples,
            "updated_at": round(time.time(), 3),
            "final": final,
            "sampler_cpu_seconds": round(sampler_cpu, 6),
        }
        if self.gpus:
            summary["gpus"] = [_gpu_summary(g, shared=self.shared) for g in self.gpus]
        return summary

    def series(self) -> dict[str, Any]:
        series: dict[str, Any] = {
            "started_at": self.started_at,
            "t": self.t,
            "cpu_util": self.cpu_util,
            "rss_bytes": self.rss,
        }
        if self.gpus:
            series["gpus"] = [
                {
                    "index": g.index,
                    "name": g.name,
                    "uuid": g.uuid,
                    "util": g.util,
                    "mem_bytes": g.mem,
                    "power_watts": g.power,
                }
                for g in self.gpus
            ]
        return series


def _gpu_summary(gpu: _Gpu, *, shared: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "index": gpu.index,
        "name": gpu.name,
        "uuid": gpu.uuid,
        "util_mean": round(gpu.util_sum / gpu.util_n, 1) if gpu.util_n else 0.0,
        "util_max": gpu.util_max,
        "mem_used_bytes": gpu.mem_last,
        "mem_peak_bytes": gpu.mem_peak,
        "mem_total_bytes": gpu.mem_total,
    }
    if shared:
        summary["shared"] = True
    if gpu.power_n:  # absent where the board cannot tell, never zero
        summary["power_mean_watts"] = round(gpu.power_sum / gpu.power_n, 1)
        summary["power_max_watts"] = round(gpu.power_max, 1)
    return summary


@dataclass(frozen=True)
class Ended:
    """A job's usage at its end, for the terminal write."""

    summary: dict[str, Any]
    """``record.usage``, with ``final: true``."""
    series: bytes | None
    """The ``usage/ID`` blob; None for a first attempt that ended before its
    first sample (one point: the summary says it all, and a trivial job writes
    one row less).  A later attempt always has one, replacing the blob of the
    attempt before (a rerun deletes it, a retry's requeue keeps it)."""
