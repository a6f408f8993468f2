"""The four job runners compared, behind one small interface.

Every workload talks to a :class:`System`: ``call`` runs one job and waits
for its result, ``run_all`` runs many with the system's idiomatic bulk call.
Each system is created once per benchmark run and warmed up, so the
workloads measure steady-state cost; cold starts are measured separately.

* ``jobkit``      - jobkit's local backend (agent forks a worker per job),
                    on a throwaway SQLite store with ``local.cpus = 2``.
* ``pool``        - ``concurrent.futures.ProcessPoolExecutor(2)``: pre-started
                    workers, no isolation per job; the speed ceiling.
* ``floor``       - a fresh ``python`` per job (see ``floor_worker.py``),
                    two at a time: the floor for process-per-job designs.
* ``submitit``    - submitit's ``LocalExecutor``: also a process per job,
                    plus its own polling (``result()`` sleeps 1 s per check).
* ``ray``         - Ray local (``ray.init(num_cpus=2)``): a warm worker pool
                    and an in-memory object store, nothing persisted; the
                    speed jobkit's local backend aims at (issue 12).  Optional
                    (the ``bench`` extra): :func:`start_ray` says why it is absent.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cloudpickle

RESULT_TIMEOUT = 300.0
FLOOR_WORKER = Path(__file__).with_name("floor_worker.py")


class System(Protocol):
    key: str
    label: str

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as one job and return its result."""
        ...

    def run_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        """Run ``fn(item)`` for every item, the system's idiomatic bulk way."""
        ...

    def close(self) -> None: ...


class JobkitLocal:
    """jobkit's local backend on its own store, scoped with ``jobkit.use``."""

    key = "jobkit"
    label = "jobkit local"

    def __init__(self, workdir: Path, *, cpus: int = 2) -> None:
        import jobkit

        self._jobkit = jobkit
        self.store_url = f"sqlite:///{workdir}/jobkit.db"
        self._scope = contextlib.ExitStack()
        self._scope.enter_context(
            jobkit.use(store=self.store_url, local={"cpus": cpus, "idle_timeout": 120})
        )
        self._remotes: dict[Callable[..., Any], Any] = {}

    def _remote(self, fn: Callable[..., Any]) -> Any:
        if fn not in self._remotes:
            self._remotes[fn] = self._jobkit.remote(cpus=1)(fn)
        return self._remotes[fn]

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._remote(fn).submit(*args).result(RESULT_TIMEOUT)

    def run_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        """One ``map``: a single array submission."""
        return list(self._remote(fn).map(items).results(RESULT_TIMEOUT))

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        """One ``submit`` per item, then wait for all."""
        remote = self._remote(fn)
        jobs = [remote.submit(item) for item in items]
        return [job.result(RESULT_TIMEOUT) for job in jobs]

    def _backend(self) -> Any:
        from jobkit.context import current_client

        return current_client().backend("local")

    def agent_pid(self) -> int | None:
        """The agent's pid, from its lock file (an internal detail; best effort)."""
        try:
            return int(Path(self._backend().paths.lock).read_text().strip())
        except (OSError, ValueError, AttributeError):
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._backend().stop_agent()
        self._scope.close()


class Pool:
    """``ProcessPoolExecutor(2)``, warmed so both workers exist."""

    key = "pool"
    label = "ProcessPoolExecutor(2)"

    def __init__(self, workers: int = 2) -> None:
        self._pool = cf.ProcessPoolExecutor(workers)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.submit(fn, *args).result(RESULT_TIMEOUT)

    def run_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return list(self._pool.map(fn, items, timeout=RESULT_TIMEOUT))

    def close(self) -> None:
        self._pool.shutdown()


