"""What a user meets around the real Slurm cluster: ``jobkit backends`` without
SLURM_CONF, sbatch's refusals, and the job name and wckey sbatch receives."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import slurm_env

T = 120
FIX = 'eval "$(backends/slurm/cluster.sh env)"'


def test_backends_without_slurm_conf_names_the_fix_in_one_line(
    slurm_cluster: str, tmp_path: Path
) -> None:
    cluster_dir = str(Path(slurm_cluster).parent.parent)  # <dir>/etc/slurm.conf
    shown = helpers.jobkit_cli(
        tmp_path, "backends", without="SLURM_CONF", JOBKIT_SLURM_DIR=cluster_dir
    )
    assert shown.returncode == 0, shown.stderr
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("slurm")]
    assert FIX in line and "SLURM_CONF is not set" in line, line
    assert "resolve_ctls" not in shown.stdout and "DNS" not in shown.stdout, shown.stdout
    assert shown.stderr == ""
    # With SLURM_CONF set, the same command finds the cluster.
    found = helpers.jobkit_cli(tmp_path, "backends", without="SLURM_CONF", SLURM_CONF=slurm_cluster)
    (line,) = [line for line in found.stdout.splitlines() if line.startswith("slurm")]
    assert " yes " in line and "UP" in line, line


def test_a_wrong_slurm_conf_is_named_at_once(slurm_cluster: str, tmp_path: Path) -> None:
    shown = helpers.jobkit_cli(
        tmp_path, "backends", without="SLURM_CONF", SLURM_CONF=str(tmp_path / "nope.conf")
    )
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("slurm")]
    assert "nope.conf is not a file" in line, line


def test_sbatch_refusal_is_reported_once(slurm_cluster: str, tmp_path: Path) -> None:
    """Not printed by submitit on stderr and again in jobkit's SubmitError."""
    script = textwrap.dedent(
        f"""
        import logging, jobkit
        logging.basicConfig(level=logging.INFO)  # anything logged would show on stderr
        def square(x):
            return x * x
        with jobkit.use(store="sqlite:///{tmp_path}/j.db", backend="slurm"):
            try:
                jobkit.remote(queue="nosuchpartition")(square).submit(1)
            except jobkit.SubmitError as exc:
                print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=T,
        env={**os.environ, "SLURM_CONF": slurm_cluster},
    )
    assert done.returncode == 0, done.stderr
    assert "nosuchpartition" not in done.stderr, done.stderr
    (message,) = done.stdout.splitlines()  # one line
    assert message.count("invalid partition specified: nosuchpartition") == 1, message
    assert "Batch job submission failed" in message


def script_of(client: Any, job: Any) -> str:
    slurm_id = job.info.backend_id.split("_")[0]
    return (client.backend("slurm").folder / f"{slurm_id}_submission.sh").read_text()


def test_real_submits_carry_the_function_name_and_no_foreign_wckey(
    slurm_cluster: str, tmp_path: Path
) -> None:
    with slurm_env(tmp_path) as client:
        one = jobkit.submit(helpers.square, 4)
        assert one.result(timeout=T) == 16
        sweep = jobkit.map(helpers.square, range(3))
        assert sweep.results(timeout=T, progress=False) == [0, 1, 4]
        named = jobkit.remote(name="renamed")(helpers.square).submit(5)
        assert named.result(timeout=T) == 25
        two_tasks = jobkit.remote(tasks_per_node=2)(helpers.square).map([6, 7])  # submitit's path
        assert two_tasks.results(timeout=T, progress=False) == [36, 49]
        for job, name in [(one, "square"), (sweep[0], "square"), (named, "renamed")]:
            script = script_of(client, job)
            assert f"#SBATCH --job-name={name}\n" in script, script
            assert "wckey" not in script, script
        script = script_of(client, two_tasks[0])
        assert "#SBATCH --job-name=square\n" in script and "wckey" not in script, script


@pytest.mark.parametrize(("decorator", "name"), [("", "train"), ("name='custom'", "custom")])
def test_plan_names_the_slurm_job_as_a_submit_does(
    slurm_cluster: str, tmp_path: Path, decorator: str, name: str
) -> None:
    (tmp_path / "trainmod.py").write_text(
        f"import jobkit\n@jobkit.remote({decorator})\ndef train():\n    return 1\n"
    )
    plan = helpers.jobkit_cli(
        tmp_path,
        "--store",
        f"sqlite:///{tmp_path}/j.db",
        "plan",
        "trainmod:train",
        "--backend",
        "slurm",
        without="SLURM_CONF",
        SLURM_CONF=slurm_cluster,
    )
    assert plan.returncode == 0, plan.stderr
    assert f"#SBATCH --job-name={name}\n" in plan.stdout, plan.stdout
    assert "wckey" not in plan.stdout
