"""``jobkit plan`` through the real CLI: the job's name, the store warning, and
every ``jobkit plan`` the READMEs show, run as written from the repository root."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jobkit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = str(Path(jobkit.__file__).resolve().parents[1])  # the jobkit under test


def fresh_env(home: Path) -> dict[str, str]:
    """A new user's shell: no jobkit, Slurm or Kubernetes settings, jobkit's own sources."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBKIT_", "SLURM_")) and k not in ("KUBECONFIG", "PYTHONPATH")
    }
    env.update(HOME=str(home), JOBKIT_HOME=str(home / "jobkit"), PYTHONPATH=SOURCES)
    env.pop("XDG_CONFIG_HOME", None)
    return env


def jobkit_cli(
    cwd: Path, home: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=fresh_env(home),
    )


def write_module(directory: Path, decorator: str = "image='reg/train:1'") -> None:
    (directory / "trainmod.py").write_text(
        f"import jobkit\n@jobkit.remote({decorator})\ndef train():\n    return 1\n"
    )


def test_local_plan_names_the_function(tmp_path: Path) -> None:
    write_module(tmp_path, "cpus=1")
    plan = jobkit_cli(tmp_path, tmp_path, "plan", "trainmod:train")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("# job train: local agent"), plan.stdout


@pytest.mark.parametrize(
    ("store", "warned"),
    [("sqlite:///{tmp}/jobs.db", "a file on this machine"), ("memory://", "in this process")],
)
def test_kubernetes_plan_with_a_store_pods_cannot_reach_warns_in_one_line(
    tmp_path: Path, store: str, warned: str
) -> None:
    pytest.importorskip("kubernetes")
    yaml = pytest.importorskip("yaml")
    write_module(tmp_path)
    url = store.format(tmp=tmp_path)
    plan = jobkit_cli(
        tmp_path, tmp_path, "--store", url, "plan", "trainmod:train", "--backend", "kubernetes"
    )
    assert plan.returncode == 0, plan.stderr
    (line,) = plan.stderr.splitlines()
    assert line.startswith("Warning: the store ") and warned in line and "s3://" in line, line
    manifest = yaml.safe_load(plan.stdout)  # the plan is still printed, whole
    assert manifest["kind"] == "Job"
    assert manifest["metadata"]["labels"]["jobkit.dev/name"] == "train"


def test_kubernetes_plan_with_a_shared_store_does_not_warn(tmp_path: Path) -> None:
    pytest.importorskip("kubernetes")
    pytest.importorskip("boto3")
    write_module(tmp_path)
    plan = jobkit_cli(
        tmp_path,
        tmp_path,
        "--store",
        "s3://team-bucket/jobs",
        "plan",
        "trainmod:train",
        "--backend",
        "kubernetes",
    )
    assert plan.returncode == 0, plan.stderr
    assert plan.stderr == ""


def readme_plan_commands() -> list[str]:
    """Every concrete ``jobkit plan`` in the READMEs (not the MODULE:FUNC synopsis)."""
    found: list[str] = []
    for readme in [ROOT / "README.md", *sorted((ROOT / "backends").glob("*/README.md"))]:
        text = readme.read_text()
        for match in re.finditer(r"jobkit plan [\w.:]+(?:\s+--backend\s+\w+)?", text):
            command = " ".join(match.group(0).split())
            if "MODULE:FUNC" not in command:
                found.append(command)
    return sorted(set(found))


def test_the_readmes_show_plan_examples() -> None:
    assert len(readme_plan_commands()) >= 2


@pytest.mark.parametrize("command", readme_plan_commands())
def test_readme_plan_examples_run_as_written(command: str, tmp_path: Path) -> None:
    args = shlex.split(command)[1:]
    if "slurm" in args:
        pytest.importorskip("submitit")
        if shutil.which("srun") is None:
            pytest.skip("the Slurm client tools are not installed")
    if "kubernetes" in args:
        pytest.importorskip("kubernetes")
    plan = jobkit_cli(ROOT, tmp_path, *args)
    assert plan.returncode == 0, f"{command}: {plan.stderr}"
    assert plan.stdout.strip()
