"""One-shot answers for a process that asks about jobs once (``jobkit list``).

The watch (watch.py) lists every jobkit pod and Job of the namespace, then
keeps two streams open: right for a client's monitor, which asks every
second, and a waste for a CLI command that asks once and exits.  Here the
pods and Jobs of the given jobs only, by their id labels::

    records ─► ids of single jobs ─► LIST pods, LIST jobs
           │                         -l managed-by=jobkit,jobkit.dev/job-id in (…)
           └─► ids of their maps  ─► LIST pods, LIST jobs
                                     -l managed-by=jobkit,jobkit.dev/array-id in (…)

At most :data:`IDS_PER_SELECTOR` ids per selector (a request line stays
short), so a page of 50 jobs costs 2 requests, or 4 when it mixes maps and
single jobs; pods of other (finished) jobs are never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .manifest import ARRAY_ID, JOB_ID, SELECTOR

if TYPE_CHECKING:
    from jobkit.states import JobRecord

    from .api import KubeApi

IDS_PER_SELECTOR = 50


def find(
    api: KubeApi, records: Sequence[JobRecord]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The pods of ``records``' Jobs, and those Jobs that exist, by name."""
    # A map's item resubmitted as a Job of its own (a retry with grown memory)
    # carries its own id label, not its array's.
    alone = [r for r in records if r.array_id is None or "[" not in (r.backend_id or "[")]
    by_label = {
        JOB_ID: sorted({r.id for r in alone}),
        ARRAY_ID: sorted({r.array_id for r in records if r.array_id is not None}),
    }
    pods: list[dict[str, Any]] = []
    jobs: dict[str, dict[str, Any]] = {}
    for label, ids in by_label.items():
        for start in range(0, len(ids), IDS_PER_SELECTOR):
            chunk = ids[start : start + IDS_PER_SELECTOR]
            selector = f"{SELECTOR},{label} in ({','.join(chunk)})"
            pods += api.list("pods", selector).get("items") or []
            for job in api.list("jobs", selector).get("items") or []:
                jobs[str((job.get("metadata") or {}).get("name"))] = job
    return pods, jobs
