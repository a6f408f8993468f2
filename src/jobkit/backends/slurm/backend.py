"""The Slurm backend: jobs and arrays through submitit, states by batched queries.

submitit does what it does well (sbatch scripts, arrays, the job
environment, USR2 checkpoint-and-requeue); every Slurm job runs the jobkit
worker (:mod:`jobkit.backends.slurm.entry`) so payloads, outcomes and
states flow through the jobkit store like on every backend.

Two-phase submission: the client records PENDING; ``submit`` calls sbatch
(one call for a whole ``map``, split only above the cluster's
``MaxArraySize``, each marked with a ``--comment``) and returns the Slurm
ids.  A dead submitter's PENDING jobs (the reconciler decides which) are
looked up by that mark: found, they are accepted with their Slurm id; not
found, they are stuck (FAILED/SUBMIT_ERROR).  ``observe`` says what Slurm
sees of active jobs with one ``squeue`` per cycle for all of them, plus one
``sacct`` for jobs the controller has already forgotten; the reconciler
records from it what the worker could not (timeouts, OOM kills, node
failures, an ``scancel`` from outside).

Dependencies on Slurm jobs of the same cluster are Slurm's to hold
(``can_hold``; ``--dependency=afterok``/``aftercorr``, see
:mod:`jobkit.backends.slurm.dependency`): a dependent Slurm cancelled
because its dependency failed is observed as FAILED/DEPENDENCY.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobkit.backends import waiting
from jobkit.backends.base import Accepted, Backend, BackendServices, Observation
from jobkit.backends.slurm import dependency, queries, submitit_adapter
from jobkit.backends.slurm.submitit_adapter import Submitted
from jobkit.backends.slurm.translate import SlurmSettings, sbatch_parameters, translate_state
from jobkit.errors import BackendError, JobNotFoundError, SubmitError
from jobkit.observation import Phase
from jobkit.reconcile import abandoned_message, submitter_gone
from jobkit.states import FailureReason, JobRecord, JobState

if TYPE_CHECKING:
    from jobkit.config import Config
    from jobkit.resources import Resources

MARK = "jobkit:"
"""Every sbatch carries ``--comment=jobkit:<job id>`` (one job) or
``jobkit:<array id>:<offset>`` (one chunk of a map): a job whose submitter
died after sbatch but before recording the Slurm id is found by it.  A rerun
(:mod:`jobkit.rerun`) adds ``@<tag>`` (its reopening time, in ms): Slurm may
still list the ended attempt's job under the plain mark."""

PHASES = {
    JobState.QUEUED: Phase.WAITING,
    JobState.RUNNING: Phase.RUNNING,
    JobState.SUCCEEDED: Phase.ENDED,
    JobState.FAILED: Phase.ENDED,
    JobState.CANCELLED: Phase.CANCELLED,
}
""":data:`~jobkit.backends.slurm.translate.STATES` read as phases of an attempt."""


