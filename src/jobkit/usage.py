"""What a job used: the summary kept in its record, the time series kept in a blob.

The worker samples its own process tree while the function runs (see
:mod:`jobkit.sampling`) and writes two things::

    sampler ──► record.usage   (a small summary: updated while the job runs, final at its end)
            └─► blob usage/ID  (the time series, JSON, bounded to MAX_POINTS points;
                                absent for a job that ended before its first sample, 0.1 s)

Everything that shows usage — ``jobkit status``, ``jobkit top``, ``jobkit
list --idle-gpus``, the web view, the notebook — reads these two through the
helpers here, so the names of the keys live in one place.

The summary (``JobRecord.usage``) is a JSON object::

    wall_seconds, cpu_seconds, mean_cpu_util, max_cpu_util   (util in cores: 1.0 = one busy core)
    peak_rss_bytes, mean_rss_bytes, samples, updated_at, final, sampler_cpu_seconds
    (cpu covers the worker's whole process tree, children included; sampler_cpu_seconds
    is the sampling thread's own CPU time, part of cpu_seconds: its overhead)
    gpus: [{index, name, uuid, util_mean, util_max (percent), mem_used_bytes,
            mem_peak_bytes, mem_total_bytes, power_mean_watts, power_max_watts}]

The summary is the current attempt's: a retry's requeue moves the ended
attempt's summary into its ``JobRecord.attempts`` entry (key ``usage``, see
:func:`jobkit.reconcile.attempt_entry`) and starts ``usage`` from ``{}``; a
rerun (``retry_failed``) does the same and deletes the series blob.  A later
attempt's end always writes its series, even of one point, so the blob never
holds an earlier attempt's.

``gpus`` is absent where no NVIDIA GPU was visible (or NVML could not be
loaded), and for a job that asked for no GPU (it may run on a GPU node, whose
devices are not its own): that is "not measured", never zero.  A job granted a
fraction of a GPU (``gpus=0.5``: the local agent shares the device) has
``"shared": true`` in each entry: the device's figures include its neighbours'.

The flags are computed when read, from the summary and the resources the job
asked for, so a threshold can change without rewriting records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobkit.states import JobRecord

USAGE_PREFIX = "usage/"
MAX_POINTS = 2000
"""Longest series kept: a longer run keeps every other point (the interval doubles)."""

SERIES_VERSION = 1


def usage_key(job_id: str) -> str:
    """The blob holding the job's time series."""
    return f"{USAGE_PREFIX}{job_id}"


# -- the flags: the waste users care about ------------------------------------

IDLE_GPU_UTIL_MAX = 5.0
"""A GPU whose utilization never reached this (percent) over the run was idle."""
MEM_TOUCHED_FRACTION = 0.25
"""Memory granted but never touched: the peak stayed under this fraction of it..."""
MEM_SLACK_MIN = 512 * 1024 * 1024
"""...and at least this much was left over (small grants are not worth a flag)."""
CPU_BUSY_FRACTION = 0.25
"""CPUs granted but idle: more than one asked for and the mean use under this fraction."""
MIN_SECONDS = 1.0
"""Runs shorter than this are not flagged: too few samples to judge."""
MIN_LIVE_SECONDS = 60.0
"""A running job (its summary not final) is judged only after this much wall
time: most jobs load data or compile before they touch a GPU or their memory,
and a warm-up is not waste."""


@dataclass(frozen=True)
class Flag:
    """One kind of waste found in a finished (or running) job."""

    name: str
    """Stable, for scripts and filters: ``idle_gpu``, ``mem_over_granted``, ``idle_cpus``."""
    text: str
    """One line for people: what was asked, what was used."""


