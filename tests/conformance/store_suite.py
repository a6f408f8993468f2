"""The behaviour every store must show, written once (fsspec ``tests/abstract`` style).

A store implementation gets its tests by subclassing :class:`StoreConformance`
in a ``test_*.py`` module and providing a ``store`` fixture that yields a
fresh, empty store.  Nothing here knows which store it is testing.
"""

from __future__ import annotations

import array
import itertools
import threading
from collections.abc import Iterator

import pytest

from jobkit.errors import BlobNotFoundError, IllegalTransitionError, JobNotFoundError, StoreError
from jobkit.states import LEGAL_TRANSITIONS, FailureReason, JobRecord, JobRow, JobState
from jobkit.stores.base import Change, Store, outcome_key, payload_key
from jobkit.usage import usage_key

_ids = itertools.count()


def make_record(**fields: object) -> JobRecord:
    values: dict[str, object] = {
        "id": f"jk-{next(_ids)}",
        "name": "job",
        "backend": "local",
        "created_at": 1000.0,
    }
    values.update(fields)
    return JobRecord(**values)  # type: ignore[arg-type]


def full_record() -> JobRecord:
    """A record with every field set away from its default."""
    return JobRecord(
        id="jk-full",
        name="train-7",
        backend="slurm",
        state=JobState.FAILED,
        created_at=1700000000.25,
        submitted_at=1700000001.5,
        started_at=1700000002.75,
        finished_at=1700000100.0,
        backend_id="12345_7",
        native_state="TIMEOUT",
        failure_reason=FailureReason.TIMEOUT,
        message="ran past 2h",
        exit_code=137,
        host="node-3",
        pid=4242,
        priority=10,
        owner="alice",
        array_id="jk-array-1",
        array_index=7,
        attempt=2,
        resources={"cpus": 4, "mem": 17179869184, "gpus": 0.5, "gpu_type": "a100"},
        labels={"project": "vision", "üñí": "çødé"},
        extra={"log_paths": ["/a/out", "/a/err"], "nested": {"k": [1, 2.5, None, True]}},
    )


