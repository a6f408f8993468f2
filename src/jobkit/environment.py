"""``jobkit.env()``: where this code runs, for multi-task jobs.

Inside a job with several tasks (``nodes``/``tasks_per_node``), every task
runs the function; this says which one it is and how to reach rank 0, with
the names ``torch.distributed`` expects (``MASTER_ADDR``/``MASTER_PORT``,
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), derived from Slurm's variables.
Outside any job it describes a single task on this host.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class JobEnvironment:
    job_id: str | None
    """The jobkit job id (``jk-...``), or None outside a job."""
    rank: int
    local_rank: int
    world_size: int
    node_rank: int
    num_nodes: int
    hostname: str
    master_addr: str
    master_port: int

    def torch_env(self) -> dict[str, str]:
        """The variables ``torch.distributed.init_process_group("env://")`` reads."""
        return {
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank),
            "WORLD_SIZE": str(self.world_size),
        }


def _first_host(nodelist: str) -> str:
    """First host of a Slurm node list (``node[3-5,9]`` -> ``node3``)."""
    match = re.match(r"^([^\[,]+)(?:\[(\d+))?", nodelist)
    if not match:
        return nodelist
    prefix, first = match.groups()
    if first is None:
        return prefix
    try:  # scontrol knows every form; the regex covers the common ones
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    except OSError:
        pass
    return f"{prefix}{first}"


def env(environ: Mapping[str, str] | None = None) -> JobEnvironment:
    """Rank information for the current task (see the module docstring)."""
    e = os.environ if environ is None else environ
    job_id = e.get("JOBKIT_JOB_ID")
    if "SLURM_JOB_ID" in e and "SLURM_PROCID" in e:
        slurm_job = e.get("SLURM_ARRAY_JOB_ID") or e["SLURM_JOB_ID"]
        nodelist = e.get("SLURM_JOB_NODELIST") or e.get("SLURM_NODELIST") or socket.gethostname()
        return JobEnvironment(
            job_id=job_id,
            rank=int(e["SLURM_PROCID"]),
            local_rank=int(e.get("SLURM_LOCALID", "0")),
            world_size=int(e.get("SLURM_NTASKS", "1")),
            node_rank=int(e.get("SLURM_NODEID", "0")),
            num_nodes=int(e.get("SLURM_JOB_NUM_NODES") or e.get("SLURM_NNODES") or "1"),
            hostname=socket.gethostname(),
            master_addr=_first_host(nodelist),
            # A port per job, stable across its tasks, away from well-known ports.
            master_port=20000 + int(re.sub(r"\D", "", slurm_job) or "0") % 20000,
        )
    return JobEnvironment(
        job_id=job_id,
        rank=0,
        local_rank=0,
        world_size=1,
        node_rank=0,
        num_nodes=1,
        hostname=socket.gethostname(),
        master_addr="127.0.0.1",
        master_port=int(e.get("MASTER_PORT", "29500")),
    )
