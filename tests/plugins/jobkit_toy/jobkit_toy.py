"""A toy third-party jobkit backend: one ``python -m jobkit.worker`` per job.

It exists to prove that a backend outside jobkit, installed as its own
distribution and found through the ``jobkit.backends`` entry-point group,
can implement the Backend contract honestly and pass the conformance suite.
Its settings come from the ``[backends.toy]`` config table, validated by
:class:`ToySettings`.

It never writes a job's state: like every backend it returns what it
accepted and reports what it saw, and jobkit's reconciler records it.
Data flow::

    submit(records) ──► [Accepted("toy-N")] (jobkit records QUEUED) ──► launcher thread
        launcher: at most ``max_parallel`` workers; a job cancelled meanwhile is skipped
        worker process: RUNNING → SUCCEEDED | FAILED/ERROR | QUEUED (retry)
        watcher: past ``resources.time`` → kill, report ENDED with hint TIMEOUT;
                 resident memory past ``resources.mem`` → kill, report ENDED with hint OOM;
                 requeued by the worker → launch the next attempt;
                 exited without a terminal state → report ENDED (LOST)
    observe(records) ──► RUNNING for the jobs it runs now

Jobs live as long as the submitting process (it is a toy): ``observe``
says nothing of jobs it did not launch, so another process may wait for them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from jobkit.backends import backend_settings
from jobkit.backends.base import Accepted, Backend, BackendServices, Observation
from jobkit.errors import ConfigError
from jobkit.observation import Phase
from jobkit.states import FailureReason, JobRecord, JobState

TERMINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class ToySettings(BaseModel):
    """``[backends.toy]``: how many workers may run at once, and which Python."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_parallel: int = Field(default=4, ge=1, strict=True)
    python: str = sys.executable


class ToyBackend(Backend):
    name = "toy"
    sparse_arrays = True  # one worker process per job id: any subset of a map runs
    submissions: ClassVar[int] = 0
    """Calls of ``submit`` in this process, all instances: a map must add one."""

    settings: ToySettings

    def __init__(self, settings: ToySettings, services: BackendServices) -> None:
        super().__init__(settings, services)
        self.log_dir = Path(self.store.local_dir or os.environ.get("JOBKIT_HOME", "/tmp")) / "toy"
        self._queue: list[tuple[JobRecord, float | None, int | None]] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._timed_out: set[str] = set()
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._launcher: threading.Thread | None = None

    @classmethod
    def settings_from(cls, config: Any) -> ToySettings:
        return backend_settings(config, "toy", ToySettings)

    @classmethod
    def available(cls, settings: ToySettings) -> tuple[bool, str]:
        return True, "available (toy plugin: one worker process per job, on this machine)"

    def check_resources(self, resources: Any) -> None:
        if resources.nodes > 1 or (resources.gpus or 0) > 0:
            raise ConfigError(
                f"invalid resources nodes={resources.nodes}, gpus={resources.gpus} for the "
                "toy backend: it runs one process on this machine without GPUs; "
                "use backend='local', 'slurm' or 'kubernetes'"
            )

    def submit(self, records: Sequence[JobRecord], resources: Any) -> list[Accepted]:
        type(self).submissions += 1
        limit = resources.time.total_seconds() if resources.time else None
        accepted = [Accepted(r.id, f"toy-{os.getpid()}-{next(self._ids)}") for r in records]
        with self._lock:
            self._queue.extend((r, limit, resources.mem) for r in records)
            self._lock.notify_all()
            if self._launcher is None or not self._launcher.is_alive():
                self._launcher = threading.Thread(
                    target=self._launch_loop, name="jobkit-toy-launcher", daemon=True
                )
                self._launcher.start()
        return accepted

    def observe(self, records: Sequence[JobRecord]) -> Mapping[str, Observation]:
        with self._lock:
            running = set(self._procs)
        return {r.id: Observation("running", Phase.RUNNING) for r in records if r.id in running}

    def _launch_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue or len(self._procs) >= self.settings.max_parallel:
                    if not self._lock.wait(timeout=30) and not self._queue:
                        self._launcher = None  # under the lock: submit starts a new one
                        return
                record, limit, mem = self._queue.pop(0)
            current = self.store.get(record.id)
            if current.state in TERMINAL:
                continue
            self._start(current, limit, mem)

    def _start(self, record: JobRecord, limit: float | None, mem: int | None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "JOBKIT_KEY": self.services.key().hex(),
        }
        with (
            open(self._log(record, "stdout"), "ab") as out,
            open(self._log(record, "stderr"), "ab") as err,
        ):
            proc = subprocess.Popen(
                [self.settings.python, "-m", "jobkit.worker", record.id, "--store", self.store.url],
                stdout=out,
                stderr=err,
                env=env,
                cwd=os.getcwd(),
                start_new_session=True,
            )
        with self._lock:
            self._procs[record.id] = proc
        threading.Thread(target=self._watch, args=(record, proc, limit, mem), daemon=True).start()

    def _watch(
        self, record: JobRecord, proc: subprocess.Popen[bytes], limit: float | None, mem: int | None
    ) -> None:
        timed_out = False
        over: int | None = None
        deadline = None if limit is None else time.monotonic() + limit
        try:
            while proc.poll() is None:
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    break
                rss = _rss(proc.pid)
                if mem and rss > mem:
                    over = rss
                    break
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        finally:
            with self._lock:
                self._procs.pop(record.id, None)
                self._lock.notify_all()
        after = self.store.get(record.id)
        if after.state is JobState.QUEUED and after.attempt > record.attempt and not timed_out:
            with self._lock:  # the worker requeued a failed attempt: run the next one
                self._queue.append((after, limit, mem))
                self._lock.notify_all()
        elif after.state not in TERMINAL:
            if over is not None:
                seen = Observation(
                    "KILLED_OVER_MEMORY",
                    Phase.ENDED,
                    FailureReason.OOM,
                    f"used {over >> 20} MiB, more than its mem of {(mem or 0) >> 20} MiB",
                    exit_code=proc.returncode,
                )
            elif timed_out:
                seen = Observation(
                    "KILLED_AT_TIME_LIMIT",
                    Phase.ENDED,
                    FailureReason.TIMEOUT,
                    f"ran past its time limit of {limit:g} s",
                    exit_code=proc.returncode,
                )
            else:
                seen = Observation(
                    f"EXITED_{proc.returncode}",
                    Phase.ENDED,
                    message=f"the worker exited with {proc.returncode} without recording an end",
                    exit_code=proc.returncode,
                )
            self.services.report([after], {after.id: seen})

    def cancel(self, records: Sequence[JobRecord]) -> None:
        with self._lock:
            procs = [self._procs.get(r.id) for r in records]
        for proc in procs:
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def read_logs(self, record: JobRecord, stream: str) -> str:
        path = self._log(record, stream)
        return path.read_text(errors="replace") if path.exists() else ""

    def _log(self, record: JobRecord, stream: str) -> Path:
        return self.log_dir / f"{record.id}.{'err' if stream == 'stderr' else 'out'}"

    def close(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def _rss(pid: int) -> int:
    """Resident bytes of ``pid`` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
