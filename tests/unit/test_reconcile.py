"""The reconciler's decisions, on real stores: retry or fail, and who may write FAILED."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from jobkit.observation import Accepted, Observation, Phase
from jobkit.reconcile import (
    RETRIED_BY_DEFAULT,
    Failure,
    accept,
    apply,
    awaiting_resubmission,
    fail,
    requeue,
    resubmitted,
    resubmitter_gone,
    retries_left,
    retry_allowed,
    settle,
)
from jobkit.serialization import Call, dump_payload, load_outcome
from jobkit.states import FailureReason, JobRecord, JobState
from jobkit.stores.base import Store, outcome_key, payload_key
from jobkit.stores.memory import MemoryStore
from jobkit.stores.sqlite import SQLiteStore
from jobkit.worker import run_job

KEY = b"k" * 32


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "j.db")
    yield made
    made.close()


def put(
    store: Store,
    state: JobState,
    *,
    attempt: int = 0,
    retries: int | None = None,
    job_id: str | None = None,
    **more: Any,
) -> JobRecord:
    resources: dict[str, Any] = {"cpus": 1, **more}
    if retries is not None:
        resources["retries"] = retries
    record = JobRecord(
        id=job_id or f"jk-{state.value.lower()}-{attempt}",
        name="job",
        backend="local",
        created_at=1.0,
        attempt=attempt,
        resources=resources,
    )
    store.create([record])
    if state is not JobState.PENDING:
        moved = store.transition(record.id, state)
        assert moved is not None
        return moved
    return record


ON_ERROR = ["ERROR"]


@pytest.mark.parametrize(
    ("reason", "attempt", "retries", "retry_on", "requeued"),
    [
        (FailureReason.ERROR, 0, None, None, False),
        (FailureReason.ERROR, 0, 2, None, False),  # a user's bug: not retried by default
        (FailureReason.ERROR, 0, 0, ON_ERROR, False),
        (FailureReason.ERROR, 0, 2, ON_ERROR, True),
        (FailureReason.ERROR, 1, 2, ON_ERROR, True),
        (FailureReason.ERROR, 2, 2, ON_ERROR, False),
        (FailureReason.ERROR, 5, 2, ON_ERROR, False),
        (FailureReason.TIMEOUT, 0, 1, None, False),
        (FailureReason.TIMEOUT, 0, 1, ["TIMEOUT"], True),
        (FailureReason.OOM, 0, 1, None, False),
        (FailureReason.OOM, 0, 1, ["OOM"], True),
        (FailureReason.PREEMPTED, 0, 1, None, True),
        (FailureReason.PREEMPTED, 0, 1, ["LOST"], False),
        (FailureReason.LOST, 1, 2, None, True),
        (FailureReason.LOST, 2, 2, None, False),
        (FailureReason.SUBMIT_ERROR, 0, 3, ["SUBMIT_ERROR"], False),
    ],
)
def test_a_running_failure_is_retried_while_retries_remain_and_its_class_is_covered(
    store: Store,
    reason: FailureReason,
    attempt: int,
    retries: int | None,
    retry_on: list[str] | None,
    requeued: bool,
) -> None:
    extra = {} if retry_on is None else {"retry_on": retry_on}
    record = put(store, JobState.RUNNING, attempt=attempt, retries=retries, **extra)
    written = settle(store, record, Failure(reason, "it broke", 137, "NATIVE"))
    assert written is not None
    now = store.get(record.id)
    assert now == written
    if requeued:
        assert now.state is JobState.QUEUED and now.attempt == attempt + 1
        assert now.failure_reason is None and now.finished_at is None
        assert now.message == f"retrying after {reason.value}: it broke"
    else:
        assert now.state is JobState.FAILED and now.attempt == attempt
        assert now.failure_reason is reason and now.message == "it broke"
        assert now.finished_at is not None
    assert now.exit_code == 137 and now.native_state == "NATIVE"


def test_only_states_named_for_requeue_go_back_to_the_queue(store: Store) -> None:
    queued = put(store, JobState.QUEUED, retries=3)
    written = settle(store, queued, Failure(FailureReason.LOST, "node gone"))
    assert written is not None and written.state is JobState.FAILED
    pending = put(store, JobState.PENDING, retries=3)
    again = settle(
        store,
        pending,
        Failure(FailureReason.LOST, "pod gone"),
        requeue_from=(JobState.PENDING,),
        retry_message="retrying after the pod vanished",
    )
    assert again is not None and again.state is JobState.QUEUED and again.attempt == 1
    assert again.message == "retrying after the pod vanished"


def test_a_late_observer_does_not_overwrite_a_cancel(store: Store) -> None:
    stale = put(store, JobState.RUNNING, retries=2)
    assert store.transition(stale.id, JobState.CANCELLED) is not None
    assert settle(store, stale, Failure(FailureReason.LOST, "worker vanished")) is None
    assert fail(store, stale.id, Failure(FailureReason.ERROR, "late")) is None
    now = store.get(stale.id)
    assert now.state is JobState.CANCELLED and now.failure_reason is None


def test_fail_respects_expect_and_keeps_the_native_state_when_none_is_given(store: Store) -> None:
    queued = put(store, JobState.QUEUED)
    store.update(queued.id, native_state="PENDING")
    assert (
        fail(store, queued.id, Failure(FailureReason.OOM, "x"), expect=(JobState.RUNNING,)) is None
    )
    failed = fail(
        store, queued.id, Failure(FailureReason.SUBMIT_ERROR, "never fits"), finished_at=5.0
    )
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.failure_reason is FailureReason.SUBMIT_ERROR and failed.finished_at == 5.0
    assert failed.native_state == "PENDING" and failed.exit_code is None


def test_requeue_counts_an_attempt_and_refuses_a_moved_job(store: Store) -> None:
    running = put(store, JobState.RUNNING, retries=1)
    assert retries_left(running) == 1
    again = requeue(store, running, "requeued from a checkpoint")
    assert again is not None and again.attempt == 1 and retries_left(again) == 0
    assert requeue(store, running, "twice") is None  # no longer RUNNING


def test_the_default_policy_retries_only_the_infrastructures_failures() -> None:
    assert frozenset({FailureReason.PREEMPTED, FailureReason.LOST}) == RETRIED_BY_DEFAULT
    record = JobRecord(id="jk-1", name="j", backend="local", resources={"retries": 1})
    assert all(retry_allowed(record, reason) for reason in RETRIED_BY_DEFAULT)
    others = frozenset(FailureReason) - RETRIED_BY_DEFAULT
    assert not any(retry_allowed(record, reason) for reason in others)
    grows = JobRecord(id="jk-2", name="j", backend="local", resources={"retries": 1, "mem": 10})
    grows.resources["mem_growth"] = 2.0
    assert retry_allowed(grows, FailureReason.OOM)  # mem_growth names what to change
    record.attempt = 1
    assert not any(retry_allowed(record, reason) for reason in FailureReason)


def raises(message: str) -> None:
    raise ValueError(message)


def test_the_worker_counts_retries_from_the_record_not_its_environment(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale launcher variable once gave the worker its own count of retries."""
    monkeypatch.setenv("JOBKIT_RETRIES_LEFT", "5")
    monkeypatch.setenv("JOBKIT_RETRIES", "5")
    for retries, final in ((0, True), (2, False)):
        record = put(
            store,
            JobState.QUEUED,
            retries=retries,
            job_id=f"jk-retries-{retries}",
            retry_on=["builtins.ValueError"],
        )
        call = Call(fn=raises, args=("boom",), kwargs={})
        store.put_blob(payload_key(record.id), dump_payload(call, key=KEY, job_id=record.id))
        assert run_job(store, record.id, KEY) == 1
        now = store.get(record.id)
        if final:
            assert now.state is JobState.FAILED and now.failure_reason is FailureReason.ERROR
            assert now.message == "ValueError: boom" and now.exit_code == 1
            outcome = load_outcome(
                store.get_blob(outcome_key(record.id)), key=KEY, job_id=record.id
            )
            with pytest.raises(ValueError, match="boom"):
                outcome.unwrap()
        else:
            assert now.state is JobState.QUEUED and now.attempt == 1
            assert now.message == "retrying after ValueError: boom"


