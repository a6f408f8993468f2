"""What a pod says about its jobkit job: one table, pure functions over API dicts.

The worker records RUNNING, SUCCEEDED and FAILED (the function raised) itself;
Kubernetes is asked only about what a worker cannot record::

    pod Failed, container OOMKilled              -> FAILED / OOM
    pod Failed, reason DeadlineExceeded          -> FAILED / TIMEOUT (activeDeadlineSeconds)
    pod Failed, Evicted / Preempting / DisruptionTarget condition
                                                 -> FAILED / PREEMPTED
    pod Failed otherwise (worker killed, crashed) -> FAILED / LOST, with the exit code
    pod Succeeded but the record is still active -> FAILED / LOST (nothing was recorded)
    pod Pending on an image pull, or unschedulable, past the grace period
                                                 -> FAILED / SUBMIT_ERROR with Kubernetes' message
    pod Pending within the grace period          -> still QUEUED, the reason kept as native state

A failure is only the pod's to report if the pod is where the job last ran
(the record's ``host`` is the pod's name, which is its hostname) or if the job
never started anywhere; a worker that requeued its job for a retry has already
recorded what happened.  The table yields an
:class:`~jobkit.observation.Observation` (the FailureReason above as its
hint), never a write: :func:`jobkit.reconcile.apply` moves the job back to
QUEUED while retries are left (Kubernetes starts a new pod, by
``backoffLimit``/``backoffLimitPerIndex``) or records it FAILED.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from jobkit.observation import Observation, Phase
from jobkit.states import FailureReason, JobRecord, JobState

from .manifest import ARRAY_ID, INDEX_ANNOTATION, ITEMS_ANNOTATION, JOB_ID

WAITING_FAILURES = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Container waiting reasons that do not resolve by themselves (usually)."""
PREEMPTED = frozenset({"Evicted", "Preempting", "Shutdown", "NodeShutdown", "Terminated"})


