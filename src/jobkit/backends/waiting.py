"""What a held job waits on, read from the store, for backends that hold jobs
themselves (Slurm's ``--dependency``, suspended Kubernetes Jobs).

    record.depends_on ─► load(store, records) ─► {id: [records]} (an id that is
                         no job is an array: its items, in index order)
                      ─► unfinished(...): what a hold still waits for
    a dependency ended FAILED/CANCELLED ─► failed_root(...) ─► failure_message(root)

The reconciler's release/fail step (:mod:`jobkit.dependencies`) decides
when held jobs start or fail; these helpers only let a backend say what it
sees in the same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from jobkit.errors import JobNotFoundError
from jobkit.states import FailureReason, JobRecord, JobState

if TYPE_CHECKING:
    from jobkit.stores.base import Store

HELD_BY = "held_by"
"""``extra`` key: who holds the job and on what, for ``jobkit status``
(``Slurm: afterok:123``, ``Kubernetes: suspended Job jk-...``)."""


def load(store: Store, records: Sequence[JobRecord]) -> dict[str, list[JobRecord]]:
    """Each id in the records' ``depends_on`` with its records (a job, or an
    array's items in index order); ids the store does not know are left out."""
    wanted = sorted({d for r in records for d in r.depends_on})
    if not wanted:
        return {}
    found = store.get_many(wanted)
    deps: dict[str, list[JobRecord]] = {i: [r] for i, r in found.items()}
    for missing in (i for i in wanted if i not in found):
        items = store.query(array_id=missing, oldest_first=True)
        if items:
            deps[missing] = sorted(items, key=lambda r: r.array_index or 0)
    return deps


def unfinished(dependencies: Mapping[str, Sequence[JobRecord]]) -> list[JobRecord]:
    """The dependency records that have not SUCCEEDED (what a hold waits on)."""
    return [r for deps in dependencies.values() for r in deps if r.state is not JobState.SUCCEEDED]


def failed(dependencies: Mapping[str, Sequence[JobRecord]]) -> bool:
    """Whether a dependency already ended FAILED or CANCELLED."""
    return any(
        r.state in (JobState.FAILED, JobState.CANCELLED)
        for deps in dependencies.values()
        for r in deps
    )


def failed_root(store: Store, record: JobRecord) -> JobRecord | None:
    """The job whose failure dooms ``record``: a dependency that ended FAILED or
    CANCELLED, followed through dependencies that failed for DEPENDENCY."""
    for deps in load(store, [record]).values():
        for dep in deps:
            if dep.state not in (JobState.FAILED, JobState.CANCELLED):
                continue
            root_id = dep.extra.get("failed_dependency")
            if dep.failure_reason is FailureReason.DEPENDENCY and root_id:
                try:
                    return store.get(str(root_id))
                except JobNotFoundError:
                    return dep
            return dep
    return None


def failure_message(root: JobRecord) -> str:
    """The contract's wording: ``dependency <id> failed (<REASON>: <message>)``."""
    reason = root.failure_reason.value if root.failure_reason else root.state.value
    return f"dependency {root.id} failed ({reason}: {root.message or 'no message'})"
