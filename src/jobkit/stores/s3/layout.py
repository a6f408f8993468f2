"""Where an S3 store keeps things, and the index that lets it list without reading.

Every object lives under the store's prefix::

    jobs/<id>.json                            the record: the truth (metadata jobkit-gen=<g>)
    blobs/<key>                               payloads, outcomes, logs
    index/<STATE>/<time>/<g>/<backend>/<name>/<id>/<row>   one empty object per job: its state
    index/array/<array_id>/<time>/<id>               one per member of an array

Names inside keys are percent-encoded (``quote(..., safe="")``) so ``/`` in a
job id or name cannot shift the fields; jobkit's own ids (``jk-...``) are
unchanged by it.  The backend and the name are there so that ``query`` can
skip jobs they rule out without reading them; a name longer than
:data:`NAME_IN_KEY` encoded characters is written as ``*`` (unknown: read
the record to tell).

``<time>`` is ``created_at`` as 16 hex digits that sort *descending* in
time (the IEEE-754 bits made order-preserving, then inverted): S3 lists keys
in ascending order, so the first page of ``index/RUNNING/`` holds the newest
running jobs, and ``created_before`` becomes a ``StartAfter`` key.  The
encoding is exact, so keys order and filter exactly as the records do.

``<row>`` holds the rest of what ``jobkit list`` shows (failure reason,
start and end times, host: :func:`row_part`), so a page of the list is
answered from keys alone (:meth:`S3Store.rows`); a host too long for the key
is written as ``*`` and that one record is read instead.

``<g>`` is the record's *index generation*, kept in its object metadata.  It
grows by one whenever a write changes a field of the state key
(:data:`KEY_FIELDS`), so every state key names one generation of one record:

* a writer PUTs the new state key before the record and deletes the old one
  after, so a job always has a key in its current state (a crash in between
  leaves an extra key, never a missing one);
* a key is provably stale, and safe to delete, once the record's generation
  has passed it or the record's key of that same generation differs; no
  writer can need it again.  A transition that loses a compare-and-set
  deletes its key only then (another writer may share it).

Array keys carry no generation; they change only when ``array_id`` or
``created_at`` changes, which jobkit never does after submission.
"""

from __future__ import annotations

import dataclasses
import struct
from urllib.parse import quote, unquote

from jobkit.states import FailureReason, JobRecord, JobRow, JobState

_MASK = (1 << 64) - 1
_SIGN = 1 << 63
GEN_METADATA = "jobkit-gen"
"""Object metadata of a record holding its index generation (``x-amz-meta-jobkit-gen``)."""
ARRAY = "array"
NAME_IN_KEY = 160
"""The longest encoded job name kept in a state key (S3 keys stop at 1,024 bytes)."""
UNKNOWN_NAME = "*"
"""Stands for a name too long for the key (``quote`` never writes a bare ``*``)."""
HOST_IN_KEY = 120
"""The longest encoded host name kept in a state key."""
KEY_FIELDS = (
    "state",
    "created_at",
    "backend",
    "name",
    "failure_reason",
    "started_at",
    "finished_at",
    "host",
)
"""Record fields a state key spells out: changing one moves the key."""


def time_token(created_at: float) -> str:
    """``created_at`` as 16 hex digits whose ascending order is descending time."""
    value = float(created_at) + 0.0  # -0.0 becomes 0.0: equal floats, equal tokens
    bits = struct.unpack(">Q", struct.pack(">d", value))[0]
    ordered = (~bits & _MASK) if bits & _SIGN else (bits | _SIGN)
    return f"{_MASK - ordered:016x}"


def time_of(token: str) -> float:
    """The ``created_at`` a :func:`time_token` encodes."""
    ordered = _MASK - int(token, 16)
    bits = (ordered & ~_SIGN) if ordered & _SIGN else (~ordered & _MASK)
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


def part(text: str) -> str:
    """One name as a single key segment."""
    return quote(text, safe="")


def name_part(name: str) -> str:
    """A job name as a key segment, or :data:`UNKNOWN_NAME` if it is too long."""
    encoded = part(name)
    return encoded if len(encoded) <= NAME_IN_KEY else UNKNOWN_NAME


ROW_SEPARATOR = "~"
"""Between the fields of ``<row>``: unreserved in URLs and SigV4 (a ``,`` made moto
and botocore disagree on signatures), and escaped out of the host name."""


def row_part(record: JobRecord) -> str:
    """``<reason>~<started>~<finished>~<host>``: empty for None, times exact (hex bits);
    a cache hit adds ``~<source id>`` (set at creation, never changed)."""
    host = part(record.host or "").replace(ROW_SEPARATOR, "%7E")
    fields = [
        record.failure_reason.value if record.failure_reason else "",
        _exact(record.started_at),
        _exact(record.finished_at),
        host if len(host) <= HOST_IN_KEY else UNKNOWN_NAME,
    ]
    if record.cached_from:
        fields.append(part(record.cached_from).replace(ROW_SEPARATOR, "%7E"))
    return ROW_SEPARATOR.join(fields)


