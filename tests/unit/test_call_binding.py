"""A call that cannot bind the function's signature is refused at submit.

Every entry point (``submit``, ``map``, ``RemoteFunction``, ``Executor``)
raises Python's own ``TypeError`` naming the function, and nothing is
written: no record, no payload blob, no agent started.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from jobkit.calls import check_calls, signature_of
from jobkit.client import Client


def sq(x: int) -> int:
    return x * x


def kw_only(x: int, *, scale: int) -> int:
    return x * scale


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    with jobkit.use(store=f"sqlite:///{tmp_path}/j.db", backend="local") as client:
        yield client


def _nothing_recorded(client: Client, tmp_path: Path) -> None:
    assert client.store.query(limit=None) == []
    blobs = tmp_path / "j.db.d" / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]
    assert not client._backends.get("local") or not client.backend("local").paths.socket.exists()


BAD_CALLS: list[tuple[str, Callable[[], Any], str]] = [
    ("too many", lambda: jobkit.submit(sq, 1, 2, 3), "too many positional arguments"),
    ("missing", lambda: jobkit.submit(sq), "missing a required argument: 'x'"),
    ("unknown kw", lambda: jobkit.submit(sq, 1, y=2), "unexpected keyword argument 'y'"),
    ("kw only", lambda: jobkit.submit(kw_only, 1, 2), "too many positional arguments"),
    ("remote", lambda: jobkit.remote(sq).submit(1, 2), "too many positional arguments"),
    ("options", lambda: jobkit.remote(sq).options(cpus=1).submit(), "missing a required"),
    ("partial", lambda: jobkit.submit(functools.partial(sq, 1), 2), "too many positional"),
]


@pytest.mark.parametrize(("_label", "call", "reason"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_submit_that_cannot_bind_raises_and_records_nothing(
    client: Client, tmp_path: Path, _label: str, call: Callable[[], Any], reason: str
) -> None:
    with pytest.raises(TypeError) as info:
        call()
    message = str(info.value)
    assert reason in message
    assert "sq" in message or "kw_only" in message or "partial" in message
    _nothing_recorded(client, tmp_path)


def test_map_with_one_bad_item_records_nothing(client: Client, tmp_path: Path) -> None:
    items: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((i,), {}) for i in range(50)]
    items[37] = ((37,), {"y": 1})
    with pytest.raises(TypeError, match=r"^sq\(x\) cannot be called with item 37 "):
        client.map(sq, items)
    with pytest.raises(TypeError, match=r"item 0 of the map .*unexpected keyword argument .extra."):
        jobkit.remote(kw_only).map([1, 2, 3], scale=2, extra=1)
    _nothing_recorded(client, tmp_path)


def test_executor_submit_and_map_check_the_call(client: Client, tmp_path: Path) -> None:
    executor = jobkit.Executor()
    with pytest.raises(TypeError, match=r"sq\(x\) cannot be called with \(1, 2\)"):
        executor.submit(sq, 1, 2)
    with pytest.raises(TypeError, match="item 0 of the map"):
        executor.map(sq, [1, 2], [3, 4])
    _nothing_recorded(client, tmp_path)


def test_builtins_without_a_signature_are_not_checked(client: Client) -> None:
    """``max`` has no signature Python can read: its calls are left to the worker."""
    assert signature_of(max) is None
    check_calls(max, [((1, 2, 3), {"key": None}), ((), {})])  # no error raised here
    with pytest.raises(TypeError, match=r"pow\(base, exp, mod=None\) cannot"):
        check_calls(pow, [((1,), {})])  # builtins with a signature are checked


def test_signature_is_computed_once_per_function() -> None:
    first = signature_of(sq)
    assert first is not None and first is signature_of(sq)
