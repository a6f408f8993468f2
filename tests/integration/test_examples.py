"""The examples run as a new user runs them: ``python examples/X.py`` in a fresh home.

Each gets its own ``JOBKIT_HOME`` (so its own SQLite store and local agent)
and a ``jobkit.toml`` that lets that agent exit soon after the example ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(example: str, home: Path) -> str:
    env = {**os.environ, "JOBKIT_HOME": str(home)}
    env.pop("JOBKIT_STORE", None)
    env.pop("JOBKIT_BACKEND", None)
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / example)],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_pipeline_runs_its_stages_and_reuses_the_cached_one_when_run_again(
    tmp_path: Path,
) -> None:
    (tmp_path / "jobkit.toml").write_text("[local]\nidle_timeout = 5\n")
    first = _run("pipeline.py", tmp_path)
    assert "best lr=" in first and "sweep finished" in first
    assert "prepare ran" in first
    second = _run("pipeline.py", tmp_path)
    prepare_id = first.split("prepare ", 1)[1].split(",", 1)[0]
    assert f"prepare reused {prepare_id}" in second  # the first run's job, from the store
    assert first.splitlines()[1] == second.splitlines()[1]  # the same winner
