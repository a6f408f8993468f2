"""Every use of submitit, public and private, in one place.

The Slurm backend lets submitit do what it does well (sbatch scripts, job
folders and logs, arrays, USR2 checkpoint-and-requeue) but needs more than
submitit's public API offers.  Nothing else in jobkit imports submitit: when
submitit changes, this module and ``tests/unit/test_submitit_adapter.py``
(which checks every name below by ``inspect`` and renders a golden sbatch
script) are the only places to look.  ``pyproject.toml`` pins submitit to the
releases this list was checked against.

Internals relied on, and why:

``submitit.slurm.slurm._make_sbatch_string(command, folder, **parameters)``
    Renders the sbatch script.  ``jobkit plan`` shows the exact script a job
    would get without submitting anything; the public API only writes it as
    part of a submission.  Its keyword names are also the vocabulary of
    ``translate.sbatch_parameters``.
``SlurmExecutor._submit_command(command)``, and the helpers it calls:
``_make_submission_file_text``, ``_make_submission_command``,
``_get_job_id_from_submission_command``, ``_num_tasks``, ``_write_job_id``,
``_set_job_permissions``, ``job_class``
    Submits a shell command instead of a pickled call.  Single-task jobs run
    ``python -m jobkit.worker`` straight from submitit's script (no submitit
    start-up or pickle round trip).  The method is overridden here so sbatch
    runs through :func:`jobkit.backends.slurm.queries.run`: submitit's
    ``CommandFunction`` *prints* sbatch's stderr before raising it, and a user
    saw Slurm's error twice.
``SlurmExecutor._internal_process_submissions(delayed_submissions)``
    submitit's array path builds a plain ``SlurmExecutor`` for the array; it is
    repeated here (with ``DelayedSubmission.set_timeout``/``dump``,
    ``max_num_timeout``, the ``map_count`` parameter and
    ``JobPaths.move_temporary_file``) so arrays also submit quietly.
``SlurmExecutor._submitit_command_str``
    The ``python -u -m submitit.core._submit FOLDER`` command every pickled
    task runs; shown by ``jobkit plan`` for jobs that need submitit's runtime.
``utils.JobPaths.get_first_id_independent_folder``
    Where submission files are written before the Slurm id is known.
``SlurmExecutor.python``
    The interpreter submitit's scripts start (jobkit's worker uses the same).
``SlurmJob(folder=..., job_id=..., tasks=...)`` and ``job.paths.stdout/stderr``
    Array tasks' job objects, built from the array's first id; the log paths
    are recorded so ``jobkit logs`` reads them without submitit.
``submitit.core.utils.FailedJobError``
    What submitit's own submission path raises when sbatch fails.
``submitit.core.utils.UncompletedJobError`` (the exact type)
    What submitit raises inside a job stopped at the time-limit warning that
    it cannot requeue: jobkit records it as a TIMEOUT.
``submitit.helpers.DelayedSubmission`` (public)
    What a ``checkpoint`` method returns so submitit requeues the job.

submitit is imported lazily, inside each function: ``import jobkit`` and
``jobkit backends`` stay fast, and :func:`missing` reports an uninstalled
submitit as one line instead of an ``ImportError``.
"""

from __future__ import annotations

import functools
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobkit.backends.slurm import queries

INSTALL_HINT = "pip install 'jobkit[slurm]'"


@dataclass(frozen=True)
class Submitted:
    """What jobkit keeps of a submitit job: its Slurm id and its log files."""

    job_id: str
    stdout: Path
    stderr: Path


