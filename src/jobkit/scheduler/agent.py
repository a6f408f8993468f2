"""The local agent: a single-node cluster manager, one per store and user.

Clients never start jobs themselves.  They record jobs as PENDING and poke
the agent, which outlives them (a notebook kernel restart neither kills nor
orphans a job) and exits after ``idle_timeout`` seconds with nothing to do.

Data flow::

    client ──put payload, create PENDING──► store ◄──────────────┐
      │                                       │                  │
      └─"wake"/"cancel" over unix socket─► agent                 │
                                              │ query PENDING/QUEUED
                                              │ policy.plan(): priority, DRF, fit, GPUs
                                              │ CAS → RUNNING (claim)
                                              ▼                  │
                   the fork server forks a worker (or spawn) │
                            (own session and process group;      │
                             CUDA_VISIBLE_DEVICES; logs; pid file)│
                                              │ worker.run_job ──┘ outcome, terminal state
                                              ▼
                  pidfd readable ─► waitpid ─► release resources
                         │   no terminal state? outcome written: record it;
                         │   else record TIMEOUT / OOM / LOST
                         └─► "done" event to every connected client

Jobs with dependencies not yet succeeded (``extra["held"]``, see
:mod:`jobkit.dependencies`) are recorded QUEUED but kept out of the wait
queue, in ``held``: each scheduling round while some are held (this agent's
own jobs' ends wake it), and every :data:`HELD_RECHECK` seconds for
dependencies on other backends, one batched read of their dependencies'
states admits them (``extra["released_at"]``) or fails them DEPENDENCY.
Jobs without dependencies never cost a read for it.

Machine settings (cpus, mem, gpus, max_jobs) come from the client that
starts the agent, and every later submitter sends its own ("configure")
before it records jobs: the agent reloads them in place, so the latest
submitter's settings apply (logged in the agent log).  Running jobs keep
their allocations; queued jobs are admitted under the new capacity, and one
that can never fit it fails (SUBMIT_ERROR) rather than wait forever.

One thread, one selector: the listening socket, client connections and a
pidfd per child.  Timers (time limits, SIGTERM→SIGKILL escalation, memory
checks, a periodic rescan that catches missed pokes and cancels made while
the agent was busy) run between selects.  Workers are forked by a fork server
(:mod:`~jobkit.scheduler.forkserver`) that was started before the agent
opened the store, so no worker inherits the agent's SQLite state; forking an
interpreter that already imported jobkit is what puts a trivial job's
latency well under a fresh interpreter's.  The agent is a child subreaper,
so those workers are its children all the same (exit codes, pidfds).

If the agent dies, its workers run on.  The next agent adopts those still
alive (pid and start time in ``logs/<job>.pid``: a reused pid is not
mistaken), records the outcome a dead worker wrote but could not record
(:func:`jobkit.reconcile.settle_from_outcome`), and calls LOST only a job
whose worker is gone without one.

Around this module: :mod:`~jobkit.scheduler.protocol` (the messages on the
socket, shared with the client), :mod:`~jobkit.scheduler.launch` (fork or
spawn one worker), :mod:`~jobkit.scheduler.daemon` (one agent per store,
detached, socket and lock file), :mod:`~jobkit.scheduler.policy` (who runs
next) and :mod:`~jobkit.scheduler.machine` (what the machine offers).  What
remains here is the loop and job supervision (time limits, memory, reaping,
recovery after a restart); it is over 500 lines because those share the
loop's state (the running set, the ledger, the selector) and splitting them
would pass that state around instead of owning it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from jobkit.dependencies import FAILED_DEPENDENCY, RELEASED, is_held, states_of, verdict
from jobkit.errors import JobkitError
from jobkit.reconcile import Failure, fail, settle, settle_from_outcome
from jobkit.scheduler.daemon import (
    AgentPaths,
    acquire_lock,
    agent_paths,
    close_listener,
    daemonize,
    detach_from_terminal,
    open_listener,
    release_lock,
)
from jobkit.scheduler.forkserver import ForkServer, become_subreaper
from jobkit.scheduler.launch import WorkerIO, spawn_worker
from jobkit.scheduler.machine import group_rss, machine_capacity, oom_kill_count, submitted_here
from jobkit.scheduler.pidfile import read_pidfile, same_process, write_pidfile
from jobkit.scheduler.policy import (
    Allocation,
    Capacity,
    Ledger,
    Request,
    WaitQueue,
    never_fits,
    plan,
)
from jobkit.scheduler.pool import WarmWorker, WorkerPool
from jobkit.scheduler.protocol import (
    MACHINE_FIELDS,
    AgentSettings,
    Event,
    LineReader,
    Op,
    decode_request,
    encode_event,
    encode_frame,
    encode_status,
)
from jobkit.states import FailureReason, JobRecord, JobState
from jobkit.stores.base import Change, Store, outcome_key
from jobkit.usage import split_end

QUEUE_STATES = (JobState.PENDING, JobState.QUEUED)
HELD_RECHECK = 1.0  # seconds between looks at held jobs' dependencies on other backends
RELOAD_INTERVAL = 30.0  # seconds between full re-reads of the waiting queue
OOM_READ_EVERY = 0.1  # seconds a reading of the OOM killer's counter is reused
AHEAD_IF_SHORTER = 0.005
AHEAD_DEPTH = 4
"""A warm worker whose last job took less than ``AHEAD_IF_SHORTER`` seconds is
sent up to ``AHEAD_DEPTH`` next jobs while it runs the current one, so it never
waits for the agent between short jobs (with one ahead, a worker that ran two
trivial jobs before the agent heard of the first went idle: 1,160 jobs/s;
two: 1,250-1,390; four: 1,440-1,475, on 2 cores).  A job sent ahead is
claimed (RUNNING) when sent, so while its predecessors run as short as the
last one did it shows RUNNING about ``AHEAD_DEPTH * AHEAD_IF_SHORTER`` (20 ms)
before it starts; the worker reports when it really started, which its end
records, and its time limit counts from then."""
FLUSH_EVERY = 0.002
"""Seconds between two sends of events to clients while jobs end in a stream:
one send (and one wake-up of every client) per burst instead of per job.  A
job ending after a quiet spell is announced at once."""


@dataclasses.dataclass
class Running:
    record: JobRecord
    pid: int
    alloc: Allocation
    started: float
    pidfd: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    adopted: bool = False
    deadline: float | None = None
    mem_limit: int = 0
    kill_reason: FailureReason | None = None
    kill_message: str | None = None
    escalate_at: float | None = None
    oom_before: int | None = None
    worker: WarmWorker | None = None
    """The warm worker running it (None: a process of its own)."""
    waiting: bool = False
    """Sent ahead to a busy warm worker, which starts it after its current job."""


def request_of(record: JobRecord) -> Request:
    res = record.resources
    return Request(
        job_id=record.id,
        owner=record.owner,
        priority=record.priority,
        created_at=record.created_at,
        cpus=float(res.get("cpus", 1) or 0),
        mem=int(res.get("mem") or 0),
        gpus=float(res.get("gpus") or 0),
        gpu_type=res.get("gpu_type"),
    )


class Agent:
    """Schedules and supervises local jobs; see the module docstring."""

    def __init__(
        self,
        store: Store,
        key: bytes,
        settings: AgentSettings,
        paths: AgentPaths,
        capacity: Capacity,
    ) -> None:
        self.store = store
        self.key = key
        self.settings = settings
        self.paths = paths
        self.ledger = Ledger(capacity)
        self.host = socket.gethostname()
        self.sel = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.conns: dict[socket.socket, LineReader] = {}
        self.running: dict[str, Running] = {}
        self.dirty = True
        self.queue: dict[str, JobRecord] = {}
        self.waiting = WaitQueue()
        self.held: dict[str, JobRecord] = {}  # waiting on dependencies, out of the queue
        self.held_checked = 0.0
        self.unaccepted: list[str] = []  # PENDING jobs read this round, to record QUEUED
        self.outbox: list[bytes] = []  # events for every client, sent once per loop
        self.ends: list[tuple[Change, WarmWorker]] = []  # successes workers handed over
        self.acks: dict[WarmWorker, list[str]] = {}  # committed ends a worker still holds
        self.reload_queue = True
        self.next_reload = time.monotonic() + RELOAD_INTERVAL
        self.fetch_new = False
        self.stopping = False
        self.last_activity = time.monotonic()
        self.next_rescan = 0.0
        self.next_memory = 0.0
        self.log_dir = paths.log.parent / "logs"
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env_cache: dict[str, dict[str, str]] = {}
        self.worker_keys: dict[tuple[Any, ...], tuple[dict[str, str], str]] = {}
        self.oom_read_at = -OOM_READ_EVERY
        self.oom_seen: int | None = None
        self.flushed_at = 0.0
        self.lock_fd = -1
        self.forkserver: ForkServer | None = None
        self.pool: WorkerPool | None = None

    # -- lifecycle -------------------------------------------------------------
    def serve(self) -> None:
        self._listen()
        self._recover()
        while True:
            self._loop_once()
            if self.stopping:
                break
            if self._idle():
                self._close_listener()
                # A client may have recorded work just before we stopped listening.
                if self._waiting() or self.running:
                    self._listen()
                    continue
                break
        self._shutdown()

    def _loop_once(self) -> None:
        timeout = self._next_timeout()
        for key, _mask in self.sel.select(timeout):
            key.data(key.fileobj)
        now = time.monotonic()
        self._timers(now)
        if self.held and now >= self.held_checked + HELD_RECHECK:
            self.dirty = True  # dependencies on other backends end without telling us
        if self.dirty:
            self.dirty = False
            self._schedule()
        if self.ends:
            self._commit([])
        if now - self.flushed_at >= FLUSH_EVERY or not self.running:
            self._flush_events()

    def _idle(self) -> bool:
        return (
            not self.running and time.monotonic() - self.last_activity > self.settings.idle_timeout
        )

    def _next_timeout(self) -> float:
        now = time.monotonic()
        wakeups = [self.next_rescan, self.last_activity + self.settings.idle_timeout + 0.01]
        if self.held:
            wakeups.append(self.held_checked + HELD_RECHECK)
        if self.outbox or self.acks:
            wakeups.append(self.flushed_at + FLUSH_EVERY)
        for run in self.running.values():
            if run.deadline is not None:
                wakeups.append(run.deadline)
            if run.escalate_at is not None:
                wakeups.append(run.escalate_at)
            if run.mem_limit:
                wakeups.append(self.next_memory)
        return max(0.0, min(wakeups) - now)

    def _listen(self) -> None:
        listener = open_listener(self.paths.socket)
        self.listener = listener
        self.sel.register(listener, selectors.EVENT_READ, self._accept)

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.sel.unregister(self.listener)
            close_listener(self.listener, self.paths.socket)
            self.listener = None

    def _shutdown(self) -> None:
        self._flush_events()
        self._close_listener()
        for conn in list(self.conns):
            self._drop(conn)
        if self.stopping:
            for run in list(self.running.values()):
                self._kill(run, signal.SIGKILL, None, None)
        if self.pool is not None:  # idle workers exit on EOF; busy ones after their job
            for worker in list(self.pool.all.values()):
                self.pool.close(worker)

    # -- clients ---------------------------------------------------------------
    def _accept(self, listener: Any) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.conns[conn] = LineReader()
        self.sel.register(conn, selectors.EVENT_READ, self._read)
        self.last_activity = time.monotonic()

    def _read(self, conn: Any) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        for line in self.conns[conn].feed(data):
            self._handle(conn, line)
        self.last_activity = time.monotonic()

    def _handle(self, conn: socket.socket, line: bytes) -> None:
        request = decode_request(line)
        if request is None:
            return
        if request.op is Op.CONFIGURE:
            self._configure(request.machine, request.pid)
        elif request.op is Op.WAKE:
            self.dirty = self.fetch_new = True
        elif request.op is Op.CANCEL:
            self._cancel(request.ids)
        elif request.op is Op.PING:
            status = encode_status(os.getpid(), list(self.running), self.settings.machine())
            self._send(conn, status)
        elif request.op is Op.STOP:
            self.stopping = True

    def _configure(self, machine: Any, client_pid: Any) -> None:
        """Adopt the machine settings a submitter resolved (the latest one wins).

        Reloaded in place: running jobs keep their allocations (the ledger
        may be over the new capacity until they end), queued jobs are
        admitted under the new capacity, and a queued job that can never fit
        it fails now with the reason instead of waiting forever.
        """
        if not isinstance(machine, dict) or set(machine) != set(MACHINE_FIELDS):
            return
        if machine == self.settings.machine():
            return
        try:
            capacity = machine_capacity(**machine)
        except (TypeError, ValueError) as exc:
            print(f"agent: ignoring machine settings {machine}: {exc}", file=sys.stderr)
            return
        before = self.settings.machine()
        for name, value in machine.items():
            setattr(self.settings, name, value)
        self.ledger.capacity = capacity
        self.worker_keys.clear()  # CUDA_VISIBLE_DEVICES depends on the machine's GPUs
        who = f"client pid {client_pid}" if client_pid else "a client"
        print(
            f"agent: machine settings changed by {who}: {_describe(machine)} "
            f"(were {_describe(before)}); the latest submitter's settings apply; "
            f"now {capacity}",
            file=sys.stderr,
            flush=True,
        )
        for request in self.waiting:
            why = never_fits(request, capacity)
            if why is not None:
                job_id = request.job_id
                self._unqueue(job_id)
                self._refuse(
                    job_id, f"job {why} (machine settings changed by {who} while it was queued)"
                )
        self.dirty = True

    def _refuse(self, job_id: str, message: str) -> None:
        """Fail a waiting job that can never fit this machine (SUBMIT_ERROR)."""
        failed = fail(
            self.store, job_id, Failure(FailureReason.SUBMIT_ERROR, message), expect=QUEUE_STATES
        )
        if failed is not None:
            self._broadcast(encode_event(Event.DONE, job_id))

    def _read_clients_now(self) -> None:
        """Handle client messages already sent, without waiting.

        A submitter sends its machine settings before it records its jobs,
        so reading what is waiting on the sockets *after* the store query
        that found a job sees the settings that job was submitted under.
        """
        for _round in range(8):
            ready = [
                key
                for key, _mask in self.sel.select(0)
                if key.fileobj is self.listener or key.fileobj in self.conns
            ]
            if not ready:
                return
            for key in ready:
                key.data(key.fileobj)

    def _send(self, conn: socket.socket, line: bytes) -> None:
        try:
            conn.send(line)
        except OSError:
            self._drop(conn)

    def _broadcast(self, line: bytes) -> None:
        """Queue an event for every client; sent at the end of the loop turn,
        so a burst of ends costs one send per client, not one per job."""
        self.outbox.append(line)

    def _flush_events(self) -> None:
        if not (self.outbox or self.acks):
            return
        self.flushed_at = time.monotonic()
        if self.acks and self.pool is not None:
            for worker, ids in self.acks.items():
                self.pool.acknowledge(worker, ids)
            self.acks = {}
        if not self.outbox:
            return
        data, self.outbox = b"".join(self.outbox), []
        for conn in list(self.conns):
            self._send(conn, data)

    def _drop(self, conn: socket.socket) -> None:
        if conn in self.conns:
            del self.conns[conn]
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn)
            conn.close()

    # -- scheduling ------------------------------------------------------------
    def _waiting(self, states: Collection[JobState] = QUEUE_STATES) -> list[JobRecord]:
        """Local jobs submitted on this machine waiting in ``states``, oldest first.

        A store shared between machines (S3) holds other machines' local jobs
        too; they are theirs to run (``extra["machine"]``, set at submit).
        """
        waiting = self.store.query(states=states, backend="local", oldest_first=True)
        local = self.store.local_dir is not None
        return [r for r in waiting if submitted_here(r.extra, self.host, store_is_local=local)]

    def _schedule(self) -> None:
        """Start what fits.  The waiting queue lives in memory: a wake fetches
        only new PENDING jobs, the periodic rescan reloads it whole (dropping
        jobs cancelled meanwhile), so a long queue is not re-read per event;
        and a :class:`WaitQueue` plans without sorting it."""
        if self.reload_queue:
            self.reload_queue = self.fetch_new = False
            self.queue, self.waiting, self.unaccepted = {}, WaitQueue(), []
            self.held = {}
            self._enqueue(self._waiting(QUEUE_STATES))
        elif self.fetch_new:
            self.fetch_new = False
            self._enqueue(self._waiting((JobState.PENDING,)))
        if self.held:
            self._check_held()
        if not self.queue:
            self._accept_waiting()
            return
        self.last_activity = time.monotonic()
        started = plan(self.waiting, self.ledger)
        ahead = self._plan_ahead() if self.waiting else []
        if started or ahead:
            self._start(started, ahead)
        self._accept_waiting()

    def _plan_ahead(self) -> list[tuple[Allocation, WarmWorker]]:
        """Jobs to send ahead to busy warm workers (see :data:`AHEAD_IF_SHORTER`):
        the head of the queue, when it asks for exactly what the worker's
        current job holds (no GPUs) and would run on a worker of that key."""
        if self.pool is None:
            return []
        ahead: list[tuple[Allocation, WarmWorker]] = []
        for worker in list(self.pool.all.values()):
            if worker.job is None or worker.retiring:
                continue
            if worker.last_took is None or worker.last_took >= AHEAD_IF_SHORTER:
                continue
            current = self.running.get(worker.job)
            if current is None or current.alloc.gpu_share:
                continue
            while len(worker.ahead) < AHEAD_DEPTH:
                request = self.waiting.peek()
                if request is None or (request.cpus, request.mem, request.gpus) != (
                    current.alloc.cpus,
                    current.alloc.mem,
                    0.0,
                ):
                    break
                record = self.queue[request.job_id]
                if record.resources.get("isolate"):
                    break
                if self._key_of(record, current.alloc) != worker.key:
                    break
                self.waiting.remove(request.job_id)
                alloc = Allocation(request.job_id, request.owner, request.cpus, request.mem, ())
                worker.ahead.append(request.job_id)  # reserved now; sent once claimed
                ahead.append((alloc, worker))
        return ahead

    def _accept_waiting(self) -> None:
        """Record QUEUED for the PENDING jobs that did not start at once (one commit)."""
        ids = [i for i in self.unaccepted if i in self.queue or i in self.held]
        self.unaccepted = []
        if not ids:
            return
        now, backend_id = time.time(), f"local:{self.host}"
        fields = {"submitted_at": now, "backend_id": backend_id}
        pending = (JobState.PENDING,)
        changes = [Change(i, JobState.QUEUED, expect=pending, fields=fields) for i in ids]
        for job_id, accepted in zip(ids, self.store.transition_many(changes), strict=True):
            if job_id in self.held:
                if accepted is None:
                    self.held.pop(job_id)  # cancelled meanwhile
                else:
                    self.held[job_id] = accepted
            elif accepted is None:
                if self.queue[job_id].state is JobState.PENDING:
                    self._unqueue(job_id)  # cancelled meanwhile
            else:
                self.queue[job_id] = accepted

    def _check_held(self) -> None:
        """Admit the held jobs whose dependencies all succeeded (marked
        released in the store), and fail those with a failed or cancelled
        one (DEPENDENCY, naming the root job).  Runs on every scheduling
        round while jobs are held (its own jobs' ends wake it) and every
        :data:`HELD_RECHECK` seconds for dependencies on other backends; one
        batched read of the dependencies' states."""
        now = time.monotonic()
        self.held_checked = now
        self.last_activity = now  # an agent holding jobs stays to release them
        records = list(self.held.values())
        states = states_of(self.store, {d for r in records for d in r.depends_on})
        released: list[JobRecord] = []
        for record in records:
            found = verdict(record, states)
            if found.failure is not None:
                del self.held[record.id]
                extra = {**record.extra, FAILED_DEPENDENCY: found.root}
                if fail(self.store, record.id, found.failure, extra=extra) is not None:
                    self._broadcast(encode_event(Event.DONE, record.id))
                    self.dirty = True  # its own dependents fail next round
            elif found.ready:
                del self.held[record.id]
                extra = {**record.extra, RELEASED: time.time()}
                with contextlib.suppress(JobkitError):
                    released.append(self.store.update(record.id, extra=extra))
        if released:
            self._enqueue(released)

    def _unqueue(self, job_id: str) -> JobRecord | None:
        self.waiting.remove(job_id)
        return self.queue.pop(job_id, None)

    def _enqueue(self, records: list[JobRecord]) -> None:
        for record in records:
            if record.id in self.running or record.id in self.queue:
                continue
            if record.depends_on and is_held(record):
                self.held[record.id] = record
                if record.state is JobState.PENDING:
                    self.unaccepted.append(record.id)
                continue
            request = request_of(record)
            why = never_fits(request, self.ledger.capacity)
            if why is not None:
                self._read_clients_now()  # its submitter's settings may be on the way
                why = never_fits(request, self.ledger.capacity)
            if why is not None:
                self._refuse(record.id, f"job {why}")
                continue
            self.queue[record.id] = record
            self.waiting.add(request)
            if record.state is JobState.PENDING:
                self.unaccepted.append(record.id)

    def _start(
        self,
        allocs: list[Allocation],
        ahead: list[tuple[Allocation, WarmWorker]] = (),  # type: ignore[assignment]
    ) -> None:
        """Claim the planned jobs in one transaction, then start each: on a warm
        worker of its key (whose pid the claim records), else in a process of its
        own; and send the ``ahead`` ones to the busy workers chosen for them."""
        now = time.time()
        oom_before = self._oom_count()
        planned: list[tuple[JobRecord, Allocation, WarmWorker | None, dict[str, str]]] = []
        changes: list[Change] = []
        chosen = {alloc.job_id: worker for alloc, worker in ahead}
        for alloc in [*allocs, *(a for a, _ in ahead)]:
            record = self.queue.pop(alloc.job_id)
            worker = chosen.get(alloc.job_id) or self._warm_worker(record, alloc)
            env = self._job_env(record, alloc) if worker is None else {}
            extra = {
                **record.extra,
                "stdout": str(self._log(record.id, "out")),
                "stderr": str(self._log(record.id, "err")),
                "gpus": alloc.gpu_ids,
            }
            fields: dict[str, Any] = {
                "started_at": now,
                "submitted_at": record.submitted_at or now,
                "host": self.host,
                "backend_id": f"local:{self.host}",
                "extra": extra,
            }
            if worker is not None:
                fields["pid"] = worker.pid
                extra["worker_start"] = worker.start
            planned.append((record, alloc, worker, env))
            changes.append(Change(record.id, JobState.RUNNING, expect=QUEUE_STATES, fields=fields))
        for (_record, alloc, worker, env), claimed in zip(
            planned, self._commit(changes), strict=True
        ):
            sent_ahead = chosen.get(alloc.job_id) is not None
            if claimed is None:  # cancelled between our query and now
                self.ledger.release(alloc.job_id)
                if sent_ahead and worker is not None:
                    worker.ahead.remove(alloc.job_id)
                elif worker is not None and self.pool is not None:
                    self._give_back(worker)
                continue
            if sent_ahead and worker is not None:
                self._send_ahead(claimed, alloc, worker)
            elif not self._launch(claimed, alloc, worker, env, oom_before):
                self.ledger.release(alloc.job_id)

    def _commit(self, claims: list[Change]) -> list[JobRecord | None]:
        """One transaction: the ends workers handed over since the last one,
        then ``claims``; the claims' results.  An end refused by its
        compare-and-set (cancelled meanwhile) still ends the job for clients."""
        ends, self.ends = self.ends, []
        results = self.store.transition_many([change for change, _ in ends] + claims)
        for change, worker in ends:
            self._broadcast(encode_event(Event.DONE, change.job_id))
            self.acks.setdefault(worker, []).append(change.job_id)
        return results[len(ends) :]

    def _oom_count(self) -> int | None:
        """The OOM killer's counter, read at most every :data:`OOM_READ_EVERY` s:
        a file read per job was a twentieth of the agent's time on trivial jobs.
        The cost: a kernel OOM kill in that window before a job started, followed
        by the job dying of another SIGKILL, would read as OOM."""
        now = time.monotonic()
        if now - self.oom_read_at >= OOM_READ_EVERY:
            self.oom_read_at, self.oom_seen = now, oom_kill_count()
        return self.oom_seen

    def _log(self, job_id: str, suffix: str) -> str:
        return f"{self.log_dir}/{job_id}.{suffix}"

    def _warm_worker(self, record: JobRecord, alloc: Allocation) -> WarmWorker | None:
        """An idle or new warm worker for this job, or None: it runs in its own process."""
        if self.pool is None or record.resources.get("isolate"):
            return None
        base, key = self._environment(record, alloc)
        try:
            worker, fresh = self.pool.take(key, base, record.extra.get("cwd"))
        except OSError as exc:
            print(f"agent: cannot start a warm worker ({exc}); forking", file=sys.stderr)
            return None
        if fresh and not self._watch_worker(worker):
            return None
        return worker

    def _environment(self, record: JobRecord, alloc: Allocation) -> tuple[dict[str, str], str]:
        """A warm worker's environment for this job, and the key of the workers
        that may run it (cached: a map's items share both)."""
        res = record.resources
        what = (
            record.extra.get("env"),
            json.dumps(res.get("env") or {}, sort_keys=True),
            tuple(alloc.gpu_share),
            res.get("cpus", 1),
        )
        known = self.worker_keys.get(what)
        if known is None:
            base = self._job_env(record, alloc)
            del base["JOBKIT_JOB_ID"]
            # cpus too: thread pools (OpenBLAS, OpenMP) size themselves once, at import.
            known = self.worker_keys[what] = (base, _worker_key(base, res.get("cpus", 1)))
        return known

    def _key_of(self, record: JobRecord, alloc: Allocation) -> str:
        return self._environment(record, alloc)[1]

    def _send_ahead(self, claimed: JobRecord, alloc: Allocation, worker: WarmWorker) -> None:
        """Send a claimed job to a busy warm worker; it starts it after its current one."""
        assert self.pool is not None
        run = Running(
            record=claimed,
            pid=worker.pid,
            alloc=alloc,
            started=time.monotonic(),
            mem_limit=int(claimed.resources.get("mem") or 0),
            worker=worker,
            waiting=True,
        )
        self.running[claimed.id] = run
        job = self._job_message(claimed, claimed.extra.get("cwd"))
        job["ahead"] = True  # read the record from the store: it may be cancelled by then
        with contextlib.suppress(OSError):  # it died: _worker_exited requeues this job
            worker.sock.sendall(encode_frame(job))

    def _job_message(self, claimed: JobRecord, cwd: str | None) -> dict[str, Any]:
        """What a warm worker is told of a job: where it runs and logs."""
        return {
            "job": claimed.id,
            "cwd": cwd if cwd and os.path.isdir(cwd) else None,
            "stdout": self._log(claimed.id, "out"),
            "stderr": self._log(claimed.id, "err"),
            "env": {"JOBKIT_JOB_ID": claimed.id},
        }

    def _promote(self, worker: WarmWorker) -> None:
        """The worker finished its job and started the first one sent ahead."""
        job_id = worker.ahead.pop(0)
        run = self.running.get(job_id)
        if run is None or not run.waiting:
            return
        worker.job = job_id
        run.waiting = False
        run.started = time.monotonic()
        limit = run.record.resources.get("time")
        run.deadline = run.started + float(limit) if limit else None
        self.ledger.allocate(run.alloc)

    def _watch_worker(self, worker: WarmWorker) -> bool:
        assert self.pool is not None
        try:
            worker.pidfd = os.pidfd_open(worker.pid)
        except (AttributeError, OSError):
            self.pool.forget(worker)  # unwatchable: no warm workers here
            self.pool = None
            return False
        self.sel.register(worker.sock, selectors.EVENT_READ, lambda _s, w=worker: self._hear(w))
        self.sel.register(
            worker.pidfd, selectors.EVENT_READ, lambda _fd, w=worker: self._worker_exited(w)
        )
        return True

    def _launch(
        self,
        claimed: JobRecord,
        alloc: Allocation,
        worker: WarmWorker | None,
        env: dict[str, str],
        oom_before: int | None,
    ) -> bool:
        out, err = self._log(claimed.id, "out"), self._log(claimed.id, "err")
        cwd = claimed.extra.get("cwd")
        if cwd and not os.path.isdir(cwd):
            cwd = None
        limit = claimed.resources.get("time")
        run = Running(
            record=claimed,
            pid=worker.pid if worker is not None else 0,
            alloc=alloc,
            started=time.monotonic(),
            deadline=time.monotonic() + float(limit) if limit else None,
            mem_limit=int(claimed.resources.get("mem") or 0),
            oom_before=oom_before,
            worker=worker,
        )
        if worker is not None and self.pool is not None:
            job = self._job_message(claimed, cwd)
            job["ack"] = self.acks.pop(worker, [])
            try:
                self.pool.dispatch(worker, job, claimed.to_json().encode())
                self.running[claimed.id] = run
                return True
            except OSError:  # it died idle: its exit is reaped; this job gets a process
                worker.job = None
                run.worker = None
                env = self._job_env(claimed, alloc)
        popen = None
        pid = 0
        if self.settings.start_method != "spawn" and self.forkserver is not None:
            try:
                pid = self._fork(claimed, env, cwd, Path(out), Path(err))
            except OSError as exc:
                print(f"agent: fork server failed ({exc}); spawning instead", file=sys.stderr)
                self.forkserver = None
                self.pool = None
        if not pid:
            popen = self._spawn(claimed, env, cwd, Path(out), Path(err))
            pid = popen.pid
            write_pidfile(self._pidfile(claimed.id), pid)
        run.pid, run.popen = pid, popen
        self._watch(run)
        self.running[claimed.id] = run
        return True

    def _job_env(self, record: JobRecord, alloc: Allocation) -> dict[str, str]:
        env = dict(self._submitter_env(record))
        env.update({str(k): str(v) for k, v in (record.resources.get("env") or {}).items()})
        env["JOBKIT_JOB_ID"] = record.id
        env["JOBKIT_STORE"] = self.settings.store
        if self.ledger.capacity.gpus or alloc.gpu_share:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(alloc.gpu_ids)
        if alloc.gpu_share and alloc.gpus < 1.0:
            env["JOBKIT_GPU_FRACTION"] = f"{alloc.gpus:g}"
        return env

    def _submitter_env(self, record: JobRecord) -> dict[str, str]:
        from jobkit.serialization import open_json

        ref = record.extra.get("env")
        if not ref:
            return dict(os.environ)
        if ref not in self.env_cache:
            try:
                env = open_json(
                    self.store.get_blob(f"envs/{ref}"), key=self.key, kind="env", ident=ref
                )
            except Exception as exc:
                print(f"agent: cannot read environment {ref}: {exc}", file=sys.stderr)
                env = dict(os.environ)
            self.env_cache[ref] = env
        return self.env_cache[ref]

    # -- starting processes ----------------------------------------------------
    def _fork(
        self, record: JobRecord, env: dict[str, str], cwd: str | None, out: Path, err: Path
    ) -> int:
        """Through the fork server: a worker never inherits this process's store."""
        if self.forkserver is None:
            raise OSError("no fork server")
        return self.forkserver.fork(
            record.id, WorkerIO(env=env, cwd=cwd, stdout=out, stderr=err), self._pidfile(record.id)
        )

    def _pidfile(self, job_id: str) -> Path:
        return self.log_dir / f"{job_id}.pid"

    def _spawn(
        self, record: JobRecord, env: dict[str, str], cwd: str | None, out: Path, err: Path
    ) -> subprocess.Popen[bytes]:
        return spawn_worker(
            self.settings.store,
            self.key,
            record.id,
            WorkerIO(env=env, cwd=cwd, stdout=out, stderr=err),
        )

    # -- warm workers ------------------------------------------------------------
    def _hear(self, worker: WarmWorker) -> None:
        """A warm worker's message: a job's end (``done``), with the outcome
        of a success it hands over for the agent to record."""
        try:
            data = worker.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # it is exiting: its pidfd says when, with the status
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(worker.sock)
            return
        for header, outcome in worker.reader.feed(data):
            try:
                job_id, code = str(header["done"]), int(header["code"])
            except (KeyError, TypeError, ValueError):
                continue
            worker.retiring = worker.retiring or bool(header.get("retire"))
            run = self.running.get(job_id)
            if run is None or run.worker is not worker:
                continue
            worker.job = None
            took = header.get("took")  # the job alone, not the agent's delay in hearing of it
            worker.last_took = (
                float(took) if isinstance(took, (int, float)) else time.monotonic() - run.started
            )
            end = header.get("end")
            if outcome and isinstance(end, dict) and code == 0:
                self._handed_over(run, worker, outcome, end)
            else:
                self._ended(run, code, header.get("why") or None)
            if worker.ahead and not worker.retiring:
                self._promote(worker)
            elif not worker.retiring:
                self._give_back(worker)

    def _handed_over(
        self, run: Running, worker: WarmWorker, outcome: bytes, end: dict[str, Any]
    ) -> None:
        """A success to record with the next commit (see :meth:`_commit`)."""
        del self.running[run.record.id]
        self.ledger.release(run.record.id)
        self.last_activity = time.monotonic()
        self.dirty = True
        fields: dict[str, Any] = {
            k: end[k]
            for k in ("started_at", "finished_at", "exit_code", "message", "usage")
            if k in end
        }
        blobs: dict[str, Any] = {**split_end(run.record.id, end)[1]}
        blobs[outcome_key(run.record.id)] = outcome
        change = Change(run.record.id, JobState.SUCCEEDED, (JobState.RUNNING,), fields, blobs)
        self.ends.append((change, worker))

    def _give_back(self, worker: WarmWorker) -> None:
        assert self.pool is not None
        closed = self.pool.give_back(worker)
        if closed is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(closed.sock)

    def _worker_exited(self, worker: WarmWorker) -> None:
        """A warm worker ended: killed with its job (time limit, cancel, memory),
        crashed, retired, or closed while idle."""
        for fileobj in (worker.sock, worker.pidfd):
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(fileobj)  # type: ignore[arg-type]
        code: int | None = None
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(worker.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGKILL)  # what the job left behind goes too
        job = worker.job
        if self.pool is not None:
            self.pool.forget(worker)
        elif worker.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(worker.pidfd)
        run = self.running.get(job) if job else None
        if run is not None and run.worker is worker:
            self._ended(run, code, None)
        for job_id in worker.ahead:
            self._take_back(job_id)
        worker.ahead = []

    def _take_back(self, job_id: str) -> None:
        """A job sent ahead to a worker that died before starting it: it never
        ran, so it waits again (no attempt counted)."""
        run = self.running.pop(job_id, None)
        if run is None:
            return
        back = self.store.transition(job_id, JobState.QUEUED, expect=(JobState.RUNNING,))
        if back is not None:
            self._enqueue([back])
        self.dirty = True

    def _ended(self, run: Running, code: int | None, note: str | None) -> None:
        """A warm worker's job ended, reported by the worker or by its exit."""
        del self.running[run.record.id]
        self.ledger.release(run.record.id)
        self.last_activity = time.monotonic()
        self.dirty = True
        if code == 0 and run.kill_reason is None and run.kill_message is None:
            self._broadcast(encode_event(Event.DONE, run.record.id))  # the worker recorded it
            return
        reason, message = self._why(run, code)
        self._finish(run.record.id, reason, message, code, attempt=run.record.attempt)

    def _watch(self, run: Running) -> None:
        try:
            run.pidfd = os.pidfd_open(run.pid)
        except (AttributeError, OSError):
            run.pidfd = None  # polled in _timers instead
            return
        self.sel.register(run.pidfd, selectors.EVENT_READ, lambda _fd, r=run: self._reap(r))

    # -- supervising -----------------------------------------------------------
    def _timers(self, now: float) -> None:
        for run in list(self.running.values()):
            if run.worker is None and run.pidfd is None and self._exited(run):
                self._reap(run)
                continue
            if run.deadline is not None and now >= run.deadline and run.kill_reason is None:
                limit = float(run.record.resources.get("time") or 0)
                self._kill(
                    run,
                    signal.SIGTERM,
                    FailureReason.TIMEOUT,
                    f"ran past its time limit of {limit:g} s",
                )
            if run.escalate_at is not None and now >= run.escalate_at:
                run.escalate_at = None
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(run.pid, signal.SIGKILL)
        if now >= self.next_memory:
            self.next_memory = now + self.settings.memory_interval
            self._check_memory()
        if now >= self.next_rescan:
            self.next_rescan = now + self.settings.rescan_interval
            self._reap_strays()
            self._rescan()

    def _reap_strays(self) -> None:
        """Reap descendants re-parented to us (we are a subreaper) that are not
        workers: a job's own children that outlived it.  Peek first
        (``WNOWAIT``) so a worker's exit status stays for :meth:`_reap`."""
        workers = {r.pid for r in self.running.values()}
        if self.forkserver is not None:
            workers.add(self.forkserver.pid)
        if self.pool is not None:
            workers |= self.pool.pids()
        for _ in range(64):
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in workers:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, 0)

    def _exited(self, run: Running) -> bool:
        try:
            if run.popen is not None:
                return run.popen.poll() is not None
            os.kill(run.pid, 0)
            if not run.adopted:
                pid, _ = os.waitpid(run.pid, os.WNOHANG)
                return pid != 0
        except (ProcessLookupError, ChildProcessError):
            return True
        return False

    def _check_memory(self) -> None:
        limited = {
            r.pid: r
            for r in self.running.values()
            if r.mem_limit and r.kill_reason is None and not r.waiting
        }
        if not limited:
            return
        for pgid, rss in group_rss(set(limited)).items():
            run = limited[pgid]
            if rss > run.mem_limit:
                self._kill(
                    run,
                    signal.SIGKILL,
                    FailureReason.OOM,
                    f"used {rss / 2**20:.0f} MiB of memory, more than the "
                    f"{run.mem_limit / 2**20:.0f} MiB it requested",
                )

    def _rescan(self) -> None:
        """Catch what pokes missed: new jobs, and cancels of running ones."""
        if self.running:
            records = self.store.get_many(list(self.running))
            for job_id, record in records.items():
                if record.state is JobState.CANCELLED:
                    run = self.running.get(job_id)
                    if run is not None and run.kill_reason is None:
                        self._kill(run, signal.SIGTERM, None, "cancelled")
        # New jobs whose wake we missed.  A job cancelled while queued is
        # dropped when its claim fails; the full reload is a slow safety net.
        now = time.monotonic()
        if now >= self.next_reload:
            self.next_reload = now + RELOAD_INTERVAL
            self.reload_queue = True
        self.dirty = self.fetch_new = True

    def _cancel(self, ids: Sequence[str]) -> None:
        for job_id in ids:
            run = self.running.get(job_id)
            if run is not None and run.kill_reason is None:
                self._kill(run, signal.SIGTERM, None, "cancelled")
            self._unqueue(job_id)
            self.held.pop(job_id, None)
        self.dirty = True

    def _kill(
        self, run: Running, sig: int, reason: FailureReason | None, message: str | None
    ) -> None:
        if run.waiting:  # not started: its worker skips it (the store says cancelled)
            return
        if run.kill_reason is None and run.kill_message is None:
            run.kill_reason, run.kill_message = reason, message
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, sig)
        if sig != signal.SIGKILL:
            run.escalate_at = time.monotonic() + self.settings.kill_grace

    def _reap(self, run: Running) -> None:
        if run.record.id not in self.running:
            return
        del self.running[run.record.id]
        if run.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(run.pidfd)
            os.close(run.pidfd)
        code: int | None = None
        if run.popen is not None:
            code = run.popen.wait()
        elif not run.adopted:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(run.pid, 0)
                code = os.waitstatus_to_exitcode(status)
        # The whole process group goes with the job: no stray grandchildren.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, signal.SIGKILL)
        self.ledger.release(run.record.id)
        self.last_activity = time.monotonic()
        with contextlib.suppress(OSError):
            self._pidfile(run.record.id).unlink()
        reason, message = self._why(run, code)
        self._finish(run.record.id, reason, message, code, attempt=run.record.attempt)

    def _why(self, run: Running, code: int | None) -> tuple[FailureReason, str]:
        if run.kill_reason is not None:
            return run.kill_reason, run.kill_message or run.kill_reason.value
        if run.adopted or code is None:
            return FailureReason.LOST, (
                "worker ended without recording an outcome (adopted from a previous agent, "
                "so its exit status is unknown)"
            )
        if code < 0:
            sig = -code
            name = (
                signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            )
            after = oom_kill_count()
            if (
                sig == signal.SIGKILL
                and run.oom_before is not None
                and after is not None
                and after > run.oom_before
            ):
                return FailureReason.OOM, "killed by the kernel OOM killer (SIGKILL)"
            return FailureReason.LOST, f"worker killed by signal {name}"
        return FailureReason.ERROR, f"worker exited with code {code} without recording an outcome"

    def _finish(
        self,
        job_id: str,
        reason: FailureReason,
        message: str,
        code: int | None,
        *,
        attempt: int | None = None,
    ) -> None:
        """Record a failure unless the worker already recorded the end; a job
        with retries left goes back to the queue instead (``retries``).

        ``attempt``: the one the dead worker ran.  Past a requeue (QUEUED: the
        queue takes it again), a newer attempt of the same id was started by a
        rerun (``jobkit retry``) meanwhile: the death of a cancelled attempt's
        worker is not that attempt's failure.
        """
        record = self.store.get(job_id)
        if record.state is JobState.QUEUED:  # the worker requeued itself for a retry
            self._unqueue(job_id)
            self._enqueue([record])
            self._broadcast(encode_event(Event.REQUEUED, job_id))
            self.dirty = True
            return
        if attempt is not None and record.attempt != attempt:
            return
        header = self._written_outcome(record) if record.state is JobState.RUNNING else None
        if header is not None:
            settled = settle_from_outcome(
                self.store,
                record,
                header,
                "recorded by the agent from the outcome the worker wrote before it ended "
                f"({message})",
                exit_code=code,
            )
        else:
            settled = settle(self.store, record, Failure(reason, message, code))
        if settled is not None and settled.state is JobState.QUEUED:
            self._enqueue([settled])
            self.dirty = True
            return
        self._broadcast(encode_event(Event.DONE, job_id))
        self.dirty = True

    # -- recovery --------------------------------------------------------------
    def _written_outcome(self, record: JobRecord) -> dict[str, Any] | None:
        """The verified header of the outcome this job's worker wrote, if any."""
        from jobkit.errors import JobkitError
        from jobkit.serialization import read_outcome_header

        try:
            data = self.store.get_blob(outcome_key(record.id))
            return read_outcome_header(data, key=self.key, job_id=record.id)
        except (JobkitError, OSError):
            return None

    def _recover(self) -> None:
        """Adopt RUNNING jobs a previous agent left behind whose worker still
        runs (the same process: pid and start time from its pid file), settle
        the others from the outcome they wrote, and only then call them LOST."""
        for record in self.store.query(states=(JobState.RUNNING,), backend="local"):
            if record.host != self.host:
                continue
            recorded = read_pidfile(self._pidfile(record.id))
            if recorded is None and record.pid and record.extra.get("worker_start") is not None:
                recorded = (record.pid, int(record.extra["worker_start"]))  # a warm worker's
            if recorded is None or not same_process(*recorded):
                self._finish(
                    record.id,
                    FailureReason.LOST,
                    "worker vanished while no agent watched it (agent restarted)",
                    None,
                )
                continue
            self._adopt(record, recorded[0])

    def _adopt(self, record: JobRecord, pid: int) -> None:
        """Supervise a worker we did not start: its allocation, time limit
        (counted from when it started) and memory limit; cancel kills its group."""
        gpus = record.extra.get("gpus") or []
        share = float(record.resources.get("gpus") or 0)
        alloc = Allocation(
            record.id,
            record.owner,
            float(record.resources.get("cpus", 1)),
            int(record.resources.get("mem") or 0),
            tuple((g, min(1.0, share) if share < 1 else 1.0) for g in gpus),
        )
        self.ledger.allocate(alloc)
        limit = record.resources.get("time")
        deadline = None
        if limit:
            ran = time.time() - (record.started_at or time.time())
            deadline = time.monotonic() + max(0.0, float(limit) - ran)
        run = Running(
            record=record,
            pid=pid,
            alloc=alloc,
            started=time.monotonic(),
            adopted=True,
            deadline=deadline,
            mem_limit=int(record.resources.get("mem") or 0),
        )
        self.running[record.id] = run
        self._watch(run)
        print(f"agent: adopted job {record.id} (worker pid {pid})", file=sys.stderr, flush=True)


