"""submitit's ``SlurmExecutor`` with sbatch run the jobkit way.

submitit runs sbatch through its ``CommandFunction``, which *prints* sbatch's
stderr when it fails and then raises it as ``FailedJobError``: a user saw
Slurm's error twice, once on stderr (from a library, in the middle of their
notebook) and once in jobkit's ``SubmitError``.  Here sbatch runs through
:func:`jobkit.backends.slurm.queries.run`, which prints nothing and raises one
:class:`~jobkit.backends.slurm.queries.CommandError` carrying the command,
exit code and Slurm's message; the backend turns it into the ``SubmitError``.

Only the sbatch call differs; the script, folders and job objects are
submitit's.  submitit's array path builds a plain ``SlurmExecutor`` for the
array, so it is repeated here with this class.
"""

from __future__ import annotations

import uuid
from typing import Any

from submitit.core import utils
from submitit.slurm.slurm import SlurmExecutor, SlurmJob

from . import queries


class QuietSlurmExecutor(SlurmExecutor):
    """A ``SlurmExecutor`` whose sbatch failures raise once and print nothing."""

    def _submit_command(self, command: str) -> Any:
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
        first = array._submit_command(self._submitit_command_str)
        tasks = list(range(first.num_tasks))
        jobs: list[Any] = [
            SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{a}", tasks=tasks)
            for a in range(len(delayed_submissions))
        ]
        for job, pickle_path in zip(jobs, pickle_paths, strict=True):
            job.paths.move_temporary_file(pickle_path, "submitted_pickle")
        return jobs
