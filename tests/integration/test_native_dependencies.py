"""Dependencies the scheduler holds itself: Slurm's ``--dependency`` on the real
test cluster, suspended Jobs on the Kubernetes emulator over HTTP.

Slurm: the sbatch scripts (golden files under tests/golden/slurm, regenerate
with ``JOBKIT_UPDATE_GOLDEN=1``), what ``scontrol``/``squeue`` show of a
held job, that it starts only after its dependency ended, and that a job
Slurm cancels because its dependency failed ends FAILED/DEPENDENCY.
Kubernetes: dependents exist suspended and podless until released.
What every backend does with dependencies is in tests/conformance/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import wait_for
from jobkit.backends import waiting
from jobkit.backends.slurm import dependency
from jobkit.observation import Phase
from jobkit.resources import parse_resources
from jobkit.states import FailureReason, JobRecord, JobState

pytest_plugins = ["s3_fixtures", "jobkit_testing.k8s_emulator.fixtures"]

T = 120
GOLDEN = Path(__file__).parent.parent / "golden" / "slurm"


def normalised(script: str, backend: Any, store: str) -> str:
    return (
        script.replace(store, "<STORE>")
        .replace(str(backend.folder), "<FOLDER>")
        .replace(sys.executable, "<PYTHON>")
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.sh"
    if os.environ.get("JOBKIT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with JOBKIT_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"sbatch script for {name!r} changed; see {path}"


def slurm_record(job_id: str, slurm_id: str, cluster: str, **fields: Any) -> JobRecord:
    """A job Slurm took (QUEUED, with its Slurm id), as submit records it."""
    return JobRecord(
        id=job_id,
        name="dep",
        backend="slurm",
        state=JobState.QUEUED,
        backend_id=slurm_id,
        extra={dependency.CLUSTER_KEY: cluster},
        **fields,
    )


@pytest.fixture
def held_store(slurm: Any) -> Iterator[tuple[Any, str]]:
    """The slurm client, with fake Slurm dependencies in its store: a job
    (Slurm id 12345) and an array of 3 (Slurm array 12346)."""
    backend = slurm.backend("slurm")
    cluster = backend.cluster_name()
    suffix = str(time.time_ns())
    records = [slurm_record(f"jk-one{suffix}", "12345", cluster)]
    records += [
        slurm_record(
            f"jk-arr{suffix}.{i}",
            f"12346_{i}",
            cluster,
            array_id=f"jk-arr{suffix}",
            array_index=i,
        )
        for i in range(3)
    ]
    slurm.store.create(records)
    yield slurm, suffix


def test_sbatch_waits_afterok_on_a_job_and_a_whole_array(held_store: tuple[Any, str]) -> None:
    client, suffix = held_store
    backend = client.backend("slurm")
    script = backend.plan(parse_resources(), after=[f"jk-one{suffix}", f"jk-arr{suffix}"])
    assert "#SBATCH --dependency=afterok:12345:12346\n" in script
    assert "#SBATCH --kill-on-invalid-dep=yes\n" in script
    check_golden("depends_afterok", normalised(script, backend, client.store.url))


def test_an_item_wise_map_waits_aftercorr(held_store: tuple[Any, str]) -> None:
    client, suffix = held_store
    backend = client.backend("slurm")
    items = [
        JobRecord(
            id=f"jk-eval.{i}",
            name="evaluate",
            backend="slurm",
            array_id="jk-eval",
            array_index=i,
            depends_on=[f"jk-arr{suffix}.{i}"],
        )
        for i in range(3)
    ]
    deps = waiting.load(client.store, items)
    assert backend.can_hold(items, deps)
    script = backend.script(items, parse_resources(), deps)
    assert "#SBATCH --dependency=aftercorr:12346\n" in script
    assert "#SBATCH --array=0-2%3\n" in script
    check_golden("depends_aftercorr", normalised(script, backend, client.store.url))
    # Items 1 and 2 alone, as tasks 1 and 2: still task i after task i.
    assert dependency.option(items[1:], deps, [1, 2]) == "aftercorr:12346"
    assert dependency.option(items[1:], deps) == "afterok:12346_1:12346_2"  # as tasks 0, 1
    # Item 0 after item 1: not item-wise any more, every task waits for both.
    crossed = [items[0], items[1]]
    crossed[0].depends_on = [f"jk-arr{suffix}.1"]
    crossed[1].depends_on = [f"jk-arr{suffix}.0"]
    assert dependency.option(crossed, deps) == "afterok:12346_0:12346_1"


def test_only_slurm_jobs_of_this_cluster_are_held_by_slurm(held_store: tuple[Any, str]) -> None:
    client, suffix = held_store
    backend = client.backend("slurm")
    one = client.store.get(f"jk-one{suffix}")
    job = JobRecord(id="jk-x", name="x", backend="slurm", depends_on=[one.id])
    assert backend.can_hold([job], {one.id: [one]})
    other = JobRecord(id="jk-y", name="y", backend="local", state=JobState.QUEUED)
    assert not backend.can_hold([job], {one.id: [one], other.id: [other]})
    elsewhere = slurm_record("jk-z", "999", "another-cluster")
    assert not backend.can_hold([job], {elsewhere.id: [elsewhere]})
    unsent = JobRecord(id="jk-w", name="w", backend="slurm")  # PENDING, no Slurm id yet
    assert not backend.can_hold([job], {unsent.id: [unsent]})
    retried = slurm_record("jk-u", "998", one.extra[dependency.CLUSTER_KEY])
    retried.resources = {"retries": 2}  # a retry gets a new Slurm id: afterok would kill
    assert not backend.can_hold([job], {retried.id: [retried]})
    done = JobRecord(id="jk-v", name="v", backend="local", state=JobState.SUCCEEDED)
    assert backend.can_hold([job], {one.id: [one], done.id: [done]})  # nothing to wait for there
    assert not backend.can_hold([job], {done.id: [done]})  # nothing at all: no hold needed
    client.store.create([other, done])
    planned = backend.plan(parse_resources(), after=[other.id])
    assert planned.startswith("# held by jobkit until") and "#SBATCH --dependency" not in planned
    assert "#SBATCH --dependency" not in backend.plan(parse_resources(), after=[done.id])


def test_plan_cli_shows_the_dependency_line(held_store: tuple[Any, str], tmp_path: Path) -> None:
    client, suffix = held_store
    (tmp_path / "planned.py").write_text("def main():\n    return 1\n")
    env = {
        **os.environ,
        "JOBKIT_STORE": client.store.url,
        "JOBKIT_BACKEND": "slurm",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    shown = subprocess.run(
        [sys.executable, "-m", "jobkit", "plan", "planned:main", "--after", f"jk-one{suffix}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "#SBATCH --dependency=afterok:12345" in shown.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "jobkit", "plan", "planned:main", "--after", "jk-nothing"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert unknown.returncode == 1
    assert len(unknown.stderr.strip().splitlines()) == 1 and "jk-nothing" in unknown.stderr


def _scontrol_job(slurm_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", slurm_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def _sacct_times(slurm_id: str) -> tuple[str, str]:
    out = subprocess.run(
        ["sacct", "-j", slurm_id, "--allocations", "--noheader", "--parsable2", "-o", "Start,End"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    start, end = out[0].split("|")
    return start, end


# -- the real cluster holds, releases and kills -------------------------------------


def scontrol_job(slurm_id: str) -> dict[str, str]:
    """``scontrol show job -o``: what this Slurm version exposes of a job's
    dependency (its sacct has no Dependency field)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", slurm_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def sacct_times(slurm_id: str) -> tuple[str, str]:
    """(Start, End) of a finished Slurm job, ISO seconds: comparable as strings."""

    def read() -> str:
        return subprocess.run(
            ["sacct", "-j", slurm_id, "-X", "--noheader", "--parsable2", "-o", "Start,End"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    wait_for(lambda: "Unknown" not in read() and read() != "", 60)
    start, end = read().splitlines()[0].split("|")
    return start, end


def test_slurm_holds_a_dependent_until_its_dependency_ended(slurm: Any, tmp_path: Path) -> None:
    first = jobkit.submit(helpers.sleep_then, 4, 5)
    second = jobkit.submit(helpers.square, first)  # waits for first; gets its result
    info = second.info
    assert info.extra.get("held") == "backend" and info.backend_id, info.extra
    assert first.info.backend_id
    shown = scontrol_job(info.backend_id)
    assert shown["Dependency"].startswith(f"afterok:{first.info.backend_id}"), shown
    assert shown["KillOInInvalidDependent"] == "Yes", shown
    assert info.extra.get("held_by") == f"Slurm: afterok:{first.info.backend_id}"
    status = helpers.jobkit_cli(
        tmp_path, "status", second.id, without="JOBKIT_NONE", JOBKIT_STORE=slurm.store.url
    )
    shown_held = re.search(r"held by\s+(Slurm: afterok:\d+)", status.stdout)
    assert (shown_held and shown_held[1] == f"Slurm: afterok:{first.info.backend_id}") or (
        second.info.extra.get("released_at")  # the chain moved on before status looked
    ), status.stdout + status.stderr
    assert second.result(timeout=T) == 25
    _first_start, first_end = sacct_times(str(first.info.backend_id))
    second_start, _ = sacct_times(str(info.backend_id))
    assert second_start >= first_end  # Slurm started it only after its dependency ended


def test_an_item_wise_map_is_held_aftercorr_by_slurm(slurm: Any) -> None:
    prep = jobkit.map(helpers.sleep_then, [2, 2, 2], [0, 1, 2])
    evals = jobkit.map(helpers.square, prep)  # item i waits for item i only
    slurm_ids = {j.info.backend_id for j in evals}
    assert all(slurm_ids) and len({s.split("_")[0] for s in slurm_ids if s}) == 1
    base = str(prep[0].info.backend_id).split("_")[0]
    shown = scontrol_job(str(evals[0].info.backend_id))
    assert shown["Dependency"].startswith(f"aftercorr:{base}_"), shown
    assert evals.results(timeout=T, progress=False) == [0, 1, 4]


CHAIN = """
import sys, time, jobkit

def wait_then(seconds, value):
    time.sleep(seconds)
    return value

def square(x):
    return x * x

with jobkit.use(store=sys.argv[1], backend="slurm"):
    first = jobkit.submit(wait_then, 2, "not a number")
    second = jobkit.submit(square, first)  # runs, and fails: str * str
    third = jobkit.submit(square, second)  # held by Slurm: afterok on second
    print(second.id, third.id, third.info.extra.get("held"), third.info.backend_id)
"""


def test_a_job_slurm_killed_for_its_failed_dependency_ends_failed_dependency(
    slurm: Any,
) -> None:
    """The chain is submitted by a process that exits at once: only Slurm
    watches it, and kills the job whose dependency failed; jobkit then reads
    that as FAILED/DEPENDENCY naming the failed job, never CANCELLED."""
    submitted = subprocess.run(
        [sys.executable, "-c", CHAIN, slurm.store.url],
        capture_output=True,
        text=True,
        timeout=T,
    )
    assert submitted.returncode == 0, submitted.stderr
    second_id, third_id, held, third_slurm = submitted.stdout.split()
    assert held == "backend"

    def killed_by_slurm() -> bool:
        squeue = subprocess.run(
            ["squeue", "--me", "-h", "--states=all", "-j", third_slurm, "-o", "%T|%r"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return squeue == "CANCELLED|DependencyNeverSatisfied"

    wait_for(killed_by_slurm, T)
    assert slurm.store.get(second_id).failure_reason is FailureReason.ERROR
    record = slurm.store.get(third_id)
    assert record.state is JobState.QUEUED  # no jobkit process has looked yet
    seen = slurm.backend("slurm").observe([record])[third_id]
    assert seen.phase is Phase.WAITING, seen  # never CANCELLED: the step fails it...
    slurm.reconcile([slurm.store.get(third_id)])  # ...in one pass, as `jobkit status` makes
    record = slurm.store.get(third_id)
    assert record.failure_reason is FailureReason.DEPENDENCY
    assert record.extra["failed_dependency"] == second_id
    assert (record.message or "").startswith(f"dependency {second_id} failed (ERROR:")
    third = jobkit.get(third_id)
    with pytest.raises(jobkit.DependencyError) as raised:
        third.result(timeout=T)  # type: ignore[union-attr]
    assert raised.value.dependency_id == second_id
    record = slurm.store.get(third_id)
    assert record.state is JobState.FAILED and record.failure_reason is FailureReason.DEPENDENCY
    assert record.started_at is None  # it never ran


# -- Kubernetes: suspended Jobs, released in order ------------------------------------

K8S_T = 60


@pytest.fixture
def kube(k8s_emulator: Any, k8s_controller: Any, s3_bucket: str) -> Iterator[Any]:
    from jobkit_testing.k8s_emulator.clients import on_kubernetes

    with on_kubernetes(k8s_emulator, f"s3://{s3_bucket}/k8s") as client:
        yield client


def kube_job(emulator: Any, job_id: str) -> dict[str, Any] | None:
    from jobkit.backends.kubernetes.manifest import job_name
    from jobkit_testing.k8s_emulator.clients import NAMESPACE

    found: dict[str, Any] | None = emulator.get("jobs", NAMESPACE, job_name(job_id))
    return found


def pods_of(emulator: Any, job_id: str) -> list[dict[str, Any]]:
    from jobkit.backends.kubernetes.manifest import job_name
    from jobkit_testing.k8s_emulator.clients import NAMESPACE

    name = job_name(job_id)
    return [
        p
        for p in emulator.objects("pods", NAMESPACE)
        if (p["metadata"].get("labels") or {}).get("job-name") == name
    ]


def test_kubernetes_chain_waits_suspended_and_podless_then_runs_in_order(
    kube: Any, k8s_emulator: Any
) -> None:
    import yaml  # type: ignore[import-untyped]

    from jobkit.backends.kubernetes.manifest import HELD, WAITS_ON, job_name

    role = Path(__file__).resolve().parents[2] / "backends" / "kubernetes" / "role.yaml"
    k8s_emulator.enforce_role(yaml.safe_load(role.read_text())["rules"])  # it is enough
    k8s_emulator.clear_requests()
    first = jobkit.submit(helpers.sleep_then, 3, 2)
    second = jobkit.submit(helpers.square, first)
    third = jobkit.submit(helpers.square, second)
    planned = kube.backend("kubernetes").plan(
        kube.resolve_resources(None), name="square", after=[first.id]
    )
    assert "suspend: true" in planned and f"jobkit.dev/waits-on: {first.id}" in planned
    for job, waits_on in ((second, first), (third, second)):
        assert job.info.extra.get("held") == "backend"
        manifest = kube_job(k8s_emulator, job.id)
        assert manifest is not None and manifest["spec"]["suspend"] is True
        assert manifest["metadata"]["labels"][HELD] == "true"
        assert manifest["metadata"]["annotations"][WAITS_ON] == waits_on.id
        assert job.info.extra.get("held_by") == f"Kubernetes: suspended Job {job_name(job.id)}"
    wait_for(lambda: pods_of(k8s_emulator, first.id), K8S_T)  # the first one runs...
    assert not pods_of(k8s_emulator, second.id) and not pods_of(k8s_emulator, third.id)
    assert third.result(timeout=K8S_T) == 16  # ...and the chain follows: (2 * 2) ** 2
    patches = k8s_emulator.requests("patch", "jobs")
    assert [r.name for r in patches] == [job_name(second.id), job_name(third.id)]
    assert all(
        r.body == {"metadata": {"labels": {HELD: None}}, "spec": {"suspend": False}}
        for r in patches
    )
    for job in (second, third):
        manifest = kube_job(k8s_emulator, job.id)
        assert manifest is not None and manifest["spec"]["suspend"] is False
        assert HELD not in manifest["metadata"]["labels"]
        assert len(pods_of(k8s_emulator, job.id)) == 1  # one pod, once released


def test_kubernetes_held_job_cancelled_or_failed_dependency_deletes_its_job(
    kube: Any, k8s_emulator: Any
) -> None:
    first = jobkit.submit(helpers.sleep_then, 30)
    waiting_job = jobkit.submit(helpers.square, first)
    assert kube_job(k8s_emulator, waiting_job.id) is not None
    waiting_job.cancel()
    wait_for(lambda: kube_job(k8s_emulator, waiting_job.id) is None, K8S_T)
    assert waiting_job.info.state is JobState.CANCELLED
    first.cancel()  # a dependency cancelled: its held dependent fails, its Job goes
    doomed = jobkit.submit(helpers.square, jobkit.submit(helpers.fail_with, 3))
    assert kube_job(k8s_emulator, doomed.id) is not None
    with pytest.raises(jobkit.DependencyError):
        doomed.result(timeout=K8S_T)
    wait_for(lambda: kube_job(k8s_emulator, doomed.id) is None, K8S_T)
    assert not pods_of(k8s_emulator, doomed.id)


def test_kueue_queued_dependents_are_held_by_jobkit_not_suspended(
    kube: Any, k8s_emulator: Any
) -> None:
    """Kueue owns a queued Job's ``suspend`` and would start it when admitted,
    dependency or not: such jobs wait in the store and are created once released."""
    first = jobkit.submit(helpers.sleep_then, 30)
    queued = jobkit.remote(helpers.square).options(queue="team-a").submit(first)
    assert queued.info.extra.get("held") == "store"
    assert kube_job(k8s_emulator, queued.id) is None
    first.cancel()
    with pytest.raises(jobkit.DependencyError):
        queued.result(timeout=K8S_T)


def test_kubernetes_item_wise_map_is_one_suspended_job_per_item(
    kube: Any, k8s_emulator: Any, tmp_path: Path
) -> None:
    """An Indexed Job cannot start index 0 and not index 1, so the items of an
    item-wise map wait in Jobs of their own, each released when its item may run."""
    from jobkit.backends.kubernetes.manifest import job_name

    gate = tmp_path / "gate"
    first = jobkit.map(helpers.wait_for_file, [str(tmp_path / "never"), str(gate)], [0, 30])
    second = jobkit.map(helpers.square, first)  # item i after item i only
    k8s_emulator.clear_requests()
    names = [job_name(f"{second.id}-{i}") for i in range(2)]
    assert [j.info.backend_id for j in second] == names
    for name in names:
        manifest = k8s_emulator.get("jobs", "jobkit", name)
        assert manifest is not None and manifest["spec"]["suspend"] is True
    assert second[0].result(timeout=K8S_T) == 0  # square(False): item 0 ran...
    assert not pods_of_job(k8s_emulator, names[1])  # ...while item 1 waits, podless
    assert k8s_emulator.get("jobs", "jobkit", names[1])["spec"]["suspend"] is True
    gate.touch()
    assert second[1].result(timeout=K8S_T) == 1  # square(True)
    assert [r.name for r in k8s_emulator.requests("patch", "jobs")] == names


def test_kubernetes_item_wise_map_holds_only_the_items_that_wait(
    kube: Any, k8s_emulator: Any, tmp_path: Path
) -> None:
    """Item 0's dependency has succeeded when the map is submitted, item 1's
    has not: only item 1's Job is suspended (item 0's has nothing to release it)."""
    from jobkit.backends.kubernetes.manifest import job_name

    gate = tmp_path / "gate"
    first = jobkit.map(helpers.wait_for_file, [str(tmp_path / "never"), str(gate)], [0, 30])
    assert first[0].result(timeout=K8S_T) is False
    second = jobkit.map(helpers.square, first)
    names = [job_name(f"{second.id}-{i}") for i in range(2)]
    suspended = [k8s_emulator.get("jobs", "jobkit", n)["spec"]["suspend"] for n in names]
    assert suspended == [False, True]
    assert second[0].result(timeout=K8S_T) == 0
    gate.touch()
    assert second[1].result(timeout=K8S_T) == 1


def test_kubernetes_a_retry_after_a_rerun_gets_a_job_of_its_own(
    kube: Any, k8s_emulator: Any, tmp_path: Path
) -> None:
    """A rerun (``jobkit retry``) runs as ``<id>-r<tag>``; its failed attempt,
    resubmitted by jobkit (``mem_growth``: Kubernetes does not rerun it), is
    ``<id>-a<N>``, not the rerun's name again (which would be a 409)."""
    flaky = jobkit.remote(mem="256MiB", mem_growth=2.0, retries=3, retry_on={"ERROR", "OOM"})
    job = flaky(helpers.lost_then_error_then_ok).submit(str(tmp_path))
    with pytest.raises(jobkit.JobFailedError):  # LOST: not a class retry_on names
        job.result(timeout=K8S_T)
    (rerun,) = kube.retry([job.id])
    assert rerun.result(timeout=K8S_T) == "third call"
    info = rerun.info
    assert info.attempt == 2 and [a["reason"] for a in info.attempts] == ["LOST", "ERROR"]
    assert info.backend_id is not None and info.backend_id.endswith("-a2")


def pods_of_job(emulator: Any, name: str) -> list[dict[str, Any]]:
    return [
        p
        for p in emulator.objects("pods", "jobkit")
        if (p["metadata"].get("labels") or {}).get("job-name") == name
    ]


def test_a_slurm_job_after_a_local_one_is_held_by_jobkit(slurm: Any) -> None:
    """Slurm cannot wait on a local job: jobkit holds the Slurm job in its store
    and submits it, without --dependency, once the local job succeeded."""
    try:
        first = jobkit.remote(backend="local")(helpers.sleep_then).submit(1, 3)
        second = jobkit.submit(helpers.square, first)
        held = second.info
        assert held.extra.get("held") == "store" and held.backend_id is None
        assert second.result(timeout=T) == 9
        slurm_id = str(second.info.backend_id)
        assert "_" not in slurm_id and slurm_id.isdigit()
        assert "held_by" not in second.info.extra  # submitted once free: nothing held it
    finally:
        slurm.backend("local").stop_agent()


K8S_CHAIN = """
import json, sys, time, jobkit

def wait_then(seconds, value):
    time.sleep(seconds)
    return value

def square(x):
    return x * x

with jobkit.use(store=sys.argv[1], backend="kubernetes", kubernetes=json.loads(sys.argv[2])):
    first = jobkit.submit(wait_then, 1, 3)
    second = jobkit.submit(square, first)
    print(first.id, second.id, second.info.extra.get("held"))
"""


def test_kubernetes_a_release_cut_short_is_patched_again(kube: Any, k8s_emulator: Any) -> None:
    """A releaser killed between recording the release and its patch leaves a
    released job in a suspended Job; the next observe of any process patches it."""
    import json
    import time as clock

    submitted = subprocess.run(
        [sys.executable, "-c", K8S_CHAIN, kube.store.url, json.dumps(kube.config.kubernetes)],
        capture_output=True,
        text=True,
        timeout=K8S_T,
    )
    assert submitted.returncode == 0, submitted.stderr
    first_id, second_id, held = submitted.stdout.split()
    assert held == "backend"
    assert jobkit.get(first_id).result(timeout=K8S_T) == 3  # type: ignore[union-attr]
    record = kube.store.get(second_id)
    assert "released_at" not in record.extra  # no process has looked at it yet
    # What a releaser killed right after recording the release leaves behind:
    kube.store.update(second_id, extra={**record.extra, "released_at": clock.time()})
    manifest = kube_job(k8s_emulator, second_id)
    assert manifest is not None and manifest["spec"]["suspend"] is True
    k8s_emulator.clear_requests()
    assert jobkit.get(second_id).result(timeout=K8S_T) == 9  # type: ignore[union-attr]
    patches = k8s_emulator.requests("patch", "jobs")
    assert [r.name for r in patches] == [manifest["metadata"]["name"]]


def test_kubernetes_a_refused_release_is_said_and_retried(kube: Any, k8s_emulator: Any) -> None:
    """Without the Role's patch verb the release is refused: the held job says
    why while it waits, and starts once the patch is allowed."""
    import yaml  # type: ignore[import-untyped]

    role = Path(__file__).resolve().parents[2] / "backends" / "kubernetes" / "role.yaml"
    rules = yaml.safe_load(role.read_text())["rules"]
    rules[0]["verbs"] = [v for v in rules[0]["verbs"] if v != "patch"]
    k8s_emulator.enforce_role(rules)
    first = jobkit.submit(helpers.sleep_then, 0.5, 4)
    second = jobkit.submit(helpers.square, first)
    wait_for(lambda: "forbidden (403)" in (kube.store.get(second.id).message or ""), K8S_T)
    message = kube.store.get(second.id).message or ""
    assert "could not be started" in message and "role.yaml" in message, message
    assert kube.store.get(second.id).state is JobState.QUEUED
    k8s_emulator.enforce_role(None)
    assert second.result(timeout=K8S_T) == 16


def test_cancelling_a_job_slurm_holds_cancels_it_in_slurm(slurm: Any) -> None:
    first = jobkit.submit(helpers.sleep_then, 20)
    second = jobkit.submit(helpers.square, first)
    slurm_id = str(second.info.backend_id)
    assert second.info.extra.get("held") == "backend"
    assert second.cancel()
    gone = subprocess.run(
        ["squeue", "--me", "-h", "--states=all", "-j", slurm_id, "-o", "%T"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert gone in ("CANCELLED", ""), gone
    assert second.info.state is JobState.CANCELLED and second.info.started_at is None
    first.cancel()


def test_a_slurm_map_item_wise_after_a_local_map_runs_each_item_once_released(
    slurm: Any, tmp_path: Path
) -> None:
    """Held in the store (Slurm cannot wait on local jobs), item 1 is released
    and submitted on its own after item 0: each sbatch runs its own item."""
    gate = tmp_path / "gate"
    try:
        # Item 0's dependency ends (False) 2 s after it starts: still running when
        # the dependent map is submitted, so both items are held.
        first = jobkit.remote(backend="local")(helpers.wait_for_file).map(
            [str(tmp_path / "never"), str(gate)], [2, 60]
        )
        second = jobkit.map(helpers.square, first)
        assert [j.info.extra.get("held") for j in second] == ["store", "store"]
        assert second[0].result(timeout=T) == 0  # square(False), while item 1 waits
        gate.touch()
        assert second[1].result(timeout=T) == 1  # square(True): its own item, not item 0's
        ids = [str(j.info.backend_id) for j in second]
        assert ids[0].split("_")[0] != ids[1].split("_")[0]  # two submissions
    finally:
        slurm.backend("local").stop_agent()


def test_kueue_item_wise_items_released_one_by_one_get_jobs_of_their_own(
    kube: Any, k8s_emulator: Any, tmp_path: Path
) -> None:
    """Held in the store (Kueue owns suspend), an item-wise map's items are
    released one by one: each is created as a Job of its own (no name clash)."""
    from jobkit.backends.kubernetes.manifest import job_name

    gate = tmp_path / "gate"
    first = jobkit.map(helpers.wait_for_file, [str(tmp_path / "never"), str(gate)], [0, 30])
    second = jobkit.remote(helpers.square).options(queue="team-a").map(first)
    assert [j.info.extra.get("held") for j in second] == ["store", "store"]
    wait_for(lambda: second[0].info.backend_id is not None, K8S_T)
    assert second[1].info.backend_id is None  # item 1 still waits for its own item
    gate.touch()
    wait_for(lambda: second[1].info.backend_id is not None, K8S_T)
    names = [job_name(f"{second.id}-{i}") for i in range(2)]
    assert [j.info.backend_id for j in second] == names
    for name in names:  # queued for Kueue's admission (suspended by Kueue, not jobkit)
        manifest = k8s_emulator.get("jobs", "jobkit", name)
        assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert "jobkit.dev/held" not in manifest["metadata"]["labels"]
    assert all(j.info.state is JobState.QUEUED for j in second)
    second.cancel()
