"""``python -m jobkit.worker JOB_ID``: the one entrypoint every backend runs.

Data flow for one job::

    store.get(JOB_ID) ──► transition → RUNNING (host, pid, started_at)
        │                    └─ refused? the job was cancelled: exit quietly
        ▼
    OMP_NUM_THREADS & co. ← the job's cpus, where unset (jobkit.threadlimits)
        ▼
    get_blob(payloads/JOB_ID) ──► verify HMAC ──► check Python version ──► unpickle
        │                        └─ any failure: FAILED/SUBMIT_ERROR, nothing unpickled
        ▼
    depends_on? placeholders ◄── get_blobs(outcomes of the dependencies), each verified
        │                        └─ missing or not a success: FAILED/DEPENDENCY
        ▼
    fn(*args, **kwargs)     sampled meanwhile (jobkit.sampling): live usage in the record
        ▼                   and usage/JOB_ID; the final figures go with the end below
    outcomes/JOB_ID + SUCCEEDED in one transition_many (one SQLite transaction),
        or on an exception: put_blob(outcomes/JOB_ID), then :mod:`jobkit.reconcile`
        decides: QUEUED (attempt + 1) while retries are left, else FAILED/ERROR

The outcome is written no later than the terminal state, so any client that
sees SUCCEEDED finds the result.  A worker that dies before the last step leaves
the job RUNNING; the backend's reconcile step notices the dead process and
records why (TIMEOUT, OOM, LOST).

The store is found through ``--store URL`` or ``$JOBKIT_STORE``; the signing
key as described in :mod:`jobkit.signing`.  Every store call waits out an
outage (:mod:`jobkit.stores.patient`, ``$JOBKIT_STORE_PATIENCE`` seconds,
default 600); past that the worker says so on stderr and exits 75.  The local agent calls
:func:`run_job` in a forked process instead of exec'ing this module: same
code, no interpreter start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobkit.errors import JobkitError, StoreUnavailableError
from jobkit.launchers import PLAIN, launcher_names, load_launcher
from jobkit.placeholders import DependencyUnavailable
from jobkit.reconcile import Failure, exception_names, fail, requeue, retry_allowed
from jobkit.sampling import Ended, Sampler
from jobkit.serialization import Call, dump_outcome, load_payload
from jobkit.states import FailureReason, JobRecord, JobState
from jobkit.stores.base import Buffer, Change, Store, outcome_key, payload_key
from jobkit.threadlimits import limit_threads
from jobkit.usage import SERIES_FIELD, split_end, usage_key

HandOver = Callable[[str, "list[Buffer]", dict[str, Any]], bool]
"""Takes (job id, outcome buffers, end fields) of a success; True: it records them.
The end may carry the usage series (:func:`jobkit.usage.split_end` takes it out)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNLOADABLE = 3


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def run_job(
    store: Store,
    job_id: str,
    key: bytes,
    *,
    follower: bool = False,
    on_call: Callable[[Call], None] | None = None,
    classify: Callable[[BaseException], tuple[FailureReason, str] | None] | None = None,
    record: JobRecord | None = None,
    hand_over: HandOver | None = None,
) -> int:
    """Run one job to its terminal state in the store; returns the exit code.

    ``follower`` is for the other ranks of a multi-task job: they run the
    function but record nothing (rank 0 owns the record), and re-raise its
    error so the scheduler sees the task fail.  ``on_call`` receives the
    loaded call before it runs (the Slurm entry keeps it for checkpointing);
    ``classify`` may say that an exception means something other than the
    function failing (submitit's time-limit stop is a TIMEOUT).  ``record``:
    the job as its claim just recorded it (a warm worker gets it from the
    agent, saving a read); ``hand_over`` may take a success's outcome and end
    to record them itself (the agent batches them), else they are written here.
    """
    if follower:
        limit_threads(store.get(job_id).resources.get("cpus", 1))
        header_call = load_payload(store.get_blob(payload_key(job_id)), key=key, job_id=job_id)
        if on_call is not None:
            on_call(header_call[1])
        call = header_call[1]
        call.resolve()(*call.args, **call.kwargs)
        return EXIT_OK
    if record is None or record.id != job_id:
        record = store.get(job_id)
    if record.is_terminal:
        return EXIT_OK  # cancelled (or already run) before we started
    limit_threads(record.resources.get("cpus", 1))  # before unpickling may import numpy
    if record.state is not JobState.RUNNING or record.pid != os.getpid():
        fresh: dict[str, Any] = {}
        if record.state is not JobState.RUNNING and record.usage:
            fresh["usage"] = {}  # an earlier attempt's figures: its attempts entry keeps them
        started = store.transition(
            job_id,
            JobState.RUNNING,
            started_at=record.started_at if record.state is JobState.RUNNING else time.time(),
            host=os.environ.get("JOBKIT_HOST") or socket.gethostname(),
            pid=os.getpid(),
            **fresh,
        )
        if started is None:
            return EXIT_OK

    try:
        _header, call = load_payload(store.get_blob(payload_key(job_id)), key=key, job_id=job_id)
        fn = call.resolve()
    except (JobkitError, OSError) as exc:
        _fail_unloadable(store, job_id, key, exc)
        return EXIT_UNLOADABLE
    if record.depends_on:
        try:
            call = _with_dependencies(store, key, call)
        except DependencyUnavailable as exc:
            _fail_dependency(store, job_id, exc)
            return EXIT_FAILED
    if on_call is not None:
        on_call(call)

    error: BaseException | None = None
    value = None
    # A later attempt always writes its series: the blob may hold an earlier one's.
    gpus = float(record.resources.get("gpus") or 0)
    sampler = Sampler(store, job_id, series_always=record.attempt > 0, gpus=gpus)
    sampler.start()
    try:
        try:
            value = fn(*call.args, **call.kwargs)
        finally:
            ended = sampler.stop()  # a live usage write in progress ends first, none after
    except BaseException as exc:  # SystemExit too: the client re-raises it, as futures do
        if _requeued_meanwhile(store, job_id, record.attempt):
            raise  # a checkpoint requeued this job (Slurm): the next attempt records
        error = exc
    del call, fn
    usage: dict[str, Any] = {} if ended is None else {"usage": ended.summary}
    summary = None if ended is None else ended.summary

    failure = None if error is None else _failure_of(error, classify)
    if (
        failure is not None
        and error is not None
        and retry_allowed(record, failure.reason, exception_names(error))
    ):
        _flush_std()
        print(f"jobkit worker: attempt failed ({failure.message}); retrying", file=sys.stderr)
        _flush_std()
        series = _series_blob(job_id, ended)
        if series:
            store.put_blobs(series)
        requeued = requeue(
            store,
            store.get(job_id),
            f"retrying after {failure.message}",
            reason=failure.reason,
            exit_code=EXIT_FAILED,
            usage=summary,
        )
        if requeued is not None:
            return EXIT_FAILED

    outcome = dump_outcome(key=key, job_id=job_id, value=value, error=error)
    value = None
    _flush_std()
    if failure is None:  # the outcome and the end in one write (one transaction on SQLite)
        done: dict[str, Any] = {"finished_at": time.time(), "exit_code": EXIT_OK, **usage}
        if record.attempt > 0 and record.message:
            done["message"] = None  # "retrying after ...": the attempts history keeps it
        if ended is not None and ended.series is not None:
            done[SERIES_FIELD] = ended.series.decode()
        if hand_over is not None and hand_over(job_id, outcome, done):
            return EXIT_OK
        fields, series = split_end(job_id, done)
        blobs: dict[str, Buffer | Sequence[Buffer]] = {**series, outcome_key(job_id): outcome}
        # From RUNNING only: a late worker of an attempt that ended (cancelled,
        # then rerun) must not end the next attempt while it waits.
        end = Change(job_id, JobState.SUCCEEDED, _RUNNING, fields=fields, blobs=blobs)
        store.transition_many([end])
        return EXIT_OK
    store.put_blobs({outcome_key(job_id): outcome, **_series_blob(job_id, ended)})
    fail(store, job_id, failure, expect=_RUNNING, usage=summary)
    return EXIT_FAILED


