"""Issue 14, item 1: GPU usage through NVML, per job, against a stand-in library.

The stand-in ``libnvidia-ml.so.1`` (``jobkit_testing.nvml_standin``, C) answers
as NVML does with recorded values; the real ``pynvml`` runs against it inside
real local jobs.  The agent is started with ``LD_LIBRARY_PATH`` pointing at it,
so its warm workers load it, as they would load the driver's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import local_env, wait_for
from jobkit.states import JobState
from jobkit.usage import decode_series, flags, usage_key
from jobkit_testing import nvml_standin
from jobkit_testing.nvml_standin import FakeDevice

T = 60
GiB = 2**30
H100 = "NVIDIA H100 80GB HBM3"
BUSY = FakeDevice(
    H100,
    "GPU-1f2e3d4c-0000-4000-8000-00000000000a",
    80 * GiB,
    30 * GiB,
    power_mw=70_500,
    process_bytes=0,
    utils=[35, 80, 97],
)
IDLE = FakeDevice(
    H100,
    "GPU-1f2e3d4c-0000-4000-8000-00000000000b",
    80 * GiB,
    2 * GiB,
    power_mw=None,
    process_bytes=GiB,
    utils=[0],
)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nvml_standin.build(tmp_path_factory.mktemp("nvml"))


def test_each_job_records_its_own_gpu_and_an_idle_one_is_flagged(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = nvml_standin.write_devices(tmp_path / "devices.tsv", [BUSY, IDLE])
    for name, value in nvml_standin.environment(library, values).items():
        monkeypatch.setenv(name, value)
    with local_env(tmp_path, cpus=2, gpus=[H100, H100]) as client:
        busy = jobkit.remote(gpus=1)(helpers.hold_gpus).submit(4.0)
        wait_for(lambda: busy.info.state is JobState.RUNNING, timeout=T)
        idle = jobkit.remote(gpus=1)(helpers.hold_gpus).submit(1.5)
        assert busy.result(timeout=T)["CUDA_VISIBLE_DEVICES"] == "0"
        assert idle.result(timeout=T)["CUDA_VISIBLE_DEVICES"] == "1"

        record = idle.info
        (gpu,) = record.usage["gpus"]  # device 1 only: the one CUDA_VISIBLE_DEVICES names
        assert gpu == {
            "index": 1,
            "name": H100,
            "uuid": IDLE.uuid,
            "util_mean": 0.0,
            "util_max": 0.0,
            "mem_used_bytes": GiB,  # the job's own process, matched by pid
            "mem_peak_bytes": GiB,
            "mem_total_bytes": 80 * GiB,
        }  # no power keys: the board answered NotSupported
        assert [f.name for f in flags(record)] == ["idle_gpu"]
        series = decode_series(client.store.get_blob(usage_key(idle.id)))
        (line,) = series["gpus"]
        assert line["uuid"] == IDLE.uuid and set(line["util"]) == {0.0}
        assert len(line["util"]) == len(line["mem_bytes"]) == len(series["t"]) >= 2
        assert set(line["power_watts"]) == {None}

        used = busy.info
        (gpu,) = used.usage["gpus"]
        assert (gpu["index"], gpu["uuid"]) == (0, BUSY.uuid)
        assert gpu["util_max"] == 97 and 35 <= gpu["util_mean"] < 97, gpu
        assert gpu["mem_used_bytes"] == gpu["mem_peak_bytes"] == 30 * GiB  # the device's
        assert gpu["power_mean_watts"] == gpu["power_max_watts"] == 70.5
        assert flags(used) == []


def test_a_job_that_asked_for_no_gpu_records_none_and_a_fraction_is_shared(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = nvml_standin.write_devices(tmp_path / "devices.tsv", [BUSY])
    for name, value in nvml_standin.environment(library, values).items():
        monkeypatch.setenv(name, value)
    # An agent told of no GPUs on a GPU node: a job inherits every device, none its own.
    with local_env(tmp_path / "cpu", cpus=2) as _client:
        plain = jobkit.submit(helpers.hold_gpus, 1.2)
        assert plain.result(timeout=T)["CUDA_VISIBLE_DEVICES"] is None  # all visible
        usage = plain.info.usage
        assert usage["final"] is True and usage["samples"] >= 2 and "gpus" not in usage, usage
    with local_env(tmp_path / "gpu", cpus=2, gpus=[H100]) as _client:
        half = jobkit.remote(gpus=0.5)(helpers.hold_gpus).submit(1.2)
        assert half.result(timeout=T)["CUDA_VISIBLE_DEVICES"] == "0"
        (gpu,) = half.info.usage["gpus"]
        assert gpu["uuid"] == BUSY.uuid and gpu["shared"] is True, gpu


@pytest.mark.parametrize("setup", ["no library", "driver not loaded"])
def test_no_nvml_means_no_gpus_key_and_the_job_succeeds(
    setup: str, library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOBKIT_NVML_STANDIN", raising=False)
    if setup == "driver not loaded":  # the library loads, nvmlInit fails
        monkeypatch.setenv("LD_LIBRARY_PATH", str(library))
    with local_env(tmp_path, cpus=2, gpus=[H100]) as _client:
        job: Any = jobkit.remote(gpus=1)(helpers.hold_gpus).submit(1.2)
        assert job.result(timeout=T)["CUDA_VISIBLE_DEVICES"] == "0"
        usage = job.info.usage
        assert usage["final"] is True and usage["samples"] >= 2 and "gpus" not in usage
        assert flags(job.info) == []  # not measured is not idle
