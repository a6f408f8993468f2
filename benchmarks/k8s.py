"""Kubernetes API requests of the kubernetes backend, counted by the API server.

The server is the emulated Kubernetes API of ``tests/k8s_emulator.py``, over real
HTTP, driven by the unmodified ``kubernetes`` client; its Job controller runs each
pod's command (the jobkit worker) as a local process.  The store is S3 on a moto
server, as on a cluster.  The emulator logs every request it answers (verb and
resource in RBAC terms); the controller's own requests are left out, so what is
counted is exactly what jobkit's client sent.

For a map of N items, from ``map`` to the last result: how many Job creates (the
target: one, whatever N), how many lists and watches, and how many requests per
job.  The anchor is what a naive backend pays: one create per item, and one GET
per unfinished job per second (what polling each job's status costs) over the
same run time.  ``jobkit list`` from a fresh process with N active jobs is
counted too (its reconcile lists Jobs and pods once, whatever N).
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import Context, Row, WorkloadResult

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
NAMESPACE = "jobkit"
BUCKET = "jobkit-bench-k8s"


def sizes(quick: bool) -> list[int]:
    return [1, 10] if quick else [1, 10, 50]


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@contextlib.contextmanager
def cluster(workdir: Path) -> Iterator[tuple[Any, Any, str]]:
    """(emulator, controller, store URL), with fake AWS credentials in the environment."""
    sys.path.insert(0, str(TESTS))
    from moto.server import ThreadedMotoServer

    import k8s_emulator  # the test emulator: HTTP API server + local Job controller

    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
    )
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    server = k8s_emulator._ServerThread()
    emulator = server.start()
    emulator.reset()
    controller = k8s_emulator.JobController(emulator, workdir / "pods").start()
    try:
        yield emulator, controller, f"s3://{BUCKET}/k8s"
    finally:
        controller.stop()
        moto.stop()
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[key]
        os.environ.update(saved)


def counts(requests: list[Any]) -> dict[str, int]:
    return dict(collections.Counter(f"{r.verb} {r.resource}" for r in requests))


def run(ctx: Context) -> WorkloadResult:
    import jobkit

    workdir = ctx.scratch("k8s")
    (workdir / "pods").mkdir(exist_ok=True)
    raw: dict[str, Any] = {"maps": {}, "list": {}}
    with (
        cluster(workdir) as (emulator, _controller, store),
        jobkit.use(store=store, backend="kubernetes", poll_interval=0.5) as client,
    ):
        secret = {"JOBKIT_KEY": client.key.hex()}
        secret.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        emulator.put(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "jobkit-store", "namespace": NAMESPACE},
                "stringData": secret,
            }
        )
        settings = {
            "api_server": emulator.url,
            "namespace": NAMESPACE,
            "image": "python:3.11-slim",
            "python": sys.executable,
            "secret": "jobkit-store",
            "array_parallelism": 10,
        }
        with jobkit.use(kubernetes=settings) as configured:
            remote = jobkit.remote(square)
            for n in sizes(ctx.quick):
                emulator.clear_requests()
                started = time.perf_counter()
                array = remote.map(range(n))
                assert array.results(timeout=600) == [i * i for i in range(n)]
                seconds = time.perf_counter() - started
                sent = emulator.requests()
                raw["maps"][n] = {"seconds": seconds, "requests": counts(sent)}
            # A fresh process lists N active jobs: its reconcile lists Jobs and pods once.
            n = sizes(ctx.quick)[-1]
            sleepers = jobkit.remote(nap).map([30.0] * n)
            time.sleep(1.0)
            emulator.clear_requests()
            (workdir / "jobkit.toml").write_text(
                'backend = "kubernetes"\n[kubernetes]\n'
                + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
            )
            shown = subprocess.run(
                [sys.executable, "-m", "jobkit", "--store", store, "list", "--limit", str(n + 10)],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=workdir,
            )
            raw["list"] = {
                "jobs": n,
                "rc": shown.returncode,
                "requests": counts(emulator.requests()),
            }
            for job in sleepers:
                job.cancel()
            configured.backend("kubernetes").close()
    return report(raw)


def _toml(value: Any) -> str:
    import json

    return json.dumps(value)


def report(raw: dict[str, Any]) -> WorkloadResult:
    rows: list[Row] = []
    notes: list[str] = []
    for n, data in raw["maps"].items():
        requests = data["requests"]
        total = sum(requests.values())
        creates = requests.get("create jobs", 0)
        naive = n + int(n * data["seconds"])  # N creates + a GET per job per second
        rows.append(
            Row(
                f"map of {n}: Job create requests",
                "requests",
                "lower",
                {"jobkit": creates, "naive": n},
                target="1 for any N",
                met=creates == 1,
            )
        )
        rows.append(
            Row(
                f"map of {n}: every API request, map -> all results ({data['seconds']:.1f} s)",
                "requests",
                "lower",
                {"jobkit": total, "naive": naive},
                target="independent of N",
            )
        )
        notes.append(f"k8s: map of {n}: {requests}")
    listing = raw["list"]
    rows.append(
        Row(
            f"`jobkit list` from a fresh process, {listing['jobs']} active jobs",
            "requests",
            "lower",
            {"jobkit": sum(listing["requests"].values()), "naive": listing["jobs"]},
            target="independent of N",
        )
    )
    notes.append(f"k8s: jobkit list (exit {listing['rc']}): {listing['requests']}")
    notes.append(
        "k8s: counted by the emulated API server (tests/k8s_emulator.py) over HTTP, the "
        "controller's own requests left out; naive = one create per item + one GET per job "
        "per second of the run"
    )
    totals = [sum(d["requests"].values()) for d in raw["maps"].values()]
    if len(set(totals)) > 1:
        notes.append(f"k8s: totals by N differ ({totals}): see the per-map breakdown")
    return WorkloadResult("k8s", rows, raw, notes)
