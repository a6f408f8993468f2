"""``backend="kubernetes"``: jobkit jobs as batch/v1 Jobs, one Indexed Job per map.

::

    submit  ─► build_job (manifest.py) ─► POST one Job (a map: one Indexed Job)
            ─► Accepted (backend_id = Job name, [index] for a map): QUEUED
    pod     ─► python -m jobkit.worker --store URL (reads payload, writes outcome,
               records RUNNING / SUCCEEDED / ERROR like on every backend)
    watch   ─► LIST + WATCH jobkit's Jobs and pods (watch.py) ─► judge each pod
               (states.py): OOM, TIMEOUT, PREEMPTED, LOST, stuck pending
            ─► observe(records) for the monitor, services.report(...) on a pod
               event: the reconciler records it (a failed attempt goes back to
               QUEUED while retries remain: Kubernetes starts the next pod)
    one-shot ─► the first observe of a process with no watch running (``jobkit
               list``): LIST the pods and Jobs of those jobs by id label
               (lookup.py), no watch; a second observe starts the watch
    held    ─► a job with unfinished dependencies (can_hold) is created suspended
               (manifest.hold: no pods, no resources) ─► release: one merge PATCH
               per Job, suspend: false (a map's Job once all its items are
               released); a held Job cancelled is deleted like any other
    cancel  ─► DELETE the Job, propagationPolicy=Background (its pods go with it);
               part of a map: DELETE those pods, whose replacements find the job
               CANCELLED in the store and exit at once
    logs    ─► GET pods/<pod>/log of the job's latest pod
    hand-over: a PENDING record with no backend id whose submitter died (the
               reconciler decides) ─► its Job looked up by job_name(id): found,
               accepted with that id; absent, STUCK ─► FAILED/SUBMIT_ERROR

Everything a pod needs comes from the store URL in its command and the
Secret named in ``[kubernetes] secret`` (store credentials, ``JOBKIT_KEY``):
nothing secret is in the manifest.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobkit.backends import waiting
from jobkit.backends.base import Accepted, Backend, BackendServices, Observation
from jobkit.errors import ConfigError, JobkitError
from jobkit.observation import Phase
from jobkit.reconcile import abandoned_message, submitter_gone
from jobkit.states import ACTIVE_STATES, FailureReason, JobRecord, JobState

from .manifest import (
    HELD,
    RELEASE,
    as_item,
    attempt_job_name,
    build_job,
    hold,
    job_name,
    to_yaml,
    validate,
)
from .settings import KubernetesSettings
from .states import created, job_name_of, jobkit_id, judge, worth_a_look

if TYPE_CHECKING:
    from jobkit.config import Config
    from jobkit.resources import Resources

    from .api import KubeApi
    from .watch import ClusterWatch

LOCAL_STORES = {
    "sqlite": "a file on this machine",
    "memory": "in this process's memory",
}
"""Store schemes only the submitting machine can open."""

SYNC_TIMEOUT = 5.0
"""How long a reconcile waits for the first list; a CLI must not hang on a dead API."""


class KubernetesBackend(Backend):
    name = "kubernetes"
    pushes_completions = False
    reruns_failed_attempts = True
    sparse_arrays = True  # an Indexed Job over exactly the items given (jobkit.dev/items)
    settings: KubernetesSettings

    def __init__(self, settings: KubernetesSettings, services: BackendServices) -> None:
        super().__init__(settings, services)
        self._lock = threading.Lock()
        self._api: KubeApi | None = None
        self._watch: ClusterWatch | None = None
        self._per_index: bool | None = None
        self._server_version: tuple[int, int] | None = None
        self._last_observe: float | None = None  # monotonic: when observe was last asked

    @classmethod
    def settings_from(cls, config: Config) -> KubernetesSettings:
        return KubernetesSettings.from_config(config.kubernetes)

    @classmethod
    def available(cls, settings: KubernetesSettings) -> tuple[bool, str]:
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            return False, "the kubernetes client is not installed: pip install 'jobkit[kubernetes]'"
        namespace = f"namespace {settings.namespace} (from {settings.namespace_source})"
        if settings.api_server:
            return True, f"API server {settings.api_server}, {namespace}"
        default = os.path.expanduser("~/.kube/config")
        where = settings.kubeconfig or os.environ.get("KUBECONFIG")
        if where or os.path.exists(default):
            return True, f"kubeconfig {where or default}, {namespace}"
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return True, f"in-cluster service account, {namespace}"
        return False, (
            "no cluster configured: set [kubernetes] kubeconfig (and context) or api_server, "
            "or run inside a cluster"
        )

    @property
    def api(self) -> KubeApi:
        with self._lock:
            return self._api_unlocked()

    # -- submission --------------------------------------------------------------------
    def check_resources(self, resources: Resources) -> None:
        if resources.nodes > 1 or resources.tasks_per_node > 1:
            raise ConfigError(
                f"nodes={resources.nodes}, tasks_per_node={resources.tasks_per_node}: the "
                "kubernetes backend runs one pod per job; use backend='slurm' for multi-node "
                "jobs (or a JobSet/PyTorchJob outside jobkit)"
            )
        self.manifest("jk-plan", "plan", resources, count=None)

    def manifest(
        self,
        job_id: str,
        name: str,
        resources: Resources,
        *,
        count: int | None,
        items: list[int] | None = None,
        kube_name: str | None = None,
    ) -> dict[str, Any]:
        manifest = build_job(
            job_id=job_id,
            name=name,
            resources=resources,
            settings=self.settings,
            store_url=self.store.url,
            count=count,
            per_index_retries=self._per_index_retries(),
            items=items,
            kube_name=kube_name,
        )
        validate(manifest, self._server_version)
        return manifest

    def plan(
        self,
        resources: Resources,
        *,
        checkpointable: bool = False,
        name: str | None = None,
        after: Sequence[str] = (),
    ) -> str:
        self.check_resources(resources)
        job_name = resources.name or name or "job"
        manifest = self.manifest("jk-0123456789abcd", job_name, resources, count=None)
        note = ""
        if after and resources.queue:
            note = f"# held by jobkit until {', '.join(after)} succeed (Kueue owns suspend)\n"
        elif after:
            hold(manifest, after)
        source = self.settings.namespace_source
        return f"# namespace {self.settings.namespace}: from {source}\n{note}{to_yaml(manifest)}"

    def plan_warnings(self, resources: Resources) -> list[str]:
        """A store the pods cannot reach: every job would fail in its pod."""
        url = self.store.url
        scheme = url.split("://", 1)[0]
        if scheme in LOCAL_STORES:
            return [
                f"the store {url} is {LOCAL_STORES[scheme]}, which pods cannot reach: their "
                "jobs would fail; use a store the cluster shares, e.g. --store s3://bucket/prefix"
            ]
        return []

    def prepare(self, records: Sequence[JobRecord], resources: Resources) -> None:
        for record in records:
            record.extra["namespace"] = self.settings.namespace

    def submit(self, records: Sequence[JobRecord], resources: Resources) -> list[Accepted]:
        """One Job (a map: one Indexed Job), named for what it runs:

        - a first submission: ``job_name(<job or array id>)``;
        - a rerun (jobs reopened by ``jobkit retry``): ``<id>-r<tag>``, the tag
          from the rerun's time, so a dead submitter's Job is found by name;
        - a later attempt jobkit resubmits (one job, ``attempt`` > 0: a retry
          on a backend-observed failure): :func:`attempt_job_name`, with the
          record's resources as they now are (an OOM retry's grown memory).

        A map's items with gaps (a rerun, a map partly answered from the cache,
        one item resubmitted) run as an Indexed Job over exactly those items
        (``jobkit.dev/items``).  A Job is created suspended while a dependency
        has not succeeded yet (``can_hold`` said so; released by
        :meth:`release`); an item-wise map (items waiting on different jobs),
        and items released from the store a few at a time, get one Job per
        item: an Indexed Job cannot start some indexes and not others.  Jobs
        with ``mem_growth`` are not rerun by Kubernetes (``backoffLimit`` 0):
        their records say so (``extra["reruns"] = False``) and the reconciler's
        process resubmits each retry."""
        first = records[0]
        array = first.array_id is not None
        job_id = first.array_id if first.array_id is not None else first.id
        suffix = _rerun_suffix(first)
        retried = not suffix and len(records) == 1 and first.attempt > 0
        held = not resources.queue and bool(waiting.unfinished(waiting.load(self.store, records)))
        item_wise = len({tuple(r.depends_on) for r in records}) > 1
        released = any(r.extra.get("held") == "store" for r in records)
        if array and not (suffix or retried) and ((held and item_wise) or released):
            # Items released from the store come a few at a time: one Indexed
            # Job per release would collide on the array's name.
            return self._submit_items(records, resources, held=held)
        if suffix:
            name = job_name(job_id + suffix)
        elif retried:
            name = attempt_job_name(first.id, first.attempt)
        else:
            name = job_name(job_id)
        indices = [int(r.array_index or 0) for r in records]
        gaps = indices != list(range(len(records)))
        items = indices if array and (suffix or gaps) else None
        manifest = self.manifest(
            job_id,
            first.name,
            resources,
            count=len(records) if array else None,
            items=items,
            kube_name=name,
        )
        extra: dict[str, Any] = {"reruns": False} if resources.mem_growth else {}
        if held:
            hold(manifest, sorted({d for r in records for d in r.depends_on}))
            extra[waiting.HELD_BY] = f"Kubernetes: suspended Job {name}"
        from .api import AlreadyExists

        try:
            self.api.create_job(manifest)
        except AlreadyExists:
            if not retried:
                raise
            # The attempt's Job has one name: another jobkit process that saw
            # the same end resubmitted it first.  Created once, accepted by both.
        self._ensure_watch()
        return [
            Accepted(record.id, f"{name}[{record.array_index}]" if array else name, extra)
            for record in records
        ]

    def _submit_items(
        self, records: Sequence[JobRecord], resources: Resources, *, held: bool
    ) -> list[Accepted]:
        """Each item its own Job ``<array>-<index>`` (suspended while ``held``,
        then released on its own).  A create that fails after others succeeded
        fails them all (SubmitError): the Jobs already made are deleted first,
        so none runs unrecorded."""
        accepted: list[Accepted] = []
        made: list[str] = []
        try:
            for record in records:
                array_id, index = str(record.array_id), int(record.array_index or 0)
                name = job_name(f"{array_id}-{index}")
                manifest = self.manifest(name, record.name, resources, count=None)
                as_item(manifest, array_id=array_id, index=index, item_id=record.id)
                extra: dict[str, Any] = {"reruns": False} if resources.mem_growth else {}
                if held and record.extra.get("held") == "backend":  # not an item ready now
                    hold(manifest, record.depends_on)
                    extra[waiting.HELD_BY] = f"Kubernetes: suspended Job {name}"
                self.api.create_job(manifest)
                made.append(name)
                accepted.append(Accepted(record.id, name, extra))
        except JobkitError:
            for name in made:
                self.api.delete_job(name)
            raise
        self._ensure_watch()
        return accepted

    def can_hold(
        self, records: Sequence[JobRecord], dependencies: Mapping[str, Sequence[JobRecord]]
    ) -> bool:
        """A suspended Job holds nothing of the cluster, so any dependency can be
        waited on that way; except for Kueue-queued jobs: Kueue owns their
        ``suspend`` and would start them when admitted, so jobkit holds those
        in the store and creates them once released."""
        if not records or records[0].resources.get("queue"):
            return False
        return bool(waiting.unfinished(dependencies)) and not waiting.failed(dependencies)

    def release(self, records: Sequence[JobRecord]) -> None:
        """Unsuspend the records' Jobs: one merge PATCH per Job, idempotent (a
        released or deleted Job is left as it is).  A map's Indexed Job starts
        only once every item is released or over: its pods cannot start one
        index at a time (item-wise maps have a Job per item instead)."""
        names: dict[str, str | None] = {}
        for record in records:
            if record.backend_id:
                indexed = "[" in record.backend_id
                names.setdefault(_job_of(record.backend_id), record.array_id if indexed else None)
        releasing = {r.id for r in records}
        for name, array_id in names.items():
            if array_id is not None and not self._all_released(array_id, releasing):
                continue
            self.api.patch_job(name, RELEASE)

    def _all_released(self, array_id: str, releasing: set[str]) -> bool:
        members = self.store.query(array_id=array_id)
        return all(
            m.id in releasing or m.is_terminal or m.extra.get("released_at") for m in members
        )

    def _per_index_retries(self) -> bool:
        """``backoffLimitPerIndex`` where the cluster has it (beta in 1.29, GA in 1.33)."""
        mode = self.settings.per_index_retries
        if mode != "auto":
            return mode == "on"
        if self._per_index is None:
            try:
                self._server_version = self.api.version()
            except JobkitError:
                self._server_version = None
            version = self._server_version
            self._per_index = version is None or version >= (1, 29)
        return self._per_index

    # -- state ---------------------------------------------------------------------------
    def _ensure_watch(self) -> ClusterWatch:
        with self._lock:
            if self._watch is None or not self._watch.alive:
                from .watch import ClusterWatch

                self._watch = ClusterWatch(self._api_unlocked(), self._on_pod)
                self._watch.start()
            self._watch.touch()
            return self._watch

    def close(self) -> None:
        """Stop watching (threads end with their current stream)."""
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()

    def _api_unlocked(self) -> KubeApi:
        if self._api is None:
            from .api import KubeApi

            self._api = KubeApi(self.settings)
        return self._api

    def observe(self, records: Sequence[JobRecord]) -> Mapping[str, Observation]:
        """Each active job by its latest pod.

        A process that asks again and again (a client's monitor) gets the
        watch's cache (watch.py); one that asks once (``jobkit list``,
        ``status``) must not open watch streams it never reads, so the first
        question without a running watch is answered by :func:`.lookup.find`:
        a LIST of pods and one of Jobs, selected by the jobs' id labels (a
        finished or foreign job's pods are not sent).  The watch starts on
        the next question within its idle time.
        """
        active = [r for r in records if r.state in ACTIVE_STATES]
        if not active:
            return {}
        watch = self._running_watch()
        if watch is None:
            from .lookup import find

            pods_seen, jobs = find(self.api, active)
        else:
            if not watch.synced(SYNC_TIMEOUT):
                return {}
            pods_seen = watch.snapshot("pods")
            jobs = {str((j.get("metadata") or {}).get("name")): j for j in watch.snapshot("jobs")}
        pods = self._latest_pods(pods_seen, {r.id: r for r in active})
        stuck = self._release_again(active, jobs)
        now = time.time()
        seen: dict[str, Observation] = {
            r.id: Observation("Suspended", Phase.WAITING, message=stuck[r.id])
            for r in active
            if r.id in stuck
        }
        for record in active:
            pod = pods.get(record.id)
            if record.backend_id is None:
                found = _handover(record, jobs, pod, now=now, grace=self.settings.pending_grace)
                if found is not None:
                    seen[record.id] = found
            elif pod is not None:
                observed = judge(pod, record, now=now, grace=self.settings.pending_grace)
                if observed is not None:
                    seen[record.id] = observed
            elif _job_of(record.backend_id) not in jobs:
                seen[record.id] = Observation(
                    "JobGone",
                    Phase.ENDED,
                    message=f"its Kubernetes Job {_job_of(record.backend_id)} is gone "
                    "(deleted, or removed by ttlSecondsAfterFinished)",
                )
        return seen

    def _release_again(
        self, records: Sequence[JobRecord], jobs: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, str]:
        """Patch again the Jobs of released jobs that are still suspended and
        held: their releaser died between recording the release, or the API
        refused the patch (403 without the Role's patch verb).  The patch is
        idempotent; tried again on every observe.  Returns, for jobs whose
        patch failed, why (shown in their record while they wait)."""
        late = [
            r
            for r in records
            if r.extra.get("released_at")
            and r.backend_id
            and _still_held(jobs.get(_job_of(r.backend_id)))
        ]
        if not late:
            return {}
        try:
            self.release(late)
        except JobkitError as exc:
            why = f"released, but its suspended Job could not be started: {exc}"
            return {r.id: why for r in late}
        return {}

    def _running_watch(self) -> ClusterWatch | None:
        """The watch, started on the second question within its idle time
        (the first one of a process is answered without it)."""
        from .watch import IDLE_AFTER

        now = time.monotonic()
        with self._lock:
            asked_before, self._last_observe = self._last_observe, now
            running = self._watch is not None and self._watch.alive
        if running or (asked_before is not None and now - asked_before < IDLE_AFTER):
            return self._ensure_watch()
        return None

    def _on_pod(self, pod: Mapping[str, Any]) -> None:
        """A pod changed: tell the reconciler what its job's worker could not record."""
        job_id = jobkit_id(pod)
        if job_id is None or not worth_a_look(pod):
            return
        try:
            record = self.store.get(job_id)
        except JobkitError:
            return
        if record.state not in ACTIVE_STATES or not _current(pod, record):
            return
        observed = judge(pod, record, now=time.time(), grace=self.settings.pending_grace)
        if observed is not None:
            self.services.report([record], {record.id: observed})

    @staticmethod
    def _latest_pods(
        pods: Sequence[Mapping[str, Any]], records: Mapping[str, JobRecord]
    ) -> dict[str, Mapping[str, Any]]:
        """Each jobkit job's newest pod (a retried item has several) of its
        current Job (a rerun item's earlier Job is not its attempt's)."""
        latest: dict[str, Mapping[str, Any]] = {}
        for pod in pods:
            job_id = jobkit_id(pod)
            record = records.get(job_id) if job_id is not None else None
            if job_id is None or (record is not None and not _current(pod, record)):
                continue
            seen = latest.get(job_id)
            if seen is None or (created(pod) or 0) >= (created(seen) or 0):
                latest[job_id] = pod
        return latest

    # -- control -------------------------------------------------------------------------
    def cancel(self, records: Sequence[JobRecord]) -> None:
        """Whole Jobs are deleted (pods in the background); for part of a map,
        only those items' pods."""
        by_job: dict[str, list[JobRecord]] = {}
        for record in records:
            if record.backend_id:
                by_job.setdefault(_job_of(record.backend_id), []).append(record)
        for name, group in by_job.items():
            array_id = group[0].array_id
            own_job = "[" not in str(group[0].backend_id)  # a job's, or one item's
            whole = own_job or array_id is None or self._all_cancelled(array_id)
            if whole:
                self.api.delete_job(name)
                continue
            wanted = {r.id for r in group}
            for pod in self._pods_of(name):
                if jobkit_id(pod) in wanted:
                    self.api.delete_pod(str((pod.get("metadata") or {}).get("name")))

    def _all_cancelled(self, array_id: str) -> bool:
        members = self.store.query(array_id=array_id)
        return all(m.state is JobState.CANCELLED or m.is_terminal for m in members)

    def _pods_of(self, job: str) -> list[Mapping[str, Any]]:
        listing = self.api.list("pods", f"job-name={job}")
        items: list[Mapping[str, Any]] = listing.get("items") or []
        return items

    # -- logs ----------------------------------------------------------------------------
    def read_logs(self, record: JobRecord, stream: str) -> str:
        """The log of the job's latest pod.  Kubernetes keeps one log per container,
        stdout and stderr interleaved, so both streams return it."""
        if not record.backend_id:
            return ""
        pods = [p for p in self._pods_of(_job_of(record.backend_id)) if jobkit_id(p) == record.id]
        if not pods:
            return ""
        latest = max(pods, key=lambda p: created(p) or 0)
        return self.api.read_log(str((latest.get("metadata") or {}).get("name")))


RERUN = "rerun_at"
"""The ``extra`` key :mod:`jobkit.rerun` sets on a reopened job."""


def _rerun_suffix(record: JobRecord) -> str:
    """``-r<tag>`` naming a rerun's Job (the reopening time in ms, base 36);
    empty for a first submission and for attempts after the rerun's."""
    when = record.extra.get(RERUN)
    if not isinstance(when, int | float):
        return ""
    if record.extra.get("rerun_attempt", record.attempt) != record.attempt:
        return ""  # a later attempt (a retry jobkit resubmits): a Job named for its attempt
    number, digits = int(when * 1000), ""
    while number:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
    return f"-r{digits or '0'}"


def _current(pod: Mapping[str, Any], record: JobRecord) -> bool:
    """Whether ``pod`` belongs to ``record``'s current Job (True when either is
    unknown): a late event of a rerun item's earlier Job must not judge the new attempt."""
    job = job_name_of(pod)
    if job is None:
        return True
    if record.backend_id is None:
        return job == job_name((record.array_id or record.id) + _rerun_suffix(record))
    return job == _job_of(record.backend_id)


def _still_held(job: Mapping[str, Any] | None) -> bool:
    """A Job created suspended by jobkit and not released yet."""
    if job is None:
        return False
    labels = (job.get("metadata") or {}).get("labels") or {}
    return bool((job.get("spec") or {}).get("suspend")) and labels.get(HELD) == "true"


def _job_of(backend_id: str) -> str:
    """``jk-abc[3]`` -> ``jk-abc``: the Job a map item's pod belongs to."""
    return backend_id.split("[", 1)[0]


def _handover(
    record: JobRecord,
    jobs: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    *,
    now: float,
    grace: float,
) -> Observation | None:
    """A record without a backend id (its submitter died around ``create_job``):
    its Job, found by the deterministic name, or stuck if its submitter is gone."""
    array = record.array_id is not None
    base = record.array_id if record.array_id is not None else record.id
    name = job_name(base + _rerun_suffix(record))  # a rerun's Job has a name of its own
    item = job_name(f"{record.array_id}-{record.array_index}") if array else name
    if item in jobs and not _rerun_suffix(record):  # an item-wise held map's item
        name, array = item, False
    if name in jobs:
        backend_id = f"{name}[{record.array_index}]" if array else name
        observed = judge(pod, record, now=now, grace=grace) if pod is not None else None
        if observed is None:
            observed = Observation(
                "Found",
                Phase.WAITING,
                message=f"its Kubernetes Job {name} was found after its submitter stopped",
            )
        return dataclasses.replace(observed, backend_id=backend_id)
    if record.state is JobState.PENDING and submitter_gone(record, now=now):
        return Observation(
            "NotSubmitted",
            Phase.STUCK,
            FailureReason.SUBMIT_ERROR,
            abandoned_message(record, "Kubernetes") + f" (no Job named {name})",
        )
    return None
