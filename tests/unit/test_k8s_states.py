"""The pod -> job verdict table of the kubernetes backend, case by case (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from jobkit.backends.kubernetes.states import jobkit_id, judge, worth_a_look
from jobkit.observation import Phase
from jobkit.states import FailureReason, JobRecord, JobState

POD = "jk-abc-7xk2p"


def pod(
    phase: str,
    *,
    reason: str | None = None,
    terminated: dict[str, Any] | None = None,
    waiting: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    created: str = "2026-11-21T10:00:00Z",
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if terminated:
        state["terminated"] = terminated
    if waiting:
        state["waiting"] = waiting
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "job", "state": state}],
    }
    if reason:
        status["reason"] = reason
    if conditions:
        status["conditions"] = conditions
    return {
        "metadata": {
            "name": POD,
            "labels": {"jobkit.dev/job-id": "jk-abc"},
            "creationTimestamp": created,
        },
        "status": status,
    }


def record(state: JobState = JobState.RUNNING, host: str | None = POD) -> JobRecord:
    return JobRecord(id="jk-abc", name="n", backend="kubernetes", state=state, host=host)


NOW = 1_795_255_200.0 + 3600  # an hour after the pod was created (2026-11-21T10:00Z)


@pytest.mark.parametrize(
    ("the_pod", "reason"),
    [
        (pod("Failed", terminated={"reason": "OOMKilled", "exitCode": 137}), FailureReason.OOM),
        (pod("Failed", reason="DeadlineExceeded"), FailureReason.TIMEOUT),
        (pod("Failed", reason="Evicted", terminated={"exitCode": 137}), FailureReason.PREEMPTED),
        (
            pod(
                "Failed",
                terminated={"exitCode": 137},
                conditions=[{"type": "DisruptionTarget", "status": "True"}],
            ),
            FailureReason.PREEMPTED,
        ),
        (pod("Failed", terminated={"reason": "Error", "exitCode": 9}), FailureReason.LOST),
        (pod("Succeeded", terminated={"exitCode": 0}), FailureReason.LOST),
    ],
)
def test_what_a_worker_cannot_record(the_pod: dict[str, Any], reason: FailureReason) -> None:
    seen = judge(the_pod, record(), now=NOW, grace=60)
    assert seen is not None
    assert (seen.phase, seen.hint, seen.host) == (Phase.ENDED, reason, POD)
    assert POD in (seen.message or "")


def test_a_pod_that_is_not_where_the_job_last_ran_is_not_its_to_report() -> None:
    failed = pod("Failed", terminated={"reason": "Error", "exitCode": 1})
    requeued = record(JobState.QUEUED, host=POD)  # the worker requeued itself for a retry
    assert judge(failed, requeued, now=NOW, grace=60) is None
    elsewhere = record(JobState.RUNNING, host="jk-abc-other")  # a newer pod runs it
    assert judge(failed, elsewhere, now=NOW, grace=60) is None
    never_started = record(JobState.QUEUED, host=None)  # killed before the worker ran
    seen = judge(failed, never_started, now=NOW, grace=60)
    assert seen is not None and seen.phase is Phase.ENDED


def test_stuck_pending_pods_wait_out_the_grace_period_then_fail_with_the_message() -> None:
    stuck = pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "no such image"})
    early = judge(stuck, record(JobState.QUEUED, None), now=NOW, grace=7200)
    assert early is not None and early.phase is Phase.WAITING
    assert early.message == "ImagePullBackOff: no such image"
    late = judge(stuck, record(JobState.QUEUED, None), now=NOW, grace=60)
    assert late is not None
    assert (late.phase, late.hint) == (Phase.STUCK, FailureReason.SUBMIT_ERROR)
    assert "no such image" in (late.message or "")
    unschedulable = pod(
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes",
            }
        ],
    )
    unscheduled = judge(unschedulable, record(JobState.QUEUED, None), now=NOW, grace=60)
    assert unscheduled is not None and "Unschedulable: 0/3 nodes" in (unscheduled.message or "")
    assert judge(pod("Pending"), record(JobState.QUEUED, None), now=NOW, grace=0) is None
    # A newer pod of a job that ran elsewhere is not a scheduler requeue.
    assert judge(stuck, record(JobState.RUNNING, "jk-abc-old"), now=NOW, grace=7200) is None


def test_which_events_need_the_record_and_which_job_a_pod_runs() -> None:
    assert worth_a_look(pod("Failed"))
    assert worth_a_look(pod("Pending", waiting={"reason": "ErrImagePull"}))
    assert not worth_a_look(pod("Pending", waiting={"reason": "ContainerCreating"}))
    assert not worth_a_look(pod("Running")) and not worth_a_look(pod("Succeeded"))
    member = {
        "metadata": {
            "labels": {"jobkit.dev/array-id": "jk-arr"},
            "annotations": {"batch.kubernetes.io/job-completion-index": "7"},
        }
    }
    assert jobkit_id(member) == "jk-arr.7"
    assert jobkit_id({"metadata": {"labels": {}}}) is None
