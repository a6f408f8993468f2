"""Reading a stored record checks every field's type, on its fast path too.

``JobRecord.from_dict`` answers the usual case (exact types, known keys) with
one lookup per field; these are the cases that path must not let through.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobkit.errors import StoreError
from jobkit.states import JobRecord, JobState

GOOD: dict[str, Any] = JobRecord(
    id="jk-1", name="n", backend="local", state=JobState.SUCCEEDED, created_at=5.0, pid=7
).to_dict()


class Name(str):
    """A str subclass: not what JSON gives, but a valid string."""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_at", True),
        ("created_at", float("nan")),
        ("finished_at", float("inf")),
        ("started_at", float("-inf")),
        ("created_at", None),
        ("created_at", "5"),
        ("pid", 7.0),
        ("pid", False),
        ("priority", None),
        ("name", 3),
        ("labels", []),
    ],
)
def test_a_field_of_the_wrong_type_is_a_corrupted_record(field: str, value: Any) -> None:
    with pytest.raises(StoreError, match=f"field '{field}'"):
        JobRecord.from_dict({**GOOD, field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [("created_at", 5), ("finished_at", None), ("pid", None), ("name", Name("x"))],
)
def test_accepted_values_read_back_unchanged(field: str, value: Any) -> None:
    assert getattr(JobRecord.from_dict({**GOOD, field: value}), field) == value


def test_keys_a_newer_version_added_are_ignored() -> None:
    record = JobRecord.from_dict({**GOOD, "added_later": 1})
    assert record.to_dict() == GOOD
