"""What jobs used, through the real ``jobkit`` command: ``status``, ``top``, ``list``.

The records are written through the store API exactly as the worker's sampler
writes them (``store.update(job_id, usage=...)``, keys of :mod:`jobkit.usage`)
into a real SQLite file, and the CLI runs as a subprocess against it; ``top``'s
`q` is pressed for real in a pseudo-terminal.  The last test runs a real
CPU-burning job on the local backend and waits on the worker's sampler
(``jobkit.sampling``): it is skipped until that module exists.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest

from jobkit.states import JobRecord, JobState
from jobkit.stores import open_store
from jobkit.stores.base import Store

NOW = time.time()
GIB = 1024**3
MIB = 1024**2


def usage(**fields: Any) -> dict[str, Any]:
    """A summary as the sampler writes it; ``fields`` override."""
    values: dict[str, Any] = {
        "wall_seconds": 60.0,
        "cpu_seconds": 50.0,
        "mean_cpu_util": 0.8,
        "max_cpu_util": 1.0,
        "peak_rss_bytes": 200 * MIB,
        "mean_rss_bytes": 150 * MIB,
        "samples": 6,
        "updated_at": NOW - 4,
        "final": True,
        "sampler_cpu_seconds": 0.05,
    }
    values.update(fields)
    return values


def gpu(index: int, util_mean: float, util_max: float) -> dict[str, Any]:
    return {
        "index": index,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-{index}",
        "util_mean": util_mean,
        "util_max": util_max,
        "mem_used_bytes": 2 * GIB,
        "mem_peak_bytes": 3 * GIB,
        "mem_total_bytes": 80 * GIB,
        "power_mean_watts": 312.0,
        "power_max_watts": 401.0,
    }


def job(job_id: str, state: JobState, *, age: float, ran: float, **fields: Any) -> JobRecord:
    created = NOW - age
    values: dict[str, Any] = {
        "name": "train",
        "backend": "local",
        "state": state,
        "created_at": created,
        "started_at": created + 1,
        "host": "node1",
    }
    if state.is_terminal:
        values["finished_at"] = created + 1 + ran
    values.update(fields)
    return JobRecord(id=job_id, **values)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A SQLite file holding jobs with known usage, written as the sampler writes it.

    - jk-busy: running, 3.5 cores, asked for 4 cpus and 1 GPU, GPU busy.
    - jk-idle: running, asked for 1 GPU and 64GiB, used neither (flagged).
    - jk-done: succeeded, the most CPU seconds, final summary, no GPU.
    - jk-none: succeeded before sampling existed: no usage at all.
    - jk-arr.0..4: a Kubernetes array; item 3 ran longest, item 1 left its GPU idle.

    The running jobs are local ones: their records are read as they are (a
    running Slurm job the scheduler does not know would be reconciled away).
    """
    global NOW
    NOW = time.time()  # the figures' ages are checked: count from now, not from collection
    opened = open_store(f"sqlite:///{tmp_path}/jobkit.db")
    records = [
        job("jk-busy", JobState.RUNNING, age=300, ran=0, resources={"cpus": 4, "gpus": 1}),
        job(
            "jk-idle",
            JobState.RUNNING,
            age=200,
            ran=0,
            name="probe",
            host="gpu7",
            resources={"gpus": 1, "mem": 64 * GIB},
        ),
        job("jk-done", JobState.SUCCEEDED, age=1000, ran=500, name="eval"),
        job("jk-none", JobState.SUCCEEDED, age=100, ran=5, name="eval"),
    ]
    for index, ran in enumerate([10.0, 20.0, 30.0, 400.0, 40.0]):
        records.append(
            job(
                f"jk-arr.{index}",
                JobState.SUCCEEDED,
                age=2000,
                ran=ran,
                name="sweep",
                backend="kubernetes",
                array_id="jk-arr",
                array_index=index,
                resources={"gpus": 1},
            )
        )
    opened.create(records)
    opened.update(
        "jk-busy",
        usage=usage(
            cpu_seconds=1050.0,
            mean_cpu_util=3.5,
            max_cpu_util=3.9,
            final=False,
            updated_at=NOW - 7,
            wall_seconds=299.0,
            gpus=[gpu(0, 87.0, 99.0)],
        ),
    )
    opened.update(
        "jk-idle",
        usage=usage(
            cpu_seconds=2000.0,  # more CPU seconds than jk-busy, far fewer cores
            wall_seconds=20000.0,
            mean_cpu_util=0.1,
            peak_rss_bytes=900 * MIB,
            final=False,
            gpus=[gpu(1, 0.0, 1.0)],
        ),
    )
    opened.update("jk-done", usage=usage(cpu_seconds=4000.0, peak_rss_bytes=5 * GIB))
    for index, ran in enumerate([10.0, 20.0, 30.0, 400.0, 40.0]):
        opened.update(
            f"jk-arr.{index}",
            usage=usage(
                wall_seconds=ran,
                cpu_seconds=ran * 0.9,
                gpus=[gpu(0, 0.0, 2.0) if index == 1 else gpu(0, 70.0, 95.0)],
            ),
        )
    yield opened
    opened.close()


