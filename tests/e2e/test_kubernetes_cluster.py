"""Opt-in: the kubernetes backend against a real cluster.

Runs only with ``JOBKIT_K8S_E2E=1`` and ``JOBKIT_K8S_KUBECONFIG``,
``JOBKIT_K8S_IMAGE`` (an image with jobkit and the same Python minor as this
interpreter) and ``JOBKIT_K8S_STORE`` (a store URL the pods can reach, e.g.
``s3://bucket/prefix``); the namespace, Secret and Role of
``backends/kubernetes/`` applied (``JOBKIT_K8S_NAMESPACE``, default ``jobkit``;
``JOBKIT_K8S_SECRET``, default ``jobkit-store``).  Skips, naming what is
missing, otherwise.  The functions travel by value: the image need not hold
this file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

import cloudpickle
import pytest

import jobkit
from jobkit.states import FailureReason, JobState

REQUIRED = ("JOBKIT_K8S_KUBECONFIG", "JOBKIT_K8S_IMAGE", "JOBKIT_K8S_STORE")
missing = [name for name in REQUIRED if not os.environ.get(name)]
if os.environ.get("JOBKIT_K8S_E2E") != "1":
    pytestmark = pytest.mark.skip(reason="real-cluster tests are opt-in: set JOBKIT_K8S_E2E=1")
elif missing:
    pytestmark = pytest.mark.skip(reason=f"JOBKIT_K8S_E2E=1 also needs {', '.join(missing)}")

cloudpickle.register_pickle_by_value(sys.modules[__name__])
T = 600


class Boom(Exception):
    pass


def square(x: int) -> int:
    return x * x


def boom() -> None:
    raise Boom("from the pod")


def nap(seconds: float) -> None:
    import time

    time.sleep(seconds)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    settings = {
        "kubeconfig": os.environ["JOBKIT_K8S_KUBECONFIG"],
        "namespace": os.environ.get("JOBKIT_K8S_NAMESPACE", "jobkit"),
        "image": os.environ["JOBKIT_K8S_IMAGE"],
        "secret": os.environ.get("JOBKIT_K8S_SECRET", "jobkit-store"),
    }
    with jobkit.use(
        backend="kubernetes", store=os.environ["JOBKIT_K8S_STORE"], kubernetes=settings
    ) as client:
        yield client
        client.backend("kubernetes").close()


def test_submit_map_and_an_exception(cluster: Any) -> None:
    assert jobkit.submit(square, 9).result(timeout=T) == 81
    assert jobkit.map(square, range(5)).results(timeout=T) == [0, 1, 4, 9, 16]
    with pytest.raises(Boom, match="from the pod"):
        jobkit.submit(boom).result(timeout=T)


def test_time_limit_and_cancel(cluster: Any) -> None:
    late = jobkit.remote(nap).options(time="5s").submit(120)
    with pytest.raises(jobkit.JobFailedError):
        late.result(timeout=T)
    assert late.info.failure_reason is FailureReason.TIMEOUT
    doomed = jobkit.submit(nap, 600)
    doomed.cancel()
    with pytest.raises(CancelledError):
        doomed.result(timeout=T)
    assert doomed.info.state is JobState.CANCELLED
