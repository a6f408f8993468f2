"""What only the kubernetes backend does, through a Kubernetes API served over real HTTP:
the Job and pod it creates (names, labels, Indexed arrays, the planned manifest),
what pods report (OOMKilled, Evicted, ImagePullBackOff, Unschedulable), watches
that drop or expire, the API's errors and the least-privilege role.  What every
backend does (result, exception, cancel, logs, reattach, time limit, retries)
is in tests/conformance/.

The unmodified ``kubernetes`` client talks to the emulated API server of
``src/jobkit_testing/k8s_emulator/``; its test Job controller runs each pod's command (the
jobkit worker) as a local process, with the pod's environment, Secret included.
The store is S3 over HTTP (moto), as on a real cluster: the pod reads its
payload from the bucket and writes its outcome there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import wait_for
from jobkit.errors import BackendError, ConfigError, SubmitError
from jobkit.states import FailureReason, JobState
from jobkit_testing.k8s_emulator.clients import NAMESPACE, on_kubernetes

pytest_plugins = ["s3_fixtures", "jobkit_testing.k8s_emulator.fixtures"]

T = 60


@pytest.fixture
def cluster(
    k8s_emulator: Any, k8s_controller: Any, s3_bucket: str, s3_endpoint: str
) -> Iterator[Any]:
    with on_kubernetes(k8s_emulator, f"s3://{s3_bucket}/k8s") as client:
        yield client


def kube_jobs(emulator: Any) -> list[dict[str, Any]]:
    return list(emulator.objects("jobs", NAMESPACE))


def test_a_job_is_a_kubernetes_job_named_and_labelled_after_it(
    cluster: Any, k8s_emulator: Any
) -> None:
    job = jobkit.submit(helpers.square, 7)
    assert job.result(timeout=T) == 49
    info = job.info
    assert info.backend_id == job.id and info.host and info.host.startswith(job.id)  # the pod
    (manifest,) = kube_jobs(k8s_emulator)
    assert manifest["metadata"]["labels"]["jobkit.dev/job-id"] == job.id


def test_a_map_is_one_indexed_job_and_one_create(cluster: Any, k8s_emulator: Any) -> None:
    k8s_emulator.clear_requests()
    array = jobkit.map(helpers.square, range(6))
    assert array.results(timeout=T) == [0, 1, 4, 9, 16, 25]
    creates = k8s_emulator.requests("create", "jobs")
    assert len(creates) == 1
    (manifest,) = kube_jobs(k8s_emulator)
    assert manifest["spec"]["completionMode"] == "Indexed"
    assert manifest["spec"]["completions"] == 6
    assert not k8s_emulator.requests("get", "jobs")  # no request per job
    watches = k8s_emulator.requests("watch")
    assert {r.resource for r in watches} <= {"jobs", "pods"}


def test_oom_killed_pod_is_recorded_as_oom(cluster: Any, k8s_controller: Any) -> None:
    k8s_controller.simulate("oom", after=0.5)
    job = jobkit.submit(helpers.sleep_then, 30)
    with pytest.raises(jobkit.JobFailedError, match="OOM"):
        job.result(timeout=T)
    assert job.info.failure_reason is FailureReason.OOM
    assert job.info.exit_code == 137


def test_an_image_that_cannot_be_pulled_fails_with_kubernetes_message(
    cluster: Any, k8s_controller: Any
) -> None:
    k8s_controller.simulate("image_pull", message="manifest for python:9.9 not found")
    job = jobkit.submit(helpers.square, 2)
    with pytest.raises(jobkit.JobFailedError, match="SUBMIT_ERROR"):
        job.result(timeout=T)
    message = job.info.message or ""
    assert "could not start after 2 s" in message
    assert "ImagePullBackOff" in message or "ErrImagePull" in message
    assert "python:3.11-slim" in message or "manifest for python:9.9 not found" in message


def test_an_evicted_pod_is_preempted(cluster: Any, k8s_controller: Any) -> None:
    k8s_controller.simulate("evict", after=0.5)
    job = jobkit.submit(helpers.sleep_then, 30)
    with pytest.raises(jobkit.JobFailedError, match="PREEMPTED"):
        job.result(timeout=T)


def test_preempted_and_evicted_pods_are_rerun_by_kubernetes_by_default(
    cluster: Any, k8s_controller: Any, k8s_emulator: Any
) -> None:
    """Default ``retry_on``: PREEMPTED is retried; Kubernetes starts the next pod
    (``backoffLimit``) of the same Job, the record keeps the attempt that ended."""
    k8s_controller.simulate("preempt", after=0.5)
    job = jobkit.remote(retries=1)(helpers.sleep_then).submit(1.0, "done")
    assert job.result(timeout=T) == "done"
    info = job.info
    assert info.state is JobState.SUCCEEDED and info.attempt == 1
    (first,) = info.attempts
    assert first["reason"] == "PREEMPTED" and first["host"] and first["host"] != info.host
    assert info.backend_id == job.id  # the same Job's next pod
    evicted = jobkit.remote(retries=1, retry_on={"LOST"})
    k8s_controller.simulate("evict", after=0.5)
    not_covered = evicted(helpers.sleep_then).submit(30)
    with pytest.raises(jobkit.JobFailedError, match="PREEMPTED"):
        not_covered.result(timeout=T)
    assert not_covered.info.attempt == 0


def test_an_oom_with_mem_growth_is_resubmitted_as_a_new_job_with_doubled_memory(
    cluster: Any, k8s_controller: Any, k8s_emulator: Any
) -> None:
    """The pod template of a Job cannot change: the next attempt is a Job of its
    own, ``<id>-a1``, asking for twice the memory; Kubernetes never reruns such
    a job itself (``backoffLimit`` 0)."""
    k8s_controller.simulate("oom", after=0.5)
    grow = jobkit.remote(mem="256MiB", mem_growth=2.0, retries=1)
    job = grow(helpers.sleep_then).submit(1.0, "fits")
    assert job.result(timeout=T) == "fits"
    info = job.info
    assert info.state is JobState.SUCCEEDED and info.attempt == 1
    (first,) = info.attempts
    assert first["reason"] == "OOM" and first["mem"] == 256 * 2**20
    assert first["backend_id"] == job.id and info.backend_id == f"{job.id}-a1"
    assert info.resources["mem"] == 512 * 2**20 and info.extra["reruns"] is False
    jobs = {j["metadata"]["name"]: j for j in kube_jobs(k8s_emulator)}
    limits = {
        name: j["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        for name, j in jobs.items()
        if name in (job.id, f"{job.id}-a1")
    }
    assert limits == {job.id: "256Mi", f"{job.id}-a1": "512Mi"}
    assert {jobs[n]["spec"]["backoffLimit"] for n in limits} == {0}
    shown = subprocess.run(
        [sys.executable, "-m", "jobkit", "status", job.id, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JOBKIT_STORE": cluster.store.url},
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["attempts"][0]["reason"] == "OOM"


def test_an_error_retry_of_a_job_with_mem_growth_is_resubmitted_by_jobkit(
    cluster: Any, tmp_path: Path
) -> None:
    """Its worker requeues the ERROR itself; Kubernetes does not rerun such a
    job (``backoffLimit`` 0): the reconciler sees the pod end and resubmits the
    next attempt, the same memory, a Job of its own."""
    robust = jobkit.remote(mem="256MiB", mem_growth=2.0, retries=1, retry_on={"ERROR", "OOM"})
    job = robust(helpers.fail_once).submit(str(tmp_path / "tried"))
    assert job.result(timeout=T) == "second try"
    info = job.info
    assert info.state is JobState.SUCCEEDED and info.attempt == 1
    (first,) = info.attempts
    assert first["reason"] == "ERROR" and info.backend_id == f"{job.id}-a1"
    assert info.resources["mem"] == 256 * 2**20  # not an OOM: the same memory


def test_status_survives_dropped_watches(
    cluster: Any, k8s_emulator: Any, k8s_controller: Any
) -> None:
    jobs = [jobkit.submit(helpers.sleep_then, 1.0, i) for i in range(3)]
    backend = cluster.backend("kubernetes")
    wait_for(lambda: backend._watch is not None and backend._watch.synced(0), timeout=T)
    k8s_emulator.drop_watches(abort=True)  # connections reset mid-stream
    assert [j.result(timeout=T) for j in jobs] == [0, 1, 2]
    wait_for(lambda: backend._watch.resumes >= 2, timeout=T)  # both kinds, from their versions
    # Only the resumed watch can tell this pod was OOM-killed: its worker records nothing.
    k8s_controller.simulate("oom", after=0.3)
    doomed = jobkit.submit(helpers.sleep_then, 30)
    with pytest.raises(jobkit.JobFailedError, match="OOM"):
        doomed.result(timeout=T)


def test_api_errors_are_one_line_with_the_fix(cluster: Any, k8s_emulator: Any) -> None:
    k8s_emulator.fail("create", "jobs", 403)
    with pytest.raises(SubmitError) as info:
        jobkit.submit(helpers.square, 1)
    text = str(info.value)
    assert "forbidden (403): this identity may not create jobs" in text
    assert "backends/kubernetes/role.yaml" in text and "\n" not in text

    k8s_emulator.fail("create", "jobs", 422, "Job.batch is invalid: spec.template: bad")
    with pytest.raises(SubmitError, match=r"rejected the jobs \(422\): Job.batch is invalid"):
        jobkit.submit(helpers.square, 1)

    with pytest.raises(ConfigError, match="unknown kubernetes option 'nodeselector'"):
        jobkit.remote(helpers.square).options(kubernetes={"nodeselector": {}}).submit(1)
    typo = jobkit.remote(helpers.square).options(kubernetes={"pod_spec": {"hostIpc": True}})
    with pytest.raises(ConfigError) as caught:
        typo.submit(1)
    assert "the Job jobkit would send is invalid for Kubernetes 1.33: at spec.template.spec" in (
        str(caught.value)
    )
    assert "'hostIpc' was unexpected" in str(caught.value)
    assert not kube_jobs(k8s_emulator)  # nothing was sent
    assert not k8s_emulator.requests("create", "jobs")[2:]  # only the two refused above


def test_an_unreachable_api_server_is_named(s3_bucket: str) -> None:
    settings = {"api_server": "http://127.0.0.1:9", "image": "x", "namespace": NAMESPACE}
    store = f"s3://{s3_bucket}/k8s"
    with (
        jobkit.use(store=store, backend="kubernetes", kubernetes=settings),
        pytest.raises((SubmitError, BackendError)) as info,
    ):
        jobkit.submit(helpers.square, 1)
    assert "cannot reach the Kubernetes API at http://127.0.0.1:9" in str(info.value)


def test_the_least_privilege_role_is_enough(cluster: Any, k8s_emulator: Any) -> None:
    """With exactly backends/kubernetes/role.yaml enforced: submit, map, cancel part of
    the map, logs, status: nothing jobkit does needs more."""
    import yaml  # type: ignore[import-untyped]

    role_file = Path(__file__).resolve().parents[2] / "backends" / "kubernetes" / "role.yaml"
    k8s_emulator.enforce_role(yaml.safe_load(role_file.read_text())["rules"])
    array = jobkit.map(helpers.sleep_then, [0.2, 30, 0.2], [0, 1, 2])
    members = list(array)
    wait_for(lambda: members[1].info.state is JobState.RUNNING, timeout=T)
    assert members[1].cancel()
    assert members[0].result(timeout=T) == 0 and members[2].result(timeout=T) == 2
    with pytest.raises(CancelledError):
        members[1].result(timeout=T)
    assert "Traceback" not in members[0].logs()

    def item_1_still_running() -> bool:
        return any(
            p["metadata"]["annotations"].get("batch.kubernetes.io/job-completion-index") == "1"
            and p["status"].get("phase") == "Running"
            for p in k8s_emulator.objects("pods", NAMESPACE)
        )

    wait_for(lambda: not item_1_still_running(), timeout=T)  # its pod was deleted, not left
    denied = [r for r in k8s_emulator.requests() if r.status == 403]
    assert not denied


def test_an_unschedulable_pod_fails_with_the_schedulers_message(
    cluster: Any, k8s_controller: Any
) -> None:
    why = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    k8s_controller.simulate("unschedulable", message=why)
    job = jobkit.submit(helpers.square, 2)
    with pytest.raises(jobkit.JobFailedError, match="SUBMIT_ERROR"):
        job.result(timeout=T)
    assert f"Unschedulable: {why}" in (job.info.message or "")


def test_plan_prints_the_manifest_that_submit_sends(cluster: Any, tmp_path: Path) -> None:
    (tmp_path / "trainmod.py").write_text(
        "import jobkit\n"
        "@jobkit.remote(gpus=1, gpu_type='a100', time='2h', image='reg/train:1')\n"
        "def main():\n    return 1\n"
    )
    settings = cluster.config.kubernetes
    (tmp_path / "jobkit.toml").write_text(
        "[kubernetes]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    )
    plan = subprocess.run(
        [sys.executable, "-m", "jobkit", "plan", "trainmod:main", "--backend", "kubernetes"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert plan.returncode == 0, plan.stderr
    import yaml  # type: ignore[import-untyped]

    manifest = yaml.safe_load(plan.stdout)
    pod = manifest["spec"]["template"]["spec"]
    assert manifest["kind"] == "Job" and pod["activeDeadlineSeconds"] == 7200
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "a100"}


def test_watch_lists_again_when_its_version_expired(
    cluster: Any, k8s_emulator: Any, k8s_controller: Any
) -> None:
    first = jobkit.submit(helpers.square, 3)
    assert first.result(timeout=T) == 9
    watch = cluster.backend("kubernetes")._watch
    relists = watch.relists
    k8s_emulator.drop_watches(abort=True)  # the watch retries after a pause...
    k8s_emulator.put(  # ...while the cluster moves on and etcd compacts its history
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "bump", "namespace": NAMESPACE},
            "data": {"a": "1"},
        }
    )
    k8s_emulator.compact()
    wait_for(lambda: watch.relists > relists, timeout=T)  # 410 Expired: list, then watch
    k8s_controller.simulate("oom", after=0.3)
    doomed = jobkit.submit(helpers.sleep_then, 30)
    with pytest.raises(jobkit.JobFailedError, match="OOM"):
        doomed.result(timeout=T)


def test_409_and_401_are_one_line(cluster: Any, k8s_emulator: Any) -> None:
    k8s_emulator.fail("create", "jobs", 409)
    with pytest.raises(SubmitError, match=r"already exists \(409\)"):
        jobkit.submit(helpers.square, 1)
    k8s_emulator.require_token("s3cret")
    with pytest.raises(SubmitError, match=r"refused our credentials \(401\)"):
        jobkit.submit(helpers.square, 1)


def _other_python() -> str | None:
    """An interpreter of another minor version (3.10+) to play an image's Python."""
    import shutil

    mine = sys.version_info[1]
    found = [shutil.which(f"python3.{minor}") for minor in range(10, 15) if minor != mine]
    found = [p for p in found if p and "/shims/" not in p]  # pyenv shims need pyenv's env
    roots = {os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv"), "/root/.pyenv"}
    for root in filter(None, roots):
        for path in sorted(Path(root).glob("versions/3.*/bin/python")):
            minor = path.parent.parent.name.split(".")[1]
            if minor.isdigit() and int(minor) >= 10 and int(minor) != mine:
                found.append(str(path))
    return next((p for p in found if p), None)


OTHER_PYTHON = _other_python()


@pytest.mark.skipif(OTHER_PYTHON is None, reason="no second Python (3.10+) to play the image's")
def test_an_image_with_another_python_says_so(
    k8s_emulator: Any, k8s_controller: Any, tmp_path: Path
) -> None:
    src = str(Path(jobkit.__file__).resolve().parents[1])
    store = f"sqlite:///{tmp_path}/jobkit.db"  # the pod runs here: it can reach the file
    assert OTHER_PYTHON is not None
    k8s_controller.executables["python-of-the-image"] = OTHER_PYTHON
    with on_kubernetes(k8s_emulator, store, python="python-of-the-image"):
        job = jobkit.remote(helpers.square).options(env={"PYTHONPATH": src}).submit(4)
        with pytest.raises(jobkit.JobFailedError) as info:
            job.result(timeout=T)
    text = str(info.value)
    assert "SUBMIT_ERROR" in text and "Python" in text
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in text


def test_pod_threads_follow_the_jobs_cpus(cluster: Any) -> None:
    """Issue 9, item 13: the worker in the pod sizes OMP/BLAS pools to cpus."""
    from jobkit.threadlimits import THREAD_VARIABLES

    remote = jobkit.remote(cpus=2, env={"MKL_NUM_THREADS": "3"})
    env = remote(helpers.thread_env).submit().result(timeout=T)
    assert env == {**dict.fromkeys(THREAD_VARIABLES, "2"), "MKL_NUM_THREADS": "3"}
