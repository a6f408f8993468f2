"""The two Slurm translation tables: jobkit resources -> sbatch parameters,
Slurm job states -> :class:`~jobkit.states.JobState`.

Pure functions, so golden files pin the generated sbatch scripts and a table
test pins every native state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from jobkit.errors import ConfigError
from jobkit.resources import Resources
from jobkit.states import FailureReason, JobState

# -- settings ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlurmSettings:
    """The ``[slurm]`` config table, validated once."""

    folder: str | None = None
    """Where submitit keeps scripts, pickles and logs (must be shared with the nodes)."""
    priority: str = "qos"
    """How ``priority`` reaches Slurm: ``"qos"`` (through ``qos_map``), ``"nice"`` or ``"none"``."""
    qos_map: Mapping[str, str | None] = dataclasses.field(
        default_factory=lambda: {"low": "low", "normal": None, "high": "high"}
    )
    gpu_flag: str = "gpus"
    """``"gpus"`` (``--gpus=a100:2``) or ``"gres"`` (``--gres=gpu:a100:2``)."""
    array_parallelism: int = 256
    accounting: str = "auto"
    """``"auto"`` (probe sacct), ``"on"`` or ``"off"`` (squeue only)."""
    max_num_timeout: int = 3
    """How many times a checkpointable job may be requeued after timeouts."""

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> SlurmSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"unknown [slurm] setting {unknown[0]!r}: "
                f"valid settings are {', '.join(sorted(known))}"
            )
        settings = cls(**dict(table))
        choices = {
            "priority": ("qos", "nice", "none"),
            "gpu_flag": ("gpus", "gres"),
            "accounting": ("auto", "on", "off"),
        }
        for name, valid in choices.items():
            value = getattr(settings, name)
            if value not in valid:
                raise ConfigError(
                    f"invalid [slurm] {name}={value!r}: expected one of {', '.join(valid)}"
                )
        if not isinstance(settings.array_parallelism, int) or settings.array_parallelism < 1:
            raise ConfigError(
                f"invalid [slurm] array_parallelism={settings.array_parallelism!r}: "
                "expected a positive integer"
            )
        return settings


# -- resources -----------------------------------------------------------------

EXTRAS = {
    "account": "account",
    "constraint": "constraint",
    "exclude": "exclude",
    "nodelist": "nodelist",
    "qos": "qos",
    "reservation": None,  # no submitit parameter: passed as an extra sbatch option
    "array_parallelism": "array_parallelism",
    "setup": "setup",
    "sbatch": None,  # {"option": value} added verbatim as #SBATCH --option=value
    "srun_args": "srun_args",
    "signal_delay_s": "signal_delay_s",
}


def _priority_band(resources: Resources) -> str | None:
    value = resources.priority
    return value if isinstance(value, str) else None


def sbatch_parameters(
    resources: Resources, settings: SlurmSettings, *, checkpointable: bool = False
) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords for one job (or array).

    Only checkpointable jobs get submitit's SIGUSR2 warning before the time
    limit: submitit would stop any other job at the warning, taking up to
    90 s from a job that cannot resume anyway.  Others get a signal Python
    ignores (SIGURG), run to Slurm's limit and end as Slurm's TIMEOUT.
    Single-task jobs without a checkpoint skip ``srun``: submitit does not
    move the signal to the batch step, and they need none.
    """
    if resources.gpus and resources.gpus < 1:
        raise ConfigError(
            f"invalid resource gpus={resources.gpus:g} for Slurm: Slurm allocates whole GPUs; "
            "ask for gpus=1, or share GPUs through a gres such as "
            "slurm={'sbatch': {'gres': 'shard:1'}} where the cluster defines shards"
        )
    if float(resources.cpus) != int(resources.cpus):
        raise ConfigError(
            f"invalid resource cpus={resources.cpus:g} for Slurm: Slurm allocates whole cpus"
        )
    params: dict[str, Any] = {
        "job_name": resources.name or "jobkit",
        "nodes": resources.nodes,
        "ntasks_per_node": resources.tasks_per_node,
        "cpus_per_task": int(resources.cpus),
        "array_parallelism": settings.array_parallelism,
        # submitit tags every job --wckey=submitit: a workload key the site did not
        # define (and may reject where wckeys are enforced).  None leaves it out;
        # slurm={"sbatch": {"wckey": ...}} sets one.
        "wckey": None,
    }
    extra: dict[str, Any] = {}
    if resources.time is not None:
        params["time"] = max(1, math.ceil(resources.time.total_seconds() / 60))
    else:
        params["time"] = 60  # submitit's default is 5 minutes: too short to be a silent default
    if resources.mem:
        params["mem"] = f"{math.ceil(resources.mem / 2**20)}M"
    if resources.queue:
        params["partition"] = resources.queue
    if resources.gpus:
        count = int(resources.gpus)
        typed = f"{resources.gpu_type}:{count}" if resources.gpu_type else str(count)
        if settings.gpu_flag == "gres":
            params["gres"] = f"gpu:{typed}"
        elif resources.nodes > 1:
            extra["gpus-per-node"] = typed
        else:
            extra["gpus"] = typed
    band = _priority_band(resources)
    if settings.priority == "qos":
        qos = settings.qos_map.get(band) if band else None
        if qos:
            params["qos"] = qos
    elif settings.priority == "nice" and resources.priority_value:
        # Slurm's nice lowers priority as it grows (negative needs privileges).
        extra["nice"] = -resources.priority_value
    if resources.env:
        import shlex

        params["setup"] = [f"export {k}={shlex.quote(v)}" for k, v in sorted(resources.env.items())]
    for key, value in (resources.slurm or {}).items():
        if key not in EXTRAS:
            raise ConfigError(
                f"unknown slurm option {key!r}: valid options are {', '.join(sorted(EXTRAS))} "
                "(any other sbatch option goes in slurm={'sbatch': {'option': value}})"
            )
        target = EXTRAS[key]
        if key == "reservation":
            extra["reservation"] = value
        elif key == "sbatch":
            if not isinstance(value, Mapping):
                raise ConfigError(f"invalid slurm option sbatch={value!r}: expected a mapping")
            extra.update({str(k): v for k, v in value.items()})
        elif key == "setup":
            params["setup"] = [*params.get("setup", []), *list(value)]
        else:
            params[str(target)] = value
    if checkpointable and resources.time is not None:
        # Warn early enough to checkpoint, but not at the start of a short job.
        params["signal_delay_s"] = min(90, max(10, int(resources.time.total_seconds()) // 3))
    elif not checkpointable:
        extra.setdefault("signal", "URG@90")
    if not checkpointable and resources.nodes * resources.tasks_per_node == 1:
        # One task that needs no signal: run it in the batch step itself and
        # save the srun step launch (~0.1 s a job, much of a short array task).
        params["use_srun"] = False
    if extra:
        params["additional_parameters"] = extra
    return params


# -- states --------------------------------------------------------------------

STATES: Mapping[str, tuple[JobState, FailureReason | None]] = {
    "PENDING": (JobState.QUEUED, None),
    "CONFIGURING": (JobState.QUEUED, None),
    "REQUEUED": (JobState.QUEUED, None),
    "REQUEUE_HOLD": (JobState.QUEUED, None),
    "REQUEUE_FED": (JobState.QUEUED, None),
    "RESV_DEL_HOLD": (JobState.QUEUED, None),
    "SUSPENDED": (JobState.RUNNING, None),
    "STOPPED": (JobState.RUNNING, None),
    "RUNNING": (JobState.RUNNING, None),
    "COMPLETING": (JobState.RUNNING, None),
    "STAGE_OUT": (JobState.RUNNING, None),
    "SIGNALING": (JobState.RUNNING, None),
    "RESIZING": (JobState.RUNNING, None),
    "COMPLETED": (JobState.SUCCEEDED, None),
    "FAILED": (JobState.FAILED, FailureReason.ERROR),
    "SPECIAL_EXIT": (JobState.FAILED, FailureReason.ERROR),
    "CANCELLED": (JobState.CANCELLED, None),
    "REVOKED": (JobState.CANCELLED, None),
    "TIMEOUT": (JobState.FAILED, FailureReason.TIMEOUT),
    "DEADLINE": (JobState.FAILED, FailureReason.TIMEOUT),
    "OUT_OF_MEMORY": (JobState.FAILED, FailureReason.OOM),
    "PREEMPTED": (JobState.FAILED, FailureReason.PREEMPTED),
    "NODE_FAIL": (JobState.FAILED, FailureReason.LOST),
    "BOOT_FAIL": (JobState.FAILED, FailureReason.LOST),
}


def translate_state(native: str) -> tuple[JobState, FailureReason | None] | None:
    """Map a Slurm state (``CANCELLED by 0`` included) onto jobkit's; None if unknown."""
    word = native.strip().split(" ")[0].rstrip("+").upper()
    return STATES.get(word)
