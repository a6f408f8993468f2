"""Every backend runs the one backend conformance suite (``backend_suite.py``).

Local runs real agents; Slurm the real test cluster; Kubernetes the emulated
API server over HTTP with its Job controller; toy is a third-party backend
installed as a distribution and found through the ``jobkit.backends``
entry-point group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_suite import BackendConformance

import jobkit
from conftest import local_env, slurm_env
from jobkit_testing.k8s_emulator.clients import NAMESPACE, on_kubernetes

pytest_plugins = ["s3_fixtures", "jobkit_testing.k8s_emulator.fixtures"]

PLUGINS = Path(__file__).parent.parent / "plugins"


# -- toy: a third-party distribution ------------------------------------------------


@pytest.fixture(scope="session")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The toy distribution installed on sys.path and PYTHONPATH (for subprocesses)."""
    sys.path.insert(0, str(PLUGINS))
    from install import TOY, install_distribution

    site = install_distribution(TOY, tmp_path_factory.mktemp("site"))
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(site))
    mp.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    yield site
    mp.undo()


class TestToyBackend(BackendConformance):
    backend_name = "toy"
    blockers = 2
    runs_in_submitter = "the toy plugin starts its workers from threads of the submitting process"

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, toy_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        directory = tmp_path_factory.mktemp("toy")
        with jobkit.use(
            store=f"sqlite:///{directory}/jobkit.db",
            backend="toy",
            backends={"toy": {"max_parallel": 2}},
            poll_interval=0.1,
        ) as client:
            yield client

    def submissions(self, client: Any) -> int:
        return int(type(client.backend("toy")).submissions)

    def test_jobkit_watch_releases_a_held_job_and_status_says_what_it_waits_on(
        self, client: Any, tmp_path: Path
    ) -> None:
        """The toy backend cannot hold jobs: a dependent waits in the store,
        its submitter gone, and ``jobkit watch`` (another process) releases it."""
        from backend_suite import T, plus_one, value_or_wait, wait_for

        url = client.config.store
        gate = tmp_path / "gate"
        prep = jobkit.submit(value_or_wait, 5, str(gate))
        script = (
            "import jobkit, os\n"
            f"from backend_suite import plus_one\n"
            f"with jobkit.use(store={url!r}, backend='toy'):\n"
            f"    print(jobkit.submit(plus_one, jobkit.get({prep.id!r})).id, flush=True)\n"
            "    os._exit(0)\n"
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
            ),
        }
        made = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=T, env=env
        )
        assert made.returncode == 0, made.stderr
        dep_id = made.stdout.strip()
        held = client.store.get(dep_id)
        assert held.state is jobkit.JobState.PENDING and held.extra["held"] == "store"
        cli = [sys.executable, "-m", "jobkit", "--store", url]
        status = subprocess.run(
            [*cli, "status", dep_id, "--json"], capture_output=True, text=True, timeout=T, env=env
        )
        assert status.returncode == 0, status.stderr
        waits = json.loads(status.stdout)["waiting_on"]
        assert list(waits) == [prep.id] and waits[prep.id] in ("QUEUED", "RUNNING")
        text = subprocess.run(
            [*cli, "status", dep_id], capture_output=True, text=True, timeout=T, env=env
        )
        assert "waiting on" in text.stdout and prep.id in text.stdout
        watcher = subprocess.Popen(
            [*cli, "watch", "--interval", "0.2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            time.sleep(1.0)
            assert client.store.get(dep_id).state is jobkit.JobState.PENDING  # prep still runs
            gate.touch()
            assert prep.result(timeout=T) == 5
            wait_for(lambda: client.store.get(dep_id).state.is_terminal, timeout=T)
        finally:
            watcher.send_signal(signal.SIGTERM)
            out, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0, err
        assert f"{dep_id} released" in out
        assert client.store.get(dep_id).state is jobkit.JobState.SUCCEEDED
        assert jobkit.get(dep_id).result(timeout=T) == plus_one(5)


# -- local: the real agent ------------------------------------------------------------


class TestLocalBackend(BackendConformance):
    backend_name = "local"
    blocker_options = {"cpus": 4}
    impossible = {"nodes": 2}
    nvml_skip = (
        "the agent and its warm workers start once per module, before the test sets "
        "LD_LIBRARY_PATH: tests/integration/test_nvml_sampling.py starts its own agent"
    )

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        with local_env(tmp_path_factory.mktemp("local"), cpus=4) as client:
            yield client

    def submissions(self, client: Any) -> int:
        """Jobs reach the agent through one ``submit`` (a "wake") per batch: the
        backend's own method, counted by a pass-through wrapper."""
        return count_calls(client.backend("local"), "submit")


def test_the_agent_holds_a_local_job_after_a_job_of_another_backend(
    toy_site: Path, tmp_path: Path
) -> None:
    """Local jobs depending on toy jobs, submitted by a process that exits at
    once: the agent holds them, looks at the toy jobs' states itself (no
    client reconciles them), then runs them or fails them DEPENDENCY."""
    from backend_suite import T, fail_with, value_or_wait, wait_for

    gate = tmp_path / "gate"
    with local_env(tmp_path, cpus=2, idle_timeout=30) as client:
        prep = jobkit.remote(backend="toy")(value_or_wait).submit(4, str(gate))
        broken = jobkit.remote(backend="toy")(fail_with).submit(2)
        script = (
            "import json, os, jobkit\n"
            "from backend_suite import plus_one\n"
            f"with jobkit.use(store={client.config.store!r}, backend='local',\n"
            "                local={'cpus': 2, 'idle_timeout': 30}):\n"
            f"    prep, broken = jobkit.get({prep.id!r}), jobkit.get({broken.id!r})\n"
            "    after = jobkit.submit(plus_one, prep)\n"
            "    doomed = jobkit.map(plus_one, [broken, broken])\n"
            "    print(json.dumps([after.id, [j.id for j in doomed]]), flush=True)\n"
            "    os._exit(0)\n"
        )
        path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
        made = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=T,
            env={**os.environ, "PYTHONPATH": path},
        )
        assert made.returncode == 0, made.stderr
        after_id, doomed_ids = json.loads(made.stdout)
        store = client.store

        def state(job_id: str) -> jobkit.JobState:
            return store.get(job_id).state

        wait_for(lambda: state(after_id) is jobkit.JobState.QUEUED)
        assert store.get(after_id).extra["held"] == "backend"
        time.sleep(1.5)  # past the agent's re-check: prep has not ended, so it still waits
        assert state(after_id) is jobkit.JobState.QUEUED
        assert "released_at" not in store.get(after_id).extra
        gate.touch()
        assert prep.result(timeout=T) == 4
        # Only the store is read from here on: nothing in this process releases them.
        wait_for(lambda: all(state(i) is jobkit.JobState.FAILED for i in doomed_ids))
        wait_for(lambda: state(after_id) is jobkit.JobState.SUCCEEDED)
        assert store.get(after_id).extra["released_at"]
        assert jobkit.get(after_id).result(timeout=T) == 5
        for job_id in doomed_ids:
            record = store.get(job_id)
            assert record.failure_reason is jobkit.FailureReason.DEPENDENCY
            assert record.extra["failed_dependency"] == broken.id and record.started_at is None
            with pytest.raises(jobkit.DependencyError) as caught:
                jobkit.get(job_id).result(timeout=T)
            assert caught.value.dependency_id == broken.id


def count_calls(backend: Any, method: str) -> int:
    """Calls of ``backend.method`` since the first count (the real method still runs)."""
    counter = f"_suite_{method}_calls"
    if not hasattr(backend, counter):
        real = getattr(backend, method)
        setattr(backend, counter, 0)

        def counting(*args: Any, **kwargs: Any) -> Any:
            setattr(backend, counter, getattr(backend, counter) + 1)
            return real(*args, **kwargs)

        setattr(backend, method, counting)
    return int(getattr(backend, counter))


# -- Slurm: the real test cluster -------------------------------------------------------


class TestSlurmBackend(BackendConformance):
    backend_name = "slurm"
    nvml_gpus_granted = True
    time_limit = "1m"  # Slurm's smallest limit; the case is marked slow below
    # No "impossible" request: only slurmctld knows what its nodes can hold, so
    # sbatch's refusal arrives at submit as one SubmitError and the job is
    # recorded FAILED/SUBMIT_ERROR (tests/integration/test_slurm_cli.py).

    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        with slurm_env(tmp_path_factory.mktemp("slurm")) as client:
            cls.blocker_options = {"cpus": _slurm_node_cpus()}
            yield client

    def let_go(self, client: Any, job: Any) -> bool:
        """Slurm's own queue shows the job ended (or has forgotten it)."""
        out = subprocess.run(
            ["squeue", "--me", "-h", "-t", "all", "-j", job.info.backend_id, "-o", "%T"],
            capture_output=True,
            text=True,
        ).stdout
        return out.strip() in ("CANCELLED", "")

    def submissions(self, client: Any) -> int:
        """One sbatch call makes one Slurm job id (an array's items share it)."""
        ids = {job.info.backend_id for job in jobkit.jobs(backend="slurm", limit=100_000)}
        return len({backend_id.split("_")[0] for backend_id in ids if backend_id})

    @pytest.mark.slow
    def test_a_time_limit_is_a_timeout(self, client: Any) -> None:
        super().test_a_time_limit_is_a_timeout(client)
        (job,) = jobkit.jobs(name="sleep_then", state="FAILED", limit=1)  # the one just timed out
        assert "TIMEOUT" in (job.info.native_state or "")  # Slurm's own word for it

    def test_a_rerun_is_one_slurm_array_of_exactly_the_failed_task_ids(
        self, client: Any, tmp_path: Path
    ) -> None:
        """Slurm itself holds one new array whose task ids are the rerun items."""
        from backend_suite import T, needs_marker

        for i in (0, 2, 4):
            (tmp_path / str(i)).touch()
        jobs = jobkit.map(needs_marker, [str(tmp_path)] * 6, range(6))
        jobs.wait(timeout=T, progress=False)
        first = {j.info.backend_id.split("_")[0] for j in jobs}
        (tmp_path / "1").touch()
        (tmp_path / "3").touch()
        (tmp_path / "5").touch()
        again = jobs.retry_failed()
        assert again.results(timeout=T, progress=False) == [i * i for i in range(6)]
        rerun = {job.info.array_index: job.info.backend_id for job in again}
        slurm_id = rerun[1].split("_")[0]
        assert slurm_id not in first
        assert [rerun[i] for i in (1, 3, 5)] == [f"{slurm_id}_{i}" for i in (1, 3, 5)]
        assert {rerun[i].split("_")[0] for i in (0, 2, 4)} == first
        out = subprocess.run(
            ["squeue", "--me", "-h", "-t", "all", "-j", slurm_id, "-o", "%i"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert sorted(out) == sorted(f"{slurm_id}_{i}" for i in (1, 3, 5))


def _slurm_node_cpus() -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True)
    return max(int(line.strip().rstrip("+")) for line in out.stdout.split())


# -- Kubernetes: the emulated API server over HTTP, with its Job controller -------------


class TestKubernetesBackend(BackendConformance):
    backend_name = "kubernetes"
    nvml_skip = "pods get the environment their manifest names, not the test process's"
    queued_skip = (
        "the emulator's Job controller starts every pod at once: it has no node "
        "capacity for a job to queue behind"
    )

    @pytest.fixture
    def client(
        self, k8s_emulator: Any, k8s_controller: Any, s3_bucket: str, s3_endpoint: str
    ) -> Iterator[Any]:
        """As tests/integration/test_kubernetes.py: a Secret carries the store's
        credentials and the signing key to the pods."""
        with on_kubernetes(k8s_emulator, f"s3://{s3_bucket}/k8s") as configured:
            self.emulator = k8s_emulator
            yield configured

    def let_go(self, client: Any, job: Any) -> bool:
        """The Kubernetes Job and its pods are deleted, not only marked."""
        return not any(
            obj["metadata"].get("labels", {}).get("jobkit.dev/job-id") == job.id
            for kind in ("jobs", "pods")
            for obj in self.emulator.objects(kind, NAMESPACE)
        )

    def submissions(self, client: Any) -> int:
        """Job creates the emulated API server received."""
        return len(self.emulator.requests("create", "jobs"))

    def test_a_rerun_is_one_indexed_job_over_just_the_rerun_items(
        self, client: Any, tmp_path: Path
    ) -> None:
        """A Job of its own (the first still exists), completions = the rerun items;
        each pod finds its item through the items list."""
        from backend_suite import T, needs_marker

        for i in (0, 2, 4):
            (tmp_path / str(i)).touch()
        jobs = jobkit.map(needs_marker, [str(tmp_path)] * 5, range(5))
        jobs.wait(timeout=T, progress=False)
        for i in (1, 3):
            (tmp_path / str(i)).touch()
        created = len(self.emulator.requests("create", "jobs"))
        again = jobs.retry_failed()
        assert again.results(timeout=T, progress=False) == [i * i for i in range(5)]
        assert len(self.emulator.requests("create", "jobs")) == created + 1
        rerun_job = again[1].info.backend_id.split("[")[0]
        assert rerun_job.startswith(jobs.id.lower() + "-r")
        assert again[3].info.backend_id == f"{rerun_job}[3]"
        (manifest,) = [
            j
            for j in self.emulator.objects("jobs", NAMESPACE)
            if j["metadata"]["name"] == rerun_job
        ]
        assert manifest["spec"]["completions"] == 2
        template = manifest["spec"]["template"]["metadata"]
        assert template["annotations"]["jobkit.dev/items"] == "1,3"
        assert again[0].info.backend_id == f"{jobs.id.lower()}[0]"  # untouched

    def test_a_rerun_whose_submitter_died_after_create_is_found_by_its_job_name(
        self, client: Any, tmp_path: Path
    ) -> None:
        """The rerun's Job name comes from the rerun, so a dead submitter's rerun
        is found as that Job, never as the ended attempt's Job."""
        from backend_suite import T, needs_marker

        from jobkit.rerun import reopen
        from jobkit.resources import Resources

        (tmp_path / "0").touch()
        jobs = jobkit.map(needs_marker, [str(tmp_path)] * 2, range(2))
        jobs.wait(timeout=T, progress=False)
        old = jobs[1].info
        (tmp_path / "1").touch()
        (reopened,) = reopen(client.store, [old])
        client.backend("kubernetes").submit([reopened], Resources.from_record(reopened.resources))
        gone = subprocess.Popen(["true"])
        gone.wait()
        who = {**reopened.extra["submitter"], "pid": gone.pid}
        client.store.update(reopened.id, extra={**reopened.extra, "submitter": who})
        client.reconcile([client.store.get(reopened.id)])
        found = client.store.get(reopened.id)
        assert found.backend_id is not None and found.backend_id != old.backend_id
        assert found.backend_id.startswith(f"{jobs.id.lower()}-r")
        assert jobkit.get(reopened.id).result(timeout=T) == 1


# -- third-party backends are first-class --------------------------------------------

_TOY_JOB = """
import jobkit

def double(x):
    return 2 * x

with jobkit.use(backend="toy"):
    job = jobkit.submit(double, 21)
    array = jobkit.map(double, [1, 2, 3])
    print(job.id, job.result(timeout=60), *array.results(timeout=60, progress=False))
"""


def _run(tmp_path: Path, *args: str, toml: str = "") -> subprocess.CompletedProcess[str]:
    """A fresh process in a project whose jobkit.toml holds ``toml``."""
    (tmp_path / "jobkit.toml").write_text(f'store = "sqlite:///{tmp_path}/jobkit.db"\n{toml}')
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


def test_a_job_a_map_and_the_cli_through_the_installed_toy_backend(
    toy_site: Path, tmp_path: Path
) -> None:
    toml = "[backends.toy]\nmax_parallel = 2\n"
    ran = _run(tmp_path, "-c", _TOY_JOB, toml=toml)
    assert ran.returncode == 0, ran.stderr
    job_id, *answers = ran.stdout.split()
    assert answers == ["42", "2", "4", "6"]

    listed = _run(tmp_path, "-m", "jobkit", "list", "--backend", "toy", "--json", toml=toml)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 4 and {r["state"] for r in rows} == {"SUCCEEDED"}

    status = _run(tmp_path, "-m", "jobkit", "status", job_id, "--json", toml=toml)
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert (record["backend"], record["state"]) == ("toy", "SUCCEEDED")

    backends = _run(tmp_path, "-m", "jobkit", "backends", "--json", toml=toml)
    assert backends.returncode == 0, backends.stderr
    toy = next(row for row in json.loads(backends.stdout) if row["name"] == "toy")
    assert toy["available"] is True and "toy plugin" in toy["detail"]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("max_parallel = 0", r"invalid backends\.toy\.max_parallel=0: .*\[backends\.toy\]"),
        ("max_paralel = 2", r"unknown key 'backends\.toy\.max_paralel'.*max_parallel"),
    ],
)
def test_the_plugins_table_is_validated_by_its_own_settings(
    toy_site: Path, tmp_path: Path, table: str, problem: str
) -> None:
    ran = _run(tmp_path, "-c", _TOY_JOB, toml=f"[backends.toy]\n{table}\n")
    assert ran.returncode == 1
    last = ran.stderr.strip().splitlines()[-1]
    assert re.search(problem, last), ran.stderr
    cli = _run(
        tmp_path,
        "-m",
        "jobkit",
        "plan",
        "--backend",
        "toy",
        "os:getcwd",
        toml=f"[backends.toy]\n{table}\n",
    )
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert re.search(problem, cli.stderr), cli.stderr


def test_a_typo_among_top_level_tables_is_still_caught(tmp_path: Path) -> None:
    ran = _run(tmp_path, "-m", "jobkit", "list", toml="[backendz.toy]\nmax_parallel = 2\n")
    assert ran.returncode == 1
    assert "unknown key 'backendz'" in ran.stderr and "backends" in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr


def test_backends_tables_must_be_tables(tmp_path: Path) -> None:
    ran = _run(tmp_path, "-m", "jobkit", "list", toml='backends = { toy = "fast" }\n')
    assert ran.returncode == 1
    assert "invalid backends=" in ran.stderr and "[backends.NAME]" in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr
