"""Dependencies Slurm holds itself: ``--dependency`` from jobkit's ``depends_on``.

When every unfinished dependency of a submission is a Slurm job of the same
cluster, Slurm (not a jobkit process) keeps the dependent waiting, so a
chain finishes after the notebook that submitted it is gone::

    records' depends_on ─► dependency records (the store; an id that is no
                           job is an array: its items)
    can_hold ─► holdable(): each unfinished dependency is a Slurm job of this
                cluster (extra["slurm_cluster"]) with a Slurm id
    submit   ─► option(chunk): aftercorr:<array job> (item i after item i of
                one Slurm array) or afterok:<id>:<id>... (everything else)
             ─► #SBATCH --dependency=...  #SBATCH --kill-on-invalid-dep=yes
    a dependency fails ─► Slurm cancels the dependent (DependencyNeverSatisfied;
                sacct says CANCELLED/Dependency) ─► observe: never CANCELLED; left
                waiting for the reconciler's step to fail it FAILED/DEPENDENCY
                naming the root job (SlurmBackend._dependency_end)

``--kill-on-invalid-dep=yes`` so that nothing waits forever in Slurm's
queue once its dependency failed.  Dependencies that already SUCCEEDED are
left out of the option: Slurm may have forgotten them (``MinJobAge``).
Pure functions over records; the backend does the store reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jobkit.backends.waiting import unfinished
from jobkit.states import JobRecord, JobState

CLUSTER_KEY = "slurm_cluster"
"""``extra`` key: the ClusterName of the Slurm cluster that took the job."""
KILLED_REASONS = frozenset({"DependencyNeverSatisfied"})
"""squeue's reason for a job Slurm cancelled because its dependency failed."""
ACCOUNTING_REASON = "Dependency"
"""sacct's reason for the same job (also that of a job cancelled while it waited)."""


def holdable(dependencies: Mapping[str, Sequence[JobRecord]], cluster: str | None) -> bool:
    """True when Slurm can keep the dependents waiting itself: every unfinished
    dependency is a Slurm job of ``cluster`` with a Slurm id, none has failed
    already (that is the reconciler's to record, not Slurm's), and none may
    be retried: jobkit resubmits a retried attempt under a new Slurm id, and
    Slurm would kill the dependent when the first attempt fails."""
    waiting = unfinished(dependencies)
    return bool(cluster) and all(
        r.backend == "slurm"
        and r.backend_id
        and r.extra.get(CLUSTER_KEY) == cluster
        and not r.is_terminal
        and not r.resources.get("retries")
        for r in waiting
    )


def option(
    chunk: Sequence[JobRecord],
    dependencies: Mapping[str, Sequence[JobRecord]],
    tasks: Sequence[int] | None = None,
) -> str | None:
    """The ``--dependency`` value for one sbatch of ``chunk``, whose item k is
    array task ``tasks[k]`` (default: task k).

    ``aftercorr:<array job>`` when item k waits only for item k of a single
    Slurm array submitted with the same task numbering; otherwise
    ``afterok`` with every unfinished dependency (a whole array by its array
    job id(s)): an array's tasks share one sbatch, so each waits for all.
    None when nothing is left to wait for.
    """
    corresponding = _corresponding(chunk, dependencies, tasks or range(len(chunk)))
    if corresponding is not None:
        return f"aftercorr:{corresponding}"
    ids: set[str] = set()
    for dep_id in {d for r in chunk for d in r.depends_on}:
        records = dependencies.get(dep_id, [])
        whole_array = len(records) != 1 or records[0].id != dep_id
        for record in records:
            if record.state is JobState.SUCCEEDED or not record.backend_id:
                continue
            ids.add(record.backend_id.split("_")[0] if whole_array else record.backend_id)
    return "afterok:" + ":".join(sorted(ids, key=_slurm_order)) if ids else None


def _corresponding(
    chunk: Sequence[JobRecord],
    dependencies: Mapping[str, Sequence[JobRecord]],
    tasks: Sequence[int],
) -> str | None:
    """The Slurm array job whose task ``tasks[k]`` is chunk[k]'s only dependency,
    if there is one (aftercorr pairs equal task ids of the two arrays)."""
    if not chunk or any(r.array_id is None or len(r.depends_on) != 1 for r in chunk):
        return None
    bases: set[str] = set()
    for task, record in zip(tasks, chunk, strict=True):
        deps = dependencies.get(record.depends_on[0], [])
        if len(deps) != 1 or deps[0].array_id is None or not deps[0].backend_id:
            return None
        if deps[0].state is JobState.SUCCEEDED:
            return None  # Slurm may have forgotten it (MinJobAge): afterok names the rest
        base, _, index = deps[0].backend_id.partition("_")
        if index != str(task):
            return None
        bases.add(base)
    return bases.pop() if len(bases) == 1 else None


def _slurm_order(slurm_id: str) -> tuple[int, int]:
    base, _, task = slurm_id.partition("_")
    return (int(base) if base.isdigit() else 0, int(task) if task.isdigit() else -1)