def jobkit_id(pod: Mapping[str, Any]) -> str | None:
    """The jobkit job a pod runs: its own id label, or its array's id and its index."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if JOB_ID in labels:
        return str(labels[JOB_ID])
    array = labels.get(ARRAY_ID)
    index = (meta.get("annotations") or {}).get(INDEX_ANNOTATION) or labels.get(INDEX_ANNOTATION)
    if array is None or index is None:
        return None
    items = (meta.get("annotations") or {}).get(ITEMS_ANNOTATION)
    if items:  # a rerun's pod: its completion index is a place in the items' list
        listed = str(items).split(",")
        if not str(index).isdigit() or int(index) >= len(listed):
            return None
        index = listed[int(index)]
    return f"{array}.{index}"


def job_name_of(pod: Mapping[str, Any]) -> str | None:
    """The Kubernetes Job a pod belongs to (its controller's ``job-name`` label)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    return str(name) if name else None


def created(obj: Mapping[str, Any]) -> float | None:
    text = (obj.get("metadata") or {}).get("creationTimestamp")
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def worth_a_look(pod: Mapping[str, Any]) -> bool:
    """Whether a pod event may change its job's record: a failed pod, or one stuck
    pending.  Running and succeeded pods are the worker's to record, so a watch
    event about them costs no store read (a periodic reconcile still checks that
    a succeeded pod's job was recorded)."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Failed":
        return True
    if phase != "Pending":
        return False
    _, waiting = _container_state(status)
    return bool(waiting and waiting.get("reason") in WAITING_FAILURES) or any(
        c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or ()
    )


def judge(
    pod: Mapping[str, Any], record: JobRecord, *, now: float, grace: float
) -> Observation | None:
    """What ``pod`` (the job's latest) says about ``record``; None: nothing the
    worker does not record itself."""
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    name = str((pod.get("metadata") or {}).get("name") or "")
    terminated, waiting = _container_state(status)
    labels = (pod.get("metadata") or {}).get("labels") or {}
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if job and record.backend_id and job != record.backend_id.split("[", 1)[0]:
        return None  # an earlier attempt's Job (jobkit resubmitted the job as another)
    if name and any(a.get("host") == name for a in record.attempts):
        # An attempt already counted, its pod seen again.  Kubernetes starts the
        # next one, unless it leaves this job to jobkit (``extra["reruns"]``):
        # then the pod's end says the requeued attempt awaits its resubmission.
        if (
            record.state is JobState.QUEUED
            and record.extra.get("reruns") is False
            and phase in ("Failed", "Succeeded")
        ):
            return Observation(
                f"{phase}/requeued",
                Phase.ENDED,
                FailureReason.LOST,
                f"pod {name} ended after attempt {record.attempt - 1}; Kubernetes does not "
                "rerun this job, jobkit resubmits it",
                host=name,
            )
        return None
    never_ran = record.state in (JobState.PENDING, JobState.QUEUED) and record.host is None
    if phase == "Pending":
        return _pending(pod, status, waiting, now=now, grace=grace, never_ran=never_ran)
    if phase == "Running":
        return None
    ran_here = record.host == name
    if not (ran_here and record.state is JobState.RUNNING) and not never_ran:
        return None  # the worker recorded this attempt's end (or a retry)
    if phase == "Succeeded":
        return Observation(
            phase,
            Phase.ENDED,
            FailureReason.LOST,
            f"pod {name} succeeded but its worker recorded no result",
            exit_code=0,
            host=name,
        )
    code = terminated.get("exitCode") if terminated else None
    reason, text = _failure(status, terminated)
    message = f"pod {name}: {text}" + (f" (exit code {code})" if code is not None else "")
    return Observation(
        f"Failed/{reason.value}", Phase.ENDED, reason, message, exit_code=code, host=name
    )


def _pending(
    pod: Mapping[str, Any],
    status: Mapping[str, Any],
    waiting: Mapping[str, Any] | None,
    *,
    now: float,
    grace: float,
    never_ran: bool,
) -> Observation | None:
    stuck: str | None = None
    if waiting and waiting.get("reason") in WAITING_FAILURES:
        stuck = f"{waiting['reason']}: {waiting.get('message') or 'no message'}"
    for condition in status.get("conditions") or ():
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            stuck = f"Unschedulable: {condition.get('message') or 'no message'}"
    if stuck is None:
        return None
    since = created(pod)
    native = f"Pending/{stuck.split(':', 1)[0]}"
    if since is not None and now - since < grace:
        # Shown while it waits; only for a job that has not run (a RUNNING
        # record's newer pod must not read as a scheduler requeue).
        return Observation(native, Phase.WAITING, message=stuck) if never_ran else None
    name = (pod.get("metadata") or {}).get("name")
    return Observation(
        native,
        Phase.STUCK,
        FailureReason.SUBMIT_ERROR,
        f"pod {name} could not start after {grace:g} s: {stuck}",
    )


def _container_state(status: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    for container in status.get("containerStatuses") or ():
        state = container.get("state") or {}
        last = container.get("lastState") or {}
        terminated = state.get("terminated") or last.get("terminated") or {}
        return terminated, state.get("waiting") or {}
    return {}, {}


def _failure(status: Mapping[str, Any], terminated: Mapping[str, Any]) -> tuple[FailureReason, str]:
    pod_reason = str(status.get("reason") or "")
    if terminated.get("reason") == "OOMKilled":
        return FailureReason.OOM, "OOMKilled: the container went over its memory limit"
    if pod_reason == "DeadlineExceeded":
        return FailureReason.TIMEOUT, status.get("message") or "DeadlineExceeded"
    disrupted = any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    if pod_reason in PREEMPTED or disrupted:
        detail = status.get("message") or pod_reason or "DisruptionTarget"
        return FailureReason.PREEMPTED, f"{pod_reason or 'disrupted'}: {detail}"
    why = terminated.get("reason") or pod_reason or "Error"
    return FailureReason.LOST, f"the worker ended without recording an outcome ({why})"
