"""Cache keys: equal across interpreters, changed by what changes the result.

Keys computed in fresh interpreters (subprocesses, with different hash
seeds) for a module file written here, then edited, then keyed again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from jobkit.errors import SerializationError
from jobkit.fingerprint import call_key, call_keys

KEYER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import {module} as mod
    from jobkit.fingerprint import call_key
    version = sys.argv[2] or None
    args = ({{"b": {{"y", "x", "z"}}, "a": [1, 2.5, None]}}, frozenset({{"p", "q"}}))
    kwargs = {{"flag": True, "blob": b"\\x00\\x01"}}
    print(json.dumps(call_key(getattr(mod, sys.argv[3]), args, kwargs, version=version)))
    """
)

MODULE = """
import jobkit

SCALE = {scale}


def helper(v):
    return v * SCALE


@jobkit.remote(cache=True)
def decorated(data, tags, flag=False, blob=b""):
    return helper(len(data)) + {offset}


def plain(data, tags, flag=False, blob=b""):
    return [lambda: {offset}, len(data) * SCALE]
"""


def key_in_new_interpreter(
    folder: Path,
    module: str,
    function: str,
    *,
    seed: str = "0",
    version: str = "",
) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", KEYER.format(module=module), str(folder), version, function],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key: str = json.loads(out.stdout)
    return key


def write_module(folder: Path, name: str, *, scale: int = 2, offset: int = 1, pad: int = 0) -> None:
    (folder / f"{name}.py").write_text("\n" * pad + MODULE.format(scale=scale, offset=offset))
    for cached in (folder / "__pycache__").glob(f"{name}.*"):
        cached.unlink()  # the edit is seen even within the same second


@pytest.mark.parametrize("function", ["decorated", "plain"])
def test_key_is_equal_across_interpreters_and_hash_seeds(tmp_path: Path, function: str) -> None:
    write_module(tmp_path, "cachemod_a")
    first = key_in_new_interpreter(tmp_path, "cachemod_a", function, seed="1")
    second = key_in_new_interpreter(tmp_path, "cachemod_a", function, seed="12345")
    randomised = key_in_new_interpreter(tmp_path, "cachemod_a", function, seed="random")
    assert first == second == randomised
    assert len(first) == 64


@pytest.mark.parametrize("function", ["decorated", "plain"])
def test_editing_the_function_changes_the_key(tmp_path: Path, function: str) -> None:
    write_module(tmp_path, "cachemod_b")
    before = key_in_new_interpreter(tmp_path, "cachemod_b", function)
    write_module(tmp_path, "cachemod_b", offset=2)  # the body (or a nested lambda) edited
    assert key_in_new_interpreter(tmp_path, "cachemod_b", function) != before
    write_module(tmp_path, "cachemod_b", offset=1, scale=3)  # a module constant edited
    assert key_in_new_interpreter(tmp_path, "cachemod_b", function) != before


def test_moving_the_function_down_the_file_keeps_the_key(tmp_path: Path) -> None:
    write_module(tmp_path, "cachemod_c")
    before = key_in_new_interpreter(tmp_path, "cachemod_c", "decorated")
    write_module(tmp_path, "cachemod_c", pad=7)  # line numbers change, code does not
    assert key_in_new_interpreter(tmp_path, "cachemod_c", "decorated") == before


def test_explicit_version_ignores_code_edits_but_not_a_bump(tmp_path: Path) -> None:
    write_module(tmp_path, "cachemod_d")
    v1 = key_in_new_interpreter(tmp_path, "cachemod_d", "decorated", version="v1")
    write_module(tmp_path, "cachemod_d", offset=5)
    assert key_in_new_interpreter(tmp_path, "cachemod_d", "decorated", version="v1") == v1
    assert key_in_new_interpreter(tmp_path, "cachemod_d", "decorated", version="v2") != v1
    assert key_in_new_interpreter(tmp_path, "cachemod_d", "decorated") != v1


def make_adder(n: Any) -> Any:
    def add(x: int) -> Any:
        return x + n

    return add


def test_closure_values_count() -> None:
    assert call_key(make_adder(1), (1,), {}) == call_key(make_adder(1), (1,), {})
    assert call_key(make_adder(1), (1,), {}) != call_key(make_adder(2), (1,), {})


def by_value(source: str, **namespace: Any) -> Any:
    """A function defined as a notebook cell would be: in a ``__main__``-like namespace."""
    glb: dict[str, Any] = {"__name__": "__main__", **namespace}
    exec(compile(source, "<cell>", "exec"), glb)
    return glb["f"]


def test_referenced_globals_count_recursively() -> None:
    source = "def g(x):\n    return x * K\n\ndef f(x):\n    return g(x) + 1\n"
    base = call_key(by_value(source, K=1), (1,), {})
    assert call_key(by_value(source, K=1), (1,), {}) == base
    assert call_key(by_value(source, K=2), (1,), {}) != base  # a global of a helper
    edited = source.replace("x * K", "x * K * 1")
    assert call_key(by_value(edited, K=1), (1,), {}) != base  # the helper's code


def test_unrelated_globals_do_not_count() -> None:
    source = "def f(x):\n    return x\n"
    assert call_key(by_value(source, OTHER=1), (1,), {}) == call_key(
        by_value(source, OTHER=2), (1,), {}
    )


def plus(x: int, y: int = 2) -> int:
    return x + y


def test_arguments_bind_to_the_signature() -> None:
    assert call_key(plus, (1,), {}) == call_key(plus, (1, 2), {}) == call_key(plus, (), {"x": 1})
    assert call_key(plus, (1,), {}) != call_key(plus, (1, 3), {})
    assert call_key(plus, (1,), {}) != call_key(plus, (1.0,), {})  # 1 and 1.0 are not one call


def test_equal_containers_key_equal_whatever_their_order() -> None:
    one = {"a": 1, "b": {"x", "y"}, "c": [1, 2]}
    two = {"c": [1, 2], "b": {"y", "x"}, "a": 1}
    assert call_key(plus, (one,), {}) == call_key(plus, (two,), {})
    assert call_key(plus, ([1, 2],), {}) != call_key(plus, ([2, 1],), {})  # lists keep order
    assert call_key(plus, ([1, 2],), {}) != call_key(plus, ((1, 2),), {})


def test_keys_of_a_map_are_per_item() -> None:
    keys = call_keys(plus, [((1,), {}), ((2,), {}), ((1,), {})])
    assert keys[0] == keys[2] != keys[1]
    assert keys[0] == call_key(plus, (1,), {})


def test_numpy_arrays_key_by_dtype_shape_and_bytes() -> None:
    np = pytest.importorskip("numpy")
    a = np.arange(6, dtype="int64").reshape(2, 3)
    assert call_key(plus, (a,), {}) == call_key(plus, (a.copy(),), {})
    assert call_key(plus, (a,), {}) != call_key(plus, (a.reshape(3, 2),), {})
    assert call_key(plus, (a,), {}) != call_key(plus, (a.astype("int32"),), {})
    assert call_key(plus, (a,), {}) == call_key(plus, (np.asfortranarray(a),), {})


def test_an_unpicklable_argument_is_one_clear_error() -> None:
    with pytest.raises(SerializationError) as caught:
        call_key(plus, (threading.Lock(),), {})
    message = str(caught.value)
    assert "cache key" in message and "lock" in message and "cache=False" in message
