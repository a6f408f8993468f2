"""The fault suite's figures: one line per scenario on stdout, one JSON line in
``$JOBKIT_FAULTS_REPORT``, and the Markdown table CI prints from that file.

Every scenario module writes through :func:`emit`, whatever else it counts, so
the table always has the same columns: scenario, backend, jobs, lost,
duplicated, stuck, settle time, and the rest as notes::

    scenario ──► emit(scenario, backend, lost=, duplicated=, stuck=, settle_s=, ...)
                   ├─► "[faults] ..." on stdout (pytest -s)
                   └─► JSON line ──► $JOBKIT_FAULTS_REPORT ──► table() (.ci/run)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["emit", "table"]

COLUMNS = ("lost", "duplicated", "stuck")
SIZE_KEYS = ("items", "jobs")


def emit(scenario: str, backend: str, **figures: Any) -> None:
    """Print one summary line and append one JSON line to ``$JOBKIT_FAULTS_REPORT``."""
    line = {"scenario": scenario, "backend": backend, **figures}
    shown = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[faults] {scenario} ({backend}): {shown}", flush=True)
    target = os.environ.get("JOBKIT_FAULTS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(line, default=str, sort_keys=True) + "\n")


def table(report: Path) -> str:
    """The figures of a report file as a Markdown table (CI logs, closing notes)."""
    lines = [
        "| scenario | backend | jobs | lost | duplicated | stuck | settle s | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for text in report.read_text(encoding="utf-8").splitlines():
        row: dict[str, Any] = json.loads(text)
        size = next((row.pop(k) for k in SIZE_KEYS if k in row), "")
        settle = row.pop("settle_s", None)
        shown = "-" if settle is None else f"{float(settle):.1f}"
        counts = [str(row.pop(k, "")) for k in COLUMNS]
        scenario, backend = row.pop("scenario"), row.pop("backend")
        nested = row.pop("notes", None)
        notes = {**(nested if isinstance(nested, dict) else {}), **row}
        if isinstance(nested, str) and nested:
            notes["note"] = nested
        rest = ", ".join(f"{k}={v}" for k, v in notes.items() if v not in ("", [], {}, None))
        lines.append(
            f"| {scenario} | {backend} | {size} | {' | '.join(counts)} | {shown} | {rest} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m jobkit_testing.faults.report REPORT
    print(table(Path(sys.argv[1])))