class SlurmBackend(Backend):
    name = "slurm"
    sparse_arrays = True  # one sbatch --array over exactly the items given

    settings: SlurmSettings

    def __init__(self, settings: SlurmSettings, services: BackendServices) -> None:
        super().__init__(settings, services)
        from jobkit.paths import home_dir

        if submitit_adapter.missing():  # fail before anything is recorded
            raise BackendError(f"the slurm backend needs submitit: {submitit_adapter.INSTALL_HINT}")
        base = self.store.local_dir or home_dir()
        self.folder = (
            Path(self.settings.folder).expanduser() if self.settings.folder else base / "slurm"
        )
        self._accounting: bool | None = {"on": True, "off": False}.get(self.settings.accounting)
        self._max_array: int | None = None
        self._cluster: str | None = None
        self.queries_made = 0
        """Scheduler commands issued by observe (for the benchmark's count)."""

    @classmethod
    def settings_from(cls, config: Config) -> SlurmSettings:
        return SlurmSettings.from_config(config.slurm)

    @classmethod
    def available(cls, settings: SlurmSettings) -> tuple[bool, str]:
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

    def submit(self, records: Sequence[JobRecord], resources: Resources) -> list[Accepted]:
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
        deps = waiting.load(self.store, records)
        options: dict[str, str | None] = {}
        try:
            cluster = self.cluster_name()  # one `scontrol show config` per process
            if direct:
                jobs = self._submit_direct(executor, records, deps, options)
            else:
                jobs = self._submit_with_submitit(executor, records, deps, options)
        except queries.CommandError as exc:  # sbatch refused: its message, once, in one line
            raise SubmitError(str(exc)) from exc
        except OSError as exc:
            raise SubmitError(f"cannot run sbatch: {exc}") from exc
        except Exception as exc:
            if not submitit_adapter.is_failed_job_error(exc):
                raise
            raise SubmitError(queries.explain(_first_line(str(exc)) or "sbatch failed")) from exc
        extras: list[dict[str, str]] = []
        for record, job in zip(records, jobs, strict=True):
            extra = {"stdout": str(job.stdout), "stderr": str(job.stderr)}
            if cluster:
                extra[dependency.CLUSTER_KEY] = cluster
            held = options.get(record.id)
            if held:
                extra[waiting.HELD_BY] = f"Slurm: {held}"
            extras.append(extra)
        return [
            Accepted(record.id, str(job.job_id), extra)
            for record, job, extra in zip(records, jobs, extras, strict=True)
        ]

    def can_hold(
        self, records: Sequence[JobRecord], dependencies: Mapping[str, Sequence[JobRecord]]
    ) -> bool:
        """Slurm holds the jobs itself (``--dependency``) when every unfinished
        dependency is a Slurm job of this cluster with a Slurm id."""
        if not waiting.unfinished(dependencies):
            return False
        try:
            cluster = self.cluster_name()
        except BackendError:
            return False  # jobkit holds them; submit reports what is wrong with Slurm
        return dependency.holdable(dependencies, cluster)

    def cluster_name(self) -> str:
        """This cluster's ClusterName (recorded with each job, compared by ``can_hold``)."""
        if self._cluster is None:
            self._read_config()
        return self._cluster or ""

    def _read_config(self) -> None:
        config = queries.show_config()
        self._cluster = config.get("ClusterName", "")
        if self._max_array is None:
            try:
                self._max_array = int(config.get("MaxArraySize", ""))
            except ValueError:
                self._max_array = queries.DEFAULT_MAX_ARRAY_SIZE

    @staticmethod
    def _depend(
        executor: Any,
        chunk: Sequence[JobRecord],
        deps: Mapping[str, Sequence[JobRecord]],
        options: dict[str, str | None],
        tasks: Sequence[int] | None = None,
    ) -> None:
        """Set (or clear) the chunk's ``--dependency`` on ``executor``; ``tasks``:
        the chunk's array task ids (default 0, 1, ...)."""
        value = dependency.option(chunk, deps, tasks) if deps else None
        extra = dict(executor.parameters.get("additional_parameters") or {})
        extra.pop("dependency", None)
        extra.pop("kill-on-invalid-dep", None)
        if value:
            extra.update({"dependency": value, "kill-on-invalid-dep": "yes"})
        executor.update_parameters(additional_parameters=extra)
        options.update((r.id, value) for r in chunk)

    def _chunks(self, records: Sequence[JobRecord]) -> list[tuple[int, list[JobRecord], list[int]]]:
        """A map's items as sbatch arrays: (offset, items, task ids), one per
        window of ``MaxArraySize`` item indices (Slurm caps the task id, not the
        count).  Item ``i`` is task ``i - offset``: a whole map is
        ``--array=0-(n-1)``, a rerun of items 3, 7 and 12 ``--array=3,7,12``."""
        size = self.max_array_size()
        windows: dict[int, tuple[list[JobRecord], list[int]]] = {}
        for position, record in enumerate(records):
            index = record.array_index if record.array_index is not None else position
            start = index - index % size
            chunk, tasks = windows.setdefault(start, ([], []))
            chunk.append(record)
            tasks.append(index - start)
        return [(start, chunk, tasks) for start, (chunk, tasks) in sorted(windows.items())]

    def _submit_with_submitit(
        self,
        executor: Any,
        records: Sequence[JobRecord],
        deps: Mapping[str, Sequence[JobRecord]],
        options: dict[str, str | None],
    ) -> list[Submitted]:
        from jobkit.backends.slurm.entry import SlurmEntry

        entry, url = SlurmEntry(), self.store.url
        if len(records) == 1 and records[0].array_id is None:
            executor.update_parameters(comment=_mark(records[0], 0))
            self._depend(executor, records, deps, options)
            return [submitit_adapter.submit_call(executor, entry, url, records[0].id)]
        jobs: list[Submitted] = []
        for start, chunk, tasks in self._chunks(records):
            executor.update_parameters(comment=_mark(chunk[0], start))
            self._depend(executor, chunk, deps, options, tasks)
            jobs += submitit_adapter.submit_call_array(
                executor, entry, tasks, [url] * len(chunk), [r.id for r in chunk]
            )
        return jobs

    def _submit_direct(
        self,
        executor: Any,
        records: Sequence[JobRecord],
        deps: Mapping[str, Sequence[JobRecord]],
        options: dict[str, str | None],
    ) -> list[Submitted]:
        import shlex

        worker = self._worker_command(executor)
        if len(records) == 1 and records[0].array_id is None:
            # submitit's own script writer and sbatch call, with our command.
            command = f"{worker} {shlex.quote(records[0].id)}"
            executor.update_parameters(comment=_mark(records[0], 0))
            self._depend(executor, records, deps, options)
            return [submitit_adapter.submit_command(executor, command)]
        jobs: list[Submitted] = []
        array_id = shlex.quote(str(records[0].array_id))
        for start, chunk, tasks in self._chunks(records):
            executor.update_parameters(comment=_mark(chunk[0], start))
            self._depend(executor, chunk, deps, options, tasks)
            command = f"{worker} --array {array_id} --offset {start}"
            jobs += submitit_adapter.submit_command_array(executor, command, tasks)
        return jobs

    def _worker_command(self, executor: Any) -> str:
        import shlex

        python = shlex.quote(submitit_adapter.python(executor))
        return (
            f"{python} -u -m jobkit.worker --launcher slurm --store {shlex.quote(self.store.url)}"
        )

    def max_array_size(self) -> int:
        if self._max_array is None:
            self._read_config()
        return self._max_array or queries.DEFAULT_MAX_ARRAY_SIZE

    def plan(
        self,
        resources: Resources,
        *,
        checkpointable: bool = False,
        name: str | None = None,
        after: Sequence[str] = (),
    ) -> str:
        """The exact sbatch script a submission with these resources gets; with
        ``after`` (job or array ids in the store), the ``--dependency`` it would
        carry, or a comment saying jobkit would hold it instead."""
        # A single job's id is only known at submit time: JOB_ID stands for it.
        job = JobRecord(id="JOB_ID", name=name or "", backend=self.name, depends_on=list(after))
        job.extra["checkpointable"] = checkpointable
        deps = waiting.load(self.store, [job]) if after else {}
        unknown = [i for i in after if i not in deps]
        if unknown:
            raise JobNotFoundError(f"no job or array {unknown[0]} in the store {self.store.url}")
        if waiting.unfinished(deps) and not self.can_hold([job], deps):
            note = (
                "# held by jobkit until its dependencies succeed (Slurm can wait only on "
                "Slurm jobs of this cluster with a Slurm id and no retries), then submitted "
                "without --dependency\n"
            )
            return note + self.script([job], resources, {})
        return self.script([job], resources, deps)

    def script(
        self,
        records: Sequence[JobRecord],
        resources: Resources,
        dependencies: Mapping[str, Sequence[JobRecord]],
    ) -> str:
        """The sbatch script ``submit`` sends for ``records`` (their first chunk),
        waiting on ``dependencies`` as Slurm would hold them."""
        first = records[0]
        checkpointable = bool(first.extra.get("checkpointable"))
        executor = self._executor(resources, checkpointable=checkpointable, name=first.name)
        direct = not checkpointable and resources.nodes * resources.tasks_per_node == 1
        array = first.array_id is not None
        chunk = records[: self.max_array_size()] if array else records[:1]
        self._depend(executor, chunk, dependencies, {})
        parameters = dict(executor.parameters)
        if array:
            parameters["map_count"] = len(chunk)  # as submit_command_array sets it
        worker = self._worker_command(executor)
        if not direct:
            command = submitit_adapter.submitit_command(executor)
        elif array:
            command = f"{worker} --array {first.array_id} --offset 0"
        else:
            command = f"{worker} {first.id}"
        return submitit_adapter.sbatch_script(command, self.folder, parameters)

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

    # -- observing -------------------------------------------------------------
    def observe(self, records: Sequence[JobRecord]) -> Mapping[str, Observation]:
        """Slurm's view of ``records``: one squeue, at most one sacct."""
        active = [r for r in records if not r.is_terminal]
        if not active:
            return {}
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
        seen: dict[str, Observation] = {}
        marked: dict[str, str] | None = None
        for record in active:
            if record.backend_id is None:
                marked = _marked(native) if marked is None else marked
                found = marked.get(record.id + _rerun_tag(record))
                if found is not None:  # sbatch ran; its submitter did not record the id
                    observed = _observation(native[found])
                    seen[record.id] = dataclasses.replace(
                        observed,
                        backend_id=found,
                        message=observed.message
                        or "found in Slurm's queue by its mark after its submitter stopped",
                    )
                elif submitter_gone(record, now=now):
                    seen[record.id] = Observation(
                        "NOT_SUBMITTED",
                        Phase.STUCK,
                        FailureReason.SUBMIT_ERROR,
                        abandoned_message(record, "Slurm") + " (no Slurm job carries its mark)",
                    )
                continue
            state = native.get(record.backend_id)
            if state is not None:
                observed = _observation(state)
                if observed.hint is FailureReason.DEPENDENCY:
                    observed = self._dependency_end(record, observed, state)
                elif observed.phase is Phase.ENDED and observed.hint in _MAYBE_MEMORY:
                    observed = _memory_kill(record, observed)
                seen[record.id] = observed
            elif self._accounting is False:
                seen[record.id] = Observation(
                    "GONE",
                    Phase.ENDED,
                    message="left Slurm's queue without recording an outcome (accounting "
                    "is disabled, so Slurm's reason is unknown)",
                )
        return seen

    def _dependency_end(
        self, record: JobRecord, observed: Observation, state: queries.NativeState
    ) -> Observation:
        """A job Slurm cancelled for its dependency, never read as CANCELLED.

        While a dependency is unfinished or failed in the store, it is left
        waiting: the reconciler's release/fail step (which runs before observe)
        fails it FAILED/DEPENDENCY naming the root job, with
        ``extra["failed_dependency"]``, as soon as the store knows how the
        dependency ended.  With every dependency SUCCEEDED in the store, Slurm's
        word stands: FAILED/DEPENDENCY with Slurm's reason; except for sacct's
        ``Dependency``, which is also the reason of a job cancelled from outside
        while it waited: that is the cancellation it is."""
        deps = waiting.load(self.store, [record])
        if waiting.unfinished(deps):
            # No message: the step may have just ended it, and a message is
            # written whatever the state (reconcile.apply).
            return Observation(state.state, Phase.WAITING)
        if state.reason in dependency.KILLED_REASONS:
            return observed
        return Observation(state.state, Phase.CANCELLED)


