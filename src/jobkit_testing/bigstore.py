"""A big SQLite store, built fast: for the ``bigstore`` benchmark and the tests
that check listing and pruning stay cheap at 100,000 jobs.

Records go straight in through :meth:`SQLiteStore.create` in batches (one
transaction each), never through a client: what is measured is reading and
pruning a store, not filling it.  The mix is what a long-used store holds::

    oldest ............................................ newest  (created_at)
    | single jobs and maps (one created_at per map, 10..1,000 items)      |
    | mostly SUCCEEDED, some FAILED / CANCELLED; active jobs only among   |
    | the newest (local RUNNING) plus a few stuck old ones (slurm PENDING)|
    | every `blob_every`-th job: a payload and an outcome blob (inline in |
    | the database; every 100th of those has a payload file over 128 KiB) |
    | slurm jobs: stdout/stderr log files named in extra (if log_dir)     |

Everything is drawn from ``random.Random(seed)``: the same arguments build the
same store, and :class:`BigStore` says which ids are old, active, with blobs,
so tests can check a prune removed exactly what it should.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

from jobkit.states import TERMINAL_STATES, FailureReason, JobRecord, JobState
from jobkit.stores.base import outcome_key, payload_key
from jobkit.stores.sqlite import SQLiteStore
from jobkit.stores.sqlite_sql import INLINE_MAX

DAY = 86400.0
MAP_SIZES = (10, 10, 50, 50, 200, 1000)
BATCH = 5000
PAYLOAD = b"\x80\x05" + b"p" * 300  # the size of a small pickled call
OUTCOME = b"\x80\x05" + b"o" * 60
BIG_PAYLOAD = b"\x80\x05" + b"a" * (INLINE_MAX + 1024)  # over the inline limit: a file


@dataclasses.dataclass
class BigStore:
    """What :func:`build` made: the store's URL and which jobs have what."""

    url: str
    path: Path
    now: float
    """The time the newest jobs were created around (records are older)."""
    created: dict[str, float]
    """Job id -> created_at, for every job."""
    active: set[str]
    with_blobs: set[str]
    log_files: dict[str, list[str]]
    """Job id -> the log files its record names (slurm jobs, when ``log_dir``)."""

    def prunable(self, older_than: float) -> set[str]:
        """Ids that ``jobkit prune --older-than`` of ``older_than`` seconds deletes."""
        cutoff = self.now - older_than
        return {i for i, t in self.created.items() if t < cutoff and i not in self.active}


def build(
    path: Path,
    *,
    count: int = 100_000,
    days: float = 90.0,
    blob_every: int = 10,
    log_dir: Path | None = None,
    seed: int = 0,
    now: float | None = None,
) -> BigStore:
    """Create a SQLite store at ``path`` holding ``count`` jobs spread over ``days``.

    ``blob_every``: every n-th job gets a payload and an outcome blob (0: none);
    one in 100 of those payloads is a file, the others are rows of the ``blobs`` table.
    """
    rng = random.Random(seed)
    now = time.time() if now is None else now
    store = SQLiteStore(path)
    result = BigStore(store.url, store.path, now, {}, set(), set(), {})
    try:
        batch: list[JobRecord] = []
        blobs: dict[str, bytes] = {}
        made = 0
        while made < count:
            size = 1 if rng.random() < 0.5 else min(rng.choice(MAP_SIZES), count - made)
            # oldest first; the last 0.1 % of the span is "now", where jobs still run
            created = now - days * DAY * (1 - made / count) - 1.0
            array_id = f"jk-big{made:07d}" if size > 1 else None  # items: ARRAY.INDEX
            name = f"{rng.choice(('train', 'eval', 'sweep', 'prep'))}-{rng.randrange(40)}"
            backend = rng.choice(("local",) * 8 + ("slurm", "kubernetes"))
            for index in range(size):
                job_id = f"{array_id}.{index}" if array_id else f"jk-big{made:07d}"
                record = _record(
                    rng, job_id, name, backend, created, made / count, log_dir, array_id
                )
                if array_id is not None:
                    record.array_index = index
                batch.append(record)
                result.created[job_id] = created
                if record.state not in TERMINAL_STATES:
                    result.active.add(job_id)
                logs = [v for k, v in record.extra.items() if k in ("stdout", "stderr")]
                if logs:
                    result.log_files[job_id] = logs
                if blob_every and made % blob_every == 0:
                    big = made % (blob_every * 100) == 0  # a large argument: a file
                    blobs[payload_key(job_id)] = BIG_PAYLOAD if big else PAYLOAD
                    blobs[outcome_key(job_id)] = OUTCOME
                    result.with_blobs.add(job_id)
                made += 1
                if len(batch) >= BATCH:
                    store.put_blobs(blobs)  # payloads first, as a client writes them
                    store.create(batch)
                    batch, blobs = [], {}
        store.put_blobs(blobs)
        store.create(batch)
    finally:
        store.close()
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        for paths in result.log_files.values():
            for log in paths:
                Path(log).write_text("step 1\nstep 2\n")
    return result


def _record(
    rng: random.Random,
    job_id: str,
    name: str,
    backend: str,
    created: float,
    age_fraction: float,
    log_dir: Path | None,
    array_id: str | None,
) -> JobRecord:
    """One job: terminal unless among the newest (or a rare stuck one)."""
    draw = rng.random()
    if age_fraction > 0.999 and backend == "local" and draw < 0.5:
        state = JobState.RUNNING
    elif draw < 0.02 and backend == "slurm" and age_fraction < 0.5:
        state = JobState.PENDING  # stuck in the queue for weeks: never pruned
    elif draw < 0.85:
        state = JobState.SUCCEEDED
    elif draw < 0.95:
        state = JobState.FAILED
    else:
        state = JobState.CANCELLED
    record = JobRecord(
        id=job_id,
        name=name,
        backend=backend,
        state=state,
        created_at=created,
        submitted_at=created + 0.01,
        owner="bench",
        array_id=array_id,
        resources={"cpus": 1, "mem": 2**30},
        labels={"project": "bigstore"},
    )
    if state is not JobState.PENDING:
        record.started_at = created + 0.5
        record.host = "node-1"
        record.pid = 1000 + rng.randrange(30000)
    if state in TERMINAL_STATES:
        record.finished_at = created + rng.uniform(1, 600)
        record.exit_code = 0 if state is JobState.SUCCEEDED else 1
    if state is JobState.FAILED:
        record.failure_reason = FailureReason.ERROR
        record.message = "ValueError: learning rate must be positive"
    if backend == "local":
        # another machine's agent runs it: reading this store never wakes one here
        record.extra = {"machine": "node-1"}
    if backend == "slurm":
        record.backend_id = str(100000 + rng.randrange(900000))
        if log_dir is not None:
            record.extra = {
                "stdout": str(log_dir / f"{job_id}.out"),
                "stderr": str(log_dir / f"{job_id}.err"),
            }
    return record
