"""The Slurm backend: jobs and arrays through submitit, states by batched queries.

submitit does what it does well (sbatch scripts, arrays, the job
environment, USR2 checkpoint-and-requeue); every Slurm job runs the jobkit
worker (:mod:`jobkit.backends.slurm.entry`) so payloads, outcomes and
states flow through the jobkit store like on every backend.

Two-phase submission: the client records PENDING; ``submit`` calls sbatch
(one call for a whole ``map``, split only above the cluster's
``MaxArraySize``) and records the Slurm id.  ``reconcile`` repairs what the
worker could not record itself (timeouts, OOM kills, node failures, an
``scancel`` from outside) with one ``squeue`` per cycle for all jobs, plus
one ``sacct`` for jobs the controller has already forgotten.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobkit.backends.base import Backend, BackendHost
from jobkit.backends.slurm import queries, submitit_adapter
from jobkit.backends.slurm.submitit_adapter import Submitted
from jobkit.backends.slurm.translate import SlurmSettings, sbatch_parameters, translate_state
from jobkit.errors import BackendError, SubmitError
from jobkit.reconcile import Failure, fail, vanished
from jobkit.states import ACTIVE_STATES, LEGAL_TRANSITIONS, FailureReason, JobRecord, JobState

if TYPE_CHECKING:
    from jobkit.resources import Resources

SUBMIT_GRACE = 120.0
"""Seconds a PENDING job may lack a Slurm id before reconcile calls it lost
(the submitting process died between recording it and sbatch)."""


class SlurmBackend(Backend):
    name = "slurm"

    def __init__(self, host: BackendHost) -> None:
        super().__init__(host)
        from jobkit.paths import home_dir

        if submitit_adapter.missing():  # fail before anything is recorded
            raise BackendError(f"the slurm backend needs submitit: {submitit_adapter.INSTALL_HINT}")
        self.settings = SlurmSettings.from_config(host.config.slurm)
        base = self.store.local_dir or home_dir()
        self.folder = (
            Path(self.settings.folder).expanduser() if self.settings.folder else base / "slurm"
        )
        self._accounting: bool | None = {"on": True, "off": False}.get(self.settings.accounting)
        self._max_array: int | None = None
        self.queries_made = 0
        """Scheduler commands issued by reconcile (for the benchmark's count)."""

    @classmethod
    def available(cls, config: Any) -> tuple[bool, str]:
        if shutil.which("sbatch") is None:
            return False, "sbatch not found: install the Slurm client tools (and set SLURM_CONF)"
        missing = submitit_adapter.missing()
        if missing:
            return False, missing
        changed = submitit_adapter.incompatibilities()
        if changed:
            return False, (
                f"the installed submitit is not one jobkit supports ({changed[0]}): "
                f"{submitit_adapter.INSTALL_HINT}"
            )
        problem = queries.config_problem()
        if problem:
            return False, problem
        try:
            out = queries.run(["scontrol", "ping"], timeout=10)
        except BackendError as exc:
            return False, str(exc)
        if "UP" not in out:
            return False, f"slurmctld is not up: {' '.join(out.split())}"
        return True, " ".join(out.split())

    # -- submitting ------------------------------------------------------------
    def check_resources(self, resources: Resources) -> None:
        sbatch_parameters(resources, self.settings)

    def _executor(
        self, resources: Resources, *, checkpointable: bool = False, name: str | None = None
    ) -> Any:
        """An executor set up for ``resources``; ``name`` (the function's) names the
        Slurm job unless ``resources.name`` does, so squeue and sacct show what
        ``jobkit list`` shows."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        params = sbatch_parameters(resources, self.settings, checkpointable=checkpointable)
        if name and not resources.name:
            params["job_name"] = name[:128]
        return submitit_adapter.executor(self.folder, self.settings.max_num_timeout, params)

    def submit(self, records: Sequence[JobRecord], resources: Resources) -> None:
        """One sbatch for one job, one ``sbatch --array`` per ``MaxArraySize`` items.

        Jobs that need submitit's runtime (a checkpoint to requeue from, or
        several tasks) run :class:`~jobkit.backends.slurm.entry.SlurmEntry`
        through submitit's pickles; the others run ``python -m jobkit.worker``
        straight from submitit's sbatch script, saving each task the
        submitit start-up and pickle round trip (~0.1 s of CPU).
        """
        checkpointable = bool(records[0].extra.get("checkpointable"))
        executor = self._executor(resources, checkpointable=checkpointable, name=records[0].name)
        direct = not checkpointable and resources.nodes * resources.tasks_per_node == 1
        try:
            if direct:
                jobs = self._submit_direct(executor, records)
            else:
                jobs = self._submit_with_submitit(executor, records)
        except queries.CommandError as exc:  # sbatch refused: its message, once, in one line
            raise SubmitError(str(exc)) from exc
        except OSError as exc:
            raise SubmitError(f"cannot run sbatch: {exc}") from exc
        except Exception as exc:
            if not submitit_adapter.is_failed_job_error(exc):
                raise
            raise SubmitError(queries.explain(_first_line(str(exc)) or "sbatch failed")) from exc
        now = time.time()
        for record, job in zip(records, jobs, strict=True):
            extra = {
                **record.extra,
                "stdout": str(job.stdout),
                "stderr": str(job.stderr),
            }
            # The id first: the job may already run (and be RUNNING) by now.
            self.store.update(record.id, backend_id=str(job.job_id), extra=extra)
            self.store.transition(
                record.id, JobState.QUEUED, expect=(JobState.PENDING,), submitted_at=now
            )

    def _chunks(self, records: Sequence[JobRecord]) -> list[tuple[int, Sequence[JobRecord]]]:
        size = self.max_array_size()
        return [(start, records[start : start + size]) for start in range(0, len(records), size)]

    def _submit_with_submitit(self, executor: Any, records: Sequence[JobRecord]) -> list[Submitted]:
        from jobkit.backends.slurm.entry import SlurmEntry

        entry, url = SlurmEntry(), self.store.url
        if len(records) == 1 and records[0].array_id is None:
            return [submitit_adapter.submit_call(executor, entry, url, records[0].id)]
        jobs: list[Submitted] = []
        for _start, chunk in self._chunks(records):
            jobs += submitit_adapter.submit_call_array(
                executor, entry, [url] * len(chunk), [r.id for r in chunk]
            )
        return jobs

    def _submit_direct(self, executor: Any, records: Sequence[JobRecord]) -> list[Submitted]:
        import shlex

        worker = self._worker_command(executor)
        if len(records) == 1 and records[0].array_id is None:
            # submitit's own script writer and sbatch call, with our command.
            command = f"{worker} {shlex.quote(records[0].id)}"
            return [submitit_adapter.submit_command(executor, command)]
        jobs: list[Submitted] = []
        array_id = shlex.quote(str(records[0].array_id))
        for start, chunk in self._chunks(records):
            command = f"{worker} --array {array_id} --offset {start}"
            jobs += submitit_adapter.submit_command_array(executor, command, len(chunk))
        return jobs

    def _worker_command(self, executor: Any) -> str:
        import shlex

        python = shlex.quote(submitit_adapter.python(executor))
        return (
            f"{python} -u -m jobkit.worker --launcher slurm --store {shlex.quote(self.store.url)}"
        )

    def max_array_size(self) -> int:
        if self._max_array is None:
            self._max_array = queries.max_array_size()
        return self._max_array

    def plan(
        self, resources: Resources, *, checkpointable: bool = False, name: str | None = None
    ) -> str:
        """The exact sbatch script a submission with these resources gets."""
        executor = self._executor(resources, checkpointable=checkpointable, name=name)
        direct = not checkpointable and resources.nodes * resources.tasks_per_node == 1
        # A single job's id is only known at submit time: JOB_ID stands for it.
        command = (
            f"{self._worker_command(executor)} JOB_ID"
            if direct
            else submitit_adapter.submitit_command(executor)
        )
        return submitit_adapter.sbatch_script(command, self.folder, executor.parameters)

    # -- controlling -----------------------------------------------------------
    def cancel(self, records: Sequence[JobRecord]) -> None:
        queries.scancel(r.backend_id for r in records if r.backend_id)

    def read_logs(self, record: JobRecord, stream: str) -> str:
        path = record.extra.get(stream)
        if not path:
            return ""
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- reconciling -----------------------------------------------------------
    def reconcile(self, records: Sequence[JobRecord]) -> None:
        """Map Slurm's view of ``records`` onto the store: one squeue, at most one sacct."""
        active = [r for r in records if not r.is_terminal]
        if not active:
            return
        native = queries.squeue()
        self.queries_made += 1
        missing = [r.backend_id for r in active if r.backend_id and r.backend_id not in native]
        if missing and self._accounting is not False:
            try:
                native.update(queries.sacct(missing))
                self.queries_made += 1
                self._accounting = True
            except queries.CommandError as exc:
                if not queries.accounting_disabled(exc):
                    raise
                self._accounting = False
        now = time.time()
        for record in active:
            if record.backend_id is None:
                if record.state is JobState.PENDING and now - record.created_at > SUBMIT_GRACE:
                    never = "never reached Slurm (the submitting process stopped before sbatch)"
                    fail(self.store, record.id, Failure(FailureReason.SUBMIT_ERROR, never))
                continue
            seen = native.get(record.backend_id)
            if seen is None:
                if self._accounting is False:
                    gone = vanished(
                        "left Slurm's queue without recording "
                        "an outcome (accounting is disabled, so Slurm's reason is unknown)"
                    )
                    fail(self.store, record.id, gone)
                continue
            self._apply(record, seen)

    def _apply(self, record: JobRecord, seen: queries.NativeState) -> None:
        mapped = translate_state(seen.state)
        if mapped is None:  # a state we do not know: keep Slurm's word for it
            if record.native_state != seen.state:
                self.store.update(record.id, native_state=seen.state)
            return
        state, reason = mapped
        if not state.is_terminal:
            # Only toward QUEUED (accepted, or requeued by Slurm): RUNNING is the
            # worker's to record, and a stale snapshot must not undo a requeue.
            if (
                state is JobState.QUEUED
                and state is not record.state
                and state in LEGAL_TRANSITIONS[record.state]
            ):
                self.store.transition(
                    record.id, JobState.QUEUED, expect=(record.state,), native_state=seen.state
                )
            return
        # The worker records the end itself; reaching here means it could not.
        if state is JobState.CANCELLED:
            self.store.transition(
                record.id,
                JobState.CANCELLED,
                expect=ACTIVE_STATES,
                native_state=seen.state,
                finished_at=time.time(),
            )
            return
        detail = f"Slurm says {seen.state}"
        if seen.reason and seen.reason != "None":
            detail += f" ({seen.reason})"
        if seen.exit_code:
            detail += f", exit code {seen.exit_code}"
        if state is JobState.SUCCEEDED:
            reason, detail = FailureReason.LOST, detail + " but the worker recorded no outcome"
        failure = Failure(reason or FailureReason.ERROR, detail, seen.exit_code, seen.state)
        # Final even with retries left: Slurm does not rerun a job by itself and
        # this backend does not resubmit (the worker requeues what it sees fail).
        fail(self.store, record.id, failure)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[0]
