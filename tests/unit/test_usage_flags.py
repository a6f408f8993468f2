"""When a job's usage is judged: a running job's warm-up is not waste."""

from __future__ import annotations

from typing import Any

from jobkit.states import JobRecord, JobState
from jobkit.usage import MIN_LIVE_SECONDS, MIN_SECONDS, flags

IDLE_GPU = {"index": 0, "name": "H100", "uuid": "GPU-1", "util_max": 0.0, "util_mean": 0.0}


def record(wall: float, *, final: bool) -> JobRecord:
    usage: dict[str, Any] = {"wall_seconds": wall, "final": final, "gpus": [IDLE_GPU]}
    state = JobState.SUCCEEDED if final else JobState.RUNNING
    return JobRecord(
        id="jk-x", name="f", backend="local", state=state, resources={"gpus": 1}, usage=usage
    )


def names(r: JobRecord) -> list[str]:
    return [f.name for f in flags(r)]


def test_a_running_job_is_judged_only_after_its_warm_up() -> None:
    assert MIN_LIVE_SECONDS > MIN_SECONDS
    assert names(record(10.0, final=False)) == []  # loading data: its GPU not touched yet
    assert names(record(MIN_LIVE_SECONDS - 1, final=False)) == []
    assert names(record(MIN_LIVE_SECONDS, final=False)) == ["idle_gpu"]


def test_an_ended_job_is_judged_after_min_seconds() -> None:
    assert names(record(MIN_SECONDS / 2, final=True)) == []
    assert names(record(10.0, final=True)) == ["idle_gpu"]  # the whole run: nothing used


def test_no_usage_no_flags() -> None:
    assert flags(JobRecord(id="jk-y", name="f", backend="local", resources={"gpus": 1})) == []