class SubprocessFloor:
    """A fresh interpreter per job, at most ``slots`` at a time."""

    key = "floor"
    label = "subprocess floor"

    def __init__(self, workdir: Path, *, slots: int = 2) -> None:
        self._dir = workdir
        self._dir.mkdir(parents=True, exist_ok=True)
        self._slots = slots

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        job_dir = Path(tempfile.mkdtemp(dir=self._dir))
        payload, result = job_dir / "payload.pkl", job_dir / "result.pkl"
        with open(payload, "wb") as f:
            cloudpickle.dump((fn, args), f)  # streams large buffers, no extra copy
        proc = subprocess.run(
            [sys.executable, str(FLOOR_WORKER), str(payload), str(result)],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"floor worker failed: {proc.stderr.decode(errors='replace')}")
        with open(result, "rb") as f:
            value = cloudpickle.load(f)
        for path in (payload, result):
            path.unlink()
        job_dir.rmdir()
        return value

    def run_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        with cf.ThreadPoolExecutor(self._slots) as threads:
            return list(threads.map(functools.partial(self.call, fn), items))

    def close(self) -> None:
        pass


class Submitit:
    """submitit's ``LocalExecutor``, its folder under the run's temp dir.

    LocalExecutor has no concurrency cap: ``update_parameters`` silently
    stores unknown keys such as ``array_parallelism`` and every submission
    starts its process at once.  :meth:`run_capped` therefore caps it from
    outside, with ``slots`` threads that each submit and wait in turn.
    """

    key = "submitit"
    label = "submitit LocalExecutor"

    def __init__(self, workdir: Path) -> None:
        import submitit

        self._executor = submitit.LocalExecutor(folder=str(workdir))
        self._executor.update_parameters(timeout_min=10)
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:  # submit is not documented as thread-safe
            job = self._executor.submit(fn, *args)
        return job.result()

    def run_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        """One ``map_array``: submitit starts every job at once."""
        jobs = self._executor.map_array(fn, items)
        return [job.result() for job in jobs]

    def run_capped(self, fn: Callable[..., Any], items: Iterable[Any], slots: int) -> list[Any]:
        with cf.ThreadPoolExecutor(slots) as threads:
            return list(threads.map(functools.partial(self.call, fn), items))

    def close(self) -> None:
        pass


RAY_MISSING = "ray not installed: pip install -e '.[bench]'"


class Ray:
    """Ray local with 2 CPUs: ``@ray.remote`` tasks of 1 CPU, ``ray.get`` of a list.

    Started once per benchmark run (``ray.init`` takes ~5 s and leaves a GCS,
    a raylet and idle workers running).  The dashboard, usage stats and the
    forwarding of worker logs are off: they are not part of a job's cost.
    ``tasks`` is pickled by value for Ray too (Ray vendors its own
    cloudpickle), so its workers need not import ``benchmarks/``.
    """

    key = "ray"
    label = "Ray local"

    def __init__(self, cpus: int = 2) -> None:
        import ray
        import ray.cloudpickle
        import tasks

        ray.cloudpickle.register_pickle_by_value(tasks)  # type: ignore[no-untyped-call]
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._ray = ray
        self.version: str = ray.__version__
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        self._remotes: dict[Callable[..., Any], Any] = {}

    def _remote(self, fn: Callable[..., Any]) -> Any:
        if fn not in self._remotes:
            self._remotes[fn] = self._ray.remote(num_cpus=1)(fn)
        return self._remotes[fn]

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._ray.get(self._remote(fn).remote(*args), timeout=RESULT_TIMEOUT)

    def run_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        """``ray.get([f.remote(i) for i in items])``: what a Ray user writes for a map."""
        remote = self._remote(fn)
        return list(self._ray.get([remote.remote(item) for item in items]))

    def close(self) -> None:
        self._ray.shutdown()


def start_ray(cpus: int = 2) -> tuple[Ray | None, str]:
    """A started :class:`Ray`, or None and the one line that says why not."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return None, RAY_MISSING
    try:
        return Ray(cpus), ""
    except Exception as exc:  # a broken install must not stop the other anchors
        first = (str(exc).strip().splitlines() or [""])[0]
        return None, f"ray failed to start: {type(exc).__name__}: {first}"


def isolated_env(home: Path) -> dict[str, str]:
    """The environment for jobkit processes: a private JOBKIT_HOME, no outer JOBKIT_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_")}
    env["JOBKIT_HOME"] = str(home)
    return env
