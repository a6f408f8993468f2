"""The local backend: jobs on this machine, through the local agent.

The client side only records jobs and talks to the agent
(:mod:`jobkit.scheduler.agent`) over a unix socket, in the messages of
:mod:`jobkit.scheduler.protocol`: ``configure`` with the machine settings
this client resolved (``[local]`` cpus, mem, gpus, max_jobs) and ``wake``,
in one send after every submit, so an agent started by an earlier client
with other settings reloads them (the latest submitter wins),
``cancel`` for running jobs.  It starts the agent on demand, in its own
session so that it outlives this process, and keeps one connection open on
which the agent pushes "done" events; those poke the client's monitor, which
is what brings a trivial job's submit-to-result latency to a few
milliseconds without polling.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jobkit.backends.base import Accepted, Backend, BackendServices, Observation
from jobkit.errors import BackendError, ConfigError
from jobkit.scheduler.protocol import AgentSettings, LineReader, Op, decode_event, encode_request
from jobkit.states import JobRecord

if TYPE_CHECKING:
    from jobkit.config import Config, LocalConfig
    from jobkit.resources import Resources
    from jobkit.scheduler.daemon import AgentPaths
    from jobkit.scheduler.policy import Capacity

AGENT_START_TIMEOUT = 15.0


class LocalBackend(Backend):
    name = "local"
    pushes_completions = True
    sparse_arrays = True  # the agent runs jobs by id

    def __init__(self, settings: LocalConfig, services: BackendServices) -> None:
        super().__init__(settings, services)
        if not self.store.shared_across_processes:
            raise ConfigError(
                f"store {self.store.url} lives in one process, but local jobs run in "
                "their own processes: use a shared store such as 'sqlite:///path/jobkit.db'"
            )
        from jobkit.paths import home_dir
        from jobkit.scheduler.daemon import agent_paths

        local = settings
        self.agent_settings: AgentSettings = AgentSettings(
            store=self.store.url,
            cpus=local.cpus,
            mem=local.mem,
            gpus=local.gpus,
            max_jobs=local.max_jobs,
            idle_timeout=local.idle_timeout,
            start_method=local.resolved_start_method,
        )
        self.log_dir = self.store.local_dir or home_dir()
        self.paths: AgentPaths = agent_paths(self.store.identity, self.log_dir)
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._envs_written: set[str] = set()
        self._last_env: tuple[dict[str, str], str] | None = None
        self._capacity: Capacity | None = None

    @classmethod
    def settings_from(cls, config: Config) -> LocalConfig:
        return config.local

    # -- resources -------------------------------------------------------------
    def capacity(self) -> Capacity:
        from jobkit.scheduler.machine import machine_capacity

        if self._capacity is None:
            s = self.agent_settings
            self._capacity = machine_capacity(
                cpus=s.cpus, mem=s.mem, gpus=s.gpus, max_jobs=s.max_jobs
            )
        return self._capacity

    def check_resources(self, resources: Resources) -> None:
        from jobkit.scheduler.policy import Request, never_fits

        if resources.nodes > 1:
            raise ConfigError(
                f"invalid resource nodes={resources.nodes} for the local backend: "
                "this machine is one node; use backend='slurm' or 'kubernetes'"
            )
        request = Request(
            job_id="?",
            cpus=float(resources.cpus),
            mem=int(resources.mem or 0),
            gpus=float(resources.gpus or 0),
            gpu_type=resources.gpu_type,
        )
        why = never_fits(request, self.capacity())
        if why is not None:
            raise ConfigError(
                f"the local backend cannot run this job: it {why}; "
                "ask for less, or declare the machine's resources in [local] config"
            )

    def prepare(self, records: Sequence[JobRecord], resources: Resources) -> None:
        env_ref = self._store_env()
        cwd = os.getcwd()
        machine = socket.gethostname()
        for record in records:
            record.extra["env"] = env_ref
            record.extra["cwd"] = cwd
            record.extra["machine"] = machine  # only this machine's agent runs it

    def _store_env(self) -> str:
        """The submitter's environment, stored once per distinct content."""
        from jobkit.serialization import seal_json

        env = dict(os.environ)
        if self._last_env is not None and env == self._last_env[0]:
            return self._last_env[1]  # unchanged since the last submit: no hashing
        blob = json.dumps(env, sort_keys=True).encode()
        ref = hashlib.sha256(blob).hexdigest()[:32]
        self._last_env = (env, ref)
        if ref not in self._envs_written:
            self.store.put_blob(
                f"envs/{ref}", seal_json(env, key=self.services.key(), kind="env", ident=ref)
            )
            self._envs_written.add(ref)
        return ref

    # -- talking to the agent ----------------------------------------------------
    def submit(self, records: Sequence[JobRecord], resources: Resources) -> list[Accepted]:
        """Wake the agent: it takes PENDING jobs from the store and records them QUEUED.

        The machine this client declared goes first, in the same send: the
        agent reads both in order, so it judges these jobs by this client's
        settings, not by the ones it started with (and one that finds them
        by its periodic rescan first reads what is waiting on its sockets
        before it refuses a job that does not fit)."""
        configure = encode_request(
            Op.CONFIGURE, machine=self.agent_settings.machine(), pid=os.getpid()
        )
        self._send(configure + encode_request(Op.WAKE))
        return []

    def can_hold(
        self, records: Sequence[JobRecord], dependencies: Mapping[str, Sequence[JobRecord]]
    ) -> bool:
        """Always: the agent keeps jobs whose dependencies have not succeeded
        out of its queue, and admits or fails them as those end (its own jobs'
        ends, and a periodic look for dependencies on other backends)."""
        return True

    def release(self, records: Sequence[JobRecord]) -> None:
        """Wake the agent: it sees released dependencies itself, sooner."""
        self._send(encode_request(Op.WAKE))

    def cancel(self, records: Sequence[JobRecord]) -> None:
        self._send(encode_request(Op.CANCEL, ids=[r.id for r in records]), start=False)

    def observe(self, records: Sequence[JobRecord]) -> Mapping[str, Observation]:
        """Nothing to report: the agent, this backend's scheduler, watches its
        workers and settles their ends through the reconciler itself.  What the
        client can do is make sure one is alive: jobs of this machine waiting
        with none (it idled out or died) start one.  Other machines' local jobs
        in a shared store are left to their own agents."""
        from jobkit.scheduler.machine import submitted_here

        host, local = socket.gethostname(), self.store.local_dir is not None
        mine = [r for r in records if submitted_here(r.extra, host, store_is_local=local)]
        if mine and not self._agent_alive():
            self._send(encode_request(Op.WAKE))
        return {}

    def _agent_alive(self) -> bool:
        with self._lock:
            if self._conn is not None:
                return True
        try:
            self._connect()
        except OSError:
            return False
        return True

    def _send(self, data: bytes, *, start: bool = True) -> None:
        """Send one encoded request, starting the agent if ``start`` and none listens."""
        for _attempt in range(3):
            try:
                conn = self._connection(start=start)
                if conn is None:
                    return
                conn.sendall(data)
                return
            except OSError:
                self._reset()
        raise BackendError(
            f"cannot reach the local agent at {self.paths.socket}; see {self.paths.log}"
        )

    def _connection(self, *, start: bool) -> socket.socket | None:
        with self._lock:
            if self._conn is not None:
                return self._conn
        try:
            return self._connect()
        except OSError:
            if not start:
                return None
        self._start_agent()
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        while True:
            try:
                return self._connect()
            except OSError:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"the local agent did not start within {AGENT_START_TIMEOUT:g} s; "
                        f"see its log at {self.paths.log}"
                    ) from None
                time.sleep(0.005)

    def _connect(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(self.paths.socket))
        except OSError:
            conn.close()
            raise
        with self._lock:
            if self._conn is not None:
                conn.close()
                return self._conn
            self._conn = conn
        threading.Thread(
            target=self._listen, args=(conn,), name="jobkit-agent-events", daemon=True
        ).start()
        return conn

    def _reset(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def _listen(self, conn: socket.socket) -> None:
        """Agent events ("done") poke the monitor; EOF means the agent left."""
        poke = self.services.poke
        reader = LineReader()
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                ids = [decode_event(line) for line in reader.feed(data)]
                poke([job_id for job_id in ids if job_id is not None])
        with self._lock:
            if self._conn is conn:
                self._conn = None

    def _start_agent(self) -> None:
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = dict(os.environ)
        env["JOBKIT_KEY"] = self.services.key().hex()
        with open(self.paths.log, "ab") as log:
            os.chmod(self.paths.log, 0o600)
            launcher = subprocess.Popen(
                [sys.executable, "-m", "jobkit.scheduler.agent", self.agent_settings.to_json()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        launcher.wait(timeout=AGENT_START_TIMEOUT)  # exits as soon as the agent forked off

    def stop_agent(self, timeout: float = 10.0) -> None:
        """Stop the agent (killing its jobs); for tests and `jobkit agent stop`."""
        try:
            self._send(encode_request(Op.STOP), start=False)
        except BackendError:
            return
        deadline = time.monotonic() + timeout
        while self.paths.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._reset()

    def plan(
        self,
        resources: Resources,
        *,
        checkpointable: bool = False,
        name: str | None = None,
        after: Sequence[str] = (),
    ) -> str:
        """What the local agent would do with such a job."""
        cap = self.capacity()
        lines = [
            f"# job {name or resources.name or 'JOB'}: local agent for {self.store.url} "
            f"(socket {self.paths.socket})",
            f"# machine: cpus={cap.cpus:g} mem={cap.mem} gpus={list(cap.gpus) or 'none'}"
            + (f" max_jobs={cap.max_jobs}" if cap.max_jobs else ""),
            f"# request: {resources.to_record()}",
            f"# start method: {self.agent_settings.start_method} "
            "(own session and process group; stdout/stderr to the store's logs/)",
        ]
        method = self.agent_settings.start_method
        if method == "warm" and resources.isolate:
            method = "fork"
            lines.append("# isolate=True: a process of its own, never shared with other jobs")
        elif method == "warm":
            lines.append(
                "# warm: runs in a reused worker process (same environment and cpus); "
                "isolate=True for a fresh one"
            )
        if after:
            lines.append(f"# held by the agent until {', '.join(after)} succeed")
        if resources.time is not None:
            lines.append(f"# time limit: SIGTERM at {resources.time}, SIGKILL 3 s later")
        if resources.mem:
            lines.append(f"# memory limit: killed (OOM) above {resources.mem} bytes of RSS")
        worker = f"{sys.executable} -m jobkit.worker --store {self.store.url} JOB_ID"
        if method == "warm":
            lines.append(f"warm worker -> jobkit.worker.run_job (as {worker})")
        else:
            lines.append(worker if method == "spawn" else f"fork() -> {worker}")
        return "\n".join(lines) + "\n"

    # -- logs ----------------------------------------------------------------------
    def read_logs(self, record: JobRecord, stream: str) -> str:
        suffix = "out" if stream == "stdout" else "err"
        path = Path(record.extra.get(stream) or self.log_dir / "logs" / f"{record.id}.{suffix}")
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
