"""A stand-in ``libnvidia-ml.so.1`` (C, ``nvml_standin.c``) answering as NVML does,
with recorded values, so the real ``pynvml`` code runs on machines without a GPU.

A test builds it with :func:`build` into a directory, writes the devices with
:func:`write_devices`, and starts the processes that sample (a local agent, a
worker) with :func:`environment`: ``LD_LIBRARY_PATH`` must be set when a
process starts for its ``dlopen("libnvidia-ml.so.1")`` to find the stand-in.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("nvml_standin.c")
LIBRARY = "libnvidia-ml.so.1"
VALUES_VARIABLE = "JOBKIT_NVML_STANDIN"


@dataclass(frozen=True)
class FakeDevice:
    """One device as the stand-in reports it."""

    name: str
    uuid: str
    total_bytes: int
    used_bytes: int
    power_mw: int | None
    """None: NVML_ERROR_NOT_SUPPORTED, as many boards answer."""
    process_bytes: int
    """> 0: the calling process is listed as a compute process using this much."""
    utils: Sequence[int]
    """Utilization answered by successive calls; the last one repeats."""


def build(directory: Path) -> Path:
    """Compile the stand-in into ``directory``; the directory to put on LD_LIBRARY_PATH."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("no C compiler (gcc) to build the NVML stand-in")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-o", str(directory / LIBRARY), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return directory


def write_devices(path: Path, devices: Sequence[FakeDevice]) -> Path:
    lines = [
        "\t".join(
            [
                d.name,
                d.uuid,
                str(d.total_bytes),
                str(d.used_bytes),
                str(-1 if d.power_mw is None else d.power_mw),
                str(d.process_bytes),
                ",".join(str(u) for u in d.utils) or "0",
            ]
        )
        for d in devices
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def environment(library_dir: Path, values: Path | None) -> dict[str, str]:
    """Variables that make a new process load the stand-in (``values`` None: its
    nvmlInit fails as on a machine whose driver is not loaded)."""
    env = {"LD_LIBRARY_PATH": str(library_dir)}
    if values is not None:
        env[VALUES_VARIABLE] = str(values)
    return env
