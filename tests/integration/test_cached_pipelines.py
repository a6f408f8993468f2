"""Caching inside pipelines: keys of stages downstream of a cache hit, cached
results shared by several dependents, and a hit that must still wait on
``after=`` (real local agent and workers, a SQLite store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import local_env
from jobkit.states import FailureReason, JobState

T = 60


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_env(tmp_path_factory.mktemp("cached"), cpus=2) as configured:
        yield configured


def test_a_stage_after_a_cache_hit_is_a_hit_too(client: Any) -> None:
    """The hit of stage 1 is a new job (new id); stage 2 is keyed by the job whose
    result it reads, so the whole cached pipeline is reused, not only its head."""
    cached = jobkit.remote(cache=True)
    first = cached(helpers.square).submit(7)
    second = cached(helpers.add).submit(first, 1)
    assert second.result(timeout=T) == 50
    first_again = cached(helpers.square).submit(7)
    second_again = cached(helpers.add).submit(first_again, 1)
    assert first_again.info.extra.get("cached_from") == first.id
    assert second_again.info.extra.get("cached_from") == second.id
    assert second_again.result(timeout=T) == 50
    third = cached(helpers.add).submit(first_again, 2)  # another argument: a miss
    assert "cached_from" not in third.info.extra and third.result(timeout=T) == 51


def test_cached_results_of_one_source_are_never_aliased_in_a_dependent(client: Any) -> None:
    """Two items with equal calls hit one source; the dependent gets two arrays,
    not one buffer twice (out-of-band pickle buffers must be copied)."""
    pytest.importorskip("numpy")
    make = jobkit.remote(cache=True)(helpers.ones)
    assert [a.tolist() for a in make.map([1, 1]).results(timeout=T, progress=False)] == [
        [1.0],
        [1.0],
    ]
    again = make.map([1, 1])
    assert all(job.info.extra.get("cached_from") for job in again)
    assert jobkit.submit(helpers.bump_first, again).result(timeout=T) == [6.0, 1.0]


def test_a_cache_hit_still_fails_for_a_failed_after_dependency(client: Any, tmp_path: Path) -> None:
    cached = jobkit.remote(cache=True)(helpers.square)
    assert cached.submit(11).result(timeout=T) == 121
    broken = jobkit.submit(helpers.fail_with, 3)
    with pytest.raises(helpers.CustomError):
        broken.result(timeout=T)
    late = cached.options(after=[broken]).submit(11)
    with pytest.raises(jobkit.DependencyError) as caught:
        late.result(timeout=T)
    assert caught.value.dependency_id == broken.id
    assert late.info.state is JobState.FAILED
    assert late.info.failure_reason is FailureReason.DEPENDENCY
    assert "cached_from" not in late.info.extra