_MAYBE_MEMORY = (None, FailureReason.ERROR, FailureReason.LOST)
"""Hints under which a job may have been killed for its memory: without cgroups
(``OverMemoryKill`` of the linux gatherer) Slurm says only FAILED."""

_MEMORY_KILL = re.compile(r"exceeded (?:job )?memory limit[^\n]*", re.IGNORECASE)


def _memory_kill(record: JobRecord, observed: Observation) -> Observation:
    """``observed`` as an OOM when slurmstepd wrote that it killed the job for
    its memory (``... exceeded memory limit (N > M), being killed``) to the job's
    stderr, which jobkit names in ``extra["stderr"]``; else ``observed``.

    Slurm reports ``OUT_OF_MEMORY`` only from cgroup OOM events; a cluster that
    enforces ``--mem`` by sampling (``JobAcctGatherParams=OverMemoryKill``, as
    the test cluster does) reports plain FAILED, and only this line tells."""
    path = record.extra.get("stderr")
    if not isinstance(path, str) or not path:
        return observed
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - 65536))
            tail = stream.read().decode(errors="replace")
    except OSError:
        return observed
    found = _MEMORY_KILL.search(tail)
    if found is None:
        return observed
    return dataclasses.replace(
        observed,
        hint=FailureReason.OOM,
        message=f"Slurm killed it for its memory (--mem): {found.group(0).strip()}",
    )


