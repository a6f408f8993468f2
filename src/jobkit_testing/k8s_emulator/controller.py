"""The Job controller and kubelet: Jobs' pods run as local processes.

:class:`JobController` lists and watches Jobs and pods through the unmodified
``kubernetes`` client, creates pods up to ``parallelism``, runs each
container's command as a local subprocess with the container's environment,
streams its output into the pod log and patches pod and Job status the way
Kubernetes 1.31+ does.  One class over 1,000 lines because controller and
kubelet share the runs they track under one lock; the failures it simulates
are in :mod:`.faults`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from jobkit_testing.child_signals import with_default_signals

from .facade import K8sEmulator
from .faults import _DEFAULT_MESSAGES, FAULTS, SimulatedFault, _ContainerConfigError
from .kinds import CONTROLLER_AGENT, INDEX_LABEL, NODE_NAME, Obj, log, now_rfc3339, random_suffix


@dataclasses.dataclass
class _PodRun:
    namespace: str
    name: str
    job_uid: str
    index: int | None
    fault: SimulatedFault | None
    kill: threading.Event = dataclasses.field(default_factory=threading.Event)
    kill_reason: str = ""  # "deleted", "deadline", "stop"
    done: bool = False
    succeeded: bool = False
    accounted: bool = False
    running: bool = False
    processes: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    created_rv: int = 0


@dataclasses.dataclass
class _JobRun:
    uid: str
    namespace: str
    name: str
    started: float
    start_time: str
    pods: dict[str, _PodRun] = dataclasses.field(default_factory=dict)
    succeeded: int = 0
    failed: int = 0
    succeeded_indexes: set[int] = dataclasses.field(default_factory=set)
    failed_indexes: set[int] = dataclasses.field(default_factory=set)
    index_failures: Counter[int] = dataclasses.field(default_factory=Counter)
    finished: str | None = None  # "Complete", "Failed", or "Deleted"
    failure: tuple[str, str] = ("", "")  # reason, message
    last_status: str | None = None


def _ranges(indexes: Iterable[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5", as in Job status completedIndexes."""
    result: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        result.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(result)


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in env values, command and args (``$$`` escapes)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(replace, value)


