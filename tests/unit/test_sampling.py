"""The sampler's figures, checked against real work in this process and its children."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobkit.sampling import Probe, Sampler, Tally
from jobkit.states import JobRecord, JobState
from jobkit.stores import open_store
from jobkit.usage import MAX_POINTS, decode_series

MiB = 2**20


def _burn(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_a_burn_gives_cpu_seconds_close_to_its_wall_time() -> None:
    sampler = Sampler(None, "jk-unit")
    sampler.start()
    _burn(0.6)
    ended = sampler.stop()
    assert ended is not None
    usage = ended.summary
    assert usage["final"] is True and usage["samples"] >= 2, usage
    assert 0.6 <= usage["wall_seconds"] < 5  # the sampler's own CPU is counted too:
    assert 0.2 < usage["cpu_seconds"] <= 1.1 * usage["wall_seconds"] + 0.05, usage
    mean = usage["cpu_seconds"] / usage["wall_seconds"]
    assert usage["mean_cpu_util"] == pytest.approx(mean, abs=0.01)
    assert usage["max_cpu_util"] >= usage["mean_cpu_util"]
    assert 0 < usage["sampler_cpu_seconds"] < usage["cpu_seconds"]
    assert usage["peak_rss_bytes"] >= usage["mean_rss_bytes"] > 0
    assert "gpus" not in usage  # no NVML on the machines that run these
    assert ended.series is not None
    series = decode_series(ended.series)
    assert len(series["t"]) == len(series["cpu_util"]) == usage["samples"]


def test_a_child_that_ended_before_the_end_is_counted() -> None:
    sampler = Sampler(None, "jk-unit")
    sampler.start()
    code = "import time\nd = time.monotonic() + 0.6\nwhile time.monotonic() < d: pass"
    subprocess.run([sys.executable, "-c", code], check=True)  # this thread only waits
    ended = sampler.stop()
    assert ended is not None and ended.summary["cpu_seconds"] > 0.3, ended


def test_a_running_child_is_sampled_with_its_memory() -> None:
    sampler = Sampler(None, "jk-unit")
    sampler.start()
    code = "import time\nb = bytearray(b'1') * (120 * 2**20)\ntime.sleep(1.0)"
    child = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.9)  # samples at 0.1, 0.3, 0.7 s see it alive
    child.wait()
    ended = sampler.stop()
    assert ended is not None
    assert ended.summary["peak_rss_bytes"] >= 120 * MiB, ended.summary  # the tree's, not ours


def test_figures_are_per_job_in_a_process_that_runs_many() -> None:
    """A warm worker runs jobs one after another: the second job's figures
    must not include the first's CPU or its peak memory."""
    first = Sampler(None, "jk-first")
    first.start()
    block = bytearray(b"\x01") * (150 * MiB)
    _burn(0.4)
    del block
    one = first.stop()
    second = Sampler(None, "jk-second")
    second.start()
    time.sleep(0.4)
    two = second.stop()
    assert one is not None and two is not None
    assert one.summary["peak_rss_bytes"] >= 150 * MiB
    assert two.summary["peak_rss_bytes"] < one.summary["peak_rss_bytes"] - 100 * MiB, two
    assert two.summary["cpu_seconds"] < 0.15 < one.summary["cpu_seconds"], (one, two)
    assert two.summary["samples"] >= 2, two  # the thread, napping in job one, moved on


def test_a_job_shorter_than_the_first_sample_gets_its_end_figures() -> None:
    sampler = Sampler(None, "jk-unit")
    sampler.start()
    ended = sampler.stop()
    assert ended is not None
    usage = ended.summary
    assert usage["samples"] == 1 and usage["final"] is True and usage["peak_rss_bytes"] > 0
    assert 0 <= usage["wall_seconds"] < 0.1 and usage["cpu_seconds"] >= 0
    assert ended.series is None  # one point: the summary says it all, no blob to write


def test_a_long_series_is_thinned_and_keeps_its_extremes() -> None:
    tally = Tally(started_at=1000.0)
    for i in range(1, 3 * MAX_POINTS):
        busy = 4.0 if i == 77 else 1.0  # one short burst: thinned away, still the max
        tally.add(Probe(t=float(i), cpu=tally.cpu + busy, rss=(2000 if i == 77 else 1000)))
    assert len(tally.t) <= MAX_POINTS and tally.thinned >= 1
    assert len(tally.t) == len(tally.cpu_util) == len(tally.rss)
    summary = tally.summary(final=False, sampler_cpu=0.0)
    assert summary["samples"] == 3 * MAX_POINTS - 1 and summary["max_cpu_util"] == 4.0
    assert summary["peak_rss_bytes"] == 2000 and summary["final"] is False
    assert summary["wall_seconds"] == 3 * MAX_POINTS - 1


