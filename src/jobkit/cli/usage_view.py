"""How the CLI shows what jobs used: ``status``'s usage section, the array
aggregate, the figures of ``top`` and ``list``, and the usage sort keys.

Everything here reads ``JobRecord.usage`` (keys defined once in
:mod:`jobkit.usage`) and the flags of :func:`jobkit.usage.flags`; nothing
samples or writes.  The figures are plain strings so the hand-aligned ``list``
table and rich's tables (``status``, ``top``) show them alike.  Only the
standard library is imported at module level: ``jobkit list`` imports this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobkit.cli.render import console, emit, format_span
from jobkit.states import JobRecord
from jobkit.usage import SLOWEST_SHOWN, Flag, aggregate, flags, wall_seconds

SORT_KEYS = ("created", "cores", "cpu", "mem", "gpu", "wall")
"""``--sort`` choices of ``list`` and ``top``, one meaning each in both:
``created`` the store's own order, ``cores`` mean busy cores, ``cpu`` CPU seconds."""
SORT_HELP = (
    "cores (mean busy cores), cpu (CPU seconds), mem (peak RSS), gpu (mean utilization), "
    "wall (run time)"
)
"""The biggest-first keys, spelled once for both commands' ``--help``."""

# -- figures -------------------------------------------------------------------