class StoreConformance:
    """Mix in with a ``store`` fixture yielding a fresh, empty store."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError("subclasses provide a `store` fixture")

    # -- create / get --------------------------------------------------------
    def test_create_then_get(self, store: Store) -> None:
        record = make_record(name="hello")
        store.create([record])
        assert store.get(record.id) == record

    def test_create_is_atomic_and_get_many_leaves_out_unknown_ids(self, store: Store) -> None:
        records = [make_record() for _ in range(5)]
        store.create(records)
        got = store.get_many([r.id for r in records[:3]] + ["jk-nope"])
        assert got == {r.id: r for r in records[:3]}
        assert store.get_many([]) == {}
        store.create([])

    def test_finished_among_returns_only_terminal_records(self, store: Store) -> None:
        running = make_record(state=JobState.RUNNING)
        done = make_record(state=JobState.SUCCEEDED)
        failed = make_record(state=JobState.FAILED)
        store.create([running, done, failed])
        found = store.finished_among([running.id, done.id, failed.id, "jk-unknown"])
        assert set(found) == {done.id, failed.id}
        assert found[done.id] == done
        store.transition(running.id, JobState.CANCELLED)
        assert set(store.finished_among([running.id])) == {running.id}

    def test_finished_among_since_finds_what_the_plain_call_finds(self, store: Store) -> None:
        """``since`` is a hint (no watched job is older); the answer must not change."""
        older = make_record(state=JobState.SUCCEEDED, created_at=10.0)  # not watched
        watched = [make_record(created_at=100.0 + i) for i in range(8)]
        store.create([older, *watched])
        for record in watched[::3]:
            store.transition(record.id, JobState.FAILED, failure_reason="ERROR")
        ids = [r.id for r in watched] + ["jk-unknown"]
        plain = store.finished_among(ids)
        assert set(plain) == {watched[0].id, watched[3].id, watched[6].id}
        assert store.finished_among(ids, since=100.0) == plain
        assert store.finished_among(ids, since=0.0) == plain

    def test_record_round_trips_every_field(self, store: Store) -> None:
        record = full_record()
        store.create([record])
        assert store.get(record.id) == record
        assert store.get_many([record.id]) == {record.id: record}
        assert store.query() == [record]
        assert store.get(record.id).to_json() == record.to_json()

    def test_records_are_copied_in_and_out(self, store: Store) -> None:
        record = make_record(labels={"a": "1"})
        store.create([record])
        record.labels["a"] = "changed by caller after create"
        got = store.get(record.id)
        assert got.labels == {"a": "1"}
        got.labels["b"] = "changed by caller after get"
        got.state = JobState.SUCCEEDED
        assert store.get(record.id).labels == {"a": "1"}
        assert store.get(record.id).state is JobState.PENDING

    def test_duplicate_id_refused_and_nothing_of_the_batch_stored(self, store: Store) -> None:
        first = make_record()
        store.create([first])
        newcomer = make_record()
        with pytest.raises(StoreError, match=first.id):
            store.create([newcomer, make_record(id=first.id, name="impostor")])
        assert store.get(first.id) == first
        assert store.get_many([newcomer.id]) == {}
        twin = make_record()
        with pytest.raises(StoreError, match=twin.id):
            store.create([twin, twin])
        assert store.get_many([twin.id]) == {}

    def test_unknown_job_raises_job_not_found(self, store: Store) -> None:
        for call in (
            lambda: store.get("jk-missing"),
            lambda: store.transition("jk-missing", JobState.RUNNING),
            lambda: store.update("jk-missing", host="x"),
        ):
            with pytest.raises(JobNotFoundError, match="jk-missing") as info:
                call()
            assert isinstance(info.value, KeyError)
            assert info.value.job_id == "jk-missing"

    def test_values_json_cannot_hold_are_refused(self, store: Store) -> None:
        record = make_record(extra={"handle": object()})
        with pytest.raises(StoreError, match=record.id):
            store.create([record])
        assert store.get_many([record.id]) == {}
        ok = make_record()
        store.create([ok])
        with pytest.raises(StoreError, match="JSON"):
            store.update(ok.id, extra={"s": {1, 2}})
        assert store.get(ok.id) == ok

    # -- transitions ---------------------------------------------------------
    def test_every_legal_and_illegal_transition(self, store: Store) -> None:
        pairs = list(itertools.product(JobState, JobState))
        records = {pair: make_record(state=pair[0]) for pair in pairs}
        store.create(list(records.values()))
        for (source, target), record in records.items():
            result = store.transition(record.id, target)
            if target in LEGAL_TRANSITIONS[source]:
                assert result is not None, f"{source} -> {target} should be allowed"
                assert result.state is target
                assert store.get(record.id).state is target
            else:
                assert result is None, f"{source} -> {target} should be refused"
                assert store.get(record.id) == record

    def test_transition_many_applies_each_change_as_transition_would(self, store: Store) -> None:
        queued, cancelled, running = (
            make_record(state=JobState.QUEUED),
            make_record(state=JobState.CANCELLED),
            make_record(state=JobState.RUNNING),
        )
        store.create([queued, cancelled, running])
        results = store.transition_many(
            [
                Change(queued.id, JobState.RUNNING, fields={"host": "n1", "pid": 7}),
                Change(cancelled.id, JobState.RUNNING),  # refused: it stays cancelled
                Change("jk-absent", JobState.RUNNING),  # pruned meanwhile: None, not an error
                Change(
                    running.id,
                    JobState.SUCCEEDED,
                    expect={JobState.RUNNING},
                    fields={"exit_code": 0},
                    blobs={outcome_key(running.id): b"the outcome"},
                ),
            ]
        )
        assert [r.state if r else None for r in results] == [
            JobState.RUNNING,
            None,
            None,
            JobState.SUCCEEDED,
        ]
        assert results[0] is not None and (results[0].host, results[0].pid) == ("n1", 7)
        assert store.get(queued.id) == results[0]
        assert store.get(cancelled.id) == cancelled
        assert store.get(running.id).exit_code == 0
        assert store.get_blob(outcome_key(running.id)) == b"the outcome"
        assert store.transition_many([]) == []

    def test_a_rerun_reopens_failed_and_cancelled_jobs_only(self, store: Store) -> None:
        """FAILED/CANCELLED -> PENDING is the one way out of an end (a user's rerun):
        one compare-and-set each, with the new attempt's fields; SUCCEEDED stays."""
        failed = make_record(
            state=JobState.FAILED,
            failure_reason=FailureReason.ERROR,
            message="boom",
            finished_at=1001.0,
            exit_code=1,
            backend_id="b-1",
            host="n1",
            pid=7,
        )
        cancelled = make_record(state=JobState.CANCELLED, finished_at=1002.0)
        done = make_record(state=JobState.SUCCEEDED, finished_at=1003.0)
        store.create([failed, cancelled, done])
        cleared = {
            "finished_at": None,
            "failure_reason": None,
            "message": None,
            "exit_code": None,
            "backend_id": None,
            "host": None,
            "pid": None,
        }
        entry = {"attempt": 0, "reason": "ERROR", "message": "boom"}
        results = store.transition_many(
            [
                Change(
                    failed.id,
                    JobState.PENDING,
                    {JobState.FAILED},
                    {**cleared, "attempt": 1, "attempts": [entry]},
                ),
                Change(cancelled.id, JobState.PENDING, {JobState.CANCELLED}, {"attempt": 1}),
                Change(cancelled.id, JobState.PENDING, {JobState.CANCELLED}, {"attempt": 2}),
            ]
        )
        assert results[0] is not None and results[1] is not None
        assert results[2] is None  # reopened once: the second rerun of it is refused
        again = store.get(failed.id)
        assert again.state is JobState.PENDING and again.attempt == 1
        assert again.attempts == [entry] and again.failure_reason is None
        assert (again.finished_at, again.backend_id, again.host, again.pid) == (None,) * 4
        assert store.get(cancelled.id).attempt == 1
        with pytest.raises(IllegalTransitionError):
            store.transition(done.id, JobState.PENDING, expect={JobState.SUCCEEDED})
        assert store.transition(done.id, JobState.PENDING) is None
        assert store.get(done.id) == done
        # A late worker of the ended attempt records its end from RUNNING only:
        # refused while the new attempt waits.
        late = Change(failed.id, JobState.SUCCEEDED, {JobState.RUNNING}, {"exit_code": 0})
        assert store.transition_many([late]) == [None]
        assert store.get(failed.id) == again
        assert store.transition(failed.id, JobState.PENDING) is None  # not from PENDING

    def test_transition_many_refuses_an_illegal_move_before_writing(self, store: Store) -> None:
        done, queued = make_record(state=JobState.SUCCEEDED), make_record(state=JobState.QUEUED)
        store.create([done, queued])
        with pytest.raises(IllegalTransitionError):
            store.transition_many(
                [
                    Change(queued.id, JobState.RUNNING),
                    Change(done.id, JobState.RUNNING, expect={JobState.SUCCEEDED}),
                ]
            )
        assert store.get(queued.id) == queued

    def test_put_blobs_and_get_blobs(self, store: Store) -> None:
        blobs = {payload_key(f"jk-b{i}"): f"payload {i}".encode() for i in range(3)}
        store.put_blobs({**blobs, outcome_key("jk-b0"): [b"out", b"come"]})
        assert store.get_blob(outcome_key("jk-b0")) == b"outcome"
        found = store.get_blobs([*blobs, payload_key("jk-absent")])
        assert found == {k: bytearray(v) for k, v in blobs.items()}
        assert all(isinstance(v, bytearray) for v in found.values())

    def test_blob_keys_lists_by_prefix_inline_and_large(self, store: Store) -> None:
        large = b"x" * (300 * 1024)  # past SQLite's inline limit: a file there
        store.put_blobs(
            {
                "cache/ab1": b"one",
                "cache/ab2": large,
                "cache/b": b"two",
                "cache/deep/c": b"three",
                "cachet/x": b"not under cache/",
                payload_key("jk-k1"): b"payload",
            }
        )
        assert store.blob_keys("cache/") == ["cache/ab1", "cache/ab2", "cache/b", "cache/deep/c"]
        assert store.blob_keys("cache/ab") == ["cache/ab1", "cache/ab2"]
        assert store.blob_keys("nothing/") == []
        store.delete_blobs(["cache/ab2", "cache/b"])
        assert store.blob_keys("cache/") == ["cache/ab1", "cache/deep/c"]

    def test_rows_of_a_cached_job_name_its_source(self, store: Store) -> None:
        ran = make_record(state=JobState.SUCCEEDED, finished_at=3.0)
        hit = make_record(
            state=JobState.SUCCEEDED,
            finished_at=4.0,
            extra={"cached_from": ran.id, "cache_key": "ab" * 32},
        )
        store.create([ran, hit])
        rows = {r.id: r for r in store.rows()}
        assert rows[hit.id].cached_from == ran.id and rows[ran.id].cached_from is None
        assert sorted(rows.values(), key=lambda r: r.id) == sorted(
            (JobRow.of(r) for r in store.query()), key=lambda r: r.id
        )

    def test_blobs_present_tells_without_reading(self, store: Store) -> None:
        store.put_blobs({outcome_key("jk-p1"): b"small", outcome_key("jk-p2"): b"y" * 300_000})
        wanted = [outcome_key("jk-p1"), outcome_key("jk-p2"), outcome_key("jk-absent")]
        assert store.blobs_present(wanted) == {outcome_key("jk-p1"), outcome_key("jk-p2")}
        assert store.blobs_present([]) == set()

    def test_succeeded_job_never_runs_again(self, store: Store) -> None:
        record = make_record(state=JobState.RUNNING)
        store.create([record])
        assert store.transition(record.id, JobState.SUCCEEDED, exit_code=0) is not None
        assert store.transition(record.id, JobState.RUNNING, host="late-worker") is None
        assert store.transition(record.id, JobState.QUEUED) is None
        after = store.get(record.id)
        assert after.state is JobState.SUCCEEDED
        assert after.host is None

    def test_cancelled_stays_cancelled_when_the_worker_finishes_late(self, store: Store) -> None:
        record = make_record(state=JobState.RUNNING)
        store.create([record])
        cancelled = store.transition(record.id, JobState.CANCELLED, message="by user")
        assert cancelled is not None and cancelled.state is JobState.CANCELLED
        late = store.transition(
            record.id, JobState.SUCCEEDED, exit_code=0, finished_at=2000.0, message="done"
        )
        assert late is None
        after = store.get(record.id)
        assert (after.state, after.message, after.exit_code) == (
            JobState.CANCELLED,
            "by user",
            None,
        )

    def test_expect_narrows_the_sources(self, store: Store) -> None:
        record = make_record(state=JobState.QUEUED)
        store.create([record])
        assert store.transition(record.id, JobState.RUNNING, expect={JobState.PENDING}) is None
        assert store.get(record.id).state is JobState.QUEUED
        moved = store.transition(
            record.id, JobState.RUNNING, expect=[JobState.PENDING, JobState.QUEUED]
        )
        assert moved is not None and moved.state is JobState.RUNNING
        # requeue only from RUNNING (preemption), not from QUEUED
        assert store.transition(record.id, JobState.QUEUED, expect={JobState.RUNNING})
        assert store.transition(record.id, JobState.QUEUED, expect={JobState.RUNNING}) is None

    def test_expect_cannot_widen_the_legal_sources(self, store: Store) -> None:
        record = make_record(state=JobState.SUCCEEDED)
        store.create([record])
        with pytest.raises(IllegalTransitionError, match="SUCCEEDED"):
            store.transition(record.id, JobState.RUNNING, expect={JobState.SUCCEEDED})
        assert store.get(record.id) == record

    def test_fields_are_set_alongside_a_transition(self, store: Store) -> None:
        record = make_record(state=JobState.QUEUED, extra={"log": "/x"})
        store.create([record])
        running = store.transition(
            record.id, JobState.RUNNING, host="node-1", pid=99, started_at=1500.0
        )
        assert running is not None
        assert (running.host, running.pid, running.started_at) == ("node-1", 99, 1500.0)
        failed = store.transition(
            record.id,
            JobState.FAILED,
            failure_reason="OOM",
            exit_code=137,
            extra={"log": "/x", "peak_mem": 123},
        )
        assert failed is not None
        assert failed.failure_reason is FailureReason.OOM
        assert failed.host == "node-1"
        assert store.get(record.id) == failed

    def test_bad_fields_in_a_transition_change_nothing(self, store: Store) -> None:
        record = make_record(state=JobState.RUNNING)
        store.create([record])
        with pytest.raises(StoreError, match="no_such_field"):
            store.transition(record.id, JobState.SUCCEEDED, no_such_field=1)
        with pytest.raises(StoreError, match="failure_reason"):
            store.transition(record.id, JobState.FAILED, failure_reason="EXPLODED")
        with pytest.raises(StoreError, match="'id'"):
            store.transition(record.id, JobState.FAILED, id="jk-other")
        assert store.get(record.id) == record

    def test_concurrent_threads_agree_on_one_winner(self, store: Store) -> None:
        records = [make_record(state=JobState.RUNNING) for _ in range(20)]
        store.create(records)
        wins: list[tuple[str, int]] = []
        barrier = threading.Barrier(4)

        def finish(worker: int) -> None:
            barrier.wait()
            for r in records:
                if store.transition(r.id, JobState.SUCCEEDED, pid=worker) is not None:
                    wins.append((r.id, worker))

        threads = [threading.Thread(target=finish, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(w[0] for w in wins) == sorted(r.id for r in records)
        for job_id, worker in wins:
            assert store.get(job_id).pid == worker

    # -- update --------------------------------------------------------------
    def test_update_sets_fields_and_keeps_state(self, store: Store) -> None:
        record = make_record(state=JobState.SUCCEEDED)
        store.create([record])
        updated = store.update(record.id, backend_id="4711", extra={"gpu": [0, 1]})
        assert (updated.backend_id, updated.extra, updated.state) == (
            "4711",
            {"gpu": [0, 1]},
            JobState.SUCCEEDED,
        )
        assert store.get(record.id) == updated
        assert store.update(record.id) == updated

    def test_update_refuses_state_id_and_unknown_fields(self, store: Store) -> None:
        record = make_record()
        store.create([record])
        with pytest.raises(IllegalTransitionError, match="transition"):
            store.update(record.id, state=JobState.RUNNING)
        with pytest.raises(StoreError, match="'colour'"):
            store.update(record.id, colour="blue")
        with pytest.raises(StoreError, match="'id'"):
            store.update(record.id, id="jk-renamed")
        assert store.get(record.id) == record

    # -- query ---------------------------------------------------------------
    @pytest.fixture
    def listing(self, store: Store) -> dict[str, JobRecord]:
        S = JobState
        rows = {
            "a": make_record(id="q-a", name="train-1", state=S.RUNNING, created_at=10.0),
            "b": make_record(id="q-b", name="train-2", state=S.SUCCEEDED, created_at=20.0),
            "c": make_record(
                id="q-c", name="eval", backend="slurm", state=S.RUNNING, created_at=30.0
            ),
            "d": make_record(
                id="q-d", name="Train-3", backend="slurm", state=S.FAILED, created_at=40.0
            ),
            "e": make_record(
                id="q-e", name="sweep[0]", state=S.QUEUED, created_at=50.0, array_id="arr"
            ),
            "f": make_record(
                id="q-f", name="sweep[1]", state=S.QUEUED, created_at=50.0, array_id="arr"
            ),
            "g": make_record(id="q-g", name="xval", state=S.PENDING, created_at=60.0),
        }
        store.create(list(rows.values()))
        return rows

    @staticmethod
    def keys(records: list[JobRecord]) -> str:
        return "".join(r.id.removeprefix("q-") for r in records)

    def test_query_orders_newest_first_then_by_id(
        self, store: Store, listing: dict[str, JobRecord]
    ) -> None:
        assert self.keys(store.query()) == "gfedcba"
        assert self.keys(store.query(oldest_first=True)) == "abcdefg"
        assert store.query()[0] == listing["g"]

    def test_query_by_state(self, store: Store, listing: dict[str, JobRecord]) -> None:
        assert self.keys(store.query(states=[JobState.RUNNING])) == "ca"
        assert self.keys(store.query(states={JobState.QUEUED, JobState.FAILED})) == "fed"
        assert store.query(states=[]) == []
        assert store.query(states=[JobState.CANCELLED]) == []

    def test_query_by_backend_array_and_time(
        self, store: Store, listing: dict[str, JobRecord]
    ) -> None:
        assert self.keys(store.query(backend="slurm")) == "dc"
        assert self.keys(store.query(backend="slurm", states=[JobState.RUNNING])) == "c"
        assert self.keys(store.query(array_id="arr", oldest_first=True)) == "ef"
        assert self.keys(store.query(created_before=40.0)) == "cba"  # strictly before
        assert self.keys(store.query(created_before=40.0, limit=2)) == "cb"

    def test_query_name_is_a_case_sensitive_shell_glob(
        self, store: Store, listing: dict[str, JobRecord]
    ) -> None:
        assert self.keys(store.query(name="train*")) == "ba"
        assert self.keys(store.query(name="?val")) == "gc"
        assert self.keys(store.query(name="[!t]*")) == "gfedc"
        assert self.keys(store.query(name="[Tt]rain-?")) == "dba"
        assert self.keys(store.query(name="sweep[[]1]")) == "f"
        assert self.keys(store.query(name="eval")) == "c"
        assert store.query(name="EVAL") == []

    def test_query_limit(self, store: Store, listing: dict[str, JobRecord]) -> None:
        assert self.keys(store.query(limit=3)) == "gfe"
        assert self.keys(store.query(limit=2, oldest_first=True)) == "ab"
        assert store.query(limit=0) == []
        assert len(store.query(limit=100)) == 7
        with pytest.raises(StoreError, match="limit"):
            store.query(limit=-1)

    def test_a_maps_items_are_ordered_by_index_not_as_text(self, store: Store) -> None:
        """Items ``A.0 .. A.11`` share ``created_at``: ``.10`` must not sort before ``.9``."""
        S = JobState
        states = [S.QUEUED, S.RUNNING, S.SUCCEEDED]
        items = [
            make_record(
                id=f"m-a.{i}", state=states[i % 3], created_at=70.0, array_id="m-a", array_index=i
            )
            for i in range(12)
        ]
        others = [
            make_record(id="m-0", created_at=65.0),
            make_record(id="m-z", created_at=70.0),  # same time, another id: after the map
            make_record(id="m-9", created_at=75.0),
        ]
        store.create(items[::-1] + others)
        newest = ["m-9", "m-z", *(f"m-a.{i}" for i in range(11, -1, -1)), "m-0"]

        def ids(records: list[JobRecord] | list[JobRow]) -> list[str]:
            return [r.id for r in records]

        assert ids(store.query()) == newest
        assert ids(store.query(oldest_first=True)) == newest[::-1]
        assert ids(store.rows()) == newest
        assert ids(store.query(array_id="m-a", oldest_first=True)) == [
            f"m-a.{i}" for i in range(12)
        ]
        assert ids(store.query(array_id="m-a", limit=3)) == ["m-a.11", "m-a.10", "m-a.9"]
        assert ids(store.query(limit=4)) == newest[:4]  # a page cut inside the map
        assert ids(store.query(limit=4, oldest_first=True)) == newest[::-1][:4]
        several = [S.QUEUED, S.SUCCEEDED]  # one total order across the states too
        expected = [r for r in newest if r.startswith("m-a.") and int(r[4:]) % 3 != 1]
        assert ids(store.query(states=several)) == expected
        assert ids(store.query(states=several, limit=3)) == expected[:3]
        assert ids(store.rows(states=several, limit=5)) == expected[:5]

    def test_rows_show_what_the_records_say_in_query_order(
        self, store: Store, listing: dict[str, JobRecord]
    ) -> None:
        S = JobState
        store.transition("q-a", S.FAILED, failure_reason="OOM", finished_at=12.5, host="gpu~7/a b")
        store.transition("q-e", S.RUNNING, started_at=51.25, host="n" * 300)  # too long for a key
        store.update("q-g", name="x" * 400)
        store.transition("q-c", S.SUCCEEDED, started_at=31.0, finished_at=35.0, host="")
        for filters in (
            {},
            {"limit": 3},
            {"states": [S.RUNNING, S.FAILED]},
            {"backend": "slurm"},
            {"name": "[!t]*"},
            {"name": "x*", "limit": 1},
            {"states": [S.QUEUED], "backend": "local", "limit": 5},
        ):
            expected = [JobRow.of(r) for r in store.query(**filters)]  # type: ignore[arg-type]
            assert store.rows(**filters) == expected, filters  # type: ignore[arg-type]
        (oom,) = store.rows(states=[S.FAILED], backend="local")
        assert (oom.failure_reason, oom.finished_at, oom.host) == (
            FailureReason.OOM,
            12.5,
            "gpu~7/a b",
        )
        assert store.rows(limit=0) == [] and store.rows(states=[]) == []

    # -- delete --------------------------------------------------------------
    def test_delete_removes_records_and_their_blobs(self, store: Store) -> None:
        gone, kept = make_record(), make_record()
        store.create([gone, kept])
        for record in (gone, kept):
            store.put_blob(payload_key(record.id), b"payload")
            store.put_blob(outcome_key(record.id), b"outcome")
            store.put_blob(usage_key(record.id), b"{}")
        assert store.delete([gone.id, "jk-never-existed"]) == 1
        assert store.get_many([gone.id, kept.id]) == {kept.id: kept}
        for key in (payload_key(gone.id), outcome_key(gone.id), usage_key(gone.id)):
            with pytest.raises(BlobNotFoundError):
                store.get_blob(key)
        assert store.get_blob(payload_key(kept.id)) == b"payload"
        assert store.get_blob(outcome_key(kept.id)) == b"outcome"
        assert store.get_blob(usage_key(kept.id)) == b"{}"
        assert store.delete([gone.id]) == 0
        assert store.delete([]) == 0

    # -- blobs ---------------------------------------------------------------
    def test_blob_round_trip(self, store: Store) -> None:
        store.put_blob("payloads/jk-1", b"\x00\x01binary\xff")
        blob = store.get_blob("payloads/jk-1")
        assert isinstance(blob, bytearray)
        assert blob == b"\x00\x01binary\xff"
        store.put_blob("outcomes/empty", b"")
        assert store.get_blob("outcomes/empty") == bytearray()

    def test_multi_buffer_put_joins_bytes_and_memoryviews(self, store: Store) -> None:
        floats = array.array("d", [1.5, -2.0, 3.25])
        buffers = [b"head:", bytearray(b"mid:"), memoryview(b"xxtailxx")[2:6], memoryview(floats)]
        store.put_blob("payloads/multi", buffers)
        assert store.get_blob("payloads/multi") == b"head:mid:tail" + floats.tobytes()

    def test_put_blob_copies_and_get_blob_returns_a_private_bytearray(self, store: Store) -> None:
        data = bytearray(b"original")
        store.put_blob("payloads/copy", [memoryview(data)])
        data[:] = b"MUTATED!"
        first = store.get_blob("payloads/copy")
        assert first == b"original"
        first[0:1] = b"X"  # writable, and private to this caller
        assert store.get_blob("payloads/copy") == b"original"

    def test_large_blob(self, store: Store) -> None:
        big = bytes(range(256)) * (4 * 4096)  # 4 MiB
        store.put_blob("payloads/big", [big[:1000], memoryview(big)[1000:]])
        assert store.get_blob("payloads/big") == big

    def test_overwrite_is_atomic(self, store: Store) -> None:
        old, new = b"a" * 300_000, b"b" * 100_000
        store.put_blob("outcomes/jk-x", old)
        seen: set[bytes] = set()
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                blob = bytes(store.get_blob("outcomes/jk-x"))
                seen.add(blob[:1] + str(len(blob)).encode())
                assert blob in (old, new)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for i in range(60):
                store.put_blob("outcomes/jk-x", new if i % 2 else old)
        finally:
            stop.set()
            reader.join()
        assert seen <= {b"a300000", b"b100000"}
        store.put_blob("outcomes/jk-x", new)
        assert store.get_blob("outcomes/jk-x") == new

    def test_missing_blob(self, store: Store) -> None:
        with pytest.raises(BlobNotFoundError, match="outcomes/jk-none") as info:
            store.get_blob("outcomes/jk-none")
        assert isinstance(info.value, KeyError)
        store.put_blob("logs/jk-1/stdout", b"x")
        with pytest.raises(BlobNotFoundError):
            store.get_blob("logs/jk-1")  # a prefix is not a blob

    def test_delete_blobs_ignores_missing_keys(self, store: Store) -> None:
        store.put_blob("payloads/a", b"1")
        store.put_blob("payloads/b", b"2")
        store.delete_blobs(iter(["payloads/a", "payloads/never"]))
        with pytest.raises(BlobNotFoundError):
            store.get_blob("payloads/a")
        assert store.get_blob("payloads/b") == b"2"

    @pytest.mark.parametrize(
        "key", ["", "/etc/passwd", "../escape", "payloads/../../x", "a//b", "a/./b", "a\\b", ".x"]
    )
    def test_unsafe_blob_keys_are_refused(self, store: Store, key: str) -> None:
        with pytest.raises(StoreError, match="blob key"):
            store.put_blob(key, b"x")
        with pytest.raises(StoreError, match="blob key"):
            store.get_blob(key)
        with pytest.raises(StoreError, match="blob key"):
            store.delete_blobs([key])

    # -- lifecycle -----------------------------------------------------------
    def test_repr_names_the_url_and_closed_store_refuses_work(self, store: Store) -> None:
        assert store.url in repr(store)
        store.create([make_record()])
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.query()

    # -- corrupted records ------------------------------------------------------
    def corrupt(self, store: Store, job_id: str, field: str, value: object) -> None:
        """Set ``field`` of the stored record to ``value`` behind the store's back
        (raw SQL, a raw object write): subclasses provide it for their store."""
        pytest.skip(f"{type(self).__name__} cannot corrupt a stored record")

    CORRUPTIONS = [
        ("created_at", "2026-12-05"),
        ("created_at", None),
        ("started_at", "noon"),
        ("finished_at", True),
        ("exit_code", "1"),
        ("attempt", 1.5),
        ("priority", None),
        ("pid", [1]),
        ("name", 5),
        ("host", {"a": 1}),
        ("resources", []),
        ("extra", "x"),
        ("state", "BOGUS"),
        ("failure_reason", "MELTED"),
    ]

    @pytest.mark.parametrize(("field", "value"), CORRUPTIONS)
    def test_a_corrupted_record_is_skipped_named_and_prunable(
        self, store: Store, field: str, value: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        bad, good = make_record(started_at=1001.0), make_record(started_at=1001.0)
        store.create([bad, good])
        self.corrupt(store, bad.id, field, value)
        with pytest.raises(StoreError, match=rf"corrupted job record '{bad.id}'.*{field}"):
            store.get(bad.id)
        assert store.get_many([bad.id, good.id]) == {good.id: good}
        assert [r.id for r in store.query()] == [good.id]
        # Stores whose rows come from an index (S3) may still list it, from the
        # index's own well-typed fields; none may hand on the corrupted values.
        rows = store.rows()
        assert [r.id for r in rows if r.id != bad.id] == [good.id]
        assert all(isinstance(r.created_at, (int, float)) for r in rows)
        assert all(isinstance(r.state, JobState) for r in rows)
        warned = [r.getMessage() for r in caplog.records if bad.id in r.getMessage()]
        assert len(warned) == 1 and field in warned[0], warned
        problems = store.find_corrupted()
        assert list(problems) == [bad.id] and field in problems[bad.id]
        assert store.delete(list(problems)) == 1
        assert store.find_corrupted() == {}
        assert [r.id for r in store.query()] == [good.id]

    # -- payloads without records (a submitter killed before it recorded them) -----
    def test_payload_blobs_lists_every_payload_with_its_write_time(self, store: Store) -> None:
        import time

        recorded = make_record()
        store.create([recorded])
        before = time.time()
        for job_id in (recorded.id, "jk-orphan-1", "jk-orphan-2"):
            store.put_blob(payload_key(job_id), b"payload")
        store.put_blob(outcome_key("jk-orphan-3"), b"not a payload")
        store.put_blob("payloads/jk-x/nested", b"not a payload either")
        found = store.payload_blobs()
        assert sorted(found) == sorted([recorded.id, "jk-orphan-1", "jk-orphan-2"])
        assert all(before - 5 <= t <= time.time() + 5 for t in found.values()), found
        store.delete_blobs([payload_key("jk-orphan-1")])
        assert "jk-orphan-1" not in store.payload_blobs()

    def test_prune_plans_orphan_payloads_only_past_the_grace(self, store: Store) -> None:
        import time

        from jobkit import pruning

        recorded, corrupted = make_record(), make_record()
        store.create([recorded, corrupted])
        for job_id in (recorded.id, corrupted.id, "jk-orphan"):
            store.put_blob(payload_key(job_id), b"payload")
        self.corrupt(store, corrupted.id, "created_at", "yesterday")  # still its record
        now = time.time()
        plan = pruning.plan(store, states=[], age=None, corrupted=False, now=now)
        assert plan.orphans == []  # younger than the default grace (an hour)
        plan = pruning.plan(
            store, states=[], age=None, corrupted=False, now=now + 10, orphan_grace=5
        )
        assert plan.orphans == ["jk-orphan"]
        pruning.execute(store, plan)
        assert sorted(store.payload_blobs()) == sorted([recorded.id, corrupted.id])
        assert store.get_blob(payload_key(recorded.id)) == b"payload"