def test_without_pynvml_there_is_no_gpus_key() -> None:
    script = (
        "import sys, time, json\n"
        "sys.modules['pynvml'] = None\n"  # import pynvml raises ImportError
        "from jobkit.sampling import Sampler\n"
        "s = Sampler(None, 'jk-unit'); s.start(); time.sleep(0.5)\n"
        "print(json.dumps(s.stop().summary))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert '"gpus"' not in out.stdout and '"samples": ' in out.stdout, out
    assert out.stderr == ""  # not an error, not even a line


def test_live_figures_reach_the_store_and_a_failed_write_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running job's summary lands in its record at the first flush (2 s);
    a write that fails (here: no such job, as if pruned) is a line on stderr,
    never an error, and leaves no series behind."""
    store = open_store(f"sqlite:///{tmp_path}/jobkit.db")
    store.create([JobRecord("jk-live", "live", "local", state=JobState.RUNNING)])
    live, lost = Sampler(store, "jk-live"), Sampler(store, "jk-absent")
    live.start()
    deadline = time.monotonic() + 30  # the first flush is due 2 s in; a busy machine is late
    while not store.blobs_present(["usage/jk-live"]) and time.monotonic() < deadline:
        _burn(0.1)
    seen = store.get("jk-live").usage
    ended = live.stop()
    err: list[str] = []
    lost.start()
    deadline = time.monotonic() + 30
    while not err and time.monotonic() < deadline:
        time.sleep(0.2)
        err += capsys.readouterr().err.strip().splitlines()
    lost_end = lost.stop()
    series = store.blob_keys("usage/")  # the record is written first: none for a pruned job
    store.close()
    assert series == ["usage/jk-live"], series
    assert seen["final"] is False and seen["samples"] >= 2 and seen["cpu_seconds"] > 0.3, seen
    assert ended is not None and ended.summary["final"] is True
    assert lost_end is not None and lost_end.summary["samples"] >= 2
    err += capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "usage not recorded" in err[0] and "jk-absent" in err[0], err


def test_jobkit_its_cli_and_its_worker_import_neither_psutil_nor_pynvml() -> None:
    """They load in the sampling thread, at a job's first sample only."""
    script = (
        "import sys, jobkit, jobkit.worker, jobkit.scheduler.warm, jobkit.cli.app\n"
        "print(sorted(m for m in ('psutil', 'pynvml') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out


def test_a_sampling_thread_that_cannot_start_leaves_the_job_its_end_figures() -> None:
    """A container at its ``pids.max``: the thread's start raises.  Threading is
    the standard library's, so refusing that one thread stands in for the limit
    (RLIMIT_NPROC binds nobody when the tests run as root)."""
    script = (
        "import threading, time\n"
        "from jobkit import sampling\n"
        "real = threading.Thread.start\n"
        "def refuse(self):\n"
        "    if self.name == sampling.THREAD_NAME:\n"
        '        raise RuntimeError("can\'t start new thread")\n'
        "    return real(self)\n"
        "threading.Thread.start = refuse\n"
        "s = sampling.Sampler(None, 'jk-x')\n"
        "s.start()\n"
        "d = time.monotonic() + 0.4\n"
        "while time.monotonic() < d: pass\n"
        "ended = s.stop()\n"
        "print(ended.summary['final'], ended.summary['cpu_seconds'] > 0.2, ended.series)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "None"], out.stdout
    (line,) = out.stderr.splitlines()
    assert "usage sampled at the end only" in line and "can't start new thread" in line, line


FORKING_JOB = """
import multiprocessing as mp, time
from jobkit.sampling import Sampler

def child(q):
    import psutil  # what the parent's sampling thread may be importing at the fork
    q.put(psutil.Process().pid)

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    sampler = Sampler(None, "jk-fork")
    sampler.start()
    deadline, forks = time.monotonic() + 1.5, 0
    while time.monotonic() < deadline:
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        q.get(timeout=30)
        p.join(30)
        forks += 1
    ended = sampler.stop()
    print(forks, ended.summary["samples"])
"""


def test_a_job_that_forks_while_it_is_sampled_completes(tmp_path: Path) -> None:
    """Forks land in the sampling thread's first probe (psutil being imported):
    a child copied then inherited its import lock held and hung (3 runs in 5)."""
    script = tmp_path / "forking_job.py"
    script.write_text(FORKING_JOB)
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        forks, samples = map(int, out.stdout.split())
        assert forks > 10 and samples >= 2, out.stdout
