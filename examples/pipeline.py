"""An experiment as it is really run: prepare the data, sweep, pick the best.

    python examples/pipeline.py

Every stage is submitted at once; jobkit holds each job until what it depends
on has succeeded and hands it the results:

    prepare ──► train x 6 (a map: each item gets prepare's result) ──► best
                   │ item i ──► evaluate item i (item-wise: waits only for item i)
                   └──────────────────────────────────────────► report (after=)

The chain lives in the store, not in this process: run it, press Ctrl-C after
"submitted", and `jobkit status <best id>` later still finds it finished (the
local agent holds and releases the waiting jobs).  Run it twice: ``prepare``
is cached (``cache=True``), so the second run reuses its stored result.
Training retries only what the infrastructure broke (a lost worker, a
preemption), never a bug in the code, and asks for twice the memory after an
out-of-memory kill.
"""

from __future__ import annotations

import random
import time

import jobkit


@jobkit.remote(cpus=1, mem="256MB", cache=True)
def prepare(n: int, seed: int = 0) -> list[tuple[float, float]]:
    """A stand-in for loading and cleaning a dataset: noisy points on y = 3x + 1."""
    rng = random.Random(seed)
    time.sleep(0.2)
    return [(x / n, 3 * x / n + 1 + rng.gauss(0, 0.1)) for x in range(n)]


@jobkit.remote(cpus=1, mem="256MB", retries=2, mem_growth=2.0, mem_max="1GB")
def train(data: list[tuple[float, float]], lr: float, steps: int = 200) -> dict[str, float]:
    """Fit y = w x + b by gradient descent; returns the parameters and the loss."""
    w = b = 0.0
    for _ in range(steps):
        gw = sum(2 * (w * x + b - y) * x for x, y in data) / len(data)
        gb = sum(2 * (w * x + b - y) for x, y in data) / len(data)
        w, b = w - lr * gw, b - lr * gb
    loss = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
    return {"lr": lr, "w": w, "b": b, "loss": loss}


@jobkit.remote(cpus=1)
def evaluate(model: dict[str, float]) -> dict[str, float]:
    """Held-out error of one model (item i of the sweep's evaluation map)."""
    held_out = [(x / 10, 3 * x / 10 + 1) for x in range(10)]
    error = sum((model["w"] * x + model["b"] - y) ** 2 for x, y in held_out) / len(held_out)
    return {**model, "held_out": error}


@jobkit.remote(cpus=1)
def best(scores: list[dict[str, float]]) -> dict[str, float]:
    """The whole array of evaluations arrives as one list of results."""
    return min(scores, key=lambda s: s["held_out"])


@jobkit.remote(cpus=1)
def report() -> str:
    return "sweep finished"


def main() -> None:
    data = prepare.submit(200, seed=1)
    sweep = train.map([data] * 6, [0.01, 0.03, 0.1, 0.3, 0.5, 0.7])  # each item gets the data
    scores = evaluate.map(sweep)  # item-wise: score i waits only for model i
    winner = best.submit(scores)
    done = report.options(after=[winner]).submit()
    print(f"submitted: prepare {data.id}, sweep {sweep.id}, scores {scores.id}, best {winner.id}")

    top = winner.result(timeout=300)
    print(f"best lr={top['lr']}: w={top['w']:.3f} b={top['b']:.3f} held-out={top['held_out']:.4f}")
    print(done.result(timeout=60))
    cached = data.info.extra.get("cached_from")
    print(f"prepare {'reused ' + cached if cached else 'ran'} (cache=True: run me again)")


if __name__ == "__main__":
    main()
