"""submitit's internals that jobkit relies on are still there, and still behave.

If this file fails after a submitit upgrade, the failure names the internal
that changed: update ``src/jobkit/backends/slurm/submitit_adapter.py`` (the
only module that touches submitit) and the pin in ``pyproject.toml``.
Regenerate the golden script after an intended change with
``JOBKIT_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_submitit_adapter.py``.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from jobkit.backends.slurm import submitit_adapter
from jobkit.backends.slurm.queries import CommandError
from jobkit.backends.slurm.translate import SlurmSettings, sbatch_parameters
from jobkit.resources import parse_resources

submitit = pytest.importorskip("submitit")

GOLDEN = Path(__file__).parent.parent / "golden" / "slurm" / "adapter_builder.sh"
SRC = Path(submitit_adapter.__file__).resolve().parents[3]

PARAMETERS: dict[str, Any] = {
    "job_name": "golden",
    "partition": "debug",
    "time": 30,
    "nodes": 2,
    "ntasks_per_node": 2,
    "cpus_per_task": 4,
    "qos": "high",
    "setup": ["export A=1"],
    "mem": "1024M",
    "signal_delay_s": 45,
    "constraint": "ib",
    "exclude": "node7",
    "account": "ml",
    "gres": "gpu:2",
    "nodelist": "node1",
    "array_parallelism": 4,
    "wckey": None,
    "additional_parameters": {"signal": "URG@90", "mail-type": "END"},
    "srun_args": ["--cpu-bind=none"],
    "use_srun": True,
}


@pytest.mark.parametrize("name", sorted(submitit_adapter.INTERNALS))
def test_each_internal_exists_with_the_parameters_jobkit_passes(name: str) -> None:
    problems = [p for p in submitit_adapter.incompatibilities() if p.startswith(_dotted(name))]
    assert not problems, (
        f"submitit {submitit.__version__} changed an internal jobkit relies on: "
        f"{'; '.join(problems)}. Update src/jobkit/backends/slurm/submitit_adapter.py "
        "and the submitit pin in pyproject.toml"
    )


def test_sbatch_builder_accepts_every_keyword_jobkit_sets() -> None:
    assert set(PARAMETERS) <= submitit_adapter.SBATCH_KEYWORDS | {"map_count"}
    assert not [p for p in submitit_adapter.incompatibilities() if "no longer accepts" in p]
    settings = SlurmSettings.from_config({})
    for resources in (
        parse_resources(),
        parse_resources(nodes=2, tasks_per_node=2, gpus=2, time="1h", env={"A": "1"}),
        parse_resources(queue="q", mem="1GB", priority="high", slurm={"account": "ml"}),
    ):
        for checkpointable in (False, True):
            used = set(sbatch_parameters(resources, settings, checkpointable=checkpointable))
            assert used <= submitit_adapter.SBATCH_KEYWORDS, used - submitit_adapter.SBATCH_KEYWORDS


def test_sbatch_builder_renders_the_golden_script() -> None:
    script = submitit_adapter.sbatch_script(
        "python -u -m jobkit.worker JOB_ID", Path("/jobkit/folder"), PARAMETERS
    )
    if os.environ.get("JOBKIT_UPDATE_GOLDEN"):
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text(), (
        f"submitit {submitit.__version__}'s _make_sbatch_string renders a different "
        f"script than {GOLDEN.name}: diff them, then update the adapter or the golden file"
    )


def test_executor_scripts_and_commands(tmp_path: Path) -> None:
    executor = submitit_adapter.executor(tmp_path, 2, PARAMETERS)
    # The executor's own submission text is the builder's script (same parameters).
    text = executor._make_submission_file_text("echo hi", "uid")
    assert text == submitit_adapter.sbatch_script("echo hi", tmp_path, executor.parameters)
    assert submitit_adapter.python(executor) == executor.python
    assert submitit_adapter.submitit_command(executor).endswith(
        f"-u -m submitit.core._submit {tmp_path}"
    )


def _fake_sbatch(bin_dir: Path, body: str) -> None:
    """A real ``sbatch`` executable on PATH that answers like Slurm would."""
    bin_dir.mkdir()
    path = bin_dir / "sbatch"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_quiet_submission_of_a_command_and_an_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_sbatch(
        tmp_path / "bin", 'cp "$1" "$(dirname "$1")/seen.sh"\necho "Submitted batch job 42"'
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "slurm"
    executor = submitit_adapter.executor(folder, 1, {"time": 5, "use_srun": False})

    job = submitit_adapter.submit_command(executor, "echo one")
    assert job == submitit_adapter.Submitted("42", folder / "42_0_log.out", folder / "42_0_log.err")
    assert "echo one" in (folder / "seen.sh").read_text()
    assert (folder / "42_submission.sh").exists()  # moved to the job's name once known

    tasks = submitit_adapter.submit_command_array(executor, "echo many", [0, 1, 2])
    assert [t.job_id for t in tasks] == ["42_0", "42_1", "42_2"]
    assert tasks[2].stdout == folder / "42_2_0_log.out"
    assert "#SBATCH --array=0-2%3\n" in (folder / "seen.sh").read_text()


RERUN_GOLDEN = GOLDEN.parent / "rerun_array.sh"


def test_a_rerun_is_one_sbatch_over_exactly_its_task_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items 3, 7 and 12 rerun: ``--array=3,7,12`` (the golden script), task ids
    naming the items; a run of ids is written as a range."""
    _fake_sbatch(
        tmp_path / "bin", 'cp "$1" "$(dirname "$1")/seen.sh"\necho "Submitted batch job 77"'
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "slurm"
    executor = submitit_adapter.executor(folder, 1, PARAMETERS)
    command = "python -u -m jobkit.worker --array jk-array --offset 0"
    tasks = submitit_adapter.submit_command_array(executor, command, [3, 7, 12])
    assert [t.job_id for t in tasks] == ["77_3", "77_7", "77_12"]
    seen = (folder / "seen.sh").read_text()
    assert seen == submitit_adapter.array_sbatch_script(
        command, folder, executor.parameters, [3, 7, 12]
    )
    script = seen.replace(str(folder), "/jobkit/folder")
    if os.environ.get("JOBKIT_UPDATE_GOLDEN"):
        RERUN_GOLDEN.write_text(script)
    assert script == RERUN_GOLDEN.read_text()
    assert "#SBATCH --array=3,7,12%3\n" in script
    assert submitit_adapter.array_spec([0, 1, 2, 5, 9, 10], 4) == "0-2,5,9-10%4"
    assert submitit_adapter.array_spec(range(20), 256) == "0-19%20"


def test_sbatch_refusal_raises_once_and_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    _fake_sbatch(
        tmp_path / "bin", 'echo "sbatch: error: Invalid partition name specified" >&2; exit 1'
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = submitit_adapter.executor(tmp_path / "slurm", 1, {"partition": "nope"})
    with pytest.raises(CommandError, match="Invalid partition name"):
        submitit_adapter.submit_command(executor, "echo one")
    out, err = capfd.readouterr()
    assert "Invalid partition" not in out + err


def test_submitit_errors_are_recognised_by_exact_type() -> None:
    from submitit.core.utils import FailedJobError, UncompletedJobError

    assert submitit_adapter.is_time_limit_stop(UncompletedJobError("stopped at the warning"))
    assert not submitit_adapter.is_time_limit_stop(FailedJobError("sbatch failed"))
    assert not submitit_adapter.is_time_limit_stop(RuntimeError("x"))
    assert submitit_adapter.is_failed_job_error(FailedJobError("sbatch failed"))
    assert not submitit_adapter.is_failed_job_error(UncompletedJobError("x"))


def test_resubmission_is_submitits_delayed_call() -> None:
    delayed = submitit_adapter.resubmission(divmod, 7, 2)
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.result() == (3, 1)


def test_a_changed_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A removed builder and a changed signature, done to the real submitit
    modules for this test, are each reported by name (not an AttributeError)."""
    from submitit.slurm import slurm

    monkeypatch.delattr(slurm, "_make_sbatch_string")
    monkeypatch.setattr(slurm.SlurmExecutor, "_write_job_id", lambda self, jid: None)
    found = submitit_adapter.incompatibilities()
    assert "submitit.slurm.slurm._make_sbatch_string is missing" in found
    assert (
        "submitit.slurm.slurm.SlurmExecutor._write_job_id takes (self, jid), "
        "jobkit passes (self, job_id, uid)"
    ) in found


def test_a_changed_internal_makes_the_backend_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from submitit.slurm import slurm

    from jobkit.backends.slurm.backend import SlurmBackend

    monkeypatch.delattr(slurm, "SlurmJob")
    ok, why = SlurmBackend.available(None)
    if "sbatch not found" in why:
        pytest.skip("no Slurm client tools here")
    assert not ok and "submitit.slurm.slurm.SlurmJob is missing" in why and "\n" not in why


def test_only_the_adapter_imports_submitit() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in (SRC / "jobkit").rglob("*.py")
        if path.name != "submitit_adapter.py"
        and any(
            line.lstrip().startswith(("import submitit", "from submitit"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == [], (
        f"import submitit only in backends/slurm/submitit_adapter.py: {offenders}"
    )


def _dotted(name: str) -> str:
    return name.replace(":", ".")


def test_module_is_importable_without_importing_submitit() -> None:
    import subprocess

    code = (
        "import sys; import jobkit.backends.slurm.submitit_adapter; "
        "import jobkit.backends.slurm.backend; "
        "print('submitit' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "False", done.stderr
