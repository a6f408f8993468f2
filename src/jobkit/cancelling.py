"""Cancelling by id, with a report of what happened to each id given.

``Client.cancel`` marks jobs CANCELLED and tells their backends.  A person
(or script) cancelling wants more: ids that are arrays cancel every live
member; ids already ended are reported with their final state; an unknown id
or an unreachable backend must not spare the other ids.  :func:`cancel_ids`
does that and returns a typed :class:`CancelReport`; the CLI only renders it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

from jobkit.errors import JobkitError, JobNotFoundError
from jobkit.lookup import find

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.states import JobRecord

__all__ = ["CancelReport", "Cancelled", "cancel_ids"]


@dataclasses.dataclass(frozen=True)
class Cancelled:
    """What became of one id given: a job, or every job of an array."""

    id: str
    is_array: bool
    total: int
    cancelled: list[str]
    """Ids of the jobs this call cancelled."""
    stuck: list[str]
    """Ids whose backend could not be told (the store may mark them CANCELLED)."""
    ended: list[JobRecord]
    """Jobs that had already ended, as the store has them now."""


@dataclasses.dataclass(frozen=True)
class CancelReport:
    targets: list[Cancelled]
    unknown: list[str]
    """One message per id that names no job and no array."""
    problems: list[str]
    """One message per backend that could not stop its jobs."""

    @property
    def ok(self) -> bool:
        return not self.unknown and not self.problems


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def cancel_ids(client: Client, job_ids: Iterable[str]) -> CancelReport:
    """Cancel jobs and arrays by id, one backend at a time (one failing spares the rest)."""
    unknown: list[str] = []
    found: dict[str, tuple[bool, list[JobRecord]]] = {}
    for job_id in dict.fromkeys(j.strip() for j in job_ids):
        try:
            hit = find(client.store, job_id)
        except JobNotFoundError as exc:
            unknown.append(str(exc))
            continue
        found[job_id] = (hit.is_array, hit.records)
    by_backend: dict[str, list[str]] = {}
    for _is_array, records in found.values():
        for r in records:
            if not r.is_terminal:
                by_backend.setdefault(r.backend, []).append(r.id)
    cancelled: set[str] = set()
    stuck: set[str] = set()
    problems: list[str] = []
    for backend_name, ids in by_backend.items():
        ids = list(dict.fromkeys(ids))
        try:
            cancelled.update(client.cancel(ids))
        except JobkitError as exc:
            stuck.update(ids)
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            problems.append(
                f"backend {backend_name!r} could not stop {shown} (they may be marked "
                f"CANCELLED yet still run): {_first_line(str(exc))}"
            )
    rest = [r.id for _a, rs in found.values() for r in rs if r.id not in cancelled | stuck]
    now = client.store.get_many(list(dict.fromkeys(rest))) if rest else {}
    targets = [
        Cancelled(
            id=job_id,
            is_array=is_array,
            total=len(records),
            cancelled=[r.id for r in records if r.id in cancelled],
            stuck=[r.id for r in records if r.id in stuck],
            ended=[now.get(r.id, r) for r in records if r.id not in cancelled | stuck],
        )
        for job_id, (is_array, records) in found.items()
    ]
    return CancelReport(targets, unknown, problems)
