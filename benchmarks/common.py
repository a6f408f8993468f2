"""Shared pieces: the run context, timing statistics and result rows.

Kept apart from the workloads so each workload module reads as "what is
measured", and from ``report.py`` so the rows are plain data that the table
and the JSON file render the same way.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

SYSTEM_KEYS = ("jobkit", "ray", "pool", "floor", "submitit")
ANCHOR_KEYS = ("ray", "pool", "floor", "submitit")


@dataclasses.dataclass
class Context:
    """What every workload gets: the mode, a scratch dir and the warm systems."""

    quick: bool
    workdir: Path
    systems: dict[str, Any]
    """System key -> a warm :class:`systems.System` (typed loosely: jobkit's
    has extra methods some workloads use)."""
    cold_start_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    """System key -> the first call's latency, taken while warming up."""
    missing: dict[str, str] = dataclasses.field(default_factory=dict)
    """System key -> the one line that says why it is absent (``ray`` without
    the ``bench`` extra); rows show it in that system's cells."""
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Figures one workload leaves for a later one in the same run (``scale``'s
    200-item rates, the base of ``scale-huge``'s linearity)."""

    def absent(self, key: str) -> str:
        """Short reason a system is missing (``ray not installed``), for ``met?`` notes."""
        return self.missing.get(key, "").split(":")[0]

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclasses.dataclass
class Row:
    """One line of the results table: jobkit and each anchor, same unit."""

    workload: str
    unit: str
    better: Literal["lower", "higher"]
    values: Mapping[str, float | None]
    """System key (``jobkit``, ``pool``, ``floor``, ``submitit``) -> value;
    ``None`` where the system does not run this workload."""
    target: str = "-"
    met: bool | None = None
    """``None`` when the issue sets no target for this row."""
    note: str = ""
    missing: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """System key -> why it has no value (shown in its cell instead of ``-``)."""

    def ratio(self, anchor: str) -> float | None:
        """jobkit / anchor, in the row's own unit."""
        mine, theirs = self.values.get("jobkit"), self.values.get(anchor)
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs


@dataclasses.dataclass
class WorkloadResult:
    name: str
    rows: list[Row]
    raw: dict[str, Any]
    notes: list[str] = dataclasses.field(default_factory=list)
    tables: list[str] = dataclasses.field(default_factory=list)
    """Extra markdown tables, printed after the workload's group of rows."""


def timed(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> tuple[float, T]:
    """(seconds, return value) of ``fn(*args, **kwargs)``, on the high-resolution clock."""
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def median(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile: an observed value, no interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, Any]:
    """The statistics kept in the JSON next to every raw sample list."""
    return {
        "n": len(values),
        "median": median(values),
        "p90": p90(values),
        "min": min(values),
        "max": max(values),
        "samples": values,
    }
