"""A pipeline: prepare the data, train a sweep on it, evaluate each model, keep the best.

    python examples/pipeline.py

Jobs passed as arguments are dependencies: each stage starts when what it
needs has succeeded, and receives those results in place of the jobs.  The
whole chain is submitted at once; it would complete even if this process
exited right after submitting (the local agent holds the waiting jobs).
"""

from __future__ import annotations

import jobkit


@jobkit.remote(cpus=1, mem="256MB", time="5m")
def prepare(n: int) -> list[float]:
    """A stand-in for preprocessing: a small data set."""
    return [i / n for i in range(n)]


@jobkit.remote(cpus=1, mem="256MB", time="5m")
def train(data: list[float], lr: float) -> dict[str, float]:
    """A stand-in for training: a 'model' fitted on the prepared data."""
    weight = sum(x * lr for x in data)
    return {"lr": lr, "weight": weight}


@jobkit.remote(cpus=1, mem="256MB", time="5m")
def evaluate(model: dict[str, float]) -> dict[str, float]:
    """Score one model (lower is better)."""
    return {**model, "loss": abs(model["weight"] - 1.0)}


@jobkit.remote(cpus=1, mem="256MB", time="5m")
def best(scores: list[dict[str, float]]) -> dict[str, float]:
    return min(scores, key=lambda s: s["loss"])


def main() -> None:
    lrs = [0.01, 0.03, 0.1, 0.3]
    data = prepare.submit(100)  # stage 1
    models = train.map([data] * len(lrs), lrs)  # stage 2: every item waits for `data`
    scores = evaluate.map(models)  # stage 3: item i waits for model i only
    winner = best.submit(scores)  # stage 4: receives the list of all scores
    print(f"submitted {data.id} -> {models.id} -> {scores.id} -> {winner.id}")
    print("best:", winner.result(timeout=300))


if __name__ == "__main__":
    main()
