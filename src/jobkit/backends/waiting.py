"""What a held job waits on, read from the store, for backends that hold jobs
themselves (Slurm's ``--dependency``, suspended Kubernetes Jobs).

    record.depends_on ─► load(store, records) ─► {id: [records]} (an id that is
                         no job is an array: its items, in index order)
                      ─► unfinished(...): what a hold still waits for

The reconciler's release/fail step (:mod:`jobkit.dependencies`) decides
when held jobs start or fail; these helpers only let a backend say what it
sees in the same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from jobkit.states import JobRecord, JobState

if TYPE_CHECKING:
    from jobkit.stores.base import Store

HELD_BY = "held_by"
"""``extra`` key: who holds the job and on what, for ``jobkit status``
(``Slurm: afterok:123``, ``Kubernetes: suspended Job jk-...``)."""


def load(store: Store, records: Sequence[JobRecord]) -> dict[str, list[JobRecord]]:
    """Each id in the records' ``depends_on`` with its records (a job, or an
    array's items in index order); ids the store does not know are left out."""
    from jobkit.dependencies import states_of

    return states_of(store, [d for r in records for d in r.depends_on])


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