def missing() -> str | None:
    """Why submitit cannot be used here, or None when it can."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        return f"submitit is missing: {INSTALL_HINT}"
    return None


INTERNALS: Mapping[str, tuple[str, ...] | None] = {
    # "module:attribute.path": the leading parameters it must accept (None: exists).
    "submitit.slurm.slurm:_make_sbatch_string": ("command", "folder"),
    "submitit.slurm.slurm:SlurmExecutor": ("folder", "max_num_timeout"),
    "submitit.slurm.slurm:SlurmExecutor._submit_command": ("self", "command"),
    "submitit.slurm.slurm:SlurmExecutor._make_submission_file_text": ("self", "command", "uid"),
    "submitit.slurm.slurm:SlurmExecutor._make_submission_command": (
        "self",
        "submission_file_path",
    ),
    "submitit.slurm.slurm:SlurmExecutor._get_job_id_from_submission_command": ("string",),
    "submitit.slurm.slurm:SlurmExecutor._num_tasks": ("self",),
    "submitit.slurm.slurm:SlurmExecutor._write_job_id": ("self", "job_id", "uid"),
    "submitit.slurm.slurm:SlurmExecutor._set_job_permissions": ("folder",),
    "submitit.slurm.slurm:SlurmExecutor._internal_process_submissions": (
        "self",
        "delayed_submissions",
    ),
    "submitit.slurm.slurm:SlurmExecutor._submitit_command_str": None,
    "submitit.slurm.slurm:SlurmExecutor.job_class": None,
    "submitit.slurm.slurm:SlurmExecutor.update_parameters": ("self",),
    "submitit.slurm.slurm:SlurmExecutor.submit": ("self", "fn"),
    "submitit.slurm.slurm:SlurmExecutor.map_array": ("self", "fn"),
    "submitit.slurm.slurm:SlurmJob": ("folder", "job_id", "tasks"),
    "submitit.core.utils:JobPaths.get_first_id_independent_folder": ("folder",),
    "submitit.core.utils:JobPaths.move_temporary_file": (
        "self",
        "tmp_path",
        "name",
        "keep_as_symlink",
    ),
    "submitit.core.utils:DelayedSubmission": ("function",),
    "submitit.core.utils:DelayedSubmission.set_timeout": (
        "self",
        "timeout_min",
        "max_num_timeout",
    ),
    "submitit.core.utils:DelayedSubmission.dump": ("self", "filepath"),
    "submitit.core.utils:FailedJobError": None,
    "submitit.core.utils:UncompletedJobError": None,
    "submitit.helpers:DelayedSubmission": ("function",),
}
"""Each submitit name this module relies on, with the parameters it passes."""

SBATCH_KEYWORDS = frozenset(
    {
        "job_name",
        "comment",
        "partition",
        "time",
        "nodes",
        "ntasks_per_node",
        "cpus_per_task",
        "qos",
        "setup",
        "mem",
        "signal_delay_s",
        "constraint",
        "exclude",
        "account",
        "gres",
        "nodelist",
        "array_parallelism",
        "wckey",
        "map_count",
        "additional_parameters",
        "srun_args",
        "use_srun",
    }
)
"""``_make_sbatch_string`` keywords jobkit sets (see ``translate.sbatch_parameters``)."""


def incompatibilities() -> list[str]:
    """What the installed submitit lacks of :data:`INTERNALS`, one line each.

    Empty when every internal exists with the parameters jobkit passes; a
    submitit outside the pinned range shows here before it breaks a submission.
    """
    import importlib
    import inspect

    problems: list[str] = []
    for name, expected in INTERNALS.items():
        module_name, _, path = name.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in path.split("."):
            target = getattr(target, part, _MISSING)
            if target is _MISSING:
                break
        where = f"{module_name}.{path}"
        if target is _MISSING:
            problems.append(f"{where} is missing")
            continue
        if expected is None:
            continue
        try:
            params = list(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            problems.append(f"{where} has no inspectable signature")
            continue
        if params[: len(expected)] != list(expected):
            problems.append(
                f"{where} takes ({', '.join(params)}), jobkit passes ({', '.join(expected)})"
            )
    builder = getattr(importlib.import_module("submitit.slurm.slurm"), "_make_sbatch_string", None)
    accepted = set(inspect.signature(builder).parameters) if callable(builder) else set()
    unknown = sorted(SBATCH_KEYWORDS - accepted)
    if builder is not None and unknown:
        problems.append(
            "submitit.slurm.slurm._make_sbatch_string no longer accepts " + ", ".join(unknown)
        )
    return problems


_MISSING = object()


def executor(folder: Path, max_num_timeout: int, parameters: Mapping[str, Any]) -> Any:
    """A quiet ``SlurmExecutor`` with ``parameters`` (``update_parameters`` keywords)."""
    made = _quiet_executor_class()(folder=folder, max_num_timeout=max_num_timeout)
    made.update_parameters(**parameters)
    return made


def python(executor: Any) -> str:
    """The (shell-quoted) interpreter submitit's scripts run."""
    return str(executor.python)


