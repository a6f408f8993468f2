"""Functions shipped to jobs by reference (importable from this module)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class CustomError(Exception):
    """An exception type the client can import, to check it is re-raised as is."""

    def __init__(self, code: int) -> None:
        super().__init__(f"custom failure {code}")
        self.code = code


def square(x: int) -> int:
    return x * x


def fail_with(code: int) -> None:
    raise CustomError(code)


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def env_of(*names: str) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


def hold_gpus(seconds: float) -> dict[str, str | None]:
    time.sleep(seconds)
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "t": str(time.time())}


def pid_and_sleep(path: str, seconds: float) -> int:
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


class Blob:
    """A large result that can be weakly referenced (bytes cannot)."""

    def __init__(self, index: int, size: int) -> None:
        self.index = index
        self.data = bytes(size)


def make_blob(index: int, size: int = 16) -> Blob:
    return Blob(index, size)


def thread_env() -> dict[str, str | None]:
    """The job's thread-count variables (OMP_NUM_THREADS and the like)."""
    from jobkit.threadlimits import THREAD_VARIABLES

    print("threads=" + ",".join(f"{n}={os.environ.get(n)}" for n in THREAD_VARIABLES), flush=True)
    return env_of(*THREAD_VARIABLES)


def blas_pools() -> list[tuple[str, int]]:
    """(library, threads) of every thread pool numpy loaded, as threadpoolctl sees them."""
    import numpy
    from threadpoolctl import threadpool_info

    numpy.ones((64, 64)) @ numpy.ones((64, 64))  # the BLAS is loaded and used
    return [(str(pool["internal_api"]), int(pool["num_threads"])) for pool in threadpool_info()]


def wait_for_file(path: str, timeout: float) -> bool:
    """Whether ``path`` appeared within ``timeout`` seconds (another job makes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.02)
    return False


def touch(path: str) -> str:
    open(path, "w").close()
    return path


def jobkit_cli(cwd: Path, *args: str, without: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with the variable ``without`` unset and ``env`` added."""
    environ = {k: v for k, v in os.environ.items() if k != without}
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**environ, **env},
    )


def needs_marker(folder: str, index: int) -> int:
    """Fails unless ``folder/<index>`` exists (a rerun test creates it, then reruns)."""
    if not (Path(folder) / str(index)).exists():
        raise CustomError(index)
    return index * index


def kill_self_once(marker: str) -> str:
    """SIGKILLs its own process the first time (leaving ``marker``)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), 9)
    return "survived"


def allocate(nbytes: int, hold: float) -> int:
    """Allocates and touches ``nbytes`` and holds them ``hold`` seconds."""
    block = bytearray(b"\x01") * nbytes  # filled, so every page is resident
    time.sleep(hold)
    return len(block)


def fail_once(marker: str) -> str:
    """Raises the first time (leaving ``marker``), returns the next."""
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError("first try fails")
    return "second try"


def fail_once_after(gate: str, marker: str) -> str:
    """Waits for ``gate`` (up to 60 s), then raises the first time (leaving ``marker``)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return fail_once(marker)


def ones(n: int) -> Any:
    """A numpy array: its pickle carries an out-of-band buffer."""
    import numpy

    return numpy.ones(n)


def bump_first(arrays: list[Any]) -> list[float]:
    """Adds 5 to the first array in place; the sums show whether arrays alias."""
    arrays[0] += 5
    return [float(a.sum()) for a in arrays]


def add(x: int, y: int) -> int:
    return x + y


def lost_then_error_then_ok(folder: str) -> str:
    """Call 1 SIGKILLs its own process (LOST), call 2 raises (ERROR), call 3 returns."""
    calls = len(list(Path(folder).glob("call-*")))
    (Path(folder) / f"call-{calls}").touch()
    if calls == 0:
        os.kill(os.getpid(), 9)
    if calls == 1:
        raise RuntimeError("second call fails")
    return "third call"


def timeline_item(index: int, marker_dir: str) -> int:
    """An item of the timeline tests' array: 1 and 4 raise, 2 is SIGKILLed on its
    first attempt (LOST, then retried), the others succeed."""
    time.sleep(0.3)
    if index in (1, 4):
        raise CustomError(index)
    if index == 2:
        kill_self_once(os.path.join(marker_dir, "killed"))
    return index