def _series_blob(job_id: str, ended: Ended | None) -> dict[str, bytes]:
    """A failed attempt's usage series, written before the write that ends it."""
    if ended is None or ended.series is None:
        return {}
    return {usage_key(job_id): ended.series}


_RUNNING = (JobState.RUNNING,)
"""What a worker records its end from: the state it moved the job to."""


def _with_dependencies(store: Store, key: bytes, call: Call) -> Call:
    """``call`` with its dependencies' results in place of their placeholders."""
    import dataclasses

    from jobkit.placeholders import resolve

    args, kwargs = resolve(store, key, call.args, call.kwargs)
    return dataclasses.replace(call, args=args, kwargs=kwargs)


def _fail_dependency(store: Store, job_id: str, exc: DependencyUnavailable) -> None:
    """A dependency's result is not there to pass: the job cannot run (DEPENDENCY)."""
    print(f"jobkit worker: {exc}", file=sys.stderr)
    _flush_std()
    extra = {**store.get(job_id).extra, "failed_dependency": exc.dependency_id}
    fail(
        store,
        job_id,
        Failure(FailureReason.DEPENDENCY, str(exc)[:1000], EXIT_FAILED),
        expect=_RUNNING,
        extra=extra,
    )


def _failure_of(
    error: BaseException,
    classify: Callable[[BaseException], tuple[FailureReason, str] | None] | None,
) -> Failure:
    """The function raised: ERROR, unless the launcher knows better (a time-limit stop)."""
    reason, message = (classify(error) if classify else None) or (
        FailureReason.ERROR,
        _one_line(error),
    )
    return Failure(reason, message, EXIT_FAILED)