class JobController:
    """Runs batch/v1 Jobs of the emulator as local processes (see the module docstring).

    Honoured: ``completions``, ``parallelism``, ``completionMode: Indexed`` (pods
    named ``<job>-<index>-<suffix>``, label/annotation
    ``batch.kubernetes.io/job-completion-index``, env ``JOB_COMPLETION_INDEX``),
    ``backoffLimit`` (failed pods are replaced until it is exceeded),
    ``backoffLimitPerIndex`` / ``maxFailedIndexes``, ``activeDeadlineSeconds``
    (active pods killed and deleted, Job Failed/DeadlineExceeded), the pod spec's
    ``activeDeadlineSeconds`` (the kubelet kills the pod: Failed/DeadlineExceeded), ``suspend``
    (no new pods), the first container's ``limits.memory`` (its process group's
    resident memory sampled every MEMORY_SAMPLE seconds; over it, the group is
    killed and the container ends OOMKilled, exit 137, as the kernel's cgroup
    OOM killer ends it), pod deletion (the process gets SIGTERM, then SIGKILL after
    ``min(terminationGracePeriodSeconds, max_grace)``; a deleted pod of a running
    Job counts as failed and is replaced, as with podReplacementPolicy
    TerminatingOrFailed). Not emulated: retry back-off delays, podFailurePolicy,
    successPolicy, init/sidecar containers, restartPolicy OnFailure restarts in
    place (a failed container fails its pod), ttlSecondsAfterFinished.
    """

    def __init__(
        self,
        emulator: K8sEmulator,
        workdir: Path,
        *,
        max_grace: float = 1.0,
        passthrough_env: Iterable[str] = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR"),
        executables: Mapping[str, str] | None = None,
    ) -> None:
        self.emulator = emulator
        self.workdir = workdir
        self.max_grace = max_grace
        self.passthrough_env = tuple(passthrough_env)
        self.executables = dict(executables or {})
        self.errors: list[str] = []
        self.pods_started = 0
        self._faults: list[SimulatedFault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._queue: queue.Queue[str] = queue.Queue()
        self._jobs: dict[str, Obj] = {}  # uid -> latest Job seen by the watch
        self._runs: dict[str, _JobRun] = {}
        self._pods: dict[tuple[str, str], _PodRun] = {}
        self._threads: list[threading.Thread] = []
        self._responses: dict[str, Any] = {}
        self._api = emulator.api_client(user_agent=CONTROLLER_AGENT)
        self._pod_ips = iter(range(2, 250))

    def _core(self) -> Any:  # Any: bodies are plain dicts, as with every client version
        from kubernetes import client

        return client.CoreV1Api(self._api)

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self._api)

    # -- public -------------------------------------------------------------------

    def simulate(
        self,
        kind: str,
        *,
        job: str | None = None,
        index: int | None = None,
        times: int | None = 1,
        after: float = 0.0,
        message: str | None = None,
    ) -> SimulatedFault:
        """Impose a failure on the next pods that match (see :class:`SimulatedFault`)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}: choose one of {', '.join(FAULTS)}")
        fault = SimulatedFault(kind, job, index, times, after, message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def start(self) -> JobController:

        batch, core = self._batch(), self._core()
        for name, target in (
            (
                "jobs",
                lambda: self._list_watch(
                    "jobs", batch.list_job_for_all_namespaces, {}, self._on_jobs
                ),
            ),
            (
                "pods",
                lambda: self._list_watch(
                    "pods",
                    core.list_pod_for_all_namespaces,
                    {"label_selector": "batch.kubernetes.io/controller-uid"},
                    self._on_pods,
                ),
            ),
            ("reconcile", self._reconcile_loop),
        ):
            thread = threading.Thread(
                target=self._guard(target), name=f"k8s-controller-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop watching, kill every process it started, and wait for its threads."""
        self._stopping.set()
        for response in list(self._responses.values()):
            _shutdown(response)
        for thread in self._threads[:3]:  # the watches and the reconciler: no new pods after this
            thread.join(10)
        with self._lock:
            pods = list(self._pods.values())
        for pod in pods:
            pod.kill_reason = pod.kill_reason or "stop"
            pod.kill.set()
        for thread in list(self._threads):
            thread.join(10)
        self._api.close()

    def running_processes(self) -> list[int]:
        """Pids of the pod processes alive now."""
        with self._lock:
            pods = list(self._pods.values())
        return [p.pid for pod in pods for p in pod.processes if p.poll() is None]

    # -- watching -------------------------------------------------------------------

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as error:
                if not self._stopping.is_set():
                    log.exception("k8s controller")
                    self.errors.append(f"{threading.current_thread().name}: {error!r}")

        return run

    def _list_watch(
        self,
        name: str,
        list_fn: Callable[..., Any],
        selector: Mapping[str, str],
        handle: Callable[[str, Obj], None],  # ("SYNC", the list) or (event type, object)
    ) -> None:
        """List, then watch from the list's resourceVersion; resume after drops; re-list on 410."""
        from kubernetes.client.exceptions import ApiException

        resource_version: str | None = None
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    listed = list_fn(_preload_content=False, **selector)
                    data = json.loads(listed.data)
                    resource_version = data["metadata"]["resourceVersion"]
                    handle("SYNC", data)
                response = list_fn(
                    watch=True,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=300,
                    _preload_content=False,
                    **selector,
                )
                self._responses[name] = response
                try:
                    for line in _stream_lines(response):
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # 410 Expired, or worse: list again
                            log.warning("k8s controller: watch %s: %s", name, event["object"])
                            resource_version = None
                            break
                        resource_version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            handle(event["type"], event["object"])
                finally:
                    self._responses.pop(name, None)
                    response.release_conn()
            except (ApiException, OSError, ValueError) as error:
                if self._stopping.is_set():
                    return
                log.debug("k8s controller: watch %s interrupted: %r", name, error)
                time.sleep(0.05)
            except Exception as error:
                if self._stopping.is_set():
                    return
                # urllib3 raises ProtocolError when the connection is reset mid-stream.
                if type(error).__module__.startswith("urllib3"):
                    time.sleep(0.05)
                    continue
                raise

    def _on_jobs(self, event: str, payload: Obj) -> None:
        with self._lock:
            if event == "SYNC":
                seen = {job["metadata"]["uid"]: job for job in payload["items"]}
                gone = set(self._jobs) - set(seen)
                self._jobs = seen
                uids = set(seen) | gone
            else:
                uid = payload["metadata"]["uid"]
                if event == "DELETED":
                    self._jobs.pop(uid, None)
                else:
                    self._jobs[uid] = payload
                uids = {uid}
        for uid in uids:
            self._queue.put(uid)

    def _on_pods(self, event: str, payload: Obj) -> None:
        """Kill the process of a pod that was deleted (or is being deleted)."""
        meta = payload["metadata"]
        if event == "SYNC":
            alive = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in payload["items"]}
            listed = int(meta["resourceVersion"])
            with self._lock:  # pods created after the list was taken are not missing from it
                vanished = [
                    run
                    for key, run in self._pods.items()
                    if key not in alive and not run.done and run.created_rv <= listed
                ]
            for run in vanished:
                self._kill(run, "deleted")
            return
        with self._lock:
            pod_run = self._pods.get((meta["namespace"], meta["name"]))
        if pod_run is not None and (event == "DELETED" or meta.get("deletionTimestamp")):
            self._kill(pod_run, "deleted")

    def _kill(self, run: _PodRun, reason: str) -> None:
        if not run.kill.is_set():
            run.kill_reason = reason
            run.kill.set()
        self._queue.put(run.job_uid)

    # -- reconciling ----------------------------------------------------------------

    def _reconcile_loop(self) -> None:
        while not self._stopping.is_set():
            due: set[str] = set()
            with contextlib.suppress(queue.Empty):
                due.add(self._queue.get(timeout=0.05))
            while True:
                try:
                    due.add(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._lock:
                # Jobs with a deadline are looked at on every tick.
                due |= {
                    uid
                    for uid, run in self._runs.items()
                    if not run.finished
                    and (self._jobs.get(uid) or {}).get("spec", {}).get("activeDeadlineSeconds")
                }
            for uid in sorted(due):
                if self._stopping.is_set():
                    return
                try:
                    self._reconcile(uid)
                except Exception as error:
                    if self._stopping.is_set():
                        return
                    if _api_status(error) in (404, 409):
                        continue  # the Job went away under us
                    log.exception("k8s controller: reconcile %s", uid)
                    self.errors.append(f"reconcile {uid}: {error!r}")

    def _reconcile(self, uid: str) -> None:
        with self._lock:
            job = self._jobs.get(uid)
            run = self._runs.get(uid)
        if job is None or job["metadata"].get("deletionTimestamp"):
            if run is not None:
                run.finished = run.finished or "Deleted"
            return
        meta, spec = job["metadata"], job.get("spec") or {}
        if run is None:
            conditions = (job.get("status") or {}).get("conditions") or []
            if any(
                c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                for c in conditions
            ):
                return  # finished before this controller started
            run = _JobRun(uid, meta["namespace"], meta["name"], time.monotonic(), now_rfc3339())
            with self._lock:
                self._runs[uid] = run
        if run.finished:
            return
        indexed = spec.get("completionMode") == "Indexed"
        per_index = spec.get("backoffLimitPerIndex")
        for pod in run.pods.values():
            if pod.done and not pod.accounted:
                pod.accounted = True
                if pod.succeeded:
                    run.succeeded += 1
                    if pod.index is not None:
                        run.succeeded_indexes.add(pod.index)
                else:
                    run.failed += 1
                    if pod.index is not None:
                        run.index_failures[pod.index] += 1
                        if per_index is not None and run.index_failures[pod.index] > per_index:
                            run.failed_indexes.add(pod.index)
        active = [pod for pod in run.pods.values() if not pod.done]
        deadline = spec.get("activeDeadlineSeconds")
        completions = int(spec.get("completions") or 0)
        if indexed:
            complete = len(run.succeeded_indexes) >= completions
        elif spec.get("completions") is not None:
            complete = run.succeeded >= completions
        else:  # a work queue: done when one pod succeeded and none is left
            complete = run.succeeded > 0 and not active
        if deadline is not None and time.monotonic() - run.started >= deadline:
            self._fail(
                run, active, "DeadlineExceeded", "Job was active longer than specified deadline"
            )
        elif per_index is None and run.failed > int(spec.get("backoffLimit", 6)):
            self._fail(
                run, active, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
        elif (
            indexed
            and per_index is not None
            and spec.get("maxFailedIndexes") is not None
            and len(run.failed_indexes) > int(spec["maxFailedIndexes"])
        ):
            self._fail(
                run,
                active,
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            )
        elif complete:
            run.finished = "Complete"
        elif (
            indexed
            and run.failed_indexes
            and len(run.succeeded_indexes | run.failed_indexes) >= completions
            and not active
        ):
            self._fail(run, active, "FailedIndexes", "Job has failed indexes")
        elif not spec.get("suspend"):
            self._start_pods(run, job, active)
        self._update_status(run, job)

    def _start_pods(self, run: _JobRun, job: Obj, active: list[_PodRun]) -> None:
        spec = job["spec"]
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if spec.get("completionMode") == "Indexed":
            busy = {pod.index for pod in active}
            todo = [
                i
                for i in range(int(completions))
                if i not in run.succeeded_indexes and i not in run.failed_indexes and i not in busy
            ]
            indexes: list[int | None] = list(todo[: max(0, parallelism - len(active))])
        else:
            remaining = (
                (int(completions) - run.succeeded)
                if completions is not None
                else (0 if run.succeeded else parallelism)
            )
            indexes = [None] * max(0, min(parallelism, remaining) - len(active))
        for index in indexes:
            if self._stopping.is_set():
                return
            self._create_pod(run, job, index)

    def _take_fault(self, job_name: str, index: int | None) -> SimulatedFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(job_name, index):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _create_pod(self, run: _JobRun, job: Obj, index: int | None) -> None:

        template = copy.deepcopy(job["spec"].get("template") or {})
        pod_meta = template.get("metadata") or {}
        labels = dict(pod_meta.get("labels") or {})
        annotations = dict(pod_meta.get("annotations") or {})
        pod_spec = template.get("spec") or {}
        name = (
            f"{run.name}-{index}-{random_suffix()}"
            if index is not None
            else f"{run.name}-{random_suffix()}"
        )
        if index is not None:
            labels[INDEX_LABEL] = str(index)
            annotations[INDEX_LABEL] = str(index)
            for container in pod_spec.get("containers") or []:
                container.setdefault("env", []).append(
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {
                                "apiVersion": "v1",
                                "fieldPath": f"metadata.labels['{INDEX_LABEL}']",
                            }
                        },
                    }
                )
        fault = self._take_fault(run.name, index)
        if fault is None or fault.kind != "unschedulable":
            pod_spec["nodeName"] = NODE_NAME  # the controller schedules, too
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": run.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": run.name,
                        "uid": run.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }
        created = self._core().create_namespaced_pod(run.namespace, pod, _preload_content=False)
        pod = json.loads(created.data)
        pod_run = _PodRun(run.namespace, name, run.uid, index, fault)
        pod_run.created_rv = int(pod["metadata"]["resourceVersion"])
        run.pods[name] = pod_run
        with self._lock:
            self._pods[(run.namespace, name)] = pod_run
            self.pods_started += 1
        thread = threading.Thread(
            target=self._guard(lambda: self._run_pod(pod_run, pod)),
            name=f"k8s-pod-{name}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def _fail(self, run: _JobRun, active: list[_PodRun], reason: str, message: str) -> None:

        run.finished = "Failed"
        run.failure = (reason, message)
        with self._lock:
            per_index = ((self._jobs.get(run.uid) or {}).get("spec") or {}).get(
                "backoffLimitPerIndex"
            )
        core = self._core()
        for pod in active:
            pod.accounted = True
            run.failed += 1
            if pod.index is not None and per_index is not None:
                run.failed_indexes.add(pod.index)
            pod.kill_reason = "deadline" if reason == "DeadlineExceeded" else "failed"
            pod.kill.set()
            with contextlib.suppress(Exception):
                core.delete_namespaced_pod(
                    pod.name, pod.namespace, propagation_policy="Background", _preload_content=False
                )

    def _update_status(self, run: _JobRun, job: Obj) -> None:

        spec = job.get("spec") or {}
        active = [pod for pod in run.pods.values() if not pod.done and not pod.kill.is_set()]
        now = now_rfc3339()
        status: Obj = {
            "startTime": run.start_time,
            "active": len(active) or None,
            "ready": sum(1 for pod in active if pod.running),
            "succeeded": run.succeeded or None,
            "failed": run.failed or None,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        }
        if spec.get("completionMode") == "Indexed":
            status["completedIndexes"] = _ranges(run.succeeded_indexes) or None
            if spec.get("backoffLimitPerIndex") is not None:
                status["failedIndexes"] = _ranges(run.failed_indexes) or None
        if run.finished == "Complete":
            status["completionTime"] = now
            status["active"] = None
            status["conditions"] = [
                _condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ),
                _condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ),
            ]
        elif run.finished == "Failed":
            reason, message = run.failure
            status["active"] = None
            status["conditions"] = [
                _condition("FailureTarget", reason, message, now),
                _condition("Failed", reason, message, now),
            ]
        timeless = {k: v for k, v in status.items() if k not in ("conditions", "completionTime")}
        signature = json.dumps([timeless, run.finished], sort_keys=True)
        if signature == run.last_status:
            return
        self._batch().patch_namespaced_job_status(
            run.name, run.namespace, {"status": status}, _preload_content=False
        )
        run.last_status = signature

    # -- the kubelet part -------------------------------------------------------------

    def _patch_pod(self, run: _PodRun, status: Obj) -> bool:
        """Patch the pod's status; False when the pod is gone."""

        try:
            self._core().patch_namespaced_pod_status(
                run.name, run.namespace, {"status": status}, _preload_content=False
            )
        except Exception as error:
            if _api_status(error) == 404:
                return False
            raise
        return True

    def _event(self, run: _PodRun, event_type: str, reason: str, message: str) -> None:

        now = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{run.name}.", "namespace": run.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": run.name,
                "namespace": run.namespace,
            },
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {
                "component": "kubelet" if reason != "FailedScheduling" else "default-scheduler"
            },
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with contextlib.suppress(Exception):
            self._core().create_namespaced_event(run.namespace, body, _preload_content=False)

    def _hold(self, run: _PodRun, seconds: float | None = None) -> None:
        """Block until the pod is killed (or ``seconds`` pass)."""
        run.kill.wait(seconds)

    def _run_pod(self, run: _PodRun, pod: Obj) -> None:
        try:
            self._run_pod_inner(run, pod)
        finally:
            run.done = True
            self._queue.put(run.job_uid)

    def _run_pod_inner(self, run: _PodRun, pod: Obj) -> None:
        spec = pod["spec"]
        containers: list[Obj] = spec.get("containers") or []
        fault = run.fault
        now = now_rfc3339()
        pod_ip = f"10.244.0.{next(self._pod_ips, 250)}"
        if fault is not None and fault.kind == "unschedulable":
            message = fault.message or _DEFAULT_MESSAGES["unschedulable"]
            self._patch_pod(
                run,
                {
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": message,
                            "lastTransitionTime": now,
                        }
                    ]
                },
            )
            self._event(run, "Warning", "FailedScheduling", message)
            self._hold(run)
            return
        scheduled = {
            "phase": "Pending",
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": [
                _container_status(c, {"waiting": {"reason": "ContainerCreating"}}, ready=False)
                for c in containers
            ],
        }
        if not self._patch_pod(run, scheduled):
            return
        if fault is not None and fault.kind in ("image_pull", "config_error"):
            image = containers[0].get("image", "")
            if fault.kind == "image_pull":
                message = fault.message or _DEFAULT_MESSAGES["image_pull"].format(image=image)
                waiting = [
                    ("ErrImagePull", message),
                    ("ImagePullBackOff", f'Back-off pulling image "{image}"'),
                ]
            else:
                message = fault.message or _DEFAULT_MESSAGES["config_error"]
                waiting = [("CreateContainerConfigError", message)]
            for reason, text in waiting:
                state = {"waiting": {"reason": reason, "message": text}}
                self._patch_pod(
                    run,
                    {"containerStatuses": [_container_status(containers[0], state, ready=False)]},
                )
                self._event(
                    run,
                    "Warning",
                    "Failed",
                    text if reason != "ImagePullBackOff" else f"Error: {reason}",
                )
                if self._hold_or_killed(run, 0.1):
                    return
            self._hold(run)
            return
        if fault is not None and fault.kind == "pending" and self._hold_or_killed(run, fault.after):
            return
        try:
            environments = [self._container_env(pod, container) for container in containers]
        except _ContainerConfigError as error:
            state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
            self._patch_pod(
                run, {"containerStatuses": [_container_status(containers[0], state, ready=False)]}
            )
            self._event(run, "Warning", "Failed", f"Error: {error}")
            self._hold(run)
            return
        if self._stopping.is_set():
            return
        cwd = Path(tempfile.mkdtemp(prefix=f"{run.name}-", dir=self.workdir))
        readers: list[threading.Thread] = []
        started: list[Obj] = []
        started_at = now_rfc3339()
        terminated: dict[str, Obj] = {}
        for container, env in zip(containers, environments, strict=True):
            argv = [
                _expand(str(a), env)
                for a in (container.get("command") or []) + (container.get("args") or [])
            ]
            self.emulator.call(
                self.emulator.server.open_log, run.namespace, run.name, container["name"]
            )
            if not argv:
                terminated[container["name"]] = {
                    "exitCode": 128,
                    "reason": "ContainerCannotRun",
                    "message": "the emulator cannot run an image's entrypoint: "
                    "give the container a command",
                }
                continue
            argv[0] = self._executable(argv[0])
            if shutil.which(argv[0], path=env.get("PATH", os.defpath)):
                # A container starts with default signal dispositions, whatever
                # the caller of pytest ignored (so SIGTERM below means SIGTERM).
                # A missing program stays unwrapped: Popen's OSError is StartError.
                argv = with_default_signals(argv)
            workdir = container.get("workingDir")
            try:
                process = subprocess.Popen(
                    argv,
                    env={**env, "HOME": str(cwd)},
                    cwd=workdir if workdir and os.path.isdir(workdir) else cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                terminated[container["name"]] = {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": "failed to create containerd task: "
                    f'exec: "{argv[0]}": {error.strerror}',
                }
                continue
            run.processes.append(process)
            started.append(container)
            reader = threading.Thread(
                target=self._pump,
                args=(run, container["name"], process),
                name=f"k8s-log-{run.name}",
                daemon=True,
            )
            reader.start()
            readers.append(reader)
        run.running = bool(started)
        if run.kill.is_set():  # deleted while starting
            for process in run.processes:
                _kill_group(process, signal.SIGKILL)
        running_status = {
            "phase": "Running",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "conditions": [
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": started_at},
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": None,
                    "lastTransitionTime": started_at,
                },
            ],
            "containerStatuses": [
                _container_status(
                    c,
                    {"running": {"startedAt": started_at}, "waiting": None},
                    ready=True,
                    started=True,
                )
                for c in started
            ],
        }
        if started:
            self._patch_pod(run, running_status)
            self._queue.put(run.job_uid)
        killed_by = self._wait(run, spec, fault)
        for reader in readers:
            reader.join(10)
        for container in containers:
            self.emulator.call(
                self.emulator.server.close_log, run.namespace, run.name, container["name"]
            )
        shutil.rmtree(cwd, ignore_errors=True)
        if run.kill_reason in ("deleted", "stop", "deadline", "failed"):
            run.succeeded = False
            return  # the pod is gone (or going): nobody reports its end
        finished_at = now_rfc3339()
        for container, process in zip(started, run.processes, strict=True):
            code = process.returncode if process.returncode is not None else 137
            code = 128 - code if code < 0 else code
            ended: Obj = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
            if killed_by == "oom" and container is started[0]:
                ended = {"exitCode": 137, "reason": "OOMKilled"}
            elif killed_by in ("evict", "preempt") and container is started[0]:
                ended = {"exitCode": 137, "reason": "Error"}
            if (
                ended["exitCode"] != 0
                and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
            ):
                text = self.emulator.logs(run.namespace, run.name, container["name"]) or ""
                ended["message"] = "".join(text.splitlines(keepends=True)[-80:])[-2048:]
            terminated[container["name"]] = ended
        success = all(state["exitCode"] == 0 for state in terminated.values())
        statuses = []
        for container in containers:
            final_state: Obj = {
                "startedAt": started_at,
                "finishedAt": finished_at,
                "containerID": f"emulated://{run.name}/{container['name']}",
                **terminated[container["name"]],
            }
            statuses.append(
                _container_status(
                    container,
                    {"terminated": final_state, "running": None, "waiting": None},
                    ready=False,
                    started=False,
                )
            )
        final: Obj = {
            "phase": "Succeeded" if success else "Failed",
            "conditions": [
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": finished_at,
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": finished_at,
                },
            ],
            "containerStatuses": statuses,
        }
        if killed_by == "pod_deadline":
            final.update(
                {
                    "reason": "DeadlineExceeded",
                    "message": "Pod was active on the node longer than the specified deadline",
                }
            )
        elif killed_by == "evict":
            message = fault.message if fault and fault.message else _DEFAULT_MESSAGES["evict"]
            final.update({"reason": "Evicted", "message": message})
            final["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": message,
                    "lastTransitionTime": finished_at,
                }
            )
        elif killed_by == "preempt":
            default = _DEFAULT_MESSAGES["preempt"].format(pod=run.name)
            message = fault.message if fault and fault.message else default
            final["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": message,
                    "lastTransitionTime": finished_at,
                }
            )
        run.succeeded = success
        run.running = False
        if not self._patch_pod(run, final):
            return
        if killed_by == "preempt":
            with contextlib.suppress(Exception):
                self._core().delete_namespaced_pod(
                    run.name, run.namespace, propagation_policy="Background", _preload_content=False
                )

    def _hold_or_killed(self, run: _PodRun, seconds: float) -> bool:
        return run.kill.wait(seconds)

    def _wait(self, run: _PodRun, spec: Obj, fault: SimulatedFault | None) -> str | None:
        """Wait for the processes; kill them on deletion, deadline or a simulated fault."""
        disruptive = fault is not None and fault.kind in ("oom", "evict", "preempt")
        fault_at = time.monotonic() + (fault.after if fault else 0.0)
        # The kubelet's own limit: the pod's activeDeadlineSeconds (not the Job's).
        pod_deadline = spec.get("activeDeadlineSeconds")
        deadline_at = None if pod_deadline is None else time.monotonic() + float(pod_deadline)
        # The kernel's OOM killer of the container's cgroup: the first container's
        # memory limit against its process group's resident memory, sampled.
        limit = _memory_limit((spec.get("containers") or [{}])[0])
        next_sample = 0.0
        while any(p.poll() is None for p in run.processes):
            if deadline_at is not None and time.monotonic() >= deadline_at:
                for process in run.processes:
                    _kill_group(process, signal.SIGKILL)
                for process in run.processes:
                    process.wait()
                return "pod_deadline"
            if limit is not None and run.processes and time.monotonic() >= next_sample:
                next_sample = time.monotonic() + MEMORY_SAMPLE
                if _group_rss(run.processes[0].pid) > limit:
                    for process in run.processes[:1]:
                        _kill_group(process, signal.SIGKILL)
                    for process in run.processes:
                        process.wait()
                    return "oom"
            if disruptive and time.monotonic() >= fault_at:
                for process in run.processes[:1]:
                    _kill_group(process, signal.SIGKILL)
                for process in run.processes:
                    process.wait()
                assert fault is not None
                return fault.kind
            if run.kill.wait(0.02):
                grace = min(float(spec.get("terminationGracePeriodSeconds", 30)), self.max_grace)
                grace = 0.0 if run.kill_reason == "stop" else grace
                for process in run.processes:
                    _kill_group(process, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while any(p.poll() is None for p in run.processes) and time.monotonic() < deadline:
                    time.sleep(0.02)
                for process in run.processes:
                    _kill_group(process, signal.SIGKILL)
                    process.wait()
                return run.kill_reason
        return fault.kind if disruptive and fault is not None and fault.after <= 0 else None

    def _pump(self, run: _PodRun, container: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            self.emulator.call(
                self.emulator.server.append_log, run.namespace, run.name, container, data
            )
        process.stdout.close()

    def _executable(self, program: str) -> str:
        if program in self.executables:
            return self.executables[program]
        if re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", program):
            return sys.executable  # the image's Python is this interpreter here
        return program

    def _container_env(self, pod: Obj, container: Obj) -> dict[str, str]:
        """The environment kubelet would give the container (raises _ContainerConfigError)."""

        core = self._core()
        meta = pod["metadata"]
        namespace = meta["namespace"]
        env: dict[str, str] = {k: os.environ[k] for k in self.passthrough_env if k in os.environ}
        env["HOSTNAME"] = meta["name"]
        cache: dict[tuple[str, str], Obj | None] = {}

        def source(kind: str, name: str, optional: bool) -> Obj | None:
            if (kind, name) not in cache:
                reader = (
                    core.read_namespaced_secret
                    if kind == "secret"
                    else core.read_namespaced_config_map
                )
                try:
                    cache[(kind, name)] = json.loads(
                        reader(name, namespace, _preload_content=False).data
                    )
                except Exception as error:
                    if _api_status(error) != 404:
                        raise
                    cache[(kind, name)] = None
            found = cache[(kind, name)]
            if found is None and not optional:
                raise _ContainerConfigError(f'{kind} "{name}" not found')
            return found

        def value_of(kind: str, ref: Obj) -> str | None:
            found = source(kind, ref.get("name", ""), bool(ref.get("optional")))
            if found is None:
                return None
            data = found.get("data") or {}
            key = ref.get("key", "")
            if key not in data:
                if ref.get("optional"):
                    return None
                label = "Secret" if kind == "secret" else "ConfigMap"
                raise _ContainerConfigError(
                    f"couldn't find key {key} in {label} {namespace}/{ref.get('name')}"
                )
            raw = data[key]
            return base64.b64decode(raw).decode() if kind == "secret" else str(raw)

        for env_from in container.get("envFrom") or []:
            prefix = env_from.get("prefix", "")
            for kind, field in (("secret", "secretRef"), ("configmap", "configMapRef")):
                ref = env_from.get(field)
                if ref:
                    found = source(kind, ref.get("name", ""), bool(ref.get("optional")))
                    for key, raw in ((found or {}).get("data") or {}).items():
                        env[prefix + key] = (
                            base64.b64decode(raw).decode() if kind == "secret" else str(raw)
                        )
        for var in container.get("env") or []:
            name = var["name"]
            if "value" in var or "valueFrom" not in var:
                env[name] = _expand(str(var.get("value", "")), env)
                continue
            ref = var["valueFrom"]
            value: str | None
            if "secretKeyRef" in ref:
                value = value_of("secret", ref["secretKeyRef"])
            elif "configMapKeyRef" in ref:
                value = value_of("configmap", ref["configMapKeyRef"])
            elif "fieldRef" in ref:
                value = _field_ref(pod, ref["fieldRef"]["fieldPath"])
            else:
                value = ""  # resourceFieldRef: not emulated
            if value is not None:
                env[name] = value
        return env


def _field_ref(pod: Obj, path: str) -> str:
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": "10.0.0.1",
        "status.podIP": "",
    }
    return str(values.get(path, ""))


def _container_status(container: Obj, state: Obj, *, ready: bool, started: bool = False) -> Obj:
    image = str(container.get("image", ""))
    return {
        "name": container["name"],
        "image": image,
        "imageID": f"{image}@sha256:{'0' * 64}",
        "ready": ready,
        "started": started,
        "restartCount": 0,
        "state": state,
    }


def _condition(kind: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _api_status(error: BaseException) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


MEMORY_SAMPLE = 0.2
"""Seconds between samples of a limited container's resident memory."""

_QUANTITY_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def _memory_limit(container: Obj) -> int | None:
    """The container's ``limits.memory`` in bytes (None: unlimited, or unparsable)."""
    value = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)) if value is not None else None
    if match is None or match.group(2) not in _QUANTITY_UNITS:
        return None
    return int(float(match.group(1)) * _QUANTITY_UNITS[match.group(2)])


def _group_rss(pgid: int) -> int:
    """Resident bytes of every process in process group ``pgid`` (a pod's
    container runs in a session of its own), read from ``/proc``."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after ")": state, ppid, pgrp, ..., rss is field 24
            total += int(fields[21]) * page
    return total


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def _stream_lines(response: Any) -> Iterator[str]:
    """Lines of a streaming urllib3 response (a watch)."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode()


def _shutdown(response: Any) -> None:
    """Unblock a thread reading a streaming urllib3 response (as Watch.stop does)."""
    connection = getattr(response, "connection", None) or getattr(response, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
