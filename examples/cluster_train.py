"""A training function with cluster resources: what `jobkit plan` prints for it.

    jobkit plan examples.cluster_train:train --backend slurm
    jobkit plan examples.cluster_train:train --backend kubernetes

Both run from the repository root and submit nothing: they print the sbatch
script or the Kubernetes Job a ``train.submit(...)`` would send.  To run it,
submit from a machine that reaches the cluster, with a store the cluster
shares (``store="s3://bucket/prefix"`` for Kubernetes) and an image that has
jobkit and this code::

    with jobkit.use(backend="kubernetes", store="s3://team-bucket/jobs"):
        sweep = train.map([0.01, 0.03, 0.1])
"""

from __future__ import annotations

import time

import jobkit


@jobkit.remote(
    cpus=4, mem="16GB", gpus=1, gpu_type="a100", time="2h", image="registry.example/team/train:1.4"
)
def train(lr: float, epochs: int = 10) -> float:
    """A stand-in for a training run: returns a 'loss'."""
    loss = 1.0
    for _ in range(epochs):
        loss *= 1 - lr
        time.sleep(0.01)
    return loss