def _requeued_meanwhile(store: Store, job_id: str, attempt: int) -> bool:
    current = store.get(job_id)
    return current.state is JobState.QUEUED and current.attempt > attempt


def _one_line(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:
        text = "<unprintable>"
    first = text.strip().splitlines()[0] if text.strip() else ""
    name = type(error).__name__
    return f"{name}: {first}"[:500] if first else name


def _fail_unloadable(store: Store, job_id: str, key: bytes, exc: BaseException) -> None:
    """Record why the payload could not run; the outcome re-raises that error."""
    print(f"jobkit worker: {exc}", file=sys.stderr)
    _flush_std()
    try:
        store.put_blob(outcome_key(job_id), dump_outcome(key=key, job_id=job_id, error=exc))
    finally:
        fail(
            store,
            job_id,
            Failure(FailureReason.SUBMIT_ERROR, str(exc)[:1000], EXIT_UNLOADABLE),
            expect=_RUNNING,
        )


INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
"""Where an array task finds its index: Slurm arrays, Kubernetes Indexed Jobs."""


ITEMS_VARIABLE = "JOBKIT_ARRAY_ITEMS"
"""A rerun's item indices (``3,7,12``), set where the task index cannot be the
item's (a Kubernetes Indexed Job counts its completions from 0): task ``i``
runs item ``ITEMS[i]``."""


def array_item(array_id: str, offset: int, environ: Mapping[str, str] | None = None) -> str:
    """The job id of this array task: ``<array id>.<offset + task index>``, or
    with ``$JOBKIT_ARRAY_ITEMS``, ``<array id>.<ITEMS[task index]>``."""
    env = os.environ if environ is None else environ
    items = [i for i in env.get(ITEMS_VARIABLE, "").split(",") if i]
    for name in INDEX_VARIABLES:
        if env.get(name, "").isdigit():
            task = int(env[name])
            if items:
                if task >= len(items) or not items[task].isdigit():
                    raise SystemExit(
                        f"jobkit worker: task {task} is not in ${ITEMS_VARIABLE}={','.join(items)}"
                    )
                return f"{array_id}.{offset + int(items[task])}"
            return f"{array_id}.{offset + task}"
    raise SystemExit(
        f"jobkit worker: --array needs the task index in one of {', '.join(INDEX_VARIABLES)}"
    )


def _store_unreachable(job_id: str, exc: StoreUnavailableError) -> int:
    """The store stayed down past the worker's patience: say so loudly, exit 75.

    Whatever the job did after its last recorded state is not in the store;
    the non-zero exit makes the backend report the job as failed, so the
    client's reconciliation records it instead of waiting forever.
    """
    from jobkit.stores.patient import EXIT_STORE_UNREACHABLE

    _flush_std()
    print(
        f"jobkit worker: job {job_id}: could not record its state or result, the store "
        f"stayed unreachable: {exc}",
        file=sys.stderr,
    )
    return EXIT_STORE_UNREACHABLE


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobkit.worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("job_id", nargs="?", help="id of the job to run (jk-...)")
    parser.add_argument("--store", default=os.environ.get("JOBKIT_STORE"), help="store URL")
    parser.add_argument("--array", metavar="ARRAY_ID", help="run this task's item of an array")
    parser.add_argument("--offset", type=int, default=0, help="index of the array's first item")
    parser.add_argument(
        "--launcher",
        choices=launcher_names(),
        default=PLAIN,
        help="glue for the scheduler it runs in",
    )
    args = parser.parse_args(argv)
    if not args.store:
        parser.error("no store: pass --store URL or set JOBKIT_STORE")
    if bool(args.job_id) == bool(args.array):
        parser.error("give a JOB_ID, or --array ARRAY_ID for an array task")
    job_id = args.job_id or array_item(args.array, args.offset)
    try:
        if args.launcher != PLAIN:
            return load_launcher(args.launcher)(args.store, job_id)
        from jobkit.signing import load_key
        from jobkit.stores.patient import open_patient_store

        return run_job(open_patient_store(args.store), job_id, load_key())
    except StoreUnavailableError as exc:
        return _store_unreachable(job_id, exc)
    except JobkitError as exc:
        print(f"jobkit worker: {exc}", file=sys.stderr)
        return EXIT_UNLOADABLE


if __name__ == "__main__":
    sys.exit(main())