def _worker_key(env: dict[str, str], cpus: Any) -> str:
    """Warm workers share a key when they run under the same environment
    (which includes the job's own ``env`` and ``CUDA_VISIBLE_DEVICES``) with
    the same number of cpus."""
    text = json.dumps([env, cpus], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _describe(machine: dict[str, Any]) -> str:
    return " ".join(f"{name}={machine.get(name)!r}" for name in MACHINE_FIELDS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobkit.scheduler.agent")
    parser.add_argument("settings", help="AgentSettings as JSON")
    parser.add_argument("--foreground", action="store_true", help="do not daemonize")
    args = parser.parse_args(argv)
    if not args.foreground:
        daemonize()
    settings = AgentSettings.from_json(args.settings)
    from jobkit.signing import load_key
    from jobkit.stores import open_store
    from jobkit.stores.patient import patient

    key = load_key()
    # Preload what every worker needs, so a forked worker starts warm, then
    # start the fork server *before* opening the store (see forkserver).
    import cloudpickle  # noqa: F401

    import jobkit.stores.sqlite
    import jobkit.worker  # noqa: F401

    forkserver = None
    if settings.start_method != "spawn" and become_subreaper():
        forkserver = ForkServer(settings.store, key)
        forkserver.start()
    # Patient like its workers: a store outage stalls the agent, never kills it.
    store = patient(open_store(settings.store))
    log_dir = store.local_dir or Path(os.environ.get("JOBKIT_HOME", "."))
    paths = agent_paths(store.identity, log_dir)
    lock_fd = acquire_lock(paths.lock, paths.socket)
    if lock_fd is None:
        return 0
    detach_from_terminal()
    capacity = machine_capacity(
        cpus=settings.cpus, mem=settings.mem, gpus=settings.gpus, max_jobs=settings.max_jobs
    )
    agent = Agent(store, key, settings, paths, capacity)
    agent.forkserver = forkserver
    if forkserver is not None and settings.start_method == "warm":
        agent.pool = WorkerPool(forkserver, max_idle=max(2, int(capacity.cpus)))
    agent.lock_fd = lock_fd
    # SIGTERM stops the agent cleanly (socket and lock file removed); its jobs
    # run on in their own sessions and record their own outcomes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(
        f"agent {os.getpid()} serving {settings.store} with {capacity}", file=sys.stderr, flush=True
    )
    try:
        agent.serve()
    finally:
        agent._close_listener()
        release_lock(paths.lock, lock_fd)
        if forkserver is not None:
            forkserver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
