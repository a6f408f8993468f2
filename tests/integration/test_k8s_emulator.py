"""The Kubernetes test infrastructure itself, driven by the unmodified ``kubernetes`` client.

``src/jobkit_testing/k8s_emulator/`` serves an emulated API server over HTTP and a Job
controller that runs pods as local processes. These tests pin down what the
Kubernetes backend's tests will rely on: Jobs run and complete, Indexed Jobs
run one pod per index within ``parallelism``, label-selected watches, watch
resume after dropped connections, cascading deletes that kill processes,
deadlines, retries, logs (also followed), API errors answered as the real API
server answers them, and every simulated failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kmock", reason="kmock is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("kubernetes", reason="kubernetes is in the dev extra: pip install -e '.[dev]'")

import urllib3
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from conftest import wait_for

pytest_plugins = ["jobkit_testing.k8s_emulator.fixtures"]

NS = "jobkit"
MANIFESTS = Path(__file__).resolve().parents[2] / "backends" / "kubernetes"


def job(
    name: str, code: str, *, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A Job whose one container runs ``python -c code``."""
    container: dict[str, Any] = {"name": "main", "image": "python:3.11-slim"}
    container["command"] = ["python", "-c", code]
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def finished(emulator: Any, name: str) -> dict[str, Any] | None:
    """The Job once it has a Complete or Failed condition."""
    obj = emulator.get("jobs", NS, name)
    return obj if obj and {"Complete", "Failed"} & set(conditions(obj)) else None


def pods_of(emulator: Any, name: str) -> list[dict[str, Any]]:
    return [
        p for p in emulator.objects("pods", NS) if p["metadata"]["labels"].get("job-name") == name
    ]


