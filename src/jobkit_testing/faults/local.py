"""Ground truth for local-backend faults: what really ran, what the file says.

Job functions here write one marker file per execution (``<tag>.<pid>.start``
when they begin, ``<tag>.<pid>.end`` just before they return), so a job run
twice shows as two pids.  Rows are read with the ``sqlite3`` module straight
from the database file, not through jobkit.  Each scenario prints one summary
line and appends one JSON line to ``$JOBKIT_FAULTS_REPORT`` when it is set.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from jobkit_testing.faults.report import emit

__all__ = [
    "Figures",
    "agent_pid",
    "alive",
    "cli",
    "mark_and_sleep",
    "markers",
    "outcome_file",
    "raw_states",
    "report",
    "sleep_then_hog",
    "submit_elsewhere",
    "wait_until",
    "write_lock",
]

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def mark_and_sleep(
    directory: str,
    tag: str,
    seconds: float,
    first_only: bool = False,
    fail: bool = False,
    pad: int = 0,
) -> str:
    """A job: marker at start, sleep, marker at end; returns ``tag``.

    ``first_only``: only the first execution of ``tag`` sleeps (a retry ends
    at once); ``fail``: raise RuntimeError after the end marker; ``pad``:
    that many spaces after the tag (or the error's message), so the outcome
    is large enough to be a file (a small one is written with the end, in
    one transaction)."""
    pid = os.getpid()
    ran_before = any(Path(directory).glob(f"{tag}.*.start"))
    Path(directory, f"{tag}.{pid}.start").write_text(os.environ.get("JOBKIT_JOB_ID", ""))
    if not (first_only and ran_before):
        time.sleep(seconds)
    Path(directory, f"{tag}.{pid}.end").write_text(os.environ.get("JOBKIT_JOB_ID", ""))
    if fail:
        raise RuntimeError(f"job {tag} failed on purpose" + " " * pad)
    return tag + " " * pad


def sleep_then_hog(directory: str, tag: str, seconds: float, mib: int) -> int:
    """A job: start marker, sleep, then hold ``mib`` MiB of touched memory for a minute."""
    Path(directory, f"{tag}.{os.getpid()}.start").write_text(os.environ.get("JOBKIT_JOB_ID", ""))
    time.sleep(seconds)
    blocks = [bytearray(2**20) for _ in range(mib)]
    time.sleep(60)
    return len(blocks)


def markers(directory: Path, phase: str = "end") -> dict[str, list[int]]:
    """Per tag, the pids that reached ``phase`` ("start" or "end")."""
    found: dict[str, list[int]] = collections.defaultdict(list)
    for path in directory.glob(f"*.{phase}"):
        tag, pid, _ = path.name.rsplit(".", 2)
        found[tag].append(int(pid))
    return dict(found)


def raw_states(db: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """{job id: (state column, record JSON)} read with sqlite3 directly."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    try:
        rows = conn.execute("SELECT id, state, data FROM jobs").fetchall()
    finally:
        conn.close()
    return {str(i): (str(s), json.loads(d)) for i, s, d in rows}


def agent_pid(db: Path) -> int | None:
    """The pid of the live agent serving ``db`` (from its lock file), if any."""
    from jobkit.scheduler.daemon import agent_paths, listening

    paths = agent_paths(f"sqlite:{os.path.realpath(db)}", Path(f"{db}.d"))
    try:
        pid = int(paths.lock.read_text())
    except (OSError, ValueError):
        return None
    if not listening(paths.socket):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)


LOCAL: dict[str, Any] = {"cpus": 2, "max_jobs": 2, "idle_timeout": 30}
"""``[local]`` settings of the scenarios: two slots, an agent that idles out."""


def paths(tmp_path: Path) -> tuple[Path, Path]:
    """A scenario's store file and its (new) marker folder."""
    marks = tmp_path / "marks"
    marks.mkdir()
    return tmp_path / "jobkit.db", marks


def cli(db: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m jobkit ARGS`` against ``db`` as a separate process."""
    env = {**os.environ, "JOBKIT_STORE": f"sqlite:///{db}", "JOBKIT_BACKEND": "local"}
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> float:
    """Seconds until ``predicate()`` was true; AssertionError after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout:g} s")
        time.sleep(interval)
    return time.monotonic() - start


class Figures:
    """The figures of one scenario: lost, duplicated, stuck, time to settle."""

    def __init__(self, scenario: str, db: Path, marks: Path, tags: dict[str, str]) -> None:
        self.scenario, self.db, self.marks, self.tags = scenario, db, marks, tags

    def count(self, *, retried: Iterable[str] = ()) -> dict[str, Any]:
        """``tags``: {job id: tag}.  Lost: a job whose function finished (end
        marker) but whose row is not SUCCEEDED, or a row that is gone.
        Duplicated: more executions than allowed (``retried`` may run twice).
        Stuck: rows not terminal."""
        rows = raw_states(self.db)
        ends, starts = markers(self.marks, "end"), markers(self.marks, "start")
        allowed = set(retried)
        lost = [
            i
            for i, tag in self.tags.items()
            if tag in ends and rows.get(i, ("?",))[0] != "SUCCEEDED"
        ]
        duplicated = [
            i
            for i, tag in self.tags.items()
            if len(starts.get(tag, [])) > (2 if i in allowed else 1)
        ]
        stuck = [i for i in self.tags if rows.get(i, ("?",))[0] not in TERMINAL]
        states = collections.Counter(rows[i][0] if i in rows else "missing" for i in self.tags)
        return {
            "lost": len(lost),
            "duplicated": len(duplicated),
            "stuck": len(stuck),
            "states": dict(states),
            "lost_ids": lost[:5],
            "duplicated_ids": duplicated[:5],
        }


def report(scenario: str, **figures: Any) -> None:
    """One summary line on stdout (``pytest -s``), one JSON line to the report file."""
    emit(scenario, str(figures.pop("backend", "local")), **figures)


_SUBMIT = """
import json, sys
import jobkit
from jobkit_testing.faults import local as faults
db, marks, tags, seconds, local, resources, kw = json.loads(sys.argv[1])
with jobkit.use(store=f"sqlite:///{db}", backend="local", local=local):
    fn = jobkit.remote(**resources)(getattr(faults, kw.pop("function", "mark_and_sleep")))
    jobs = fn.map([marks] * len(tags), tags, [seconds] * len(tags), **kw)
    print(json.dumps({job.id: tag for job, tag in zip(jobs, tags)}))
"""


def submit_elsewhere(
    db: Path,
    marks: Path,
    tags: list[str],
    seconds: float,
    local: dict[str, Any],
    *,
    kw: dict[str, Any] | None = None,
    **resources: Any,
) -> dict[str, str]:
    """Submit ``mark_and_sleep`` jobs from a separate client process that then
    exits (so nothing in the test process watches them); {job id: tag}.
    ``kw``: keyword arguments for every call (``first_only``, ``fail``; ``mib``
    with ``function="sleep_then_hog"``)."""
    arg = json.dumps([str(db), str(marks), tags, seconds, local, resources, kw or {}])
    done = subprocess.run(
        [sys.executable, "-c", _SUBMIT, arg], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise AssertionError(f"submitter failed: {done.stderr}")
    ids: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return ids


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].split()[0] != "Z"


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``db`` (another writer, as a user's script would)."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def outcome_file(db: Path, job_id: str) -> Path | None:
    """The outcome blob a worker wrote for ``job_id``, if it exists."""
    path = Path(f"{db}.d", "blobs", "outcomes", job_id)
    return path if path.is_file() else None