def submitit_command(executor: Any) -> str:
    """The command a task that runs through submitit's pickles executes."""
    return str(executor._submitit_command_str)


def sbatch_script(command: str, folder: Path, parameters: Mapping[str, Any]) -> str:
    """The exact sbatch script submitit writes for ``command`` with ``parameters``."""
    from submitit.slurm.slurm import _make_sbatch_string

    return str(_make_sbatch_string(command=command, folder=folder, **parameters))


def submit_command(executor: Any, command: str) -> Submitted:
    """One sbatch running the shell ``command`` (submitit's script, our command)."""
    return _submitted(executor._submit_command(command))


def array_spec(indices: Sequence[int], parallelism: int) -> str:
    """``sbatch --array``'s value for these task ids: runs as ranges, the rest
    listed (``0-16,18%19``), at most ``parallelism`` running at once."""
    ordered = sorted(set(indices))
    parts: list[str] = []
    start = previous = ordered[0]
    for index in [*ordered[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        parts.append(f"{start}-{previous}" if previous > start else str(start))
        if index is not None:
            start = previous = index
    return f"{','.join(parts)}%{min(len(ordered), parallelism)}"


_ARRAY_LINE = "#SBATCH --array="


def with_array_indices(script: str, indices: Sequence[int] | None, parallelism: int) -> str:
    """submitit's script for an array of ``len(indices)`` tasks (``map_count``:
    ``--array=0-(n-1)``), its array line set to exactly ``indices`` (a rerun's
    ``--array=3,7,12``); the task ids then name the items."""
    if indices is None:
        return script
    lines = script.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(_ARRAY_LINE):
            lines[i] = _ARRAY_LINE + array_spec(indices, parallelism)
            return "\n".join(lines)
    raise ValueError("submitit's array script has no --array line")  # pinned submitit has one


def array_sbatch_script(
    command: str, folder: Path, parameters: Mapping[str, Any], indices: Sequence[int]
) -> str:
    """The exact sbatch script of an array over task ids ``indices``."""
    script = sbatch_script(command, folder, {**parameters, "map_count": len(indices)})
    return with_array_indices(script, indices, _parallelism(parameters))


def _parallelism(parameters: Mapping[str, Any]) -> int:
    return int(parameters.get("array_parallelism") or 256)  # submitit's default


def submit_command_array(executor: Any, command: str, indices: Sequence[int]) -> list[Submitted]:
    """One ``sbatch --array=<indices>`` running ``command`` in every task."""
    from submitit.slurm.slurm import SlurmJob

    array = _quiet_executor_class()(
        folder=executor.folder, max_num_timeout=executor.max_num_timeout
    )
    array.update_parameters(**executor.parameters)
    array.parameters["map_count"] = len(indices)  # what map_array sets: --array=0-N%cap
    array.array_indices = list(indices)  # ... made exactly these task ids
    first = array._submit_command(command)
    return [
        _submitted(SlurmJob(folder=executor.folder, job_id=f"{first.job_id}_{i}")) for i in indices
    ]


def submit_call(executor: Any, fn: Callable[..., Any], *args: Any) -> Submitted:
    """One job running ``fn(*args)`` through submitit's pickles and runtime."""
    return _submitted(executor.submit(fn, *args))


def submit_call_array(
    executor: Any, fn: Callable[..., Any], indices: Sequence[int], *iterables: Sequence[Any]
) -> list[Submitted]:
    """One array running ``fn`` over ``iterables`` through submitit's runtime,
    its tasks numbered ``indices`` (each task's pickle is found by its id)."""
    executor.array_indices = list(indices)
    try:
        return [_submitted(job) for job in executor.map_array(fn, *iterables)]
    finally:
        executor.array_indices = None


def is_failed_job_error(error: BaseException) -> bool:
    """True for submitit's own "sbatch failed" error."""
    from submitit.core.utils import FailedJobError

    return isinstance(error, FailedJobError)


def is_time_limit_stop(error: BaseException) -> bool:
    """True when submitit stopped the job at the time-limit warning (exact type:
    its subclass ``FailedJobError`` means something else).

    Jobs that run the worker directly never load submitit, and nothing can
    raise submitit's error without loading it: no import is paid for here.
    """
    utils = sys.modules.get("submitit.core.utils")
    return utils is not None and type(error) is utils.UncompletedJobError


def resubmission(fn: Callable[..., Any], *args: Any) -> Any:
    """What a ``checkpoint`` method returns so submitit requeues ``fn(*args)``."""
    from submitit.helpers import DelayedSubmission

    return DelayedSubmission(fn, *args)


def _submitted(job: Any) -> Submitted:
    return Submitted(
        job_id=str(job.job_id), stdout=Path(job.paths.stdout), stderr=Path(job.paths.stderr)
    )


@functools.cache
def _quiet_executor_class() -> type[Any]:
    """``SlurmExecutor`` whose sbatch failures raise once and print nothing.

    Built on first use so that importing this module does not import submitit.
    """
    from submitit.core import utils
    from submitit.slurm.slurm import SlurmExecutor, SlurmJob

    class QuietSlurmExecutor(SlurmExecutor):
        array_indices: list[int] | None = None
        """The task ids of the array this executor submits (None: ``0-(n-1)``)."""

        def _make_submission_file_text(self, command: str, uid: str) -> str:
            text = str(super()._make_submission_file_text(command, uid))
            parallelism = _parallelism(self.parameters)
            return with_array_indices(text, self.array_indices, parallelism)

        def _submit_command(self, command: str) -> Any:
            # submitit's _submit_command, with sbatch run by queries.run.
            tmp_uuid = uuid.uuid4().hex
            folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            submission_file = folder / f".submission_file_{tmp_uuid}.sh"
            submission_file.write_text(self._make_submission_file_text(command, tmp_uuid))
            output = queries.run(self._make_submission_command(submission_file))
            job_id = self._get_job_id_from_submission_command(output)
            job = self.job_class(
                folder=self.folder, job_id=job_id, tasks=list(range(self._num_tasks()))
            )
            job.paths.move_temporary_file(submission_file, "submission_file", keep_as_symlink=True)
            self._write_job_id(job.job_id, tmp_uuid)
            self._set_job_permissions(job.paths.folder)
            return job

        def _internal_process_submissions(self, delayed_submissions: list[Any]) -> list[Any]:
            if len(delayed_submissions) == 1:
                return list(super()._internal_process_submissions(delayed_submissions))
            # submitit's array path, with this class for the array's executor.
            folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            timeout_min = self.parameters.get("time", 5)
            pickle_paths = []
            for delayed in delayed_submissions:
                pickle_path = folder / f"{uuid.uuid4().hex}.pkl"
                delayed.set_timeout(timeout_min, self.max_num_timeout)
                delayed.dump(pickle_path)
                pickle_paths.append(pickle_path)
            array = QuietSlurmExecutor(self.folder, self.max_num_timeout)
            array.update_parameters(**self.parameters)
            array.parameters["map_count"] = len(delayed_submissions)
            indices = self.array_indices or list(range(len(delayed_submissions)))
            array.array_indices = self.array_indices
            first = array._submit_command(self._submitit_command_str)
            tasks = list(range(first.num_tasks))
            jobs: list[Any] = [
                SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{a}", tasks=tasks)
                for a in indices
            ]
            for job, pickle_path in zip(jobs, pickle_paths, strict=True):
                job.paths.move_temporary_file(pickle_path, "submitted_pickle")
            return jobs

    return QuietSlurmExecutor