def api_error(error: ApiException) -> dict[str, Any]:
    body = json.loads(error.body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == error.status
    return body


@pytest.fixture
def batch(k8s_client: Any) -> client.BatchV1Api:
    return client.BatchV1Api(k8s_client)


@pytest.fixture
def core(k8s_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(k8s_client)


# -- running Jobs ---------------------------------------------------------------------


def test_a_job_runs_its_command_and_its_pod_log_reads_hi(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    created = batch.create_namespaced_job(NS, job("hello", "print('hi')"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert int(created.metadata.resource_version) > 0
    labels = created.spec.template.metadata.labels
    assert labels["batch.kubernetes.io/job-name"] == "hello"
    assert created.spec.selector.match_labels == {
        "batch.kubernetes.io/controller-uid": created.metadata.uid
    }

    done = wait_for(lambda: finished(k8s_emulator, "hello"), timeout=20)
    assert set(conditions(done)) == {"SuccessCriteriaMet", "Complete"}
    assert done["status"]["succeeded"] == 1 and "failed" not in done["status"]
    assert done["status"]["startTime"] and done["status"]["completionTime"]

    (pod,) = core.list_namespaced_pod(NS, label_selector="job-name=hello").items
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name == "emulated-node"
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "Job",
        "hello",
        created.metadata.uid,
        True,
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert core.read_namespaced_pod_log(pod.metadata.name, NS) == "hi\n"
    assert core.read_namespaced_pod_log(pod.metadata.name, NS, container="main") == "hi\n"


def test_an_indexed_job_runs_one_pod_per_index_at_most_parallelism_at_once(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    code = "import os, time; time.sleep(0.5); print('index', os.environ['JOB_COMPLETION_INDEX'])"
    batch.create_namespaced_job(
        NS, job("array", code, completionMode="Indexed", completions=3, parallelism=2)
    )

    done = wait_for(lambda: finished(k8s_emulator, "array"), timeout=20)
    assert "Complete" in conditions(done)
    assert done["status"]["completedIndexes"] == "0-2" and done["status"]["succeeded"] == 3

    pods = core.list_namespaced_pod(NS, label_selector="batch.kubernetes.io/job-name=array").items
    by_index = {int(p.metadata.labels["batch.kubernetes.io/job-completion-index"]): p for p in pods}
    assert sorted(by_index) == [0, 1, 2]
    for index, pod in by_index.items():
        assert pod.metadata.name.startswith(f"array-{index}-")
        assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == str(index)
        assert core.read_namespaced_pod_log(pod.metadata.name, NS) == f"index {index}\n"
    # parallelism=2: the Job never had more than two active pods, and had two at some point.
    actives = [o["status"].get("active", 0) for _, o in k8s_emulator.history("jobs", NS, "array")]
    assert max(actives) == 2
    assert k8s_controller.pods_started == 3


def test_failed_pods_are_retried_up_to_backoff_limit(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api
) -> None:
    code = "import sys; print('boom', file=sys.stderr); sys.exit(3)"
    manifest = job(
        "flaky",
        code,
        backoffLimit=2,
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    batch.create_namespaced_job(NS, manifest)

    done = wait_for(lambda: finished(k8s_emulator, "flaky"), timeout=20)
    failed = conditions(done)["Failed"]
    assert (failed["reason"], failed["message"]) == (
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    assert done["status"]["failed"] == 3 and "active" not in done["status"]
    pods = pods_of(k8s_emulator, "flaky")
    assert len(pods) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
        assert terminated["message"] == "boom\n"  # stderr goes to the log, as in a container


def test_an_index_failing_past_its_per_index_limit_fails_the_job_with_failed_indexes(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api
) -> None:
    code = "import os, sys; sys.exit(int(os.environ['JOB_COMPLETION_INDEX'] == '1'))"
    manifest = job("perindex", code, completionMode="Indexed", completions=3, parallelism=3)
    manifest["spec"].update(backoffLimitPerIndex=1)
    del manifest["spec"]["backoffLimit"]
    batch.create_namespaced_job(NS, manifest)

    done = wait_for(lambda: finished(k8s_emulator, "perindex"), timeout=20)
    assert conditions(done)["Failed"]["reason"] == "FailedIndexes"
    assert done["status"]["completedIndexes"] == "0,2"
    assert done["status"]["failedIndexes"] == "1"
    assert done["status"]["failed"] == 2  # index 1 ran twice


def test_env_values_secret_and_configmap_refs_and_downward_api_reach_the_process(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "store"}, "stringData": {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}}
    )
    core.create_namespaced_config_map(
        NS, {"metadata": {"name": "settings"}, "data": {"level": "debug"}}
    )
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "MESSAGE", "value": "$(GREETING) world"},
        {
            "name": "SECRET",
            "valueFrom": {"secretKeyRef": {"name": "store", "key": "AWS_SECRET_ACCESS_KEY"}},
        },
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    names = ["MESSAGE", "SECRET", "LEVEL", "POD"]
    code = f"import os, sys; print(sys.argv[1:], *(os.environ[k] for k in {names}))"
    manifest = job("envs", code, container={"env": env, "args": ["$(GREETING)"]})
    batch.create_namespaced_job(NS, manifest)
    wait_for(lambda: finished(k8s_emulator, "envs"), timeout=20)
    (pod,) = pods_of(k8s_emulator, "envs")
    name = pod["metadata"]["name"]
    assert k8s_emulator.logs(NS, name) == f"['hello'] hello world s3cr3t debug {name}\n"

    # A missing Secret keeps the pod Pending with CreateContainerConfigError, as kubelet does.
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x"}}}]
    batch.create_namespaced_job(NS, job("noenv", "print(1)", container={"env": env}))

    def config_error() -> dict[str, Any] | None:
        pods = pods_of(k8s_emulator, "noenv")
        statuses = pods[0]["status"].get("containerStatuses") if pods else None
        waiting = statuses[0]["state"].get("waiting") if statuses else None
        return waiting if waiting and waiting["reason"] == "CreateContainerConfigError" else None

    assert wait_for(config_error, timeout=20)["message"] == 'secret "nope" not found'


def test_follow_streams_the_log_while_the_pod_runs(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    code = "import time; print('one', flush=True); time.sleep(0.8); print('two')"
    batch.create_namespaced_job(NS, job("chatty", code))

    def logging_pod() -> str | None:
        pod = _pod(k8s_emulator, "chatty")
        name = pod["metadata"]["name"] if pod else None
        return name if name and k8s_emulator.logs(NS, name) is not None else None

    name = wait_for(logging_pod, timeout=20)
    start = time.monotonic()
    lines: list[tuple[float, str]] = []
    for line in watch.Watch().stream(core.read_namespaced_pod_log, name, NS):
        lines.append((time.monotonic() - start, line))
    assert [text for _, text in lines] == ["one", "two"]
    assert lines[1][0] - lines[0][0] > 0.5  # "one" arrived while the process was still running

    response = core.read_namespaced_pod_log(
        name, NS, timestamps=True, tail_lines=1, _preload_content=False
    )
    assert response.headers["Content-Type"].startswith("text/plain")
    stamp, text = response.data.decode().split(" ", 1)
    assert text == "two\n" and stamp.endswith("Z") and "T" in stamp


# -- watches ----------------------------------------------------------------------------


def test_a_label_selected_watch_sees_only_matching_objects_and_times_out(
    k8s_emulator: Any, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(NS, job("mine-1", "pass", labels={"app": "jobkit"}))
    batch.create_namespaced_job(NS, job("other", "pass", labels={"app": "other"}))
    events: list[tuple[str, str]] = []

    def consume() -> None:  # with timeout_seconds, Watch ends with the stream
        for event in watch.Watch().stream(
            batch.list_namespaced_job, NS, label_selector="app=jobkit", timeout_seconds=60
        ):
            events.append((event["type"], event["object"].metadata.name))

    consumer = threading.Thread(target=consume)
    consumer.start()
    wait_for(lambda: events)
    batch.create_namespaced_job(NS, job("mine-2", "pass", labels={"app": "jobkit"}))
    batch.create_namespaced_job(NS, job("other-2", "pass", labels={"app": "other"}))
    batch.patch_namespaced_job("other", NS, {"metadata": {"labels": {"app": "jobkit"}}})  # enters
    batch.patch_namespaced_job("mine-1", NS, {"metadata": {"labels": {"app": "gone"}}})  # leaves
    batch.delete_namespaced_job("other-2", NS, propagation_policy="Background")
    batch.create_namespaced_job(NS, job("last", "pass", labels={"app": "jobkit"}))
    wait_for(lambda: ("ADDED", "last") in events)
    k8s_emulator.drop_watches()
    consumer.join(10)
    assert not consumer.is_alive()
    assert events == [
        ("ADDED", "mine-1"),
        ("ADDED", "mine-2"),
        ("ADDED", "other"),
        ("DELETED", "mine-1"),
        ("ADDED", "last"),
    ]
    listed = batch.list_namespaced_job(NS, label_selector="app in (jobkit), app!=other")
    assert sorted(j.metadata.name for j in listed.items) == ["last", "mine-2", "other"]
    assert batch.list_namespaced_job(NS, label_selector="!app").items == []

    # timeoutSeconds ends a quiet watch.
    start = time.monotonic()
    quiet = watch.Watch().stream(
        batch.list_namespaced_job, NS, label_selector="app=none", timeout_seconds=1
    )
    assert list(quiet) == []
    assert 1.0 <= time.monotonic() - start < 10


def test_a_watch_resumes_from_its_resource_version_after_dropped_connections(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api
) -> None:
    listed = batch.list_namespaced_job(NS)
    events: list[tuple[str, str]] = []
    watcher = watch.Watch()

    stopping = threading.Event()

    def consume() -> None:  # no timeout_seconds: Watch resumes from the last resourceVersion
        try:
            for event in watcher.stream(
                batch.list_namespaced_job, NS, resource_version=listed.metadata.resource_version
            ):
                if event["type"] == "ADDED":
                    events.append((event["type"], event["object"].metadata.name))
        except urllib3.exceptions.HTTPError:
            if not stopping.is_set():  # Watch.stop() shuts the socket down
                raise

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    batch.create_namespaced_job(NS, job("before", "pass"))
    wait_for(lambda: events)
    seen_rv = k8s_emulator.get("jobs", NS, "before")["metadata"]["resourceVersion"]
    k8s_emulator.drop_watches()
    batch.create_namespaced_job(NS, job("after", "print('ran')"))
    wait_for(lambda: len(events) == 2)
    assert events == [("ADDED", "before"), ("ADDED", "after")]  # nothing lost, nothing replayed
    watches = k8s_emulator.requests("watch", "jobs")
    assert len(watches) >= 2
    assert int(watches[1].params["resourceVersion"]) >= int(seen_rv)
    # The controller's own watches resumed too: the Job created after the drop ran.
    assert "Complete" in conditions(wait_for(lambda: finished(k8s_emulator, "after"), timeout=20))
    stopping.set()
    watcher.stop()  # kubernetes>=37 shuts the socket down; older clients stop at the stream's end
    k8s_emulator.drop_watches()
    consumer.join(5)
    assert not consumer.is_alive()

    # An aborted connection (reset, not a clean end) surfaces as an error in the reader.
    response = batch.list_namespaced_job(NS, watch=True, _preload_content=False)
    k8s_emulator.drop_watches(abort=True)
    with pytest.raises(urllib3.exceptions.HTTPError):
        for _ in response.stream():
            pass

    # After compaction, resuming from an old resourceVersion answers 410 Expired.
    k8s_emulator.compact()
    response = batch.list_namespaced_job(
        NS, watch=True, resource_version=seen_rv, _preload_content=False
    )
    first = json.loads(response.data.decode().splitlines()[0])
    assert first["type"] == "ERROR"
    assert (first["object"]["code"], first["object"]["reason"]) == (410, "Expired")


# -- deletion and deadlines -----------------------------------------------------------------


def _running_pid(k8s_emulator: Any, k8s_controller: Any, name: str) -> int:
    """The pid of the Job's one process, once its pod is Running."""

    def running() -> list[int]:
        pods = pods_of(k8s_emulator, name)
        phase = pods[0]["status"]["phase"] if pods else None
        return k8s_controller.running_processes() if phase == "Running" else []

    (pid,) = wait_for(running, timeout=20)
    return pid


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


SLEEPER = "import time; print('started', flush=True); time.sleep(60)"


def test_background_delete_removes_the_pods_and_kills_the_process(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(NS, job("doomed", SLEEPER))
    pid = _running_pid(k8s_emulator, k8s_controller, "doomed")
    assert pods_of(k8s_emulator, "doomed")[0]["status"]["phase"] == "Running"

    answer = batch.delete_namespaced_job("doomed", NS, propagation_policy="Background")
    # kubernetes>=37 gives a dict (the API may answer the Job instead), older clients a V1Status.
    answer = batch.api_client.sanitize_for_serialization(answer)
    assert answer["status"] == "Success" and answer["details"]["name"] == "doomed"
    assert k8s_emulator.get("jobs", NS, "doomed") is None
    wait_for(lambda: not pods_of(k8s_emulator, "doomed"), timeout=10)
    wait_for(lambda: _gone(pid), timeout=10)
    with pytest.raises(ApiException) as error:
        batch.delete_namespaced_job("doomed", NS, propagation_policy="Background")
    assert error.value.status == 404


def test_deleting_a_job_without_a_policy_orphans_its_pods_as_the_real_api_does(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(NS, job("orphaner", SLEEPER))
    pid = _running_pid(k8s_emulator, k8s_controller, "orphaner")
    batch.delete_namespaced_job("orphaner", NS)
    wait_for(lambda: k8s_emulator.get("jobs", NS, "orphaner") is None, timeout=10)
    (pod,) = pods_of(k8s_emulator, "orphaner")
    assert "ownerReferences" not in pod["metadata"]
    assert not _gone(pid)  # still running: batch/v1 Jobs orphan their pods by default


def test_active_deadline_fails_the_job_with_deadline_exceeded(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(NS, job("slow", SLEEPER, activeDeadlineSeconds=1))
    done = wait_for(lambda: finished(k8s_emulator, "slow"), timeout=10)
    failed = conditions(done)["Failed"]
    assert (failed["reason"], failed["message"]) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )
    assert done["status"]["failed"] == 1
    assert k8s_controller.pods_started == 1
    # The active pod was deleted and its process killed.
    wait_for(lambda: not pods_of(k8s_emulator, "slow") and not k8s_controller.running_processes())


# -- simulated failures ---------------------------------------------------------------------


def _pod(k8s_emulator: Any, name: str) -> dict[str, Any] | None:
    pods = pods_of(k8s_emulator, name)
    return pods[0] if pods else None


def _container_state(pod: dict[str, Any] | None) -> dict[str, Any]:
    statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
    return statuses[0].get("state") or {}


def test_simulated_oom_kill(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api
) -> None:
    k8s_controller.simulate("oom", job="hog", after=0.2)
    batch.create_namespaced_job(NS, job("hog", SLEEPER))
    done = wait_for(lambda: finished(k8s_emulator, "hog"), timeout=20)
    assert conditions(done)["Failed"]["reason"] == "BackoffLimitExceeded"
    pod = _pod(k8s_emulator, "hog")
    assert pod is not None and pod["status"]["phase"] == "Failed"
    terminated = _container_state(pod)["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    phases = [
        o["status"]["phase"] for _, o in k8s_emulator.history("pods", NS, pod["metadata"]["name"])
    ]
    assert "Running" in phases  # it ran, then was killed


def test_simulated_image_pull_failure_keeps_the_pod_pending_with_the_reason(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    k8s_controller.simulate("image_pull")
    batch.create_namespaced_job(NS, job("badimage", "print(1)"))
    waiting = wait_for(
        lambda: (
            (_container_state(_pod(k8s_emulator, "badimage")).get("waiting") or {}).get("reason")
            == "ImagePullBackOff"
            and _container_state(_pod(k8s_emulator, "badimage"))["waiting"]
        ),
        timeout=20,
    )
    assert waiting["message"] == 'Back-off pulling image "python:3.11-slim"'
    pod = _pod(k8s_emulator, "badimage")
    assert pod is not None and pod["status"]["phase"] == "Pending"
    pulled = [o for _, o in k8s_emulator.history("pods", NS, pod["metadata"]["name"])]
    reasons = [(_container_state(o).get("waiting") or {}).get("reason") for o in pulled]
    assert "ErrImagePull" in reasons
    with pytest.raises(ApiException) as error:
        core.read_namespaced_pod_log(pod["metadata"]["name"], NS)
    assert error.value.status == 400
    assert api_error(error.value)["message"].endswith(
        "is waiting to start: trying and failing to pull image"
    )
    assert k8s_emulator.get("jobs", NS, "badimage")["status"]["active"] == 1


def test_simulated_unschedulable_pod(
    k8s_emulator: Any, k8s_controller: Any, batch: client.BatchV1Api
) -> None:
    k8s_controller.simulate(
        "unschedulable", message="0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    )

    def unscheduled() -> dict[str, Any] | None:
        pod = _pod(k8s_emulator, "greedy")
        found = conditions(pod or {}).get("PodScheduled")
        return found if found and found["status"] == "False" else None

    batch.create_namespaced_job(NS, job("greedy", "print(1)"))
    condition = wait_for(unscheduled, timeout=20)
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    pod = _pod(k8s_emulator, "greedy")
    assert pod is not None and "nodeName" not in pod["spec"] and pod["status"]["phase"] == "Pending"
    events = wait_for(lambda: k8s_emulator.objects("events", NS))
    assert [e["reason"] for e in events] == ["FailedScheduling"]


@pytest.mark.parametrize(
    ("fault", "reason", "deleted"),
    [("evict", "TerminationByKubelet", False), ("preempt", "PreemptionByScheduler", True)],
)
def test_simulated_eviction_and_preemption(
    k8s_emulator: Any,
    k8s_controller: Any,
    batch: client.BatchV1Api,
    fault: str,
    reason: str,
    deleted: bool,
) -> None:
    k8s_controller.simulate(fault, after=0.1)
    batch.create_namespaced_job(NS, job("victim", SLEEPER))
    wait_for(lambda: finished(k8s_emulator, "victim"), timeout=20)
    (created,) = k8s_emulator.requests("create", "pods", include_controller=True)
    name = created.body["metadata"]["name"]
    last = [o for _, o in k8s_emulator.history("pods", NS, name)][-1]
    assert last["status"]["phase"] == "Failed"
    disruption = conditions(last)["DisruptionTarget"]
    assert (disruption["status"], disruption["reason"]) == ("True", reason)
    if fault == "evict":
        assert last["status"]["reason"] == "Evicted"
    assert (k8s_emulator.get("pods", NS, name) is None) == deleted


# -- the API's answers --------------------------------------------------------------------


def test_errors_are_answered_as_the_api_server_does(
    k8s_emulator: Any, batch: client.BatchV1Api
) -> None:
    with pytest.raises(ApiException) as error:
        batch.read_namespaced_job("nope", NS)
    body = api_error(error.value)
    assert (error.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'jobs.batch "nope" not found'
    assert body["details"] == {"name": "nope", "group": "batch", "kind": "jobs"}

    batch.create_namespaced_job(NS, job("twice", "pass"))
    with pytest.raises(ApiException) as error:
        batch.create_namespaced_job(NS, job("twice", "pass"))
    body = api_error(error.value)
    assert (error.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'jobs.batch "twice" already exists'

    current = batch.read_namespaced_job("twice", NS)
    stale = current.metadata.resource_version
    batch.patch_namespaced_job("twice", NS, {"metadata": {"labels": {"touched": "yes"}}})
    with pytest.raises(ApiException) as error:
        batch.patch_namespaced_job(
            "twice", NS, {"metadata": {"resourceVersion": stale, "labels": {"again": "yes"}}}
        )
    body = api_error(error.value)
    assert (error.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]

    bad = job("always", "pass")
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as error:
        batch.create_namespaced_job(NS, bad)
    body = api_error(error.value)
    assert (error.value.status, body["reason"]) == (422, "Invalid")
    assert body["message"] == (
        'Job.batch "always" is invalid: spec.template.spec.restartPolicy: '
        'Required value: valid values: "OnFailure", "Never"'
    )
    assert body["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"

    gpu = job("gpu", "pass", container={"resources": {"limits": {"memory": "16GB"}}})
    with pytest.raises(ApiException) as error:
        batch.create_namespaced_job(NS, gpu)
    assert (
        error.value.status == 400 and "quantities must match" in api_error(error.value)["message"]
    )

    with pytest.raises(ApiException) as error:
        batch.create_namespaced_job("missing", job("lost", "pass"))
    assert api_error(error.value)["message"] == 'namespaces "missing" not found'


def test_injected_errors_tokens_and_rbac(
    k8s_emulator: Any, batch: client.BatchV1Api, core: client.CoreV1Api, tmp_path: Path
) -> None:
    k8s_emulator.fail("create", "jobs", 500, "etcdserver: request timed out")
    with pytest.raises(ApiException) as error:
        batch.create_namespaced_job(NS, job("retry", "pass"))
    assert (
        error.value.status == 500
        and api_error(error.value)["message"] == "etcdserver: request timed out"
    )
    batch.create_namespaced_job(NS, job("retry", "pass"))  # times=1: the next one passes

    rules = yaml.safe_load((MANIFESTS / "role.yaml").read_text())["rules"]
    k8s_emulator.enforce_role(rules)
    batch.list_namespaced_job(NS)
    batch.read_namespaced_job("retry", NS)
    core.list_namespaced_pod(NS)
    with pytest.raises(ApiException) as error:
        core.read_namespaced_pod_log("absent", NS)
    assert error.value.status == 404  # authorized (pods/log get), then not found
    with pytest.raises(ApiException) as error:
        core.list_namespaced_secret(NS)
    assert api_error(error.value)["message"] == (
        'secrets is forbidden: User "system:serviceaccount:jobkit:jobkit" cannot list resource '
        '"secrets" in API group "" in the namespace "jobkit"'
    )
    batch.patch_namespaced_job("retry", NS, {"spec": {"suspend": False}})  # releasing held Jobs
    with pytest.raises(ApiException) as error:  # pods: never patched by jobkit, not granted
        core.patch_namespaced_pod("absent", NS, {"metadata": {"labels": {"x": "y"}}})
    assert api_error(error.value)["message"] == (
        'pods "absent" is forbidden: User "system:serviceaccount:jobkit:jobkit" cannot '
        'patch resource "pods" in API group "" in the namespace "jobkit"'
    )
    batch.delete_namespaced_job("retry", NS, propagation_policy="Background")
    k8s_emulator.enforce_role(None)

    k8s_emulator.require_token("t0k3n")
    with pytest.raises(ApiException) as error:
        batch.list_namespaced_job(NS)
    assert error.value.status == 401
    from kubernetes import config

    authorized = config.new_client_from_config(
        config_file=str(k8s_emulator.kubeconfig(tmp_path / "kc"))
    )
    try:
        names = [n.metadata.name for n in client.CoreV1Api(authorized).list_namespace().items]
    finally:
        authorized.close()
    assert names == ["default", "jobkit"]


def test_patches_puts_and_the_status_subresource(
    k8s_emulator: Any, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job(NS, job("patched", "pass", labels={"a": "1"}))

    def condition(kind: str, status: str) -> dict[str, Any]:
        return {"type": kind, "status": status, "reason": kind}

    batch.patch_namespaced_job_status(
        "patched", NS, {"status": {"conditions": [condition("Suspended", "True")]}}
    )
    batch.patch_namespaced_job_status(
        "patched", NS, {"status": {"active": 1, "conditions": [condition("Complete", "False")]}}
    )
    batch.patch_namespaced_job_status(
        "patched", NS, {"status": {"conditions": [condition("Suspended", "False")]}}
    )
    status = k8s_emulator.get("jobs", NS, "patched")["status"]
    assert status["active"] == 1  # strategic merge: conditions merged by type, other keys kept
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("Suspended", "False"),
        ("Complete", "False"),
    ]

    # The main resource ignores status; the status subresource ignores everything else.
    current = batch.read_namespaced_job("patched", NS)
    current.status.active = 5
    current.metadata.labels["b"] = "2"
    replaced = batch.replace_namespaced_job("patched", NS, current)
    assert replaced.status.active == 1 and replaced.metadata.labels == {"a": "1", "b": "2"}
    assert int(replaced.metadata.resource_version) > int(current.metadata.resource_version)
    replaced.status.active = 7
    replaced.metadata.labels["c"] = "3"
    after = batch.replace_namespaced_job_status("patched", NS, replaced)
    assert after.status.active == 7 and "c" not in after.metadata.labels

    # JSON patch and merge patch, by content type.
    batch.patch_namespaced_job(
        "patched", NS, [{"op": "add", "path": "/metadata/labels/d", "value": "4"}]
    )
    assert k8s_emulator.get("jobs", NS, "patched")["metadata"]["labels"]["d"] == "4"
    merge = urllib.request.Request(
        f"{k8s_emulator.url}/apis/batch/v1/namespaces/{NS}/jobs/patched",
        data=json.dumps({"metadata": {"labels": {"a": None}}}).encode(),
        headers={"Content-Type": "application/merge-patch+json"},
        method="PATCH",
    )
    with urllib.request.urlopen(
        merge, timeout=10
    ) as response:  # (kubernetes<37 has no _content_type)
        assert response.status == 200
    assert "a" not in k8s_emulator.get("jobs", NS, "patched")["metadata"]["labels"]

    # A Job's pod template is immutable.
    with pytest.raises(ApiException) as error:
        batch.patch_namespaced_job(
            "patched",
            NS,
            {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "other"}]}}}},
        )
    assert error.value.status == 422
    assert "spec.template: Invalid value: field is immutable" in api_error(error.value)["message"]


def test_lists_paginate_and_the_request_log_counts_requests(
    k8s_emulator: Any, batch: client.BatchV1Api
) -> None:
    for i in range(5):
        batch.create_namespaced_job(NS, job(f"page-{i}", "pass"))
    first = json.loads(batch.list_namespaced_job(NS, limit=2, _preload_content=False).data)
    assert [j["metadata"]["name"] for j in first["items"]] == ["page-0", "page-1"]
    assert first["metadata"]["remainingItemCount"] == 3
    token = first["metadata"]["continue"]
    rest = json.loads(
        batch.list_namespaced_job(NS, limit=10, _continue=token, _preload_content=False).data
    )
    assert [j["metadata"]["name"] for j in rest["items"]] == ["page-2", "page-3", "page-4"]
    assert "continue" not in rest["metadata"]
    assert "kind" not in rest["items"][0]  # list items carry no kind, as in the real API

    creates = k8s_emulator.requests("create", "jobs")
    assert len(creates) == 5 and creates[0].body["metadata"]["name"] == "page-0"
    assert [r.status for r in k8s_emulator.requests("list", "jobs")] == [200, 200]


def test_foreground_deletion_and_deletecollection(
    k8s_emulator: Any, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    owner = batch.create_namespaced_job(NS, job("owner", "pass", labels={"batch": "one"}))
    reference = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    pod = {
        "metadata": {"name": "owned", "ownerReferences": [reference]},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }
    core.create_namespaced_pod(NS, pod)
    batch.delete_namespaced_job("owner", NS, propagation_policy="Foreground")
    wait_for(lambda: k8s_emulator.get("jobs", NS, "owner") is None, timeout=10)
    types = [(t, o["kind"]) for t, o in k8s_emulator.history("jobs", NS, "owner")]
    types += [(t, o["kind"]) for t, o in k8s_emulator.history("pods", NS, "owned")]
    marked = k8s_emulator.history("jobs", NS, "owner")[1][1]["metadata"]
    assert marked["finalizers"] == ["foregroundDeletion"] and marked["deletionTimestamp"]
    job_deleted = k8s_emulator.history("jobs", NS, "owner")[-1][1]["metadata"]["resourceVersion"]
    pod_deleted = k8s_emulator.history("pods", NS, "owned")[-1][1]["metadata"]["resourceVersion"]
    assert int(pod_deleted) < int(job_deleted)  # dependents first
    assert ("DELETED", "Job") in types and ("DELETED", "Pod") in types

    for i in range(3):
        batch.create_namespaced_job(NS, job(f"bulk-{i}", "pass", labels={"bulk": str(i % 2)}))
    batch.delete_collection_namespaced_job(
        NS, label_selector="bulk=0", propagation_policy="Background"
    )
    assert [j["metadata"]["name"] for j in k8s_emulator.objects("jobs", NS)] == ["bulk-1"]


def test_namespace_deletion_removes_its_content(
    k8s_emulator: Any, core: client.CoreV1Api, batch: client.BatchV1Api
) -> None:
    core.create_namespace({"metadata": {"name": "scratch"}})
    batch.create_namespaced_job("scratch", job("inside", "pass"))
    core.delete_namespace("scratch")
    wait_for(lambda: k8s_emulator.get("namespaces", None, "scratch") is None, timeout=10)
    assert k8s_emulator.objects("jobs", "scratch") == []


def test_discovery_and_version(k8s_client: Any) -> None:
    version = client.VersionApi(k8s_client).get_code()
    assert (version.major, version.minor) == ("1", "33")
    resources = client.BatchV1Api(k8s_client).get_api_resources()
    assert {r.name for r in resources.resources} >= {"jobs", "jobs/status"}


def test_the_rbac_manifests_apply_to_the_emulated_cluster(
    k8s_emulator: Any, k8s_client: Any
) -> None:
    from kubernetes import utils

    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "namespace.yaml":
            continue  # the emulated cluster already has the jobkit namespace
        utils.create_from_yaml(k8s_client, str(path))
    assert k8s_emulator.get("roles", NS, "jobkit-submitter") is not None
    binding = k8s_emulator.get("rolebindings", NS, "jobkit-submitter")
    assert binding["roleRef"]["name"] == "jobkit-submitter"
    assert {s["name"] for s in binding["subjects"]} == {"jobkit"}
    assert k8s_emulator.get("serviceaccounts", NS, "jobkit") is not None


# -- the package its users import ------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_a_fresh_process_outside_the_repo_imports_and_serves_the_emulator(tmp_path: Path) -> None:
    """What a benchmark does: a normal import (no sys.path edit), a server, a request."""
    code = (
        "import json, sys, urllib.request\n"
        "from jobkit_testing.k8s_emulator import ServerThread\n"
        "assert not any(p.rstrip('/').endswith('/tests') for p in sys.path), sys.path\n"
        "thread = ServerThread()\n"
        "emulator = thread.start()\n"
        "try:\n"
        "    print(json.load(urllib.request.urlopen(emulator.url + '/version'))['major'])\n"
        "finally:\n"
        "    thread.stop()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_tests_and_benchmarks_use_only_its_public_names_and_no_path_edits() -> None:
    files = [*REPO.joinpath("tests").rglob("*.py"), *REPO.joinpath("benchmarks").glob("*.py")]
    private = re.compile(r"k8s_emulator(\.[a-z_]+)*\._[A-Za-z]|from jobkit_testing\S* import .*\b_")
    offenders = []
    for path in files:
        text = path.read_text()
        if path == Path(__file__).resolve():  # this test names what it looks for
            continue
        if "k8s_emulator" not in text and "jobkit_testing" not in text:
            continue
        offenders += [f"{path}: {m.group(0)}" for m in private.finditer(text)]
        if "sys.path.insert" in text or "sys.path.append" in text:
            uses = re.search(r"import k8s_emulator|from k8s_emulator", text)
            offenders += [f"{path}: sys.path edit to reach the emulator"] if uses else []
    assert not offenders
    import jobkit_testing.k8s_emulator as package

    assert all(not name.startswith("_") for name in package.__all__)
    assert {"K8sEmulator", "ServerThread", "JobController", "ApiServer"} <= set(package.__all__)
