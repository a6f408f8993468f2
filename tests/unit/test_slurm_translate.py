"""Slurm translation tables: golden sbatch scripts, every native state, settings.

Regenerate the golden files after an intended change with
``JOBKIT_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_slurm_translate.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from jobkit.backends.slurm.translate import STATES, SlurmSettings, translate_state
from jobkit.resources import parse_resources
from jobkit.states import FailureReason, JobState

pytest.importorskip("submitit")

GOLDEN = Path(__file__).parent.parent / "golden" / "slurm"

CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu_typed": {
        "cpus": 8,
        "mem": "64GB",
        "gpus": 2,
        "gpu_type": "a100",
        "time": "2h",
        "queue": "gpu",
        "priority": "high",
        "name": "train",
    },
    "multi_node": {"nodes": 2, "tasks_per_node": 4, "gpus": 4, "time": "90m"},
    "extras": {
        "env": {"WANDB_MODE": "offline", "QUOTED": "a b"},
        "priority": "low",
        "slurm": {
            "account": "ml",
            "constraint": "ib",
            "exclude": "node7",
            "reservation": "maint",
            "sbatch": {"exclusive": True, "mail-type": "END"},
            "setup": ["module load cuda"],
        },
    },
}


@pytest.fixture
def slurm_client(tmp_path: Path) -> Iterator[Any]:
    with jobkit.use(store=f"sqlite:///{tmp_path}/j.db", backend="slurm") as client:
        yield client


def normalised(script: str, folder: Path, store: str) -> str:
    return (
        script.replace(store, "<STORE>")
        .replace(str(folder), "<FOLDER>")
        .replace(sys.executable, "<PYTHON>")
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.sh"
    if os.environ.get("JOBKIT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with JOBKIT_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"sbatch script for {name!r} changed; see {path}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_sbatch_scripts_match_golden_files(slurm_client: Any, name: str) -> None:
    backend = slurm_client.backend("slurm")
    script = backend.plan(parse_resources(**CASES[name]))
    check_golden(name, normalised(script, backend.folder, slurm_client.store.url))


def test_checkpointable_jobs_get_the_warning_signal(slurm_client: Any) -> None:
    backend = slurm_client.backend("slurm")
    res = parse_resources(time="30m")
    assert "#SBATCH --signal=USR2@90" in backend.plan(res, checkpointable=True)
    assert "#SBATCH --signal=URG@90" in backend.plan(res)  # others run to the limit
    short = backend.plan(parse_resources(time="1m"), checkpointable=True)
    assert "#SBATCH --signal=USR2@20" in short  # not at the start of a short job


def test_gres_flag_and_nice_priority(tmp_path: Path) -> None:
    with jobkit.use(
        store=f"sqlite:///{tmp_path}/j.db",
        backend="slurm",
        slurm={"gpu_flag": "gres", "priority": "nice"},
    ) as client:
        script = client.backend("slurm").plan(
            parse_resources(gpus=2, gpu_type="h100", priority="high")
        )
    assert "#SBATCH --gres=gpu:h100:2" in script and "#SBATCH --nice=-100" in script
    assert "--qos" not in script


@pytest.mark.parametrize(
    ("native", "state", "reason"),
    [
        ("PENDING", JobState.QUEUED, None),
        ("REQUEUED", JobState.QUEUED, None),
        ("RUNNING", JobState.RUNNING, None),
        ("COMPLETING", JobState.RUNNING, None),
        ("COMPLETED", JobState.SUCCEEDED, None),
        ("FAILED", JobState.FAILED, FailureReason.ERROR),
        ("CANCELLED by 0", JobState.CANCELLED, None),
        ("TIMEOUT", JobState.FAILED, FailureReason.TIMEOUT),
        ("DEADLINE", JobState.FAILED, FailureReason.TIMEOUT),
        ("OUT_OF_MEMORY", JobState.FAILED, FailureReason.OOM),
        ("PREEMPTED", JobState.FAILED, FailureReason.PREEMPTED),
        ("NODE_FAIL", JobState.FAILED, FailureReason.LOST),
        ("BOOT_FAIL", JobState.FAILED, FailureReason.LOST),
    ],
)
def test_native_states_map_through_one_table(
    native: str, state: JobState, reason: FailureReason | None
) -> None:
    assert translate_state(native) == (state, reason)


def test_unknown_native_state_is_none_and_table_is_total_over_terminals() -> None:
    assert translate_state("SOMETHING_NEW") is None
    assert {s for s, _ in STATES.values()} == set(JobState) - {JobState.PENDING}


def test_settings_are_validated() -> None:
    with pytest.raises(jobkit.ConfigError, match="unknown \\[slurm\\] setting 'foldr'"):
        SlurmSettings.from_config({"foldr": "/x"})
    with pytest.raises(jobkit.ConfigError, match="gpu_flag='gpu'"):
        SlurmSettings.from_config({"gpu_flag": "gpu"})
    with pytest.raises(jobkit.ConfigError, match="array_parallelism"):
        SlurmSettings.from_config({"array_parallelism": 0})


def test_requests_slurm_cannot_express_are_config_errors(slurm_client: Any) -> None:
    backend = slurm_client.backend("slurm")
    with pytest.raises(jobkit.ConfigError, match="whole cpus"):
        backend.check_resources(parse_resources(cpus=0.5))
    with pytest.raises(jobkit.ConfigError, match="whole GPUs"):
        backend.check_resources(parse_resources(gpus=0.5))
    with pytest.raises(jobkit.ConfigError, match="sbatch"):
        backend.check_resources(parse_resources(slurm={"partitionn": "gpu"}))


def test_missing_submitit_fails_before_anything_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if `jobkit[slurm]` were not installed
    with jobkit.use(store=f"sqlite:///{tmp_path}/j.db", backend="slurm") as client:
        with pytest.raises(jobkit.BackendError, match=r"pip install 'jobkit\[slurm\]'"):
            jobkit.submit(print, 1)
        assert client.store.query() == []


def test_no_controller_configured_names_slurm_conf() -> None:
    from jobkit.backends.slurm.queries import explain

    text = explain("sbatch: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host")
    assert "set SLURM_CONF" in text


def test_a_job_slurm_killed_for_its_dependency_is_a_dependency_failure() -> None:
    from jobkit.backends.slurm.backend import _observation
    from jobkit.backends.slurm.queries import NativeState
    from jobkit.observation import Phase

    killed = _observation(
        NativeState("CANCELLED", "DependencyNeverSatisfied", dependency="afterok:12(failed)")
    )
    assert (killed.phase, killed.hint) == (Phase.ENDED, FailureReason.DEPENDENCY)
    assert killed.message and "afterok:12(failed)" in killed.message
    accounted = _observation(NativeState("CANCELLED", "Dependency"))  # sacct's word for it
    assert accounted.hint is FailureReason.DEPENDENCY
    cancelled = _observation(NativeState("CANCELLED by 0", "None"))
    assert (cancelled.phase, cancelled.hint) == (Phase.CANCELLED, None)
    waiting = _observation(NativeState("PENDING", "Dependency", dependency="afterok:12"))
    assert waiting.phase is Phase.WAITING


def test_a_rerun_after_a_succeeded_array_waits_on_nothing_slurm_may_have_forgotten() -> None:
    """Items 3 and 7 of an array whose items 3 and 7 of the dependency already
    SUCCEEDED (a rerun): no ``aftercorr`` on a finished array (Slurm forgets ended
    jobs after MinJobAge, and sbatch would refuse), and no afterok either; a
    still-running dependency item keeps its own task id in ``afterok``."""
    from jobkit.backends.slurm import dependency
    from jobkit.states import JobRecord, JobState

    def dep(index: int, state: JobState) -> JobRecord:
        return JobRecord(
            id=f"jk-a.{index}",
            name="d",
            backend="slurm",
            state=state,
            backend_id=f"100_{index}",
            array_id="jk-a",
            array_index=index,
        )

    def item(index: int) -> JobRecord:
        return JobRecord(
            id=f"jk-b.{index}",
            name="b",
            backend="slurm",
            array_id="jk-b",
            array_index=index,
            depends_on=[f"jk-a.{index}"],
        )

    done = {f"jk-a.{i}": [dep(i, JobState.SUCCEEDED)] for i in (3, 7)}
    assert dependency.option([item(3), item(7)], done, [3, 7]) is None
    mixed = {"jk-a.3": [dep(3, JobState.SUCCEEDED)], "jk-a.7": [dep(7, JobState.RUNNING)]}
    assert dependency.option([item(3), item(7)], mixed, [3, 7]) == "afterok:100_7"
    running = {f"jk-a.{i}": [dep(i, JobState.RUNNING)] for i in (3, 7)}
    assert dependency.option([item(3), item(7)], running, [3, 7]) == "aftercorr:100"
