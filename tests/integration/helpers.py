"""Functions shipped to jobs by reference (importable from this module)."""

from __future__ import annotations

import os
import time


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


def chatty(lines: int) -> int:
    for i in range(lines):
        print(f"line {i}", flush=True)
    return lines


def fail_once(marker: str) -> str:
    """Fails the first time (leaving ``marker``), succeeds the next."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first try fails")
    return "second try"


def chatty_slowly(lines: int, pause: float) -> int:
    for i in range(lines):
        print(f"tick {i}", flush=True)
        time.sleep(pause)
    return lines


class Blob:
    """A large result that can be weakly referenced (bytes cannot)."""

    def __init__(self, index: int, size: int) -> None:
        self.index = index
        self.data = bytes(size)


def make_blob(index: int, size: int = 16) -> Blob:
    return Blob(index, size)