def flags(record: JobRecord) -> list[Flag]:
    """What ``record`` was granted and did not use; empty when nothing is known."""
    usage = record.usage
    least = MIN_SECONDS if usage.get("final") else MIN_LIVE_SECONDS
    if not usage or float(usage.get("wall_seconds") or 0.0) < least:
        return []
    found: list[Flag] = []
    asked_gpus = float(record.resources.get("gpus") or 0)
    gpus = usage.get("gpus")
    if asked_gpus > 0 and isinstance(gpus, list) and gpus:
        peak = max(float(g.get("util_max") or 0.0) for g in gpus)
        if peak < IDLE_GPU_UTIL_MAX:
            found.append(
                Flag(
                    "idle_gpu",
                    f"asked for {_number(asked_gpus)} GPU(s), utilization never above {peak:.0f}%",
                )
            )
    mem = record.resources.get("mem")
    peak_rss = usage.get("peak_rss_bytes")
    if (
        isinstance(mem, int)
        and isinstance(peak_rss, int)
        and mem > 0
        and peak_rss < MEM_TOUCHED_FRACTION * mem
        and mem - peak_rss >= MEM_SLACK_MIN
    ):
        from jobkit.units import format_size

        found.append(
            Flag(
                "mem_over_granted",
                f"asked for {format_size(mem)} of memory, peak use {format_size(peak_rss)} "
                f"({100 * peak_rss / mem:.0f}%)",
            )
        )
    cpus = float(record.resources.get("cpus") or 1)
    mean_util = usage.get("mean_cpu_util")
    if cpus > 1 and isinstance(mean_util, (int, float)) and mean_util < CPU_BUSY_FRACTION * cpus:
        found.append(
            Flag(
                "idle_cpus",
                f"asked for {_number(cpus)} CPUs, used {mean_util:.2f} on average",
            )
        )
    return found


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- an array's aggregate --------------------------------------------------------

SLOWEST_SHOWN = 5
"""Items named under an array's "slowest" line."""


def wall_seconds(record: JobRecord, now: float) -> float | None:
    """How long the job ran (so far): from its timestamps, else the sampler's."""
    if record.started_at:
        end = record.finished_at or (None if record.is_terminal else now)
        if end is not None:
            return max(0.0, end - record.started_at)
    value = record.usage.get("wall_seconds")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def aggregate(records: Sequence[JobRecord], now: float) -> dict[str, Any]:
    """What an array used, in one place for ``jobkit status``, the notebook and
    the web view::

        {"sampled": items with a usage summary, "cpu_hours": over those items,
         "idle_gpu_items": [ids flagged idle_gpu],
         "slowest": [{"id", "wall_seconds", "state"}], longest first, at most SLOWEST_SHOWN}
    """
    cpu = 0.0
    for record in records:
        value = record.usage.get("cpu_seconds")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cpu += float(value)
    sampled = sum(1 for r in records if r.usage)
    idle = [r.id for r in records if any(f.name == "idle_gpu" for f in flags(r))]
    timed = [(w, r) for r in records if (w := wall_seconds(r, now)) is not None]
    timed.sort(key=lambda pair: pair[0], reverse=True)
    return {
        "sampled": sampled,
        "cpu_hours": cpu / 3600,
        "idle_gpu_items": idle,
        "slowest": [
            {"id": r.id, "wall_seconds": w, "state": r.state.value}
            for w, r in timed[:SLOWEST_SHOWN]
        ],
    }


# -- the time series blob -------------------------------------------------------


SERIES_FIELD = "usage_series"
"""Where a success's end handed to the local agent carries the series (its
JSON text): the agent writes it as the blob in the same commit as the end."""


def split_end(job_id: str, end: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A success's end fields as the worker built them: (record fields, blobs),
    the usage series moved from :data:`SERIES_FIELD` to its blob."""
    fields = dict(end)
    series = fields.pop(SERIES_FIELD, None)
    blobs = {usage_key(job_id): series.encode()} if isinstance(series, str) else {}
    return fields, blobs


def encode_series(series: Mapping[str, Any]) -> bytes:
    """The blob's bytes: compact JSON with a version, so readers can refuse a newer one."""
    return json.dumps({"version": SERIES_VERSION, **series}, separators=(",", ":")).encode()


def decode_series(data: bytes | bytearray) -> dict[str, Any]:
    """The series as written by the sampler::

        {"version": 1, "started_at": epoch seconds, "t": [seconds since start, ...],
         "cpu_util": [cores, ...], "rss_bytes": [...],
         "gpus": [{"index", "name", "uuid", "util": [...], "mem_bytes": [...],
                   "power_watts": [...]}]}

    Every list in a series has one value per ``t``.  An unreadable blob is an
    empty series (it is telemetry: never worth failing a page over).
    """
    try:
        value = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(value, dict) or value.get("version") != SERIES_VERSION:
        return {}
    return value
