"""Failure 2 of issue 11: a submitter killed between recording a map and handing it over.

A real client process maps a function over 1,000 items; the test polls the
SQLite file's raw rows and kills the client (SIGSTOP, then SIGKILL) the
moment all 1,000 records are committed and none has a ``submitted_at`` --
records written, backend not yet told.  Ground truth afterwards: the rows,
the marker files the job function writes (one per execution), ``/proc``.

Expected (issue 11): any reconciling process hands such PENDING jobs to
their backend or fails them saying why; none is left PENDING without a
process that will move it on, and none runs twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from jobkit.client import PAYLOAD_BATCH
from jobkit_testing.faults.store import (
    Figures,
    child_commands,
    executions,
    payload_count,
    pids_running,
    raw_rows,
    report,
    row_counts,
    s3_raw_rows,
    wait_until,
)

pytest_plugins = ["s3_fixtures", "jobkit_testing.k8s_emulator.fixtures"]

ITEMS = int(os.environ.get("JOBKIT_FAULTS_MAP_ITEMS", "1000"))
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
SETTLE = 60.0

SUBMITTER = textwrap.dedent(
    """
    import os, sys, time
    import jobkit

    markers = sys.argv[1]
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0

    def mark(i):
        with open(os.path.join(markers, f"{i}.{os.getpid()}"), "w") as out:
            out.write(os.environ.get("JOBKIT_ATTEMPT", ""))
        time.sleep(pause)  # still running when the first reconcile looks
        return i

    jobkit.map(mark, range(int(sys.argv[2])))
    print("submitted", flush=True)
    """
)


def _env(tmp_path: Path, backend: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        JOBKIT_STORE=f"sqlite:///{tmp_path}/jobkit.db",
        JOBKIT_BACKEND=backend,
        JOBKIT_HOME=str(tmp_path / "home"),
    )
    return env


def kill_submitter(
    tmp_path: Path,
    backend: str,
    items: int,
    moment: str = "records",
    tries: int = 5,
    pause: float = 0.0,
) -> Path:
    """Run the submitter until it is killed at ``moment``; returns that try's
    directory (its store, markers, home).

    ``records``: all ``items`` records committed, none with ``submitted_at``,
    and no sbatch started.  ``sbatch``: while its sbatch child runs (the
    submitter is stopped, sbatch finishes, then the submitter is killed, so
    the Slurm job exists and its id was never recorded).  A try that misses
    its moment is left behind (its agent stopped) and repeated afresh.
    """
    for attempt in range(tries):
        root = tmp_path / f"try{attempt}"
        db, markers = root / "jobkit.db", root / "markers"
        markers.mkdir(parents=True)
        script = root / "submit_map.py"
        script.write_text(SUBMITTER)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(markers), str(items), str(pause)],
            env=_env(root, backend),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        hit = False
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            total, unsubmitted = row_counts(db) if db.exists() else (0, 0)
            in_sbatch = moment == "sbatch" and total >= items and _in_sbatch(proc.pid)
            if (moment == "records" and total >= items) or in_sbatch:
                os.kill(proc.pid, signal.SIGSTOP)  # freeze it where it is, then look
                if moment == "sbatch":  # let sbatch itself finish: the job exists
                    pid = proc.pid
                    wait_until(lambda pid=pid: not _in_sbatch(pid), 30, 0.005)
                total, unsubmitted = row_counts(db)
                hit = total == items and unsubmitted == items
                if moment == "records":
                    hit = hit and not _in_sbatch(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait(timeout=30)
        if hit:
            return root
        _stop_agents(db)
    pytest.fail(f"never caught the submitter at {moment!r} in {tries} tries")


def _in_sbatch(pid: int) -> bool:
    return any(cmd.split(" ", 1)[0].endswith("sbatch") for cmd in child_commands(pid))


def _jobkit_list(root: Path, backend: str) -> None:
    """One ``jobkit list`` in a fresh process: the reconciling process here."""
    listed = subprocess.run(
        [sys.executable, "-m", "jobkit", "list", "--limit", "5"],
        env=_env(root, backend),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "internal error" not in listed.stderr


def _stop_agents(db: Path) -> None:
    for pid in pids_running("jobkit.scheduler.agent", str(db)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("agent_alive", [True, False], ids=["agent-alive", "agent-gone"])
def test_local_map_killed_after_records_is_handed_over_by_jobkit_list(
    tmp_path: Path, agent_alive: bool
) -> None:
    """Local: the dead client's 1,000 PENDING jobs run exactly once.  With the
    agent gone too (killed with the client: nothing left on the machine),
    only a reconciling process can start one: here one ``jobkit list``."""
    root = kill_submitter(tmp_path, "local", ITEMS)
    db = root / "jobkit.db"
    if not agent_alive:
        _stop_agents(db)
    killed_at = time.monotonic()
    _jobkit_list(root, "local")
    settled = wait_until(
        lambda: all(r["column_state"] in ("SUCCEEDED", "FAILED") for r in raw_rows(db)), SETTLE
    )
    rows = raw_rows(db)
    runs = executions(root / "markers")
    figures = Figures.count(
        f"submitter killed after records (map of {ITEMS})",
        "local" + ("" if agent_alive else ", agent gone"),
        rows,
        runs,
        None if settled is None else time.monotonic() - killed_at,
    )
    report(figures)
    _stop_agents(db)
    assert len(rows) == ITEMS
    assert (figures.lost, figures.duplicated, figures.stuck) == (0, 0, 0), figures.line()


SLURM_ITEMS = int(os.environ.get("JOBKIT_FAULTS_SLURM_ITEMS", "50"))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("moment", ["records", "sbatch"])
def test_slurm_map_killed_mid_submission_is_settled_by_jobkit_list(
    slurm_cluster: str, tmp_path: Path, moment: str
) -> None:
    """Slurm: killed before sbatch, every job fails SUBMIT_ERROR saying the
    submitter stopped; killed while sbatch ran, every job is found by its
    ``--comment`` mark, gets its Slurm id, and runs exactly once."""
    root = kill_submitter(tmp_path, "slurm", SLURM_ITEMS, moment, pause=2.0)
    db = root / "jobkit.db"
    killed_at = time.monotonic()
    _jobkit_list(root, "slurm")
    expected = "FAILED" if moment == "records" else "SUCCEEDED"

    def settled() -> bool:
        rows = raw_rows(db)
        if moment == "sbatch" and any(r["column_state"] not in TERMINAL for r in rows):
            _jobkit_list(root, "slurm")  # a reconcile now and then, as a watcher would
        return all(r["column_state"] in TERMINAL for r in rows)

    took = wait_until(settled, SETTLE, 0.5)
    rows = raw_rows(db)
    figures = Figures.count(
        f"submitter killed at {moment} (map of {SLURM_ITEMS})",
        "slurm",
        rows,
        executions(root / "markers"),
        None if took is None else time.monotonic() - killed_at,
        note=f"ids_recovered={sum(bool(r.get('backend_id')) for r in rows)}",
    )
    report(figures)
    assert (figures.lost, figures.duplicated, figures.stuck) == (0, 0, 0), figures.line()
    assert {r["column_state"] for r in rows} == {expected}
    if moment == "records":
        assert all("submitting process" in r["message"] for r in rows), rows[0]["message"]
        assert {r["failure_reason"] for r in rows} == {"SUBMIT_ERROR"}
    else:  # ids are recovered for jobs still active when a reconcile saw them
        assert all(r["column_state"] == "SUCCEEDED" for r in rows)
        assert any(r.get("backend_id") for r in rows), "no Slurm id was recovered"


K8S_ITEMS = int(os.environ.get("JOBKIT_FAULTS_K8S_ITEMS", "20"))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("moment", ["records", "job-created"])
def test_kubernetes_map_killed_mid_submission_is_settled_by_jobkit_list(
    k8s_emulator: Any,
    k8s_controller: Any,
    s3_bucket: str,
    s3_client: Any,
    tmp_path: Path,
    moment: str,
) -> None:
    """Kubernetes (the emulator over HTTP, S3 on moto): killed before the Job
    was created, every job fails SUBMIT_ERROR saying the submitter stopped;
    killed after, every job is found by its Job's name and runs once."""
    from jobkit_testing.k8s_emulator.clients import NAMESPACE, SECRET, on_kubernetes

    env = {k: v for k, v in os.environ.items() if k not in ("JOBKIT_STORE", "JOBKIT_BACKEND")}

    def records(prefix: str) -> int:  # one LIST, no GET: fast enough to poll
        listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"{prefix}jobs/")
        return int(listed.get("KeyCount", 0))

    with on_kubernetes(k8s_emulator, f"s3://{s3_bucket}/k8s"):  # the Secret: the store's key
        pass
    for attempt in range(5):  # a missed moment: again, in a fresh store and directory
        root, prefix = tmp_path / f"try{attempt}", f"k8s{attempt}/"
        store = f"s3://{s3_bucket}/{prefix.rstrip('/')}"
        markers = root / "markers"
        markers.mkdir(parents=True)
        (root / "submit_map.py").write_text(SUBMITTER)
        (root / "jobkit.toml").write_text(
            textwrap.dedent(
                f"""
                backend = "kubernetes"
                store = "{store}"
                [kubernetes]
                api_server = "{k8s_emulator.url}"
                namespace = "{NAMESPACE}"
                pending_grace = 2
                image = "python:3.11-slim"
                python = "{sys.executable}"
                secret = "{SECRET}"
                """
            )
        )

        def rows(prefix: str = prefix) -> list[dict[str, Any]]:
            return s3_raw_rows(s3_client, s3_bucket, prefix)

        jobs_before = len(k8s_emulator.objects("jobs", NAMESPACE))
        proc = subprocess.Popen(
            [sys.executable, "submit_map.py", str(markers), str(K8S_ITEMS), "3"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        hit = False
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            created = len(k8s_emulator.objects("jobs", NAMESPACE)) > jobs_before
            ready = created if moment == "job-created" else records(prefix) >= K8S_ITEMS
            if ready:
                os.kill(proc.pid, signal.SIGSTOP)
                now = rows()
                created = len(k8s_emulator.objects("jobs", NAMESPACE)) > jobs_before
                hit = (
                    len(now) == K8S_ITEMS
                    and not any(r.get("backend_id") for r in now)
                    and created == (moment == "job-created")
                )
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait(timeout=30)
        if hit:
            break
    else:
        pytest.fail(f"never caught the submitter at {moment!r} in 5 tries")
    killed_at = time.monotonic()

    def listed_and_settled() -> bool:
        done = subprocess.run(
            [sys.executable, "-m", "jobkit", "list", "--limit", "5"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and "internal error" not in done.stderr, done.stderr
        return all(r["column_state"] in TERMINAL for r in rows())

    took = wait_until(listed_and_settled, SETTLE, 0.5)
    final = rows()
    figures = Figures.count(
        f"submitter killed at {moment} (map of {K8S_ITEMS})",
        "kubernetes",
        final,
        executions(markers),
        None if took is None else time.monotonic() - killed_at,
        note=f"ids_recovered={sum(bool(r.get('backend_id')) for r in final)}",
    )
    report(figures)
    assert (figures.lost, figures.duplicated, figures.stuck) == (0, 0, 0), figures.line()
    if moment == "records":
        assert {r["failure_reason"] for r in final} == {"SUBMIT_ERROR"}
        assert all("submitting process" in r["message"] for r in final), final[0]["message"]
    else:
        # Every job the Job ran succeeded once.  Ids are recovered only for jobs
        # no pod had started when a reconcile looked (a started worker records
        # its own run, and the Kubernetes observe then judges its pod, which
        # carries no id): a figure (ids_recovered), not a condition.
        assert {r["column_state"] for r in final} == {"SUCCEEDED"}


def test_the_hand_over_rule_reads_the_submitter_from_the_process_table() -> None:
    """Alive, killed (a zombie not yet reaped counts as gone), pid reused by
    another process, another host within and past the grace period."""
    from jobkit.processes import process_start
    from jobkit.reconcile import HANDOVER_GRACE, submitter_gone
    from jobkit.states import JobRecord

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = "this-host"
    who = {"host": host, "pid": child.pid, "started": process_start(child.pid)}
    now = time.time()
    record = JobRecord(
        id="jk-1", name="f", backend="slurm", created_at=now, extra={"submitter": who}
    )
    assert not submitter_gone(record, now=now, host=host)
    reused = {**who, "started": (who["started"] or 0) - 1}  # same pid, another process
    assert submitter_gone(
        JobRecord(
            id="jk-2", name="f", backend="slurm", created_at=now, extra={"submitter": reused}
        ),
        now=now,
        host=host,
    )
    os.kill(child.pid, signal.SIGKILL)
    wait_until(lambda: submitter_gone(record, now=now, host=host), 10)
    assert submitter_gone(record, now=now, host=host)  # a zombie: killed, not yet reaped
    child.wait()
    assert submitter_gone(record, now=now, host=host)
    # From another host the pid means nothing: only the record's age counts.
    assert not submitter_gone(record, now=now + HANDOVER_GRACE - 1, host="elsewhere")
    assert submitter_gone(record, now=now + HANDOVER_GRACE + 1, host="elsewhere")
    accepted = JobRecord(id="jk-3", name="f", backend="slurm", created_at=now, backend_id="7")
    assert not submitter_gone(accepted, now=now + 10 * HANDOVER_GRACE, host=host)


# -- killed before its records were written: payloads nobody points to -----------------


def _kill_while_writing_payloads(
    command: list[str], env: dict[str, str], cwd: Path, payloads: Any, records: Any
) -> int:
    """Kill the submitter once some payloads exist and no record does; returns
    how many payloads it left."""
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    left = 0
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if payloads() >= 50:
            os.kill(proc.pid, signal.SIGSTOP)
            if records() == 0:
                left = payloads()
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=30)
    return left


def _prune_orphans(env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "jobkit", "prune", "--orphans", "--json", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("store_kind", ["sqlite", "s3"])
def test_payloads_of_a_submitter_killed_before_its_records_are_pruned(
    tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> None:
    """``jobkit prune`` finds payloads no record points to, leaves them alone
    within the grace period (default 1h), and removes them after it."""
    (tmp_path / "submit_map.py").write_text(SUBMITTER)
    (tmp_path / "markers").mkdir()
    env = _env(tmp_path, "local")
    items = ITEMS
    if store_kind == "sqlite":
        db = tmp_path / "jobkit.db"
        # Payloads are committed a batch at a time before the records: a map
        # of several batches leaves some committed while its records are not.
        items = max(ITEMS, 3 * PAYLOAD_BATCH)

        def payloads() -> int:
            return payload_count(db) if db.exists() else 0

        def records() -> int:
            return row_counts(db)[0] if db.exists() else 0

    else:
        bucket, client = request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_client")
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        env["JOBKIT_STORE"] = f"s3://{bucket}/orphans"

        def count(prefix: str) -> int:
            listed = client.list_objects_v2(Bucket=bucket, Prefix=f"orphans/{prefix}")
            return int(listed.get("KeyCount", 0))

        def payloads() -> int:
            return count("blobs/payloads/")

        def records() -> int:
            return count("jobs/")

    command = [sys.executable, "submit_map.py", str(tmp_path / "markers"), str(items)]
    left = _kill_while_writing_payloads(command, env, tmp_path, payloads, records)
    for pid in pids_running("jobkit.scheduler.agent", env["JOBKIT_STORE"].split("//")[-1]):
        os.kill(pid, signal.SIGKILL)
    assert left > 0, "never caught the submitter between its payloads and its records"
    within_grace = _prune_orphans(env, tmp_path, "--dry-run")
    pruned = _prune_orphans(env, tmp_path, "--orphan-grace", "0s")
    remaining = payloads()
    report(
        Figures(
            f"submitter killed before its records ({store_kind}): orphan payloads",
            store_kind,
            jobs=0,
            lost=0,
            duplicated=0,
            stuck=0,
            settle_s=None,
            note=f"left={left} pruned={pruned['orphan_payloads']} remaining={remaining}",
        )
    )
    assert within_grace["orphan_payloads"] == 0  # younger than the 1h grace
    assert pruned["orphan_payloads"] == left and remaining == 0
    assert records() == 0
