"""What this machine offers: cpus, memory and GPUs, detected or declared.

GPUs are found with ``nvidia-smi`` (the same NVML data gputil reads); config
can declare them instead (``local.gpus = 4`` or a list of names), which is
how tests get fake GPUs on machines without any.  Memory of a process group
is read from ``/proc`` (YARN's container monitor does the same) so the agent
can hold jobs to the memory they asked for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from jobkit.scheduler.policy import Capacity

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def parse_nvidia_smi(text: str) -> list[tuple[str, str]]:
    """(index, name) per GPU from ``--query-gpu=index,name --format=csv,noheader``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0].isdigit():
            gpus.append((parts[0], parts[1]))
    return gpus


def detect_gpus() -> list[tuple[str, str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def machine_capacity(
    *,
    cpus: float | None = None,
    mem: int | None = None,
    gpus: int | Sequence[str] | None = None,
    max_jobs: int | None = None,
) -> Capacity:
    """Detected capacity, with any declared value taking precedence."""
    if gpus is None:
        found = detect_gpus()
        ids, names = tuple(i for i, _ in found), tuple(n for _, n in found)
    elif isinstance(gpus, int):
        ids, names = tuple(str(i) for i in range(gpus)), ("",) * gpus
    else:
        ids, names = tuple(str(i) for i in range(len(gpus))), tuple(gpus)
    return Capacity(
        cpus=float(cpus if cpus is not None else (os.cpu_count() or 1)),
        mem=int(mem if mem is not None else total_memory()),
        gpus=ids,
        gpu_names=names,
        max_jobs=max_jobs,
    )


def group_rss(pgids: set[int]) -> dict[int, int]:
    """Resident memory in bytes of every process in each process group."""
    totals = dict.fromkeys(pgids, 0)
    if not pgids:
        return totals
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        # Fields after the parenthesised command name; pgrp is the 3rd, rss the 22nd.
        fields = stat[stat.rfind(b")") + 2 :].split()
        try:
            pgrp, rss_pages = int(fields[2]), int(fields[21])
        except (IndexError, ValueError):
            continue
        if pgrp in totals:
            totals[pgrp] += rss_pages * _PAGE
    return totals


def oom_kill_count() -> int | None:
    """The kernel OOM killer's kill counter for our cgroup, where it is readable."""
    for path, key in (
        ("/sys/fs/cgroup/memory.events", "oom_kill"),
        ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"),
    ):
        try:
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def submitted_here(extra: dict[str, object], host: str, *, store_is_local: bool) -> bool:
    """Whether a local job (its record's ``extra``) belongs to this machine's agent.

    Local jobs record the machine that submitted them (``extra["machine"]``):
    a store shared between machines (S3) holds other machines' local jobs,
    which only their own agents may run.  A record from before that field
    existed is this machine's in a store on this machine's disk, and no
    one's in a shared store.
    """
    machine = extra.get("machine")
    return machine == host if machine is not None else store_is_local