# -- every FAILED goes through the reconciler ---------------------------------------

SRC = Path(jobkit.__file__).parent
RECONCILER = SRC / "reconcile.py"
REPLAYS = {("stores/copy.py", "_bring_up_to_date"), ("stores/base.py", "transition_many")}
"""Functions that replay a state another store already recorded (``jobkit store copy``),
or apply the :class:`~jobkit.stores.base.Change` objects they were given (each built
where the checker sees it): they decide nothing."""


def unreconciled_transitions(source: str) -> list[tuple[int, str | None]]:
    """Lines of ``transition(...)`` calls, and of ``Change(...)`` (a batched
    transition), that may write a state other than a named non-FAILED
    ``JobState`` member: FAILED itself, or a state held in a variable.
    A store method that forwards its own ``state`` parameter is allowed."""
    tree = ast.parse(source)
    lines: list[tuple[int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call) and (
                (isinstance(child.func, ast.Attribute) and child.func.attr == "transition")
                or (isinstance(child.func, ast.Name) and child.func.id == "Change")
            ):
                state = next((k.value for k in child.keywords if k.arg == "state"), None)
                if state is None and len(child.args) > 1:
                    state = child.args[1]
                named = (
                    isinstance(state, ast.Attribute)
                    and isinstance(state.value, ast.Name)
                    and state.value.id == "JobState"
                    and state.attr != "FAILED"
                )
                forwarded = function == "transition" and isinstance(state, ast.Name)
                if not (named or forwarded):
                    lines.append((child.lineno, function))
            visit(child, function)

    visit(tree, None)
    return lines


def test_the_checker_catches_a_failed_write_however_spelled() -> None:
    sample = """
from jobkit.states import JobState
def observe(store, job_id, state, JobState=JobState):
    store.transition(job_id, JobState.FAILED, failure_reason="LOST")
    store.transition(job_id, state=JobState.FAILED)
    store.transition(job_id, state)
    store.transition(job_id, verdict.state)
    store.transition(job_id, JobState.QUEUED)
    store.transition_many([Change(job_id, JobState.FAILED), Change(job_id, state)])
    store.transition_many([Change(job_id, JobState.SUCCEEDED)])
class Patient:
    def transition(self, job_id, state, **fields):
        return self.inner.transition(job_id, state, **fields)
"""
    assert unreconciled_transitions(sample) == [(n, "observe") for n in (4, 5, 6, 7, 9, 9)]


def test_no_failed_transition_outside_the_reconciler() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == RECONCILER:
            continue
        where = path.relative_to(SRC).as_posix()
        offenders += [
            f"{where}:{line}"
            for line, function in unreconciled_transitions(path.read_text())
            if (where, function) not in REPLAYS
        ]
    assert not offenders, f"write FAILED through jobkit.reconcile.fail/settle: {offenders}"


# -- what backends accepted and saw ----------------------------------------------------


def test_accept_records_queued_with_the_backend_id_and_keeps_a_fast_workers_running(
    store: Store,
) -> None:
    waiting = put(store, JobState.PENDING, job_id="jk-waits")
    fast = put(store, JobState.PENDING, job_id="jk-fast")
    store.update(waiting.id, extra={"cwd": "/work"})
    store.transition(fast.id, JobState.RUNNING, expect=(JobState.PENDING,))  # worker first
    records = [store.get(waiting.id), store.get(fast.id)]
    accept(
        store,
        records,
        [Accepted(waiting.id, "41", {"stdout": "/o"}), Accepted(fast.id, "42")],
        submitted_at=5.0,
    )
    got = store.get(waiting.id)
    assert (got.state, got.backend_id, got.submitted_at) == (JobState.QUEUED, "41", 5.0)
    assert got.extra == {"cwd": "/work", "stdout": "/o"}  # merged, not replaced
    ran = store.get(fast.id)
    assert (ran.state, ran.backend_id) == (JobState.RUNNING, "42")  # not undone


@pytest.mark.parametrize(
    ("seen", "reruns", "state", "reason", "attempt"),
    [
        (Observation("OUT_OF_MEMORY", Phase.ENDED, FailureReason.OOM), False, "FAILED", "OOM", 0),
        (Observation("COMPLETED", Phase.ENDED), False, "QUEUED", None, 1),  # LOST: resubmitted
        # Slurm's FAILED: the process exited non-zero, its worker recorded nothing: LOST
        (Observation("FAILED", Phase.ENDED, FailureReason.ERROR), False, "QUEUED", None, 1),
        (Observation("Failed/OOM", Phase.ENDED, FailureReason.OOM), True, "FAILED", "OOM", 0),
        (Observation("Evicted", Phase.ENDED, FailureReason.PREEMPTED), True, "QUEUED", None, 1),
        (Observation("Pending/Err", Phase.STUCK), True, "FAILED", "SUBMIT_ERROR", 0),
        (Observation("CANCELLED by 0", Phase.CANCELLED), False, "CANCELLED", None, 0),
        # The scheduler requeued a running attempt: it ended (PREEMPTED), the next runs.
        (Observation("REQUEUED", Phase.WAITING), False, "QUEUED", None, 1),
        (Observation("RUNNING", Phase.RUNNING), False, "RUNNING", None, 0),
    ],
)
def test_apply_reads_each_phase_once(
    store: Store,
    seen: Observation,
    reruns: bool,
    state: str,
    reason: str | None,
    attempt: int,
) -> None:
    put(store, JobState.RUNNING, retries=1)
    record = store.update("jk-running-0", backend_id="7")  # the backend's job, as observed
    apply(store, [record], {record.id: seen}, reruns=reruns, now=9.0)
    got = store.get(record.id)
    assert got.state is JobState(state) and got.attempt == attempt
    assert (got.failure_reason.value if got.failure_reason else None) == reason
    if got.state is JobState.FAILED:
        assert got.native_state == seen.native_state and got.finished_at == 9.0
        assert got.message  # the backend's words, or what the reconciler says it lacked


def test_apply_never_overwrites_what_a_worker_recorded_meanwhile(store: Store) -> None:
    record = put(store, JobState.RUNNING)
    store.transition(record.id, JobState.SUCCEEDED)  # after the backend looked
    apply(store, [record], {record.id: Observation("Failed/LOST", Phase.ENDED)})
    assert store.get(record.id).state is JobState.SUCCEEDED


def test_apply_keeps_messages_and_unknown_native_words_without_moving_the_job(
    store: Store,
) -> None:
    record = put(store, JobState.QUEUED)
    apply(store, [record], {record.id: Observation("Pending/X", Phase.WAITING, message="pull")})
    got = store.get(record.id)
    assert (got.state, got.message, got.native_state) == (JobState.QUEUED, "pull", "Pending/X")
    apply(store, [got], {got.id: Observation("WEIRD_STATE", Phase.UNKNOWN)})
    assert store.get(record.id).native_state == "WEIRD_STATE"


def test_apply_records_where_a_lost_attempt_ran_if_the_worker_never_said(store: Store) -> None:
    record = put(store, JobState.QUEUED)
    apply(store, [record], {record.id: Observation("Failed", Phase.ENDED, host="pod-1")})
    assert store.get(record.id).host == "pod-1"


def test_backends_never_write_job_states() -> None:
    """Backends return what they accepted and saw; only the reconciler writes."""
    offenders = []
    for path in sorted((SRC / "backends").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"transition", "transition_many", "create", "update"}
                and "store" in ast.unparse(node.func.value)
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, offenders


# -- observed failures of backends that do not rerun attempts: requeued, resubmitted ------


def running_on(store: Store, job_id: str, **resources: Any) -> JobRecord:
    record = put(store, JobState.RUNNING, job_id=job_id, **resources)
    return store.update(record.id, backend_id="101")


def test_a_requeue_moves_the_ended_attempts_usage_and_start_into_its_entry(
    store: Store,
) -> None:
    running = put(store, JobState.RUNNING, retries=2)
    live = {"cpu_seconds": 2.5, "final": False, "wall_seconds": 3.0}
    running = store.update(running.id, usage=live, host="node-1", pid=41, started_at=5.0)
    final = {**live, "final": True, "cpu_seconds": 2.6}
    again = requeue(store, running, "worker retry", usage=final)  # the worker's end
    assert again is not None and again.usage == {}
    assert (again.started_at, again.host, again.pid) == (None, None, None)  # waits again
    (entry,) = again.attempts
    assert entry["usage"] == final and entry["host"] == "node-1" and entry["started_at"] == 5.0
    moved = store.transition(again.id, JobState.RUNNING)
    assert moved is not None
    moved = store.update(moved.id, usage=live)
    third = requeue(store, moved, "observed", reason=FailureReason.PREEMPTED)  # an observer's
    assert third is not None and third.usage == {}
    assert third.attempts[1]["usage"] == live  # the last one recorded: all it knows


@pytest.mark.parametrize(
    ("seen", "reason"),
    [
        (Observation("COMPLETED", Phase.ENDED, host="node-7"), "LOST"),
        (
            Observation("PREEMPTED", Phase.ENDED, FailureReason.PREEMPTED, host="node-7"),
            "PREEMPTED",
        ),
    ],
)
def test_a_retryable_observed_failure_is_requeued_for_resubmission_with_its_history(
    store: Store, seen: Observation, reason: str
) -> None:
    record = running_on(store, "jk-lost", retries=1)
    again = apply(store, [record], {record.id: seen}, reruns=False, now=9.0)
    got = store.get(record.id)
    assert [r.id for r in again] == [record.id] and again[0] == got
    assert got.state is JobState.QUEUED and got.attempt == 1 and got.failure_reason is None
    assert got.message.startswith(f"retrying after {reason}")
    (first,) = got.attempts
    assert first["attempt"] == 0 and first["reason"] == reason
    assert first["host"] == "node-7" and first["backend_id"] == "101"
    assert got.extra["resubmit"]["of"] == "101"  # until the backend takes the next attempt
    # Seen again before the resubmission (its resubmitter, this process, is alive):
    # not a second failure.
    assert apply(store, [got], {got.id: seen}, reruns=False) == []
    assert store.get(record.id) == got
    # Spent: the next observed failure is final.
    taken = resubmitted(store, got, [Accepted(got.id, "102", {"stdout": "/o"})])
    assert taken is not None and taken.backend_id == "102" and "resubmit" not in taken.extra
    moved = store.transition(got.id, JobState.RUNNING)
    assert moved is not None
    assert apply(store, [moved], {got.id: seen}, reruns=False) == []
    final = store.get(record.id)
    assert final.state is JobState.FAILED and final.failure_reason is FailureReason(reason)
    assert final.attempt == 1 and len(final.attempts) == 1


def test_an_error_class_outside_retry_on_is_not_requeued_by_an_observer(store: Store) -> None:
    record = running_on(store, "jk-timeout", retries=3)
    seen = Observation("TIMEOUT", Phase.ENDED, FailureReason.TIMEOUT)
    assert apply(store, [record], {record.id: seen}, reruns=False) == []
    got = store.get(record.id)
    assert got.state is JobState.FAILED and got.failure_reason is FailureReason.TIMEOUT


def test_an_oom_retry_asks_for_grown_memory_up_to_mem_max(store: Store) -> None:
    record = running_on(store, "jk-oom", retries=3, mem=1000, mem_growth=2.0, mem_max=3000)
    oom = Observation("OUT_OF_MEMORY", Phase.ENDED, FailureReason.OOM)
    (again,) = apply(store, [record], {record.id: oom}, reruns=False)
    assert again.resources["mem"] == 2000 and again.attempts[0]["mem"] == 1000
    assert again.attempts[0]["reason"] == "OOM" and "mem=2000" in (again.message or "")
    resubmitted(store, again, [Accepted(again.id, "102")])
    moved = store.transition(again.id, JobState.RUNNING)
    assert moved is not None
    (third,) = apply(store, [moved], {again.id: oom}, reruns=False)
    assert third.resources["mem"] == 3000  # capped
    assert [a["mem"] for a in third.attempts] == [1000, 2000]


def test_a_dead_resubmitters_attempt_is_resubmitted_by_the_next_observer(store: Store) -> None:
    record = running_on(store, "jk-orphan", retries=1)
    seen = Observation("COMPLETED", Phase.ENDED)
    (again,) = apply(store, [record], {record.id: seen}, reruns=False)
    dead = {"of": "101", "host": again.extra["resubmit"]["host"], "pid": 2**22 + 7, "started": 1}
    orphan = store.update(again.id, extra={**again.extra, "resubmit": dead})
    assert awaiting_resubmission(orphan) and resubmitter_gone(orphan)
    assert apply(store, [orphan], {orphan.id: seen}, reruns=False) == [orphan]
    assert store.get(record.id).attempt == 1  # no attempt spent twice


def test_a_worker_requeued_attempt_whose_backend_job_ended_is_resubmitted_not_recounted(
    store: Store,
) -> None:
    """The worker requeued an ERROR itself on a backend that reruns nothing
    (its backend job is still the last attempt's): seen ended, it is handed
    back for resubmission, its attempt not spent again."""
    record = running_on(store, "jk-worker-requeued", retries=2, retry_on=["ERROR"])
    again = requeue(store, record, "retrying after ValueError: x", reason=FailureReason.ERROR)
    assert again is not None and awaiting_resubmission(again) and resubmitter_gone(again)
    seen = Observation("FAILED", Phase.ENDED, FailureReason.ERROR)
    assert apply(store, [again], {again.id: seen}, reruns=False) == [again]
    assert store.get(record.id) == again


def test_a_running_attempt_the_scheduler_requeued_is_kept_as_preempted(store: Store) -> None:
    record = running_on(store, "jk-requeued")
    apply(store, [record], {record.id: Observation("REQUEUED", Phase.WAITING)}, reruns=False)
    got = store.get(record.id)
    assert got.state is JobState.QUEUED and got.attempt == 1 and got.native_state == "REQUEUED"
    (first,) = got.attempts
    assert first["reason"] == "PREEMPTED" and first["backend_id"] == "101"
    assert "requeued it (REQUEUED)" in first["message"]
    queued = put(store, JobState.QUEUED, job_id="jk-waits")  # still waiting: no attempt ended
    apply(store, [queued], {queued.id: Observation("PENDING", Phase.WAITING)})
    assert store.get(queued.id).attempt == 0 and store.get(queued.id).attempts == []


def test_a_running_job_found_by_its_mark_after_its_submitter_died_keeps_running(
    store: Store,
) -> None:
    """Its worker started before anyone recorded the backend id; the backend's
    hand-over says it found the job (WAITING with the id): that is no requeue,
    only the id to keep (the Kubernetes fault test found 20 jobs requeued)."""
    record = put(store, JobState.RUNNING, job_id="jk-handed-over")
    found = Observation("Found", Phase.WAITING, backend_id="jk-handed-over[0]")
    apply(store, [record], {record.id: found}, reruns=True)
    got = store.get(record.id)
    assert got.state is JobState.RUNNING and got.attempt == 0 and got.attempts == []
    assert got.backend_id == "jk-handed-over[0]"
