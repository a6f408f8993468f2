"""Envelopes, out-of-band buffers and the errors users see at submit time."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from jobkit.errors import JobFailedError, SerializationError, SignatureError
from jobkit.serialization import Call, dump_outcome, dump_payload, load_outcome, load_payload

KEY = b"s" * 32


def roundtrip(call: Call, job_id: str = "jk-1") -> Call:
    data = bytearray(b"".join(dump_payload(call, key=KEY, job_id=job_id)))
    return load_payload(data, key=KEY, job_id=job_id)[1]


def test_large_array_travels_out_of_band_and_stays_writable() -> None:
    array = np.arange(1_000_000, dtype=np.float64)
    parts = dump_payload(Call(fn=np.sum, args=(array,), kwargs={}), key=KEY, job_id="jk-1")
    # The array's memory is handed over as its own buffer, not copied into the pickle.
    assert any(isinstance(p, memoryview) and p.nbytes == array.nbytes for p in parts)
    assert sum(memoryview(p).nbytes for p in parts) < array.nbytes + 10_000
    loaded = load_payload(bytearray(b"".join(parts)), key=KEY, job_id="jk-1")[1]
    assert loaded.args[0].flags.writeable and np.array_equal(loaded.args[0], array)


def test_unpicklable_argument_is_named() -> None:
    with pytest.raises(SerializationError, match=r"argument 'lock' cannot be pickled: lock"):
        dump_payload(
            Call(fn=print, args=(1,), kwargs={"lock": threading.Lock()}), key=KEY, job_id="j"
        )
    with pytest.raises(SerializationError, match=r"argument 0 cannot be pickled"):
        dump_payload(Call(fn=print, args=(threading.Lock(),), kwargs={}), key=KEY, job_id="j")


def test_closures_and_lambdas_roundtrip_by_value() -> None:
    factor = 3
    call = roundtrip(Call(fn=lambda x: x * factor, args=(2,), kwargs={}))
    assert call.resolve()(*call.args) == 6


def test_truncated_envelope_is_refused() -> None:
    data = b"".join(dump_payload(Call(fn=print, args=(), kwargs={}), key=KEY, job_id="j"))
    with pytest.raises(SignatureError):
        load_payload(data[:20], key=KEY, job_id="j")
    with pytest.raises(SignatureError):
        load_payload(data[:-1], key=KEY, job_id="j")


def test_outcome_of_unpicklable_exception_keeps_the_traceback() -> None:
    try:
        error = RuntimeError("with a lock")
        error.lock = threading.Lock()  # type: ignore[attr-defined]
        raise error
    except RuntimeError as exc:
        parts = dump_outcome(key=KEY, job_id="j", error=exc)
    outcome = load_outcome(b"".join(parts), key=KEY, job_id="j")
    assert isinstance(outcome.error, JobFailedError)
    assert (
        "RuntimeError" in str(outcome.error) and "test_outcome_of_unpicklable" in outcome.traceback
    )


def test_exception_that_cannot_be_rebuilt_becomes_job_failed_error() -> None:
    class Unbuildable(Exception):
        def __init__(self, a: int, b: int) -> None:  # pickles, but fails to unpickle
            super().__init__(a)

    try:
        raise Unbuildable(1, 2)
    except Unbuildable as exc:
        parts = dump_outcome(key=KEY, job_id="j", error=exc)
    outcome = load_outcome(b"".join(parts), key=KEY, job_id="j")
    assert isinstance(outcome.error, JobFailedError)
    assert "Unbuildable" in str(outcome.error)
    assert "Unbuildable" in outcome.error.remote_traceback
