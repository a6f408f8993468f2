"""Source lines of by-value code travel with the payload (notebook cells, exec'd code).

Code is compiled under a file name that does not exist and registered in
``linecache`` the way IPython registers a cell.  The payload is then run in a
fresh interpreter, whose linecache knows nothing of that file: only the
shipped entries can put the cell's lines into the remote traceback.
"""

from __future__ import annotations

import linecache
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from jobkit.serialization import (
    Call,
    dump_outcome,
    dump_payload,
    load_outcome,
    pickle_function,
    read_payload_header,
)

KEY = b"k" * 32
CELL = "/nonexistent/ipykernel_test/cell-1.py"
CELL_SOURCE = textwrap.dedent(
    """\
    def outer(x):
        def inner(y):
            marker_inner = y + 1
            raise ValueError(f"cell failure {marker_inner}")
        return inner(x)

    def make_closure(k):
        def closure(x):
            marker_closure = x * k
            raise KeyError(marker_closure)
        return closure

    class Model:
        def fit(self, x):
            marker_method = x - 1
            raise RuntimeError(marker_method)
    """
)

# Runs a payload as a worker does (load_payload, then call), in a new process.
RUNNER = textwrap.dedent(
    """\
    import sys
    from jobkit.serialization import dump_outcome, load_payload
    key, job_id, path, out = sys.argv[1].encode(), sys.argv[2], sys.argv[3], sys.argv[4]
    _header, call = load_payload(open(path, "rb").read(), key=key, job_id=job_id)
    try:
        call.resolve()(*call.args, **call.kwargs)
    except Exception as exc:
        outcome = dump_outcome(key=key, job_id=job_id, error=exc)
        open(out, "wb").write(b"".join(outcome))
    """
)


@pytest.fixture
def cell() -> Iterator[dict[str, Any]]:
    """The namespace of an exec'd 'cell', registered in linecache like IPython does."""
    lines = [line + "\n" for line in CELL_SOURCE.splitlines()]
    linecache.cache[CELL] = (len(CELL_SOURCE), None, lines, CELL)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(CELL_SOURCE, CELL, "exec"), namespace)
    yield namespace
    linecache.cache.pop(CELL, None)


def run_elsewhere(tmp_path: Path, call: Call, job_id: str = "jk-cell") -> str:
    """The remote traceback text of ``call`` run in a fresh interpreter."""
    payload = tmp_path / "payload"
    payload.write_bytes(b"".join(dump_payload(call, key=KEY, job_id=job_id)))
    out = tmp_path / "outcome"
    subprocess.run(
        [sys.executable, "-c", RUNNER, KEY.decode(), job_id, str(payload), str(out)],
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(jobkit.__file__).parents[1])},
    )
    outcome = load_outcome(out.read_bytes(), key=KEY, job_id=job_id)
    assert not outcome.ok
    return outcome.traceback


def test_nested_function_shows_its_cell_lines(cell: dict[str, Any], tmp_path: Path) -> None:
    text = run_elsewhere(tmp_path, Call(fn=cell["outer"], args=(1,), kwargs={}))
    assert f'File "{CELL}", line 5, in outer' in text
    assert "return inner(x)" in text
    assert 'raise ValueError(f"cell failure {marker_inner}")' in text


def test_closure_shows_its_cell_lines(cell: dict[str, Any], tmp_path: Path) -> None:
    text = run_elsewhere(tmp_path, Call(fn=cell["make_closure"](3), args=(2,), kwargs={}))
    assert "raise KeyError(marker_closure)" in text


def test_method_of_a_by_value_class_shows_its_cell_lines(
    cell: dict[str, Any], tmp_path: Path
) -> None:
    model = cell["Model"]()
    text = run_elsewhere(tmp_path, Call(fn=model.fit, args=(5,), kwargs={}))
    assert "raise RuntimeError(marker_method)" in text


def test_map_ships_the_sources_once_per_function(cell: dict[str, Any], tmp_path: Path) -> None:
    shared = pickle_function(cell["outer"])
    assert set(shared.sources) == {CELL}
    text = run_elsewhere(tmp_path, Call(fn=None, args=(1,), kwargs={}, fn_pickle=shared))
    assert 'raise ValueError(f"cell failure {marker_inner}")' in text


def test_only_files_missing_from_disk_are_shipped(cell: dict[str, Any]) -> None:
    header = read_payload_header(
        b"".join(dump_payload(Call(fn=cell["outer"], args=(1,), kwargs={}), key=KEY, job_id="j")),
        key=KEY,
        job_id="j",
    )
    assert header["linecache"] == {CELL: CELL_SOURCE}

    def on_disk(x: int) -> int:  # by value (a local function), but its file exists
        return x

    for fn in (on_disk, dump_outcome, print):
        header = read_payload_header(
            b"".join(dump_payload(Call(fn=fn, args=(), kwargs={}), key=KEY, job_id="j")),
            key=KEY,
            job_id="j",
        )
        assert "linecache" not in header


def test_shipped_sources_are_signed(cell: dict[str, Any]) -> None:
    from jobkit.errors import SignatureError
    from jobkit.serialization import load_payload

    data = bytearray(
        b"".join(dump_payload(Call(fn=cell["outer"], args=(1,), kwargs={}), key=KEY, job_id="j"))
    )
    at = data.index(b"marker_inner")
    data[at : at + 6] = b"MARKER"
    with pytest.raises(SignatureError):
        load_payload(data, key=KEY, job_id="j")