def _exact(value: float | None) -> str:
    return "" if value is None else struct.pack(">d", float(value)).hex()


def _inexact(text: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(text))[0]
    return value


@dataclasses.dataclass(frozen=True)
class Row:
    """The ``<row>`` segment decoded; ``host`` is None when the key could not hold it."""

    failure_reason: FailureReason | None
    started_at: float | None
    finished_at: float | None
    host: str | None
    host_known: bool
    cached_from: str | None = None


def parse_row(text: str) -> Row:
    reason, started, finished, host, *cached = text.split(ROW_SEPARATOR)
    return Row(
        FailureReason(reason) if reason else None,
        None if not started else _inexact(started),
        None if not finished else _inexact(finished),
        None if host in ("", UNKNOWN_NAME) else unquote(host),
        host != UNKNOWN_NAME,
        unquote(cached[0]) if cached and cached[0] else None,
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """The keys of one store (``prefix`` is empty or ends in ``/``)."""

    prefix: str

    def record(self, job_id: str) -> str:
        return f"{self.prefix}jobs/{part(job_id)}.json"

    @property
    def records(self) -> str:
        return f"{self.prefix}jobs/"

    def job_of_record(self, key: str) -> str | None:
        """The job id a record key names, or None for anything else."""
        name = key[len(self.records) :]
        if not key.startswith(self.records) or not name.endswith(".json") or "/" in name:
            return None
        return unquote(name[: -len(".json")])

    def blob(self, key: str) -> str:
        return f"{self.prefix}blobs/{key}"

    def state_index(self, state: JobState) -> str:
        return f"{self.prefix}index/{JobState(state).value}/"

    def array_index(self, array_id: str) -> str:
        return f"{self.prefix}index/{ARRAY}/{part(array_id)}/"

    def state_key(self, record: JobRecord, gen: int) -> str:
        """The key listing ``record`` under its state, at generation ``gen``."""
        return (
            f"{self.state_index(record.state)}{time_token(record.created_at)}/{gen}/"
            f"{part(record.backend)}/{name_part(record.name)}/{part(record.id)}/{row_part(record)}"
        )

    def array_key(self, record: JobRecord) -> str | None:
        if record.array_id is None:
            return None
        return (
            f"{self.array_index(record.array_id)}{time_token(record.created_at)}/{part(record.id)}"
        )

    def index_keys(self, record: JobRecord, gen: int) -> frozenset[str]:
        """Every index key ``record`` has at generation ``gen``."""
        array = self.array_key(record)
        state = self.state_key(record, gen)
        return frozenset((state,) if array is None else (state, array))

    def parse(self, base: str, key: str) -> Entry | None:
        """The entry an index key under ``base`` names, or None if it is not one."""
        fields = key[len(base) :].split("/")
        try:
            if base.startswith(f"{self.prefix}index/{ARRAY}/"):
                time, job = fields
                return Entry(key, time_of(time), time, unquote(job))
            if len(fields) == 5:  # written before keys carried the row: read the record
                fields.append("")
            time, gen, backend, name, job, row = fields
            state = JobState(base[len(self.prefix) + len("index/") : -1])
            return Entry(
                key,
                time_of(time),
                time,
                unquote(job),
                state,
                int(gen),
                unquote(backend),
                None if name == UNKNOWN_NAME else unquote(name),
                parse_row(row) if row else None,
            )
        except ValueError:  # a foreign object under index/: not ours, not an error
            return None


def next_generation(old: JobRecord, new: JobRecord, gen: int) -> int:
    """The generation of ``new``, written over ``old`` at ``gen``."""
    same = all(getattr(old, f) == getattr(new, f) for f in KEY_FIELDS)
    return gen if same else gen + 1


def provably_stale(key_gen: int, key: str, current: frozenset[str], current_gen: int) -> bool:
    """Whether a state key written for ``key_gen`` can never name the record again."""
    return current_gen > key_gen or (current_gen == key_gen and key not in current)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One index key, decoded: a hint that a job may match; the record decides."""

    key: str
    created_at: float
    time: str
    job_id: str
    state: JobState | None = None
    gen: int | None = None
    backend: str | None = None
    name: str | None = None
    """None when the key does not say (array keys, long names)."""
    row: Row | None = None
    """The rest of the list row (state keys only)."""

    def job_row(self) -> JobRow | None:
        """The list row this key spells out, or None if it cannot (long name or host)."""
        if (
            self.state is None
            or self.name is None
            or self.backend is None
            or self.row is None
            or not self.row.host_known
        ):
            return None
        return JobRow(
            id=self.job_id,
            name=self.name,
            backend=self.backend,
            state=self.state,
            created_at=self.created_at,
            started_at=self.row.started_at,
            finished_at=self.row.finished_at,
            failure_reason=self.row.failure_reason,
            host=self.row.host,
            cached_from=self.row.cached_from,
        )
