"""Workload 2: 200 trivial jobs, as jobs per second.

Where latency measures one job, this measures the pipeline: how fast a
parameter sweep of tiny jobs drains.  jobkit runs it twice, once as one
``map`` (one array submission) and once as 200 ``submit`` calls, since users
do both.  Ray runs ``ray.get([f.remote(i) for i in items])`` on 2 CPUs
(when installed).  The pool and the floor run two jobs at a time; submitit's
``map_array`` starts every job at once (LocalExecutor has no cap) but
throttles submissions to one per 0.2 s, so it gets the same 200 jobs (20 in
``--quick`` mode, which makes its rate slightly optimistic).

Targets: the map at least Ray local's jobs/s (issue 12; the ``scale``
workload checks it at 2,000 and 10,000 too); at least 10x submitit's jobs/s
(issue 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from common import Context, Row, WorkloadResult, timed
from tasks import trivial

Bulk = Callable[[Callable[..., Any], Sequence[Any]], list[Any]]


def run(ctx: Context) -> WorkloadResult:
    n = 50 if ctx.quick else 200
    n_submitit = 20 if ctx.quick else 200
    elapsed: dict[str, float] = {}
    counts: dict[str, int] = {}

    def measure(label: str, count: int, bulk: Bulk) -> None:
        items = list(range(count))
        seconds, values = timed(bulk, trivial, items)
        assert values == [i + 1 for i in items], f"{label}: wrong results"
        elapsed[label], counts[label] = seconds, count

    jobkit = ctx.systems["jobkit"]
    measure("jobkit map", n, jobkit.run_all)
    measure("jobkit submits", n, jobkit.submit_each)
    if "ray" in ctx.systems:
        measure("ray", n, ctx.systems["ray"].run_all)
    measure("pool", n, ctx.systems["pool"].run_all)
    measure("floor", n, ctx.systems["floor"].run_all)
    measure("submitit", n_submitit, ctx.systems["submitit"].run_all)

    rate = {label: counts[label] / elapsed[label] for label in elapsed}
    anchors: dict[str, float | None] = {
        k: rate[k] for k in ("ray", "pool", "floor", "submitit") if k in rate
    }
    rows = []
    for label, how in (("jobkit map", f"one map of {n}"), ("jobkit submits", f"{n} submits")):
        checks = {"submitit": rate[label] >= 10 * rate["submitit"]}
        target, absent = ">= 10x submitit (i2)", []
        if label == "jobkit map":  # issue 12 compares maps with Ray's list of remote calls
            target = ">= 1.0x Ray (i12); " + target
            if "ray" in rate:
                checks["Ray"] = rate[label] >= rate["ray"]
            else:
                absent = [f"Ray not checked: {ctx.absent('ray')}"]
        missed = [name for name, ok in checks.items() if not ok]
        rows.append(
            Row(
                f"{n} trivial jobs, jobkit via {how}",
                "jobs/s",
                "higher",
                {"jobkit": rate[label], **anchors},
                target=target,
                met=not missed,
                note="; ".join(([f"missed vs {', '.join(missed)}"] if missed else []) + absent),
                missing=ctx.missing,
            )
        )
    notes = [
        f"throughput: submitit ran {n_submitit} jobs through map_array (all at once, "
        "no cap exists); Ray, the pool and the floor 2 at a time; jobkit with local.cpus=2"
    ]
    raw = {
        "unit": "jobs/s",
        "jobs": counts,
        "seconds": elapsed,
        "jobs_per_s": rate,
        "ratio_to_submitit": {
            k: rate[k] / rate["submitit"] for k in ("jobkit map", "jobkit submits")
        },
    }
    return WorkloadResult("throughput", rows, raw, notes)