def cli(
    store: Store, *args: str, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess, on ``store`` and a private home."""
    home = Path(store.url.removeprefix("sqlite://")).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_")}
    env.update(
        JOBKIT_STORE=store.url, JOBKIT_HOME=str(home / "home"), XDG_CONFIG_HOME=str(home / "xdg")
    )
    env.pop("NO_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def ids_of(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:] if line.strip()]


# -- jobkit status -----------------------------------------------------------------


def test_status_shows_live_usage_per_gpu(store: Store) -> None:
    out = ok(cli(store, "status", "jk-busy"))
    section = out[out.index("\nusage") :]
    age = section.split("(live, updated ", 1)[1].split("s ago)", 1)[0]
    assert 7.0 <= float(age) < 60.0  # the summary was written 7 s before the command ran
    assert "1050.0s" in section  # CPU seconds
    assert "3.50 mean, 3.90 max (asked for 4)" in section
    assert "200MiB peak, 150MiB mean" in section
    gpu_line = next(line for line in section.splitlines() if "gpu 0" in line)
    assert "NVIDIA H100 80GB HBM3" in gpu_line
    assert "util 87% mean, 99% max" in gpu_line
    assert "mem 3.0GiB peak of 80.0GiB" in gpu_line
    assert "312W mean, 401W max" in gpu_line
    assert "! " not in section  # busy: nothing flagged
    assert "{" not in out  # the usage dict is not dumped as JSON among the fields


def test_status_flags_waste_in_a_warning_line(store: Store) -> None:
    out = ok(cli(store, "status", "jk-idle"))
    warnings = [line for line in out.splitlines() if line.startswith("! ")]
    assert [w.split(":")[0] for w in warnings] == ["! idle_gpu", "! mem_over_granted"]
    assert "utilization never above 1%" in warnings[0]
    assert "asked for 64GiB of memory, peak use 900MiB" in warnings[1]
    assert "asked for 64.0GiB" in out  # the memory line compares with the request


def test_status_of_finished_and_unsampled_jobs(store: Store) -> None:
    done = ok(cli(store, "status", "jk-done"))
    assert "usage (final)" in done and "5.0GiB peak" in done and "gpu " not in done
    assert "usage: not sampled" in ok(cli(store, "status", "jk-none"))


def test_status_json_carries_the_usage_summary(store: Store) -> None:
    data = json.loads(ok(cli(store, "status", "jk-busy", "--json")))
    assert data["usage"]["cpu_seconds"] == 1050.0
    assert data["usage"]["gpus"][0]["util_max"] == 99.0


def test_array_status_says_which_items_were_slow_and_idle(store: Store) -> None:
    out = ok(cli(store, "status", "jk-arr"))
    total_hours = sum(r * 0.9 for r in [10.0, 20.0, 30.0, 400.0, 40.0]) / 3600
    assert f"usage: {total_hours:.3f} CPU-hours over 5 sampled item(s) of 5" in out
    assert "! 1 item(s) with idle GPUs: jk-arr.1" in out
    slowest = next(line for line in out.splitlines() if line.startswith("slowest:"))
    order = [part.split()[0] for part in slowest.removeprefix("slowest: ").split(", ")]
    assert order == ["jk-arr.3", "jk-arr.4", "jk-arr.2", "jk-arr.1", "jk-arr.0"]
    data = json.loads(ok(cli(store, "status", "jk-arr", "--json")))
    assert data["usage"]["idle_gpu_items"] == ["jk-arr.1"]
    assert data["usage"]["slowest"][0] == {
        "id": "jk-arr.3",
        "wall_seconds": pytest.approx(400.0),
        "state": "SUCCEEDED",
    }


# -- jobkit list -----------------------------------------------------------------


def test_list_sorts_by_usage_biggest_first_unknown_last(store: Store) -> None:
    by_cpu = ok(cli(store, "list", "--sort", "cpu"))
    assert by_cpu.splitlines()[0].split()[-2:] == ["USAGE", "FLAGS"]
    assert ids_of(by_cpu)[:3] == ["jk-done", "jk-idle", "jk-busy"]  # CPU seconds
    assert ids_of(by_cpu)[-1] == "jk-none"
    assert "4000.0s cpu, 5.0GiB" in by_cpu
    assert ids_of(ok(cli(store, "list", "--sort", "mem")))[:2] == ["jk-done", "jk-idle"]
    assert ids_of(ok(cli(store, "list", "--sort", "gpu")))[0] == "jk-busy"
    assert ids_of(ok(cli(store, "list", "--sort", "WALL", "--limit", "2"))) == [
        "jk-done",
        "jk-arr.3",
    ]


def test_list_filters_idle_gpus_and_flagged_jobs(store: Store) -> None:
    idle = ok(cli(store, "list", "--idle-gpus"))
    assert sorted(ids_of(idle)) == ["jk-arr.1", "jk-idle"]
    assert "idle_gpu,mem_over_granted" in idle
    flagged = json.loads(ok(cli(store, "list", "--flagged", "--backend", "kubernetes", "--json")))
    assert [r["id"] for r in flagged] == ["jk-arr.1"]
    assert flagged[0]["usage"]["gpus"][0]["util_max"] == 2.0
    assert [f["name"] for f in flagged[0]["flags"]] == ["idle_gpu"]
    assert "utilization never above 2%" in flagged[0]["flags"][0]["text"]
    by_cpu = json.loads(ok(cli(store, "list", "--sort", "cpu", "--json")))
    flags_of = {r["id"]: [f["name"] for f in r["flags"]] for r in by_cpu}
    assert flags_of["jk-idle"] == ["idle_gpu", "mem_over_granted"]
    assert flags_of["jk-busy"] == [] and flags_of["jk-none"] == []
    assert sorted(ids_of(ok(cli(store, "list", "--flagged")))) == ["jk-arr.1", "jk-idle"]


def test_plain_list_reads_no_usage(store: Store) -> None:
    out = ok(cli(store, "list"))
    assert "USAGE" not in out.splitlines()[0]
    assert ids_of(out)[0] == "jk-none"  # newest first


def test_bad_sort_key_is_one_usage_line_naming_the_choices(store: Store) -> None:
    for command in (["list"], ["top", "--json"]):
        done = cli(store, *command, "--sort", "speed")
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "'speed' is not a sort key" in lines[0]
        assert "cpu, mem, gpu, wall" in lines[0]


# -- jobkit top ------------------------------------------------------------------


def test_top_json_is_one_snapshot_of_running_jobs_by_cpu(store: Store) -> None:
    snap = json.loads(ok(cli(store, "top", "--json")))
    assert [e["id"] for e in snap] == ["jk-busy", "jk-idle"]  # busy cores, not CPU seconds
    busy, idle = snap
    assert busy["usage"]["mean_cpu_util"] == 3.5 and busy["flags"] == []
    assert busy["figures_age_seconds"] >= 7
    assert [f["name"] for f in idle["flags"]] == ["idle_gpu", "mem_over_granted"]
    assert idle["host"] == "gpu7" and idle["backend"] == "local"
    by_mem = json.loads(ok(cli(store, "top", "--json", "--sort", "mem")))
    assert [e["id"] for e in by_mem] == ["jk-idle", "jk-busy"]
    only = json.loads(ok(cli(store, "top", "--json", "--name", "probe")))
    assert [e["id"] for e in only] == ["jk-idle"]
    done = json.loads(ok(cli(store, "top", "--json", "--state", "succeeded", "--sort", "cpu")))
    assert done[0]["id"] == "jk-done"
    by_seconds = json.loads(ok(cli(store, "top", "--json", "--sort", "cpu")))
    assert [e["id"] for e in by_seconds] == ["jk-idle", "jk-busy"]  # cpu: CPU seconds, as in list
    by_cores = json.loads(ok(cli(store, "top", "--json", "--sort", "CORES")))
    assert [e["id"] for e in by_cores] == ["jk-busy", "jk-idle"]
    listed = json.loads(ok(cli(store, "list", "--sort", "cores", "--json")))
    assert listed[0]["id"] == "jk-busy"  # 3.5 cores: the most of all
    for command in ("top", "list"):
        helped = " ".join(ok(cli(store, command, "--help")).replace("│", " ").split())
        assert "cores (mean busy cores), cpu (CPU seconds)" in helped, helped
    ended = ("--json", "-s", "succeeded", "--backend", "kubernetes", "--sort", "wall")
    items = json.loads(ok(cli(store, "top", *ended)))
    assert [e["id"] for e in items][:2] == ["jk-arr.3", "jk-arr.4"]
    assert json.loads(ok(cli(store, "top", "--json", "--backend", "kubernetes"))) == []


def test_top_without_a_terminal_prints_one_table_and_exits(store: Store) -> None:
    out = ok(cli(store, "top"))
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "BACKEND", "HOST", "STATE"]
    assert [r.split()[0] for r in rows] == ["jk-busy", "jk-idle"]
    assert "3.50" in rows[0] and "87% 3.0GiB" in rows[0]
    assert "900MiB/64.0GiB" in rows[1] and "idle_gpu,mem_over_granted" in rows[1]


def test_top_piped_from_a_terminal_prints_one_table_and_exits(store: Store) -> None:
    """``jobkit top | less``: keys could be read, but no screen redraws in place."""
    master, slave = os.openpty()
    try:
        home = Path(store.url.removeprefix("sqlite://")).parent
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_")}
        env.update(JOBKIT_STORE=store.url, JOBKIT_HOME=str(home / "home"))
        done = subprocess.run(
            [sys.executable, "-m", "jobkit", "top"],
            stdin=slave,
            capture_output=True,
            text=True,
            env=env,
            cwd=home,
            timeout=30,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert done.returncode == 0, done.stderr
    assert ids_of(done.stdout) == ["jk-busy", "jk-idle"]


def test_top_rejects_a_bad_interval(store: Store) -> None:
    done = cli(store, "top", "--interval", "0")
    assert done.returncode == 2 and "--interval" in done.stderr


def _top_in_a_pty(store: Store) -> tuple[subprocess.Popen[bytes], int, int, list[Any]]:
    """``jobkit top`` on a pseudo-terminal 160 columns wide, its table on screen."""
    import fcntl
    import struct

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    before = termios.tcgetattr(slave)
    home = Path(store.url.removeprefix("sqlite://")).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_")}
    env.update(JOBKIT_STORE=store.url, JOBKIT_HOME=str(home / "home"), TERM="xterm")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobkit", "top", "--interval", "0.5"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=home,
        preexec_fn=_controlling_terminal,
    )
    screen = b""
    deadline = time.monotonic() + 30
    while b"jk-idle" not in screen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            screen += os.read(master, 65536)
    assert b"jk-busy" in screen and b"q to quit" in screen, screen[-2000:]
    return proc, master, slave, before


def _controlling_terminal() -> None:
    """In the child: a session of its own with the pty (its stdin) as the
    controlling terminal, so Ctrl-C typed there is a SIGINT, as in a shell."""
    import fcntl

    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _drain(master: int) -> None:
    while select.select([master], [], [], 0)[0]:
        try:
            os.read(master, 65536)
        except OSError:
            return


def test_top_quits_on_q_and_restores_the_terminal(store: Store) -> None:
    proc, master, slave, before = _top_in_a_pty(store)
    try:
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ICANON and not during[3] & termios.ECHO  # cbreak
        os.write(master, b"q")
        started = time.monotonic()
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 3
        _drain(master)
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_top_keeps_a_job_that_just_ended_on_screen(store: Store) -> None:
    proc, master, slave, _ = _top_in_a_pty(store)
    try:
        _drain(master)
        store.transition("jk-busy", JobState.SUCCEEDED, finished_at=time.time())
        store.transition("jk-idle", JobState.CANCELLED, finished_at=time.time() - 60)
        screen = b""
        deadline = time.monotonic() + 10
        while screen.count(b"q to quit") < 4 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                screen += os.read(master, 65536)
        last_frame = screen.split(b"q to quit")[-2]  # complete: the next one began after it
        assert b"jk-busy" in last_frame and b"SUCCEEDED" in last_frame  # just ended
        assert b"jk-idle" not in last_frame  # ended a minute ago: gone
        os.write(master, b"q")
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_top_restores_the_terminal_when_interrupted(store: Store, how: str) -> None:
    proc, master, slave, before = _top_in_a_pty(store)
    try:
        if how == "ctrl-c":
            os.write(master, b"\x03")  # the terminal turns it into SIGINT
            assert proc.wait(timeout=5) == 130
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 128 + signal.SIGTERM
        _drain(master)
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


# -- a real job, sampled by its worker --------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("jobkit.sampling") is None,
    reason="waits on the worker's sampler (jobkit.sampling, issue 14 part A)",
)
def test_a_real_cpu_burning_job_shows_its_figures_everywhere(tmp_path: Path) -> None:
    import jobkit
    from conftest import local_env, wait_for

    with local_env(tmp_path) as client:
        store = client.store
        running = jobkit.submit(helpers.burn_cpu, 25.0)
        sampled = wait_for(
            lambda: [
                e
                for e in json.loads(ok(cli(store, "top", "--json")))
                if e["id"] == running.id and e["usage"].get("cpu_seconds")
            ],
            timeout=40,
            interval=1.0,
        )
        assert sampled[0]["state"] == "RUNNING" and sampled[0]["usage"]["final"] is False
        assert "(live, updated" in ok(cli(store, "status", running.id))
        short = jobkit.submit(helpers.burn_cpu, 3.0)
        assert short.result(timeout=60) > 0
        running.cancel()
        data = json.loads(ok(cli(store, "status", short.id, "--json")))
        figures = data["usage"]
        assert figures["final"] is True
        assert 2.5 < figures["cpu_seconds"] < 10.0  # the job burns 3 CPU seconds
        assert 0.2 < figures["max_cpu_util"] < 1.6  # one thread: at most one core, give or take
        assert figures["peak_rss_bytes"] > 10 * MIB
        shown = ok(cli(store, "status", short.id))
        assert "usage (final)" in shown and f"{figures['cpu_seconds']:.1f}s" in shown
        listed = ok(cli(store, "list", "--sort", "cpu", "--state", "succeeded"))
        assert ids_of(listed) == [short.id]
        assert f"{figures['cpu_seconds']:.1f}s cpu" in listed