def _observation(seen: queries.NativeState) -> Observation:
    """One squeue or sacct row as an observation.  A job Slurm calls COMPLETED
    whose worker recorded nothing ends with no hint: the reconciler calls it LOST.
    Slurm does not rerun a job by itself and this backend does not resubmit,
    so an observed failure is final (the worker requeues what it sees fail)."""
    mapped = translate_state(seen.state)
    if mapped is None:  # a state we do not know: keep Slurm's word for it
        return Observation(seen.state, Phase.UNKNOWN)
    state, reason = mapped
    if state is JobState.CANCELLED and (
        seen.reason in dependency.KILLED_REASONS or seen.reason == dependency.ACCOUNTING_REASON
    ):
        held = f" ({seen.dependency})" if seen.dependency else ""
        return Observation(
            seen.state,
            Phase.ENDED,
            FailureReason.DEPENDENCY,
            f"Slurm cancelled it: its dependency can never be satisfied{held}",
        )
    phase = PHASES[state]
    if phase is not Phase.ENDED:
        return Observation(seen.state, phase)
    detail = f"Slurm says {seen.state}"
    if seen.reason and seen.reason != "None":
        detail += f" ({seen.reason})"
    if seen.exit_code:
        detail += f", exit code {seen.exit_code}"
    if state is JobState.SUCCEEDED:
        detail += " but the worker recorded no outcome"
    return Observation(seen.state, phase, reason, detail, exit_code=seen.exit_code)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[0]


