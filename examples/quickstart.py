"""jobkit in one minute: local backend, SQLite store, nothing to set up.

    python examples/quickstart.py

Submits a few jobs, a map, shows a failure re-raised with its remote
traceback, finds a job again by id, then shows everything with `jobkit list`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import jobkit


@jobkit.remote(cpus=1, mem="256MB", time="5m")
def train(lr: float, epochs: int = 3) -> float:
    """A stand-in for a training run: returns a 'loss'."""
    loss = 1.0
    for epoch in range(epochs):
        loss *= 1 - lr
        print(f"epoch {epoch}: loss={loss:.4f}", flush=True)
        time.sleep(0.05)
    return loss


@jobkit.remote
def flaky(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


def main() -> None:
    # One job: returns at once, result() blocks.
    job = train.submit(0.1)
    print(f"submitted {job.id} -> loss {job.result():.4f}")
    print("its stdout:\n" + job.logs())

    # A sweep: one array submission, results in order.
    sweep = train.map([0.05, 0.1, 0.2], epochs=5)
    print(f"sweep {sweep.id}: {[round(loss, 4) for loss in sweep.results()]}")

    # A failure comes back as the ORIGINAL exception, remote traceback chained.
    failing = flaky.submit(3)
    try:
        failing.result()
    except ValueError as exc:
        print(f"re-raised {type(exc).__name__}: {exc} (remote traceback attached as __cause__)")
    print(f"{failing.id} is {failing.state.value}, reason {failing.info.failure_reason}")

    # Any process can find a job again by id, e.g. after a kernel restart.
    again = jobkit.get(job.id)
    print(f"jobkit.get({job.id!r}).result() -> {again.result():.4f}")  # type: ignore[union-attr]

    # And the CLI sees all of it.
    command = [shutil.which("jobkit") or sys.executable, "list", "--limit", "10"]
    if command[0] == sys.executable:
        command[1:1] = ["-m", "jobkit"]
    print("\n$ jobkit list --limit 10")
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
