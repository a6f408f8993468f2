"""The timeline's layout for records no real run produces on demand: a job
still waiting, one cancelled before it ran, an end without a time, a worker
that recorded its start before the submitter recorded the submission, a
clock behind the worker's, long spans (minute ticks) and folded rows."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from jobkit.errors import ConfigError
from jobkit.states import FailureReason, JobRecord, JobState
from jobkit.timeline import MAX_ROWS, layout, render_svg

T0 = 1_700_000_000.0


def item(index: int, state: JobState, **times: float | None) -> JobRecord:
    fields = {"created_at": T0, **{k: v for k, v in times.items() if k != "created_at"}}
    if "created_at" in times and times["created_at"] is not None:
        fields["created_at"] = times["created_at"]
    return JobRecord(
        id=f"jk-a.{index}",
        name="f",
        backend="local",
        state=state,
        array_id="jk-a",
        array_index=index,
        **fields,  # type: ignore[arg-type]
    )


def kinds(record: JobRecord, now: float) -> dict[str, tuple[float, float]]:
    (row,) = layout([record], now=now).rows
    return {s.kind: (s.start, s.end) for s in row.segments}


def test_a_waiting_job_is_a_queued_bar_to_now() -> None:
    assert kinds(item(0, JobState.PENDING), T0 + 5) == {"queued": (0.0, 5.0)}
    queued = item(0, JobState.QUEUED, submitted_at=T0 + 1)
    # zero: the array's creation (the user's submission); waiting: from the backend's
    assert kinds(queued, T0 + 5) == {"queued": (1.0, 5.0)}


def test_cancelled_before_running_ends_where_it_was_cancelled() -> None:
    cancelled = item(0, JobState.CANCELLED, submitted_at=T0 + 1, finished_at=T0 + 3)
    assert kinds(cancelled, T0 + 100) == {"queued": (1.0, 3.0), "end": (3.0, 3.0)}


def test_an_end_without_a_time_is_drawn_at_the_last_known_moment() -> None:
    failed = item(0, JobState.FAILED, submitted_at=T0 + 2)
    failed.failure_reason = FailureReason.SUBMIT_ERROR
    assert kinds(failed, T0 + 100) == {"queued": (2.0, 2.0), "end": (2.0, 2.0)}


def test_start_recorded_before_the_submission_counts_the_wait_from_creation() -> None:
    early = item(0, JobState.SUCCEEDED, submitted_at=T0 + 3, started_at=T0 + 2, finished_at=T0 + 4)
    assert kinds(early, T0 + 100) == {
        "queued": (0.0, 2.0),
        "running": (2.0, 4.0),
        "end": (4.0, 4.0),
    }


def test_a_requeued_attempt_waits_from_its_previous_attempts_end() -> None:
    previous = {"attempt": 0, "reason": "PREEMPTED", "started_at": T0 + 10, "ended_at": T0 + 40}
    # As requeues wrote it before they cleared the start: attempt 0's started_at kept.
    stale = item(0, JobState.QUEUED, submitted_at=T0 + 1, started_at=T0 + 10)
    stale.attempt, stale.attempts = 1, [previous]
    assert kinds(stale, T0 + 100) == {"queued": (40.0, 100.0), "attempt": (10.0, 40.0)}
    cleared = item(0, JobState.QUEUED, submitted_at=T0 + 1)
    cleared.attempt, cleared.attempts = 1, [previous]
    assert kinds(cleared, T0 + 100) == kinds(stale, T0 + 100)
    again = item(0, JobState.SUCCEEDED, submitted_at=T0 + 1, started_at=T0 + 50)
    again.finished_at, again.attempt, again.attempts = T0 + 60, 1, [previous]
    assert kinds(again, T0 + 100) == {
        "queued": (40.0, 50.0),
        "running": (50.0, 60.0),
        "end": (60.0, 60.0),
        "attempt": (10.0, 40.0),
    }


def test_a_clock_behind_the_worker_draws_no_negative_bar() -> None:
    running = item(0, JobState.RUNNING, submitted_at=T0, started_at=T0 + 10)
    segments = kinds(running, now=T0 + 5)
    assert segments["running"] == (10.0, 10.0)


def test_long_runs_tick_in_minutes_and_hours() -> None:
    done = item(0, JobState.SUCCEEDED, started_at=T0 + 60, finished_at=T0 + 600)
    ticks = [label for _s, label in layout([done], now=T0).ticks]
    assert ticks[0] == "0s" and "2m" in ticks and "10m" in ticks and len(ticks) <= 9
    long = item(0, JobState.SUCCEEDED, started_at=T0 + 60, finished_at=T0 + 5 * 3600)
    assert "1h" in [label for _s, label in layout([long], now=T0).ticks]


def test_folded_rows_show_the_worst_state_and_count_every_item() -> None:
    records = [
        item(
            i,
            JobState.FAILED if i == 1 else JobState.SUCCEEDED,
            started_at=T0 + 1,
            finished_at=T0 + 2,
        )
        for i in range(MAX_ROWS * 3)
    ]
    plan = layout(records, now=T0 + 10)
    assert plan.folded and len(plan.rows) == MAX_ROWS and plan.items == MAX_ROWS * 3
    assert [r.state for r in plan.rows[:2]] == [JobState.FAILED, JobState.SUCCEEDED]
    assert (plan.rows[0].index, plan.rows[0].last_index, plan.rows[0].count) == (0, 2, 3)
    assert "1 FAILED" in plan.rows[0].segments[0].title


def test_labels_and_messages_are_escaped() -> None:
    failed = item(0, JobState.FAILED, started_at=T0 + 1, finished_at=T0 + 2)
    failed.failure_reason = FailureReason.ERROR
    failed.message = "ValueError: <b>&'\""
    root = ET.fromstring(render_svg([failed], now=T0 + 3))  # parses: nothing unescaped
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any("<b>&'\"" in t for t in titles)


def test_sizes_too_small_are_refused_with_the_minimum() -> None:
    done = item(0, JobState.SUCCEEDED, started_at=T0 + 1, finished_at=T0 + 2)
    with pytest.raises(ConfigError, match=r"width 10 is too small: give at least \d+ px"):
        render_svg([done], width=10)
    with pytest.raises(ConfigError, match=r"height 3 is too small"):
        render_svg([done], height=3)
    empty = ET.fromstring(render_svg([], now=T0))
    assert empty.get("data-items") == "0"
