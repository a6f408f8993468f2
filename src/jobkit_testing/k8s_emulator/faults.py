"""Failures that cannot happen on a laptop, imposed on pods on request (OOM, eviction, ...)."""

from __future__ import annotations

import dataclasses
import fnmatch

# -- the Job controller and kubelet ---------------------------------------------------------

FAULTS = ("oom", "image_pull", "unschedulable", "evict", "preempt", "pending", "config_error")


@dataclasses.dataclass
class SimulatedFault:
    """A failure :class:`JobController` imposes on the next matching pods.

    kind:
        ``oom``: the container is killed after ``after`` s: terminated reason
        OOMKilled, exit code 137, pod Failed.
        ``image_pull``: the pod stays Pending, its container waiting with reason
        ErrImagePull and then ImagePullBackOff (with the registry's message).
        ``unschedulable``: the pod stays Pending with condition PodScheduled=False,
        reason Unschedulable and the scheduler's message.
        ``evict``: killed after ``after`` s by the kubelet: pod Failed, reason
        Evicted, condition DisruptionTarget (TerminationByKubelet).
        ``preempt``: killed after ``after`` s by the scheduler: pod Failed with
        condition DisruptionTarget (PreemptionByScheduler), then deleted.
        ``pending``: the pod waits ``after`` s in ContainerCreating, then runs.
        ``config_error``: the pod stays Pending with CreateContainerConfigError.
    job: a glob the Job's name must match (None: any Job).
    index: the completion index the pod must have (None: any).
    times: how many pods it applies to (None: every matching pod).
    message: replaces the default message.
    """

    kind: str
    job: str | None = None
    index: int | None = None
    times: int | None = 1
    after: float = 0.0
    message: str | None = None

    def matches(self, job_name: str, index: int | None) -> bool:
        return (self.job is None or fnmatch.fnmatchcase(job_name, self.job)) and (
            self.index is None or self.index == index
        )


_DEFAULT_MESSAGES = {
    "oom": "",
    "image_pull": 'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
    'failed to resolve reference "{image}": not found',
    "unschedulable": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: "
    "0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    "evict": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi.",
    "preempt": "{pod} preempted by a higher-priority pod",
    "config_error": 'secret "missing" not found',
}


class _ContainerConfigError(Exception):
    """The kubelet cannot build the container's environment (missing Secret, key...)."""
