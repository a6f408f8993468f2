"""Render the rows as markdown tables and write the raw numbers as JSON.

Ratios are always jobkit / anchor in the row's own unit, so read them with
the row's direction: for a time (lower is better) 0.5x means jobkit takes
half the anchor's time; for jobs/s (higher is better) 12x means twelve
times the anchor's rate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import Row

MAIN_COLUMNS = {
    "ray": "Ray local",
    "pool": "ProcessPoolExecutor(2)",
    "floor": "subprocess floor",
    "submitit": "submitit LocalExecutor",
}
STARTUP_COLUMNS = {"python": "`python -c pass`"}
SLURM_COLUMNS = {
    "submitit": "submitit SlurmExecutor",
    "submitit_poll": "submitit, result file polled every 10 ms",
    "sbatch": "Slurm's own: `sbatch --wrap python -c`, output polled every 10 ms",
}
S3_COLUMNS = {
    "api": "store-API sequence alone, in-process",
    "naive": "naive scan: LIST jobs/ + GET every record",
}
K8S_COLUMNS = {"naive": "naive: a Job per item + a GET per job per second"}


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):  # counts (requests, calls)
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def ratio(value: float | None) -> str:
    """``0.3x``, ``12x``; tiny ratios as fractions (``1/67x``), easier to read."""
    if value is None:
        return "-"
    if 0 < value < 0.1:
        return f"1/{1 / value:,.0f}x"
    return f"{number(value)}x"


def cell(row: Row, key: str) -> str:
    """A system's value, or why it has none (``ray not installed: ...``)."""
    value = row.values.get(key)
    if value is None and key in row.missing:
        return row.missing[key]
    return number(value)


def met(row: Row) -> str:
    if row.met is None:
        if row.target == "-":
            return "-"
        return f"n/a: {row.note}" if row.note else "n/a"
    text = "yes" if row.met else "**NO**"
    return f"{text} ({row.note})" if row.note else text


def table(rows: Sequence[Row], anchors: dict[str, str]) -> str:
    head = ["workload", "unit", "jobkit", *anchors.values()]
    head += [f"jobkit / {name}" for name in anchors.values()]
    head += ["target", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        unit = f"{row.unit} ({'lower' if row.better == 'lower' else 'higher'} is better)"
        cells = [row.workload, unit, number(row.values.get("jobkit"))]
        cells += [cell(row, key) for key in anchors]
        cells += [ratio(row.ratio(key)) for key in anchors]
        cells += [row.target, met(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slurm_facts(machine: dict[str, Any]) -> str:
    facts = machine.get("slurm")
    if not facts:
        return ""
    node = facts.get("node") or {}
    size = f", node of {node['cpus']} CPUs / {node['memory_mb']} MB" if node else ""
    return f"; {facts.get('version', 'Slurm')}{size}"


def s3_facts(machine: dict[str, Any]) -> str:
    facts = machine.get("s3")
    if not facts:
        return ""
    return f"; moto {facts.get('moto', '?')} (in-process server), boto3 {facts.get('boto3', '?')}"


def k8s_facts(machine: dict[str, Any]) -> str:
    facts = machine.get("k8s")
    if not facts:
        return ""
    return (
        f"; kubernetes client {facts.get('kubernetes', '?')}, emulated API "
        f"(jobkit_testing.k8s_emulator on kmock {facts.get('kmock', '?')}), "
        f"moto {facts.get('moto', '?')}"
    )


def markdown(
    main: Sequence[Row],
    startup: Sequence[Row],
    notes: Sequence[str],
    machine: dict[str, Any],
    slurm: Sequence[Row] = (),
    s3: Sequence[Row] = (),
    tables: Sequence[str] = (),
    k8s: Sequence[Row] = (),
) -> str:
    """The header line, one table per group of rows that has any, extra tables, notes."""
    parts = [
        f"Machine: {machine['cpus']} cores, {machine['memory_gb']:.0f} GB, "
        f"Python {machine['python']}, {machine['platform']}; "
        f"jobkit {machine['jobkit']} at {machine['git_commit'][:10]}"
        f"{'; ray ' + machine['ray'] if machine.get('ray') else ''}"
        f"{' + uncommitted src/ changes' if machine.get('src_dirty') else ''}"
        f"{slurm_facts(machine)}{s3_facts(machine)}{k8s_facts(machine)}; "
        f"load average {machine['load_start']:.2f} at start, {machine['load_end']:.2f} at end; "
        f"mode: {'quick' if machine['quick'] else 'full'}; total {machine['total_s']:.0f} s",
        "",
    ]
    groups = (
        (main, MAIN_COLUMNS),
        (startup, STARTUP_COLUMNS),
        (slurm, SLURM_COLUMNS),
        (s3, S3_COLUMNS),
        (k8s, K8S_COLUMNS),
    )
    for rows, columns in groups:
        if rows:
            parts += [table(rows, columns), ""]
    for extra in tables:
        parts += [extra, ""]
    parts += [f"- {note}" for note in notes]
    return "\n".join(parts)


def row_json(row: Row) -> dict[str, Any]:
    return {
        "workload": row.workload,
        "unit": row.unit,
        "better": row.better,
        "values": row.values,
        "target": row.target,
        "met": row.met,
        "note": row.note,
        "missing": dict(row.missing),
        "ratios": {k: row.ratio(k) for k in row.values if k != "jobkit"},
    }


def write_json(
    path: Path,
    machine: dict[str, Any],
    rows: Sequence[Row],
    raw: dict[str, Any],
    notes: Sequence[str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": machine,
        "rows": [row_json(r) for r in rows],
        "notes": list(notes),
        "workloads": raw,
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
