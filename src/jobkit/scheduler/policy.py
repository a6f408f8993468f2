"""Which queued jobs start now: resource fit, priority, fair share.

Pure functions over resource vectors, so the policy is tested without
processes.  The rules, in the order they apply:

1. **Priority bands** (Borg's prod/batch): a higher ``priority`` always goes
   first.
2. **Dominant Resource Fairness** (the Mesos allocator) between owners within
   a band: the next job comes from the owner whose dominant share — the
   largest fraction of any one resource (cpus, mem, gpus) it holds — is
   smallest.  One user's 500-job sweep cannot starve a colleague's single job.
3. **FIFO** within an owner.
4. **Admission by fit** (Borg/YARN): a job starts only if its whole vector
   fits what is free, and a multi-GPU job gets all its GPUs at once (gang).
5. **Head-of-line reservation**: when the best candidate does not fit, the
   resources it waits for are held back from jobs behind it, so small jobs
   cannot starve a big one forever (backfill only into what is left).

GPUs are slots with an index; whole-GPU requests take idle GPUs (lowest
index first), fractional requests (``gpus=0.5``) pack onto the most-used GPU
that still has room (as Salus and gpushare do), so fractional jobs share
devices instead of spreading over all of them.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Iterator, Sequence

EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class Capacity:
    """What the machine offers to jobs."""

    cpus: float
    mem: int
    gpus: tuple[str, ...] = ()
    """GPU ids (``CUDA_VISIBLE_DEVICES`` values), in index order."""
    gpu_names: tuple[str, ...] = ()
    max_jobs: int | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    """One queued job's resource vector and ordering keys."""

    job_id: str
    owner: str = ""
    priority: int = 0
    created_at: float = 0.0
    cpus: float = 1.0
    mem: int = 0
    gpus: float = 0.0
    gpu_type: str | None = None


@dataclasses.dataclass(frozen=True)
class Allocation:
    job_id: str
    owner: str
    cpus: float
    mem: int
    gpu_share: tuple[tuple[str, float], ...] = ()

    @property
    def gpu_ids(self) -> list[str]:
        return [gpu for gpu, _ in self.gpu_share]

    @property
    def gpus(self) -> float:
        return sum(share for _, share in self.gpu_share)


def never_fits(request: Request, capacity: Capacity) -> str | None:
    """Why ``request`` can never run on this machine, or None if it can."""
    eligible = _eligible_gpus(request, capacity)
    if request.cpus > capacity.cpus + EPS:
        return f"requests {request.cpus:g} cpus but this machine offers {capacity.cpus:g}"
    if request.mem > capacity.mem:
        return f"requests {request.mem} bytes of memory but this machine offers {capacity.mem}"
    if request.gpus > len(eligible) + EPS:
        kind = f" of type {request.gpu_type!r}" if request.gpu_type else ""
        return f"requests {request.gpus:g} GPUs{kind} but this machine has {len(eligible)}" + (
            f" (types: {', '.join(sorted(set(capacity.gpu_names)))})" if capacity.gpu_names else ""
        )
    return None


def _eligible_gpus(request: Request, capacity: Capacity) -> list[str]:
    if not request.gpu_type:
        return list(capacity.gpus)
    wanted = request.gpu_type.lower()
    return [
        gpu
        for gpu, name in zip(
            capacity.gpus, capacity.gpu_names or ("",) * len(capacity.gpus), strict=True
        )
        if wanted in name.lower()
    ]


