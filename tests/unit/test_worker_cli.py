"""``python -m jobkit.worker``: arguments, and array tasks finding their item."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobkit.worker import array_item


def test_array_task_finds_its_item_from_the_scheduler() -> None:
    assert array_item("jk-arr", 0, {"SLURM_ARRAY_TASK_ID": "7"}) == "jk-arr.7"
    assert array_item("jk-arr", 1001, {"SLURM_ARRAY_TASK_ID": "3"}) == "jk-arr.1004"
    assert array_item("jk-arr", 0, {"JOB_COMPLETION_INDEX": "2"}) == "jk-arr.2"  # Kubernetes
    with pytest.raises(SystemExit, match="SLURM_ARRAY_TASK_ID"):
        array_item("jk-arr", 0, {})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "memory://"], "give a JOB_ID, or --array"),
        (["--store", "memory://", "jk-1", "--array", "jk-a"], "give a JOB_ID, or --array"),
        (["jk-1"], "no store"),
        (["--store", "memory://", "jk-1", "--launcher", "moon"], "invalid choice"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobkit.worker", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_unknown_job_is_one_line_not_a_traceback(tmp_path: object) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobkit.worker", "--store", f"sqlite:///{tmp_path}/j.db", "jk-none"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 3
    assert "no job 'jk-none'" in done.stderr and "Traceback" not in done.stderr