def size(nbytes: float | None) -> str:
    """``1.5GiB``, ``312MiB``, ``-`` when unknown: compact for table cells."""
    if nbytes is None:
        return "-"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit != "GiB" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def gpus_of(usage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-device entries; empty when no GPU was measured."""
    gpus = usage.get("gpus")
    return [g for g in gpus if isinstance(g, Mapping)] if isinstance(gpus, list) else []


def cpu_cell(usage: Mapping[str, Any]) -> str:
    """``1.98 cores`` (mean over the run so far); ``-`` when not sampled."""
    mean = _number(usage.get("mean_cpu_util"))
    return "-" if mean is None else f"{mean:.2f}"


def mem_cell(record: JobRecord) -> str:
    """Peak RSS against the memory asked for: ``312MiB/4.0GiB``."""
    peak = _number(record.usage.get("peak_rss_bytes"))
    if peak is None:
        return "-"
    mem = record.resources.get("mem")
    return f"{size(peak)}/{size(mem)}" if isinstance(mem, int) and mem > 0 else size(peak)


def gpu_cell(usage: Mapping[str, Any]) -> str:
    """Mean utilization and peak memory over all devices: ``87% 11.2GiB``."""
    gpus = gpus_of(usage)
    if not gpus:
        return "-"
    util = sum(_number(g.get("util_mean")) or 0.0 for g in gpus) / len(gpus)
    mem = sum(_number(g.get("mem_peak_bytes")) or 0.0 for g in gpus)
    return f"{util:.0f}% {size(mem)}"


def usage_cell(record: JobRecord) -> str:
    """``list``'s USAGE column: CPU seconds and peak RSS, ``-`` when unknown."""
    usage = record.usage
    cpu = _number(usage.get("cpu_seconds"))
    if cpu is None:
        return "-"
    text = f"{cpu:.1f}s cpu, {size(_number(usage.get('peak_rss_bytes')))}"
    gpus = gpus_of(usage)
    return f"{text}, gpu {gpu_cell(usage)}" if gpus else text


def figures_age(record: JobRecord, now: float) -> float | None:
    """Seconds since the sampler last wrote the summary; None if it never did."""
    updated = _number(record.usage.get("updated_at"))
    return None if updated is None else max(0.0, now - updated)


def flag_names(record: JobRecord) -> list[str]:
    return [f.name for f in flags(record)]


# -- sorting -------------------------------------------------------------------


def sort_key(name: str, now: float) -> Callable[[JobRecord], float]:
    """Biggest first when used with ``reverse=True``; unknown figures sort last.

    ``cpu`` is CPU seconds (what a finished job cost), ``cores`` the mean
    number of busy cores (what ``top`` sorts running jobs by)."""
    missing = -1.0

    def cpu(r: JobRecord) -> float:
        value = _number(r.usage.get("cpu_seconds"))
        return missing if value is None else value

    def cores(r: JobRecord) -> float:
        value = _number(r.usage.get("mean_cpu_util"))
        return missing if value is None else value

    def mem(r: JobRecord) -> float:
        value = _number(r.usage.get("peak_rss_bytes"))
        return missing if value is None else value

    def gpu(r: JobRecord) -> float:
        gpus = gpus_of(r.usage)
        if not gpus:
            return missing
        return sum(_number(g.get("util_mean")) or 0.0 for g in gpus) / len(gpus)

    def wall(r: JobRecord) -> float:
        value = wall_seconds(r, now)
        return missing if value is None else value

    keys: dict[str, Callable[[JobRecord], float]] = {
        "cpu": cpu,
        "cores": cores,
        "mem": mem,
        "gpu": gpu,
        "wall": wall,
        "created": lambda r: r.created_at,
    }
    return keys[name]


# -- jobkit status ---------------------------------------------------------------


def usage_section(record: JobRecord, now: float) -> None:
    """The ``usage`` lines under ``jobkit status``, with the waste flags in yellow."""
    from rich.table import Table
    from rich.text import Text

    usage = record.usage
    out = console()
    if not usage:
        missing = "not sampled" if record.is_terminal else "not sampled yet"
        emit(out, Text(f"\nusage: {missing}", style="dim"))
        return
    emit(out, Text("\nusage ") + Text(f"({freshness(record, now)})", style="dim"))
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for label, value in figure_rows(record):
        table.add_row(f"  {label}", Text(value))
    emit(out, table)
    for flag in flags(record):
        emit(out, flag_text(flag))


def figure_rows(record: JobRecord) -> list[tuple[str, str]]:
    """The usage figures as (label, text) rows: ``jobkit status`` and the web
    view's job page both show these, so the two never tell different stories."""
    usage = record.usage
    cpu = _number(usage.get("cpu_seconds"))
    wall = _number(usage.get("wall_seconds"))
    rows = [("cpu time", "-" if cpu is None else f"{cpu:.1f}s")]
    if wall is not None:
        rows.append(("wall time", format_span(wall)))
    mean, peak = _number(usage.get("mean_cpu_util")), _number(usage.get("max_cpu_util"))
    cores = "-" if mean is None else f"{mean:.2f} mean, {peak or 0.0:.2f} max"
    asked = record.resources.get("cpus")
    rows.append(("cpu cores", f"{cores} (asked for {asked})" if asked else cores))
    peak_rss, mean_rss = usage.get("peak_rss_bytes"), usage.get("mean_rss_bytes")
    mem = record.resources.get("mem")
    rss = f"{size(_number(peak_rss))} peak, {size(_number(mean_rss))} mean"
    if isinstance(mem, int) and mem > 0:
        rss += f" (asked for {size(mem)})"
    rows.append(("memory", rss))
    rows += [(f"gpu {gpu.get('index', '?')}", gpu_line(gpu)) for gpu in gpus_of(usage)]
    return rows


def gpu_line(gpu: Mapping[str, Any]) -> str:
    """``NVIDIA H100: util 87% mean, 99% max; mem 11.2GiB peak of 79.6GiB; 310W mean``."""
    util_mean, util_max = _number(gpu.get("util_mean")), _number(gpu.get("util_max"))
    util = f"util {util_mean or 0.0:.0f}% mean, {util_max or 0.0:.0f}% max"
    memory = f"mem {size(_number(gpu.get('mem_peak_bytes')))} peak"
    total = _number(gpu.get("mem_total_bytes"))
    if total:
        memory += f" of {size(total)}"
    parts = [util, memory]
    power = _number(gpu.get("power_mean_watts"))
    if power is not None:
        top = _number(gpu.get("power_max_watts"))
        parts.append(f"{power:.0f}W mean" + (f", {top:.0f}W max" if top is not None else ""))
    return f"{gpu.get('name') or 'GPU'}: " + "; ".join(parts)


def flag_text(flag: Flag) -> Any:
    """One warning line: ``! idle_gpu: asked for 1 GPU(s), ...`` in bold yellow."""
    from rich.text import Text

    return Text(f"! {flag.name}: {flag.text}", style="bold yellow")


def freshness(record: JobRecord, now: float) -> str:
    """``final``, ``live, updated 7.0s ago``, or a run that ended unsummarised."""
    age = figures_age(record, now)
    ago = "?" if age is None else format_span(age)
    if record.usage.get("final"):
        return "final"
    if not record.is_terminal:
        return f"live, updated {ago} ago"
    return f"last sample, {ago} ago: the run ended before a final summary"


# -- jobkit status ARRAY ---------------------------------------------------------


def array_usage(members: Sequence[JobRecord], now: float) -> dict[str, Any]:
    """What an array used (see :func:`jobkit.usage.aggregate`), for the summary
    line and ``--json``; kept here for the callers that import it from the CLI."""
    return aggregate(members, now)


def array_section(members: Sequence[JobRecord], now: float) -> None:
    """The usage lines under ``jobkit status ARRAY_ID``."""
    from rich.text import Text

    found = array_usage(members, now)
    out = console()
    if found["sampled"]:
        line = (
            f"usage: {found['cpu_hours']:.3f} CPU-hours over {found['sampled']} sampled "
            f"item(s) of {len(members)}"
        )
    else:
        line = "usage: no item sampled"
    emit(out, line, markup=False)
    idle = found["idle_gpu_items"]
    if idle:
        more = f", ... {len(idle) - SLOWEST_SHOWN} more" if len(idle) > SLOWEST_SHOWN else ""
        emit(
            out,
            Text(
                f"! {len(idle)} item(s) with idle GPUs: {', '.join(idle[:SLOWEST_SHOWN])}{more}",
                style="bold yellow",
            ),
        )
    if found["slowest"]:
        slow = ", ".join(f"{s['id']} {format_span(s['wall_seconds'])}" for s in found["slowest"])
        emit(out, f"slowest: {slow}", markup=False)
