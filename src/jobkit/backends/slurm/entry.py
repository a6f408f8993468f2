"""What a Slurm job runs: the jobkit worker, wrapped for submitit.

submitit starts ``python -m submitit.core._submit FOLDER`` on every task; it
unpickles a :class:`SlurmEntry` and calls it.  Rank 0 runs the jobkit worker
(payload from the store, outcome and states back to it); other ranks run the
function without recording.  submitit turns Slurm's SIGUSR2 warning and
preemption SIGTERM into a call to :meth:`SlurmEntry.checkpoint`, which asks
the user's :class:`~jobkit.Checkpointable` for its resumed call, stores it
as the job's new signed payload, marks the job QUEUED (attempt + 1) and lets
submitit requeue the same Slurm job.
"""

from __future__ import annotations

import os
import time
from typing import Any

from jobkit.backends.slurm import queries
from jobkit.serialization import Call
from jobkit.states import FailureReason, JobState
from jobkit.worker import run_job


class SlurmEntry:
    """Picklable by reference; holds the running call only in memory."""

    def __init__(self) -> None:
        self._call: Call | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}  # never pickle the running call into submitit's files

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._call = None

    def _keep(self, call: Call) -> None:
        self._call = call

    def __call__(self, store_url: str, job_id: str) -> int:
        return run_in_slurm(store_url, job_id, on_call=self._keep)

    def checkpoint(self, store_url: str, job_id: str) -> Any:
        """Called by submitit on timeout warning or preemption (rank 0 only)."""
        from jobkit.backends.slurm import submitit_adapter
        from jobkit.reconcile import requeue
        from jobkit.serialization import dump_payload
        from jobkit.signing import load_key
        from jobkit.stores.base import payload_key
        from jobkit.stores.patient import open_patient_store

        call = self._call
        if call is None:
            return None  # not started yet: nothing to resume from
        fn = call.resolve()
        hook = getattr(fn, "checkpoint", None)
        if hook is None:
            return None  # not checkpointable: the job ends with its timeout
        resumed = hook(*call.args, **call.kwargs)
        if resumed is None:
            return None
        args, kwargs = resumed
        store = open_patient_store(store_url)
        key = load_key()
        store.put_blob(
            payload_key(job_id),
            dump_payload(
                Call(fn=fn, args=tuple(args), kwargs=dict(kwargs)), key=key, job_id=job_id
            ),
        )
        requeue(
            store,
            store.get(job_id),
            f"requeued from a checkpoint at {time.strftime('%H:%M:%S')}",
            reason="CHECKPOINTED",
        )
        return submitit_adapter.resubmission(self, store_url, job_id)


def _classify(error: BaseException) -> tuple[FailureReason, str] | None:
    """submitit stops a job at Slurm's time-limit warning when it cannot requeue it."""
    from jobkit.backends.slurm import submitit_adapter

    if submitit_adapter.is_time_limit_stop(error):
        return FailureReason.TIMEOUT, f"reached its time limit: {error}"
    return None


def run_in_slurm(store_url: str, job_id: str, *, on_call: Any = None) -> int:
    """The jobkit worker inside a Slurm job (both launch paths come here).

    Rank 0 records; other ranks follow.  When the worker requeued a failed
    attempt (:func:`jobkit.reconcile.retry_allowed`: retries left), the
    Slurm job is requeued through ``scontrol requeue``: Slurm does not rerun
    failures by itself.
    """
    from jobkit.environment import env
    from jobkit.signing import load_key
    from jobkit.stores.patient import open_patient_store

    os.environ["JOBKIT_JOB_ID"] = job_id
    os.environ.setdefault("JOBKIT_STORE", store_url)
    store = open_patient_store(store_url)
    rank = env().rank
    attempt = store.get(job_id).attempt if rank == 0 else 0
    code = run_job(
        store, job_id, load_key(), follower=rank != 0, on_call=on_call, classify=_classify
    )
    if rank == 0 and _worker_requeued(store, job_id, attempt):
        queries.run(["scontrol", "requeue", _slurm_job_id()])
    return code


def _slurm_job_id() -> str:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ["SLURM_JOB_ID"]


def _worker_requeued(store: Any, job_id: str, attempt: int) -> bool:
    current = store.get(job_id)
    return bool(current.state is JobState.QUEUED and current.attempt > attempt)