def _mark(first: JobRecord, offset: int) -> str:
    """The ``--comment`` of a submission whose first job is ``first``."""
    if first.array_id is None:
        return f"{MARK}{first.id}{_rerun_tag(first)}"
    return f"{MARK}{first.array_id}:{offset}{_rerun_tag(first)}"


def _rerun_tag(record: JobRecord) -> str:
    """``@<ms>`` for a rerun's submission (empty for a first one)."""
    when = record.extra.get("rerun_at")
    return f"@{int(when * 1000)}" if isinstance(when, int | float) else ""


def _marked(native: Mapping[str, queries.NativeState]) -> dict[str, str]:
    """jobkit job id (plus a rerun's tag) -> Slurm id, for every job in squeue
    that carries a mark."""
    found: dict[str, str] = {}
    for slurm_id, state in native.items():
        if not state.comment.startswith(MARK):
            continue
        body, at, tag = state.comment[len(MARK) :].partition("@")
        suffix = f"@{tag}" if at else ""
        base, colon, offset = body.rpartition(":")
        _job, underscore, task = slurm_id.partition("_")
        if colon and offset.isdigit():
            if underscore and task.isdigit():
                found[f"{base}.{int(offset) + int(task)}{suffix}"] = slurm_id
        else:
            found[body + suffix] = slurm_id
    return found
