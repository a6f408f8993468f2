"""Workload 1: submit->result latency of one trivial job.

This is the overhead a user feels on every interactive ``submit(...).result()``
and the floor under every short job.  Each system is already warm (jobkit's
agent is running, the pool's workers exist), so the numbers are steady state;
the first, cold call of each system is reported alongside.

Targets: jobkit's median at most Ray local's (issue 12, when Ray is
installed); at most 1.5x the subprocess-per-job floor measured in this same
run, and at least 20x faster than submitit (issue 2).
"""

from __future__ import annotations

from common import Context, Row, WorkloadResult, median, p90, summary, timed
from tasks import trivial

WARMUP = 3


def run(ctx: Context) -> WorkloadResult:
    runs = 10 if ctx.quick else 30
    # submitit's result() sleeps 1 s between checks: ~1 s a run, so fewer runs.
    submitit_runs = 3 if ctx.quick else 5
    samples: dict[str, list[float]] = {}
    for key, system in ctx.systems.items():
        n = submitit_runs if key == "submitit" else runs
        warmup = 1 if key == "submitit" else WARMUP
        for i in range(warmup):
            assert system.call(trivial, i) == i + 1
        times = []
        for i in range(n):
            seconds, value = timed(system.call, trivial, i)
            assert value == i + 1
            times.append(seconds * 1000)
        samples[key] = times

    med = {k: median(v) for k, v in samples.items()}
    checks = {
        "floor": med["jobkit"] <= 1.5 * med["floor"],
        "submitit": med["submitit"] >= 20 * med["jobkit"],
    }
    if "ray" in med:
        checks["Ray"] = med["jobkit"] <= med["ray"]
    missed = [name for name, ok in checks.items() if not ok]
    notes_met = [f"missed vs {', '.join(missed)}"] if missed else []
    if "ray" in ctx.missing:
        notes_met.append(f"Ray not checked: {ctx.absent('ray')}")
    rows = [
        Row(
            "trivial job submit->result, median",
            "ms",
            "lower",
            med,
            target="<= 1.0x Ray (i12); <= 1.5x floor, >= 20x faster than submitit (i2)",
            met=not missed,
            note="; ".join(notes_met),
            missing=ctx.missing,
        ),
        Row(
            "trivial job submit->result, p90",
            "ms",
            "lower",
            {k: p90(v) for k, v in samples.items()},
            missing=ctx.missing,
        ),
    ]
    cold = ctx.cold_start_ms
    notes = [
        "latency: first (cold) call, ms: "
        + ", ".join(f"{k} {v:,.1f}" for k, v in cold.items())
        + " (jobkit's includes starting its agent; the pool's, forking its workers; Ray's "
        "follows ray.init, which is not counted)",
        f"latency: {runs} timed runs after {WARMUP} warm-up calls "
        f"(submitit: {submitit_runs} after 1)",
    ]
    raw = {
        "unit": "ms",
        "cold_start_ms": cold,
        "systems": {k: summary(v) for k, v in samples.items()},
        "speedup_vs_submitit": med["submitit"] / med["jobkit"],
        "ratio_to_floor": med["jobkit"] / med["floor"],
        "ratio_to_ray": med["jobkit"] / med["ray"] if "ray" in med else None,
    }
    return WorkloadResult("latency", rows, raw, notes)