class Ledger:
    """What is allocated now; the agent's single source of truth for fit."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.allocations: dict[str, Allocation] = {}

    # -- totals ---------------------------------------------------------------
    def used(self) -> tuple[float, int, dict[str, float]]:
        cpus = sum(a.cpus for a in self.allocations.values())
        mem = sum(a.mem for a in self.allocations.values())
        gpu: dict[str, float] = dict.fromkeys(self.capacity.gpus, 0.0)
        for alloc in self.allocations.values():
            for gpu_id, share in alloc.gpu_share:
                gpu[gpu_id] = gpu.get(gpu_id, 0.0) + share
        return cpus, mem, gpu

    def dominant_shares(self) -> dict[str, float]:
        cap = self.capacity
        per_owner: dict[str, list[float]] = {}
        for alloc in self.allocations.values():
            vec = per_owner.setdefault(alloc.owner, [0.0, 0.0, 0.0])
            vec[0] += alloc.cpus
            vec[1] += alloc.mem
            vec[2] += alloc.gpus
        return {
            owner: max(
                vec[0] / cap.cpus if cap.cpus else 0.0,
                vec[1] / cap.mem if cap.mem else 0.0,
                vec[2] / len(cap.gpus) if cap.gpus else 0.0,
            )
            for owner, vec in per_owner.items()
        }

    # -- fitting ----------------------------------------------------------------
    def try_fit(
        self,
        request: Request,
        reserved: tuple[float, int, dict[str, float]] | None = None,
    ) -> Allocation | None:
        cap = self.capacity
        if cap.max_jobs is not None and len(self.allocations) >= cap.max_jobs:
            return None
        cpus, mem, gpu_used = self.used()
        r_cpus, r_mem, r_gpu = reserved or (0.0, 0, {})
        if cpus + r_cpus + request.cpus > cap.cpus + EPS:
            return None
        if request.mem and mem + r_mem + request.mem > cap.mem:
            return None
        shares = self._fit_gpus(request, gpu_used, r_gpu)
        if shares is None:
            return None
        return Allocation(request.job_id, request.owner, request.cpus, request.mem, shares)

    def _fit_gpus(
        self, request: Request, used: dict[str, float], reserved: dict[str, float]
    ) -> tuple[tuple[str, float], ...] | None:
        if request.gpus <= EPS:
            return ()
        free = {
            gpu: 1.0 - used.get(gpu, 0.0) - reserved.get(gpu, 0.0)
            for gpu in _eligible_gpus(request, self.capacity)
        }
        if request.gpus < 1.0:
            fitting = [g for g, room in free.items() if room + EPS >= request.gpus]
            if not fitting:
                return None
            best = min(fitting, key=lambda g: (free[g], self.capacity.gpus.index(g)))
            return ((best, request.gpus),)
        whole = int(request.gpus)
        idle = [g for g, room in free.items() if room >= 1.0 - EPS]
        if len(idle) < whole:
            return None
        return tuple((g, 1.0) for g in idle[:whole])

    def allocate(self, allocation: Allocation) -> None:
        self.allocations[allocation.job_id] = allocation

    def release(self, job_id: str) -> Allocation | None:
        return self.allocations.pop(job_id, None)


class WaitQueue:
    """The waiting requests, kept in the order :func:`plan` reads them.

    By priority band, then owner, then (created_at, id) within an owner, so
    that a plan reads the heads of a few lists instead of sorting the whole
    queue: with a 10,000-item map waiting, a job's end costs the same as with
    ten (the agent plans after every end).
    """

    def __init__(self, requests: Iterable[Request] = ()) -> None:
        self._bands: dict[int, dict[str, list[tuple[float, str, Request]]]] = {}
        self._requests: dict[str, Request] = {}
        for request in requests:
            self.add(request)

    def add(self, request: Request) -> None:
        self.remove(request.job_id)
        owners = self._bands.setdefault(request.priority, {})
        bisect.insort(
            owners.setdefault(request.owner, []), (request.created_at, request.job_id, request)
        )
        self._requests[request.job_id] = request

    def remove(self, job_id: str) -> Request | None:
        request = self._requests.pop(job_id, None)
        if request is None:
            return None
        owners = self._bands[request.priority]
        entries = owners[request.owner]
        entries.pop(bisect.bisect_left(entries, (request.created_at, request.job_id)))
        if not entries:
            del owners[request.owner]
            if not owners:
                del self._bands[request.priority]
        return request

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._requests

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._requests.values()))

    def peek(self) -> Request | None:
        """The oldest request of the highest band (any owner), or None."""
        if not self._bands:
            return None
        owners = self._bands[max(self._bands)]
        return min(entries[0] for entries in owners.values())[2]

    def bands(self) -> list[dict[str, list[tuple[float, str, Request]]]]:
        """Highest priority first; each owner's list oldest first (read-only)."""
        return [self._bands[p] for p in sorted(self._bands, reverse=True)]


def plan(queue: Sequence[Request] | WaitQueue, ledger: Ledger) -> list[Allocation]:
    """Choose which queued requests start now; allocates them in ``ledger``
    and, when ``queue`` is a :class:`WaitQueue`, removes them from it."""
    waiting = queue if isinstance(queue, WaitQueue) else WaitQueue(queue)
    started = _plan(waiting, ledger)
    if waiting is queue:
        for alloc in started:
            waiting.remove(alloc.job_id)
    return started


def _plan(queue: WaitQueue, ledger: Ledger) -> list[Allocation]:
    started: list[Allocation] = []
    reserved_cpus, reserved_mem, reserved_gpu = 0.0, 0, {}  # type: ignore[var-annotated]
    blocked = False
    for owners in queue.bands():
        cursor = dict.fromkeys(owners, 0)  # each owner's next unread request
        while cursor:
            shares = ledger.dominant_shares()
            owner = min(cursor, key=lambda o: (shares.get(o, 0.0), *owners[o][cursor[o]][:2]))
            request = owners[owner][cursor[owner]][2]
            cursor[owner] += 1
            if cursor[owner] >= len(owners[owner]):
                del cursor[owner]
            alloc = ledger.try_fit(request, (reserved_cpus, reserved_mem, reserved_gpu))
            if alloc is not None:
                ledger.allocate(alloc)
                started.append(alloc)
                continue
            if (
                ledger.capacity.max_jobs is not None
                and len(ledger.allocations) >= ledger.capacity.max_jobs
            ):
                return started
            if ledger.used()[0] + reserved_cpus >= ledger.capacity.cpus - EPS:
                return started  # every job needs some cpu: nothing behind this fits
            if not blocked:
                # Hold back what the head of the line waits for (gang, no starvation).
                blocked = True
                reserved_cpus += request.cpus
                reserved_mem += request.mem
                for gpu in _reserve_gpus(request, ledger):
                    reserved_gpu[gpu] = reserved_gpu.get(gpu, 0.0) + 1.0
    return started


def _reserve_gpus(request: Request, ledger: Ledger) -> Iterable[str]:
    if request.gpus <= EPS:
        return []
    _, _, used = ledger.used()
    eligible = _eligible_gpus(request, ledger.capacity)
    # Reserve the least-used GPUs: they free up first.
    eligible.sort(key=lambda g: used.get(g, 0.0))
    return eligible[: max(1, int(request.gpus))]
