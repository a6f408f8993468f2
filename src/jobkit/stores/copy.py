"""Copy every job from one store to another (``jobkit store copy SRC DST``).

What a job is, for a copy: its record, its payload and outcome blobs, and
the environment blob a local job refers to (``extra["env"]``).  For each
job, the blobs are written before the record, so a record visible in the
destination always finds its payload and outcome there; a job whose blobs
could not be copied gets no record and is reported.

A copy can be run again, and converges:

* a job already in the destination with the same record is left alone;
* a job the destination holds in an active state (the source moved on since
  the last copy, e.g. RUNNING then, SUCCEEDED now) is brought up to date by a
  compare-and-set transition from the state the destination holds, and its
  outcome copied;
* a job the destination holds in a *final* state that differs from the
  source's is a conflict: two histories of one id.  It is never overwritten,
  only reported.

Nothing is deleted from either store, and the source is only read.  Records
the source cannot read (corrupted) cannot be copied; they are reported by
id, so a copy never loses a job silently.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from jobkit.errors import BlobNotFoundError, JobkitError, StoreError
from jobkit.states import JobRecord

from .base import Store, job_blob_keys

BATCH = 200
"""Records created per ``create`` call (and blobs in flight per round)."""
_WORKERS = 8


@dataclasses.dataclass
class CopyReport:
    """What a copy did, job by job."""

    source: str
    destination: str
    dry_run: bool = False
    copied: list[str] = dataclasses.field(default_factory=list)
    """New in the destination."""
    updated: list[str] = dataclasses.field(default_factory=list)
    """Held there in an active state; brought up to the source's record."""
    unchanged: int = 0
    """Already there, identical."""
    active: list[str] = dataclasses.field(default_factory=list)
    """Copied or updated while still active in the source: their workers keep
    writing to the source, so copy again once they end."""
    conflicts: dict[str, str] = dataclasses.field(default_factory=dict)
    """Ids held by both stores with different final records: left alone."""
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    """Jobs that could not be copied (unreadable in the source, a write refused)."""

    @property
    def complete(self) -> bool:
        """Whether every job of the source is now in the destination as it is there."""
        return not self.conflicts and not self.failed

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["complete"] = self.complete
        return data


Progress = Callable[[int, int], None]
"""``(jobs handled, jobs in all)``: called after each batch."""


def copy_jobs(
    source: Store, destination: Store, *, dry_run: bool = False, progress: Progress | None = None
) -> CopyReport:
    """Copy every job of ``source`` into ``destination``; see the module docstring."""
    if source.url == destination.url:
        raise StoreError(
            f"source and destination are the same store ({source.url}); name two different stores"
        )
    report = CopyReport(source.url, destination.url, dry_run=dry_run)
    for job_id, why in source.find_corrupted().items():
        report.failed[job_id] = f"unreadable in the source: {why}"
    records = source.query(oldest_first=True)
    with concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="jobkit-copy") as pool:
        for start in range(0, len(records), BATCH):
            _copy_batch(source, destination, records[start : start + BATCH], report, pool)
            if progress is not None:
                progress(min(start + BATCH, len(records)), len(records))
    return report


def _copy_batch(
    source: Store,
    destination: Store,
    records: Sequence[JobRecord],
    report: CopyReport,
    pool: concurrent.futures.Executor,
) -> None:
    held = destination.get_many([r.id for r in records])
    new: list[JobRecord] = []
    stale: list[tuple[JobRecord, JobRecord]] = []  # (source's, destination's)
    for record in records:
        there = held.get(record.id)
        if there is None:
            new.append(record)
        elif there == record:
            report.unchanged += 1
        elif there.is_terminal:
            report.conflicts[record.id] = (
                f"the destination holds it as {there.state.value} (created "
                f"{there.created_at:.3f}), the source as {record.state.value} (created "
                f"{record.created_at:.3f}); left as it is"
            )
        else:
            stale.append((record, there))
    moving = new + [r for r, _ in stale]
    report.active += [r.id for r in moving if not r.is_terminal]
    if report.dry_run:
        report.copied += [r.id for r in new]
        report.updated += [r.id for r, _ in stale]
        return
    blob_errors = dict(
        zip(
            [r.id for r in moving],
            pool.map(lambda r: _copy_blobs(source, destination, r), moving),
            strict=True,
        )
    )
    for job_id, error in blob_errors.items():
        if error is not None:
            report.failed[job_id] = error
    ready = [r for r in new if blob_errors[r.id] is None]
    if ready:
        try:
            destination.create(ready)
            report.copied += [r.id for r in ready]
        except JobkitError:  # one clash fails the batch: create one at a time to say which
            for record in ready:
                try:
                    destination.create([record])
                    report.copied.append(record.id)
                except JobkitError as exc:
                    report.failed[record.id] = f"could not create it in the destination: {exc}"
    for record, there in stale:
        if blob_errors[record.id] is not None:
            continue
        _bring_up_to_date(destination, record, there, report)


def _copy_blobs(source: Store, destination: Store, record: JobRecord) -> str | None:
    """Copy the job's blobs that exist in the source; the error as text, or None."""
    keys = list(job_blob_keys(record.id))
    env_ref = record.extra.get("env") if isinstance(record.extra, dict) else None
    if isinstance(env_ref, str) and env_ref:
        keys.append(f"envs/{env_ref}")
    for key in keys:
        try:
            data = source.get_blob(key)
        except BlobNotFoundError:
            continue  # not every job has every blob (no outcome before it ends)
        except JobkitError as exc:
            return f"could not read its blob {key!r}: {exc}"
        try:
            destination.put_blob(key, data)
        except JobkitError as exc:
            return f"could not write its blob {key!r}: {exc}"
    return None


def _bring_up_to_date(
    destination: Store, record: JobRecord, there: JobRecord, report: CopyReport
) -> None:
    """Move the destination's active copy to the source's record, if no one moved it since."""
    fields = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(JobRecord)
        if f.name not in ("id", "state")
    }
    try:
        moved = destination.transition(record.id, record.state, expect=[there.state], **fields)
    except JobkitError as exc:
        report.failed[record.id] = f"could not update it in the destination: {exc}"
        return
    if moved is None:
        report.failed[record.id] = (
            f"changed in the destination while copying (it was {there.state.value}); copy again"
        )
    else:
        report.updated.append(record.id)
