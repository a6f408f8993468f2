"""``s3://bucket/prefix``: a store that every machine of a cluster can reach.

Clients, the CLI and workers on Slurm nodes or Kubernetes pods all talk to
the same bucket.  What a request does, in order::

    create      PUT index keys ─► PUT jobs/<id>.json  If-None-Match: *   (an id exists: 412)
    transition  GET jobs/<id>.json (+ETag) ─► legal move? ─► PUT new index key
                ─► PUT jobs/<id>.json  If-Match: <ETag>  (412: someone else won; re-read)
                ─► DELETE the old index key
    transition_many  the same phases, each sent for every change at once; the GET is
                skipped where this store wrote the record last (it kept the ETag),
                and one DeleteObjects per 1,000 changes tidies (``batch``)
    rows        LIST index/<STATE>/ (newest first, one page): the list's columns are in the keys
    query       LIST index/<STATE>/ (newest first, one page) ─► GET up to `limit` records
    blobs       PUT/GET blobs/<key>  (multipart above `multipart_threshold`)

The object layout and why the index stays right under concurrent writers
are described in :mod:`jobkit.stores.s3.layout`.  The record object is the
truth; an index key only says where to look, and every listed record is
re-read and checked against the query's filters before it is returned.

**No lost updates.**  Every change of a record is a compare-and-set on its
ETag with S3 conditional writes (``If-Match: <ETag>`` and ``If-None-Match: *``
on PutObject: AWS S3 since November 2024, moto 5.2; boto3 >= 1.35.69 sends
them).  A writer that loses (HTTP 412, or 409 when S3 sees two at once)
re-reads the record and re-checks the move against
:data:`~jobkit.states.LEGAL_TRANSITIONS`, so a late worker cannot turn a
CANCELLED job into SUCCEEDED, and a field update never undoes a transition.
A service that *ignores* these headers would silently turn each write into
last-writer-wins; nothing here can tell without probing, so check an
S3-compatible service (MinIO, Ceph RGW, gateways) for conditional PUTs
before pointing several writers at it, or keep one writer per job there.

**Listing.**  ``jobkit list`` asks :meth:`S3Store.rows`, answered from the
index keys alone: one LIST per requested state (six without a state
filter) and no GET, whatever the size of the store.
``query(states=..., limit=50)``, which returns whole records (``jobkit.jobs``,
``jobkit list --json``), costs those LISTs plus at most ``limit`` GETs: it
does not grow with the store either (:mod:`jobkit.stores.s3.listing`).  Backend and name
filters are judged on the index keys first, so they cost no extra GETs;
``oldest_first`` lists the whole index of the chosen states (1,000 keys per
request) to find the oldest.  Consistency caveats: a job whose state changes while a
listing runs may be left out of that one listing (its old key is gone and
its new key was listed before it existed); a job is never listed twice, nor
with a state its record did not have when read.  Keys a crashed writer
left behind cost an extra GET, not a wrong row.

**Create** is all-or-nothing for id clashes: a batch that meets an existing
id removes what it wrote and raises.  It is not isolated: another process
may see part of a batch while it is being written.

**Errors** are translated in :mod:`jobkit.stores.s3.errors`: one line naming
the bucket and key, with the fix.  Corrupted records make ``get`` raise
StoreError naming the object; ``query``/``get_many`` skip them with one
logged warning, as the SQLite store does, and ``find_corrupted`` lists them.

boto3 is imported when a store is opened, not with this module; the
client comes from the standard boto3 chain (``AWS_ENDPOINT_URL``, ``AWS_*``
credentials, profiles, roles, region), which URL parameters can narrow
(:mod:`jobkit.stores.s3.url`): ``?endpoint_url=&region=&profile=
&addressing_style=&connect_timeout=&read_timeout=&max_attempts=&workers=``.
Credentials never go in the URL: it is passed to every worker.

This module is longer than ~500 lines on purpose: it is the one class whose
methods share a client, a layout and the compare-and-set on ETags; every
part that stands alone (keys, listing, errors, URL) is a sibling module.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from jobkit.errors import (
    BlobNotFoundError,
    ConfigError,
    JobkitError,
    JobNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from jobkit.states import TERMINAL_STATES, JobRecord, JobRow, JobState

from .._buffer_reader import BufferReader
from .._common import (
    apply_fields,
    byte_views,
    check_blob_key,
    check_limit,
    expected_sources,
    normalised,
)
from ..base import Buffer, Change, Store, job_blob_keys
from . import listing
from .batch import Stored as _Stored
from .batch import Written, transition_all
from .errors import Conflict, Missing, translate
from .layout import GEN_METADATA, Layout, next_generation, provably_stale
from .listing import Query, run_query, run_rows
from .url import S3Options, parse_url

__all__ = ["S3Options", "S3Store", "parse_url"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_CAS_ATTEMPTS = 64
_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


class _Corrupted(StoreError):
    """A record object that does not hold a job record (skipped by listings)."""


class S3Store(Store):
    """Job records, an index and blobs as objects under one prefix of a bucket."""

    scheme: ClassVar[str] = "s3"
    sweep_interval: ClassVar[float] = 1.0
    shared_across_processes: ClassVar[bool] = True
    read_budget: ClassVar[float | None] = 50.0

    multipart_threshold: int = 64 * 1024 * 1024
    """Blobs larger than this go up as a multipart upload, parts sent in parallel."""
    multipart_part_size: int = 16 * 1024 * 1024
    """At least 5 MiB (S3's minimum for every part but the last)."""

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options or S3Options()
        where = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        query = self.options.to_query()
        self.url = f"{where}?{query}" if query else where
        self.local_dir = None
        self.layout = Layout(f"{self.prefix}/" if self.prefix else "")
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._warned: set[str] = set()  # corrupted records already reported
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._written = Written()  # ETags of records written here last (batch.py)
        self._client = self._new_client()

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        return cls(*parse_url(url))

    # -- connection --------------------------------------------------------
    def _new_client(self) -> Any:
        try:
            import boto3  # type: ignore[import-untyped]
            from botocore.config import Config  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ConfigError(
                f"the 's3' store needs boto3, which is not installed ({exc}); install it "
                "with: pip install 'jobkit[s3]'"
            ) from exc
        opts = self.options
        settings: dict[str, Any] = {
            "connect_timeout": opts.connect_timeout,
            "read_timeout": opts.read_timeout,
            "max_pool_connections": opts.workers + 4,
        }
        if opts.max_attempts is not None:
            settings["retries"] = {"total_max_attempts": opts.max_attempts}
        if opts.addressing_style is not None:
            settings["s3"] = {"addressing_style": opts.addressing_style}
        with self._translating("connect to", "", endpoint=opts.endpoint_url or "(default)"):
            session = boto3.session.Session(profile_name=opts.profile, region_name=opts.region)
            client = session.client("s3", endpoint_url=opts.endpoint_url, config=Config(**settings))
        put = client.meta.service_model.operation_model("PutObject").input_shape.members
        if "IfMatch" not in put:
            raise ConfigError(
                f"boto3 {boto3.__version__} cannot make the conditional writes the 's3' store "
                "relies on (PutObject IfMatch); upgrade it: pip install -U 'boto3>=1.35.69'"
            )
        return client

    @property
    def identity(self) -> str:
        """The URL and the endpoint it resolved to (``AWS_ENDPOINT_URL`` may differ)."""
        return f"{self.url} at {self._client.meta.endpoint_url}"

    @property
    def client(self) -> Any:
        """This process's boto3 S3 client (a forked child makes its own)."""
        self._check_open()
        return self._client

    def _check_open(self) -> None:
        """StoreError once closed; after a fork, this process's own client and threads."""
        if self._pid != os.getpid():
            self._reopen_after_fork()
        if self._closed:
            raise StoreError(f"store {self.url} is closed; open a new one")

    def _reopen_after_fork(self) -> None:
        """Never share connections or threads with the parent process."""
        self._lock = threading.Lock()
        self._pool = None
        self._pid = os.getpid()
        self._written = Written()
        if not self._closed:
            self._client = self._new_client()

    @contextlib.contextmanager
    def _translating(self, action: str, key: str, *, endpoint: str | None = None) -> Iterator[None]:
        """Turn boto3's errors raised by the block into jobkit's (see ``errors``)."""
        try:
            yield
        except Exception as exc:
            if endpoint is None:
                endpoint = str(self._client.meta.endpoint_url)
            error = translate(
                exc,
                action=action,
                where=f"s3://{self.bucket}/{key}",
                bucket=self.bucket,
                endpoint=endpoint,
            )
            if error is exc:
                raise
            raise error from exc

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items``, ``workers`` requests at a time; results in order."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        self._check_open()
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.options.workers, thread_name_prefix="jobkit-s3"
                )
            pool = self._pool
        return list(pool.map(fn, items))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.shutdown(wait=True)
        with contextlib.suppress(Exception):
            self._client.close()

    # -- objects -----------------------------------------------------------
    def _load(self, job_id: str) -> _Stored | None:
        """The record with its ETag and index generation; None if absent."""
        key = self.layout.record(job_id)
        try:
            with self._translating("read job record", key):
                response = self.client.get_object(Bucket=self.bucket, Key=key)
                body = response["Body"].read()
        except Missing:
            return None
        metadata = response.get("Metadata") or {}
        try:
            record = _decode(job_id, body)
            gen = int(metadata.get(GEN_METADATA, "0"))
        except (StoreError, ValueError) as exc:
            raise _Corrupted(
                f"corrupted job record {job_id!r} at s3://{self.bucket}/{key}: {exc}; remove it "
                f"with `jobkit prune --corrupted` (store.delete([{job_id!r}])) or restore the "
                "object from a backup or an earlier version"
            ) from exc
        return _Stored(record, str(response["ETag"]), gen)

    def _load_skipping(self, job_id: str) -> JobRecord | None:
        """The record, or None if absent or corrupted (warned once per record)."""
        try:
            stored = self._load(job_id)
        except _Corrupted as exc:
            if job_id not in self._warned:  # once: clients poll every second
                self._warned.add(job_id)
                logger.warning("skipped a job record: %s", exc)
            return None
        return None if stored is None else stored.record

    def _put_record(self, record: JobRecord, text: str, gen: int, *, etag: str | None) -> str:
        """Write a record if it still has ``etag`` (None: only if it does not exist);
        the new ETag."""
        key = self.layout.record(record.id)
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        with self._translating("write job record", key):
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=text.encode(),
                ContentType="application/json",
                Metadata={GEN_METADATA: str(gen)},
                **condition,
            )
        return str(response.get("ETag") or "")

    def _put_markers(self, keys: Iterable[str]) -> None:
        """Create empty index objects."""

        def put(key: str) -> None:
            with self._translating("write index key", key):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"")

        self._map(put, sorted(set(keys)))

    def _delete_keys(self, keys: Iterable[str]) -> None:
        """Remove objects, ``_DELETE_BATCH`` per request; missing ones are fine."""
        unique = sorted(set(keys))
        for start in range(0, len(unique), _DELETE_BATCH):
            chunk = unique[start : start + _DELETE_BATCH]
            with self._translating("delete", chunk[0] if len(chunk) == 1 else self.layout.prefix):
                if len(chunk) == 1:
                    self.client.delete_object(Bucket=self.bucket, Key=chunk[0])
                    continue
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreError(
                    f"S3 did not delete {len(errors)} object(s) in s3://{self.bucket}, e.g. "
                    f"{first.get('Key')!r} ({first.get('Code')}: {first.get('Message')}); "
                    "check that these credentials may s3:DeleteObject there"
                )

    def _tidy(self, keys: Sequence[str]) -> None:
        """Delete index keys that are no longer true, after the record was written.

        The change has happened by then, so a failure here must not report it
        as failed: a key left behind only costs listings an extra GET.
        """
        try:
            self._delete_keys(keys)
        except JobkitError as exc:
            logger.warning("left %d stale index key(s) behind: %s", len(keys), exc)

    def _list(self, base: str, start_after: str | None, first_page: int) -> Iterator[list[str]]:
        """Pages of keys under ``base``, in S3's (ascending) order."""
        token: str | None = None
        page = first_page
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base, "MaxKeys": page}
            if token is not None:
                params["ContinuationToken"] = token
            elif start_after is not None:
                params["StartAfter"] = start_after
            with self._translating("list", base):
                response = self.client.list_objects_v2(**params)
            yield [item["Key"] for item in response.get("Contents") or ()]
            if not response.get("IsTruncated"):
                return
            token = response["NextContinuationToken"]
            page = listing.LIST_PAGE

    # -- records -----------------------------------------------------------
    def create(self, records: Sequence[JobRecord]) -> None:
        fresh = [normalised(r) for r in records]
        if not fresh:
            return
        twins = sorted(i for i, n in collections.Counter(r.id for r, _ in fresh).items() if n > 1)
        if twins:
            raise StoreError(f"job id(s) already exist in {self.url}: {', '.join(twins)}")
        self._put_markers(k for r, _ in fresh for k in self.layout.index_keys(r, 0))

        def put(item: tuple[JobRecord, str]) -> BaseException | bool:
            try:
                etag = self._put_record(item[0], item[1], 0, etag=None)
            except Conflict:
                return False
            except Exception as exc:  # undone below, then raised
                return exc
            self._written.remember(_Stored(item[0], etag, 0))
            return True

        results = self._map(put, fresh)
        if all(r is True for r in results):
            return
        clashes = [r.id for (r, _), ok in zip(fresh, results, strict=True) if ok is False]
        self._undo_create([(r, ok) for (r, _), ok in zip(fresh, results, strict=True)])
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome
        raise StoreError(f"job id(s) already exist in {self.url}: {', '.join(sorted(clashes))}")

    def _undo_create(self, results: list[tuple[JobRecord, BaseException | bool]]) -> None:
        """Remove what a failed ``create`` wrote; leave what belongs to existing jobs."""
        doomed: list[str] = []
        for record, outcome in results:
            ours = self.layout.index_keys(record, 0)
            if outcome is not False:  # written, or perhaps written before an error
                doomed += [self.layout.record(record.id), *ours]
                continue
            try:  # an existing job: our keys may be its keys too
                existing = self._load(record.id)
            except StoreError:
                continue
            if existing is not None:
                current = self.layout.index_keys(existing.record, existing.gen)
                doomed += [k for k in ours if provably_stale(0, k, current, existing.gen)]
        with contextlib.suppress(StoreError):
            self._delete_keys(doomed)

    def get(self, job_id: str) -> JobRecord:
        stored = self._load(job_id)
        if stored is None:
            raise JobNotFoundError(job_id, self.url)
        return stored.record

    def get_many(self, job_ids: Collection[str]) -> dict[str, JobRecord]:
        ids = list(dict.fromkeys(job_ids))
        self._check_open()
        return {r.id: r for r in self._map(self._load_skipping, ids) if r is not None}

    def finished_among(
        self, job_ids: Collection[str], *, since: float | None = None
    ) -> dict[str, JobRecord]:
        """One LIST per final state, then a GET per watched job found there.

        The index of each final state is listed newest first down to
        ``since`` (the oldest watched job's creation): a client watching 200
        running jobs pays 3 requests a sweep instead of 200 GETs, and reads
        a record only once its job has ended.  Without ``since``, for a few
        jobs, or when the listing would cost more requests than reading each
        record (many other jobs ended since), it reads the records.
        """
        ids = set(job_ids)
        if since is None or len(ids) <= len(TERMINAL_STATES):
            return super().finished_among(ids)
        self._check_open()
        budget = len(ids)  # LIST requests worth spending before GETs are cheaper
        ended: dict[str, None] = {}
        for state in sorted(TERMINAL_STATES):
            base = self.layout.state_index(state)
            for page in self._list(base, None, listing.LIST_PAGE):
                budget -= 1
                entries = [e for e in map(functools.partial(self.layout.parse, base), page) if e]
                ended.update((e.job_id, None) for e in entries if e.job_id in ids)
                if entries and entries[-1].created_at < since:
                    break  # older than every watched job: none of them further on
                if budget <= 0:
                    return super().finished_among(ids)
        records = self._map(self._load_skipping, list(ended))
        return {r.id: r for r in records if r is not None and r.is_terminal}

    def transition(
        self,
        job_id: str,
        state: JobState,
        *,
        expect: Collection[JobState] | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        sources = expected_sources(state, expect)
        return self._modify(job_id, fields, JobState(state), sources)

    def transition_many(self, changes: Sequence[Change]) -> list[JobRecord | None]:
        """Every change's requests sent concurrently, phase by phase: 2 PUTs and a
        share of one DeleteObjects a change (one GET more unless this store wrote
        the record last); see :mod:`jobkit.stores.s3.batch`."""
        sources = [expected_sources(c.state, c.expect) for c in changes]  # raise before writing
        if len({c.job_id for c in changes}) < len(changes):
            return super().transition_many(changes)  # one job twice: in order, one by one
        self._check_open()
        blobs = {key: data for c in changes for key, data in c.blobs.items()}
        if blobs:
            self.put_blobs(blobs)
        return transition_all(self, changes, sources)

    def update(self, job_id: str, **fields: Any) -> JobRecord:
        updated = self._modify(job_id, fields, None, frozenset())
        if updated is None:  # only transitions are refused
            raise StoreError(f"job {job_id!r}: update refused in {self.url}")
        return updated

    def _modify(
        self,
        job_id: str,
        fields: dict[str, Any],
        state: JobState | None,
        sources: frozenset[JobState],
        leftovers: dict[str, int] | None = None,
    ) -> JobRecord | None:
        """Read, check, write with If-Match; on a lost race, read again.

        ``leftovers``: state keys written by attempts that lost (key -> gen),
        deleted once provably stale."""
        leftovers = {} if leftovers is None else dict(leftovers)
        for attempt in range(_CAS_ATTEMPTS):
            stored = self._load(job_id)
            if stored is None:
                raise JobNotFoundError(job_id, self.url)
            current, gen = stored.record, stored.gen
            old_keys = self.layout.index_keys(current, gen)
            stale = [k for k, g in leftovers.items() if provably_stale(g, k, old_keys, gen)]
            for key in stale:
                del leftovers[key]
            if state is not None and current.state not in sources:
                self._tidy(stale)
                return None
            updated, text = apply_fields(current, fields, state=state)
            new_gen = next_generation(current, updated, gen)
            new_keys = self.layout.index_keys(updated, new_gen)
            self._put_markers(new_keys - old_keys)  # before the record: never unindexed
            try:
                etag = self._put_record(updated, text, new_gen, etag=stored.etag)
            except Conflict:
                if new_gen != gen:
                    leftovers[self.layout.state_key(updated, new_gen)] = new_gen
                self._tidy(stale)
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                continue
            except Missing:  # deleted between our read and our write
                raise JobNotFoundError(job_id, self.url) from None
            self._tidy([*(old_keys - new_keys), *stale])
            self._written.remember(_Stored(updated, etag, new_gen))
            return updated
        raise StoreError(
            f"job {job_id!r} in {self.url}: other writers changed it on each of "
            f"{_CAS_ATTEMPTS} attempts to update it; retry later"
        )

    def query(
        self,
        *,
        states: Collection[JobState] | None = None,
        backend: str | None = None,
        name: str | None = None,
        array_id: str | None = None,
        created_before: float | None = None,
        limit: int | None = None,
        oldest_first: bool = False,
    ) -> list[JobRecord]:
        """One LIST per state listed (six without a state filter), then up to ``limit``
        GETs; see :mod:`jobkit.stores.s3.listing`."""
        check_limit(limit)
        self._check_open()
        wanted = None if states is None else frozenset(JobState(s) for s in states)
        if limit == 0 or wanted == frozenset():
            return []
        query = Query(wanted, backend, name, array_id, created_before, limit, oldest_first)
        return run_query(
            query,
            self.layout,
            self._list,
            lambda ids: self._map(self._load_skipping, ids),
            self._map,
        )

    def rows(
        self,
        *,
        states: Collection[JobState] | None = None,
        backend: str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        """One LIST per state listed and, normally, no GET: rows come from index keys
        (see :func:`jobkit.stores.s3.listing.run_rows`)."""
        check_limit(limit)
        self._check_open()
        wanted = None if states is None else frozenset(JobState(s) for s in states)
        if limit == 0 or wanted == frozenset():
            return []
        query = Query(wanted, backend, name, None, None, limit, False)
        return run_rows(
            query,
            self.layout,
            self._list,
            lambda ids: self._map(self._load_skipping, ids),
            self._map,
        )

    def delete(self, job_ids: Collection[str]) -> int:
        ids = list(dict.fromkeys(job_ids))
        self._check_open()

        def keys_of(job_id: str) -> tuple[bool, frozenset[str]]:
            try:
                stored = self._load(job_id)
            except _Corrupted:
                return True, frozenset()
            if stored is None:
                return False, frozenset()
            return True, self.layout.index_keys(stored.record, stored.gen)

        for job_id in ids:
            self._written.take(job_id)
        found = self._map(keys_of, ids)
        doomed = [self.layout.blob(k) for i in ids for k in job_blob_keys(i)]
        for job_id, (existed, index_keys) in zip(ids, found, strict=True):
            if existed:
                doomed += [self.layout.record(job_id), *index_keys]
        self._delete_keys(doomed)
        return sum(existed for existed, _ in found)

    def find_corrupted(self) -> dict[str, str]:
        """Record objects that do not hold a job record, with why (for ``jobkit prune``)."""
        ids = [
            job_id
            for page in self._list(self.layout.records, None, listing.LIST_PAGE)
            for job_id in map(self.layout.job_of_record, page)
            if job_id is not None
        ]

        def problem(job_id: str) -> str | None:
            try:
                self._load(job_id)
            except _Corrupted as exc:
                return str(exc)
            return None

        return {i: p for i, p in zip(ids, self._map(problem, ids), strict=True) if p is not None}

    # -- blobs -------------------------------------------------------------
    def put_blob(self, key: str, data: Buffer | Sequence[Buffer]) -> None:
        """Upload straight from the caller's buffers (see ``_buffer_reader``): no join."""
        target = self.layout.blob(check_blob_key(key))
        body = BufferReader(byte_views(data))
        if len(body) > self.multipart_threshold:
            self._put_multipart(target, body)
            return
        with self._translating("write blob", target):
            self.client.put_object(
                Bucket=self.bucket, Key=target, Body=body, ContentLength=len(body)
            )

    def put_blobs(self, blobs: Mapping[str, Buffer | Sequence[Buffer]]) -> None:
        """Small blobs ``workers`` at a time; multipart ones after, one by one
        (their parts already go in parallel, through the same pool)."""
        self._check_open()
        small: list[tuple[str, Buffer | Sequence[Buffer]]] = []
        for key, data in blobs.items():
            size = sum(len(view) for view in byte_views(data))
            if size > self.multipart_threshold:
                self.put_blob(key, data)
            else:
                small.append((key, data))
        self._map(lambda item: self.put_blob(*item), small)

    def get_blobs(self, keys: Collection[str]) -> dict[str, bytearray]:
        """One GET a blob, ``workers`` at a time; absent keys are left out."""
        self._check_open()

        def get(key: str) -> bytearray | None:
            try:
                return self.get_blob(key)
            except BlobNotFoundError:
                return None

        wanted = list(dict.fromkeys(keys))
        found = self._map(get, wanted)
        return {k: v for k, v in zip(wanted, found, strict=True) if v is not None}

    def _put_multipart(self, target: str, body: BufferReader) -> None:
        """Parts of ``multipart_part_size`` sent in parallel; visible only once complete."""
        size, step = len(body), max(self.multipart_part_size, 5 * 1024 * 1024)
        with self._translating("start a multipart upload of", target):
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=target)
        upload_id = upload["UploadId"]

        def send(number: int) -> dict[str, Any]:
            start = (number - 1) * step
            part = body.window(start, min(start + step, size))
            with self._translating(f"upload part {number} of", target):
                response = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part,
                    ContentLength=len(part),
                )
            done = {"PartNumber": number, "ETag": response["ETag"]}
            done.update({k: v for k, v in response.items() if k.startswith("Checksum")})
            return done

        try:
            parts = self._map(send, range(1, -(-size // step) + 1))
            with self._translating("complete the multipart upload of", target):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=target, UploadId=upload_id
                )
            raise

    def get_blob(self, key: str) -> bytearray:
        target = self.layout.blob(check_blob_key(key))
        try:
            with self._translating("read blob", target):
                response = self.client.get_object(Bucket=self.bucket, Key=target)
                stream = response["Body"]
                data = bytearray(int(response["ContentLength"]))
                view = memoryview(data)
                done = 0
                while done < len(data):
                    count = stream.readinto(view[done:])
                    if not count:
                        break
                    done += count
                extra = stream.readinto(bytearray(1))  # at the end: verifies the checksum
        except Missing:
            raise BlobNotFoundError(
                f"no blob {key!r} in {self.url} (looked for s3://{self.bucket}/{target})"
            ) from None
        if done < len(data) or extra:  # an outage to wait out (the patient store retries)
            raise StoreUnavailableError(
                f"blob s3://{self.bucket}/{target} did not match its announced length of "
                f"{len(data)} bytes (the connection broke, or the object changed); read it again"
            )
        return data

    def payload_blobs(self) -> dict[str, float]:
        """One LIST page per 1,000 payloads; the times are S3's LastModified."""
        self._check_open()
        base = self.layout.blob("payloads/")
        found: dict[str, float] = {}
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base}
            if token is not None:
                params["ContinuationToken"] = token
            with self._translating("list", base):
                response = self.client.list_objects_v2(**params)
            for item in response.get("Contents") or ():
                name = str(item["Key"])[len(base) :]
                if name and "/" not in name:
                    found[name] = item["LastModified"].timestamp()
            if not response.get("IsTruncated"):
                return found
            token = response["NextContinuationToken"]

    def blob_keys(self, prefix: str) -> list[str]:
        """ListObjectsV2 under ``blobs/<prefix>``: one request per 1,000 keys."""
        self._check_open()
        base = self.layout.blob("")
        keys: list[str] = []
        for page in self._list(base + prefix, None, listing.LIST_PAGE):
            keys += [key[len(base) :] for key in page]
        return sorted(keys)

    def blobs_present(self, keys: Collection[str]) -> set[str]:
        """One HEAD per key, in parallel: the outcomes are not downloaded."""
        wanted = list(dict.fromkeys(keys))
        targets = [self.layout.blob(check_blob_key(k)) for k in wanted]
        self._check_open()

        def head(target: str) -> bool:
            try:
                with self._translating("check blob", target):
                    self.client.head_object(Bucket=self.bucket, Key=target)
            except Missing:
                return False
            return True

        return {k for k, there in zip(wanted, self._map(head, targets), strict=True) if there}

    def blob_location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.layout.blob(key)}"

    def delete_blobs(self, keys: Iterable[str]) -> None:
        targets = [self.layout.blob(check_blob_key(k)) for k in keys]
        self._check_open()
        self._delete_keys(targets)


def _decode(job_id: str, body: bytes) -> JobRecord:
    """The record in an object's body; StoreError says what is wrong with it."""
    try:
        values = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"not JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise StoreError(f"a JSON {type(values).__name__}, not an object")
    try:
        record = JobRecord.from_dict(values)
    except StoreError as exc:
        raise StoreError(str(exc.__cause__ or exc)) from exc
    if record.id != job_id:
        raise StoreError(f"it holds job {record.id!r}")
    return record
