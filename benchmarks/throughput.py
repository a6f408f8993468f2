"""Workload 2: 200 trivial jobs, as jobs per second.

Where latency measures one job, this measures the pipeline: how fast a
parameter sweep of tiny jobs drains.  jobkit runs it twice, once as one
``map`` (one array submission) and once as 200 ``submit`` calls, since users
do both.  The pool and the floor run two jobs at a time; submitit's
``map_array`` starts every job at once (LocalExecutor has no cap) but
throttles submissions to one per 0.2 s, so it gets the same 200 jobs (20 in
``--quick`` mode, which makes its rate slightly optimistic).

Target (issue 2): at least 10x submitit's jobs/s.
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
    measure("pool", n, ctx.systems["pool"].run_all)
    measure("floor", n, ctx.systems["floor"].run_all)
    measure("submitit", n_submitit, ctx.systems["submitit"].run_all)

    rate = {label: counts[label] / elapsed[label] for label in elapsed}
    anchors = {k: rate[k] for k in ("pool", "floor", "submitit")}
    rows = []
    for label, how in (("jobkit map", f"one map of {n}"), ("jobkit submits", f"{n} submits")):
        ok = rate[label] >= 10 * rate["submitit"]
        rows.append(
            Row(
                f"{n} trivial jobs, jobkit via {how}",
                "jobs/s",
                "higher",
                {"jobkit": rate[label], **anchors},
                target=">= 10x submitit",
                met=ok,
            )
        )
    notes = [
        f"throughput: submitit ran {n_submitit} jobs through map_array (all at once, "
        "no cap exists); the pool and the floor 2 at a time; jobkit with local.cpus=2"
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
