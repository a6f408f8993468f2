"""Talking to slurmctld: one batched command per question, errors translated.

``squeue --me -t all`` answers for every job the controller still holds
(queued, running, and finished within ``MinJobAge``) in one call, whatever
their number; ``sacct`` answers for the older ones in one more call.  With
accounting disabled ``sacct`` fails, and reconcile works from squeue alone.
Every failure becomes a BackendError carrying the command, exit code and
Slurm's own message, as dask-jobqueue's ``Job._call`` does.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from jobkit.errors import BackendError

TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class NativeState:
    state: str
    reason: str = ""
    exit_code: int | None = None
    comment: str = ""
    """The job's ``--comment``: jobkit marks its submissions (``jobkit:<id>:<offset>``)."""
    dependency: str = ""
    """What the job waits on, in squeue's words (``afterok:12(failed)``); '' if nothing."""


def run(command: Sequence[str], *, timeout: float = TIMEOUT) -> str:
    """Run a Slurm command; BackendError with its message if it fails."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise BackendError(
            f"{command[0]} not found: install the Slurm client tools, or use another backend"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise BackendError(
            f"`{' '.join(command[:2])}` got no answer in {timeout:g} s: is slurmctld reachable? "
            "(check SLURM_CONF and `scontrol ping`)"
        ) from exc
    if done.returncode != 0:
        raise CommandError(list(command), done.returncode, done.stdout, done.stderr)
    return done.stdout


class CommandError(BackendError):
    """A Slurm command failed; carries what it said."""

    def __init__(self, command: list[str], code: int, stdout: str, stderr: str) -> None:
        self.command, self.code, self.stdout, self.stderr = command, code, stdout, stderr
        said = " ".join((stderr or stdout).split()) or "no output"
        super().__init__(explain(f"`{command[0]}` failed (exit {code}): {said}"))


NO_CONFIG_MARKERS = (
    "resolve_ctls_from_dns_srv",
    "Could not establish a configuration source",
    "Unknown host",
)
"""What Slurm's tools say when they find no slurm.conf and no DNS SRV record."""

TEST_CLUSTER_DIR = "/tmp/jobkit-slurm"
"""Where ``backends/slurm/cluster.sh`` keeps its cluster (``JOBKIT_SLURM_DIR``)."""


def explain(message: str) -> str:
    """Slurm's message, or the fix instead of its noise when the cause is where the cluster is."""
    if any(marker in message for marker in NO_CONFIG_MARKERS):
        if message.count("`") >= 2:
            command = message.split("`")[1]
        else:
            command = message.split(":", 1)[0].strip() if ":" in message else "Slurm"
        return f"`{command}` found no Slurm cluster: {missing_config_fix()}"
    if "contact slurm controller" in message or "Connection refused" in message:
        return f"{message}; is slurmctld running and SLURM_CONF right? (`scontrol ping`)"
    return message


def missing_config_fix() -> str:
    """What is missing and the exact fix: the repo's test cluster if it is here."""
    test_conf = Path(os.environ.get("JOBKIT_SLURM_DIR") or TEST_CLUSTER_DIR) / "etc" / "slurm.conf"
    if not os.environ.get("SLURM_CONF") and test_conf.exists():
        return (
            f"SLURM_CONF is not set; for the test cluster of backends/slurm/cluster.sh "
            f'({test_conf}) run: eval "$(backends/slurm/cluster.sh env)" '
            "(for another cluster, set SLURM_CONF to its slurm.conf)"
        )
    return "SLURM_CONF is not set; set SLURM_CONF to your cluster's slurm.conf"


def config_problem() -> str | None:
    """A SLURM_CONF naming no file (Slurm's tools would retry it for 60 s), else None."""
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return f"SLURM_CONF={conf} is not a file: set it to your cluster's slurm.conf"
    return None


def squeue() -> dict[str, NativeState]:
    """States of this user's jobs the controller still holds, by Slurm id."""
    out = run(
        ["squeue", "--me", "--noheader", "--array", "--states=all", "--format=%i|%T|%r|%E|%k"]
    )
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|", 4)  # the comment last: it may hold a "|"
        if len(parts) >= 2:
            reason = parts[2] if len(parts) > 2 else ""
            depends = parts[3] if len(parts) > 3 and parts[3] != "(null)" else ""
            comment = parts[4] if len(parts) > 4 and parts[4] != "(null)" else ""
            states[parts[0]] = NativeState(parts[1], reason, comment=comment, dependency=depends)
    return states


def sacct(ids: Iterable[str]) -> dict[str, NativeState]:
    """Final states from accounting; raises CommandError when it is disabled."""
    wanted = sorted({i.split("_")[0] for i in ids})
    if not wanted:
        return {}
    out = run(
        [
            "sacct",
            "--allocations",
            "--noheader",
            "--parsable2",
            "--format=JobID,State,ExitCode,Reason",
            f"--jobs={','.join(wanted)}",
        ]
    )
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2:
            continue
        code = None
        if len(parts) > 2 and ":" in parts[2]:
            head = parts[2].split(":")[0]
            code = int(head) if head.isdigit() else None
        states[parts[0]] = NativeState(parts[1], parts[3] if len(parts) > 3 else "", code)
    return states


def accounting_disabled(error: BackendError) -> bool:
    text = str(error).lower()
    return "accounting storage is disabled" in text or "slurmdbd" in text


DEFAULT_MAX_ARRAY_SIZE = 1001
"""Slurm's default MaxArraySize (an array's indices must stay below it)."""


def show_config() -> dict[str, str]:
    """``scontrol show config`` as name -> value (ClusterName, MaxArraySize, ...)."""
    config: dict[str, str] = {}
    for line in run(["scontrol", "show", "config"]).splitlines():
        name, equals, value = line.partition("=")
        if equals:
            config.setdefault(name.strip(), value.strip())
    return config


def max_array_size() -> int:
    """The cluster's MaxArraySize (an array's indices must stay below it)."""
    try:
        return int(show_config().get("MaxArraySize", ""))
    except ValueError:
        return DEFAULT_MAX_ARRAY_SIZE


def scancel(ids: Iterable[str]) -> None:
    ids = sorted(set(ids))
    if ids:
        run(["scancel", *ids])
