"""``sqlite:///abs/path.db``: the default store, shared by every local process.

Clients, the local agent, workers and each ``jobkit`` CLI command open the
same database file at once, so it runs in WAL mode (readers never block the
one writer) with ``synchronous=NORMAL`` and a long busy timeout.  Every write
is one ``BEGIN IMMEDIATE`` transaction: taking the write lock up front makes
the read-modify-write of :meth:`SQLiteStore.transition` a true
compare-and-set across processes, and avoids the lock-upgrade deadlock that
deferred transactions answer with an immediate "database is locked".

The SQL and the row codec are in :mod:`jobkit.stores.sqlite_sql`.  Layout on disk::

    jobkit.db            table ``jobs``: indexed columns + the record's JSON
                         table ``blobs``: payloads and outcomes up to 128 KiB
    jobkit.db-wal/-shm   SQLite's write-ahead log (same owner-only mode)
    jobkit.db.d/         ``local_dir`` (0o700): logs, agent sockets, ...
    jobkit.db.d/blobs/   larger payloads and outcomes as files (see ``_files``)

A blob is in one place or the other: writing it inline removes a file of
the same key, and writing a file removes the inline row, so a reader that
looks inline first and then on disk sees the newest.

The JSON in ``data`` is the truth; the columns copy the fields that
``query`` filters and sorts on, and are rewritten with it on every write.
The schema version lives in ``PRAGMA user_version``.

A row that no longer parses (hand edits, a disk fault) makes ``get`` raise
:class:`StoreError` naming the job, but ``query``/``get_many`` skip it with a
logged warning so one bad row cannot hide every other job;
:meth:`SQLiteStore.find_corrupted` lists such rows for ``jobkit prune`` and
``delete`` removes them.  Reading never modifies or drops a row.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from jobkit.errors import BlobNotFoundError, JobNotFoundError, StoreError, StoreUnavailableError
from jobkit.states import TERMINAL_STATES, JobRecord, JobState

from ._common import (
    apply_fields,
    byte_views,
    check_blob_key,
    check_limit,
    expected_sources,
    normalised,
)
from ._files import FILE_MODE, BlobFiles, make_private_dirs
from .base import Buffer, Change, Store, job_blob_keys
from .sqlite_sql import (
    CHUNK,
    INLINE_MAX,
    INSERT,
    MIGRATIONS,
    PUT_BLOB,
    SCHEMA,
    SCHEMA_VERSION,
    UPDATE,
    build_query,
    decode,
    existing_ids,
    row_values,
)
from .sqlite_url import sqlite_path

logger = logging.getLogger(__name__)


def path_from_url(url: str) -> Path:
    """The database path in a ``sqlite://`` URL, by the rule of :mod:`.sqlite_url`.

    Relative (``./``) paths are anchored to this process's working directory:
    every URL jobkit hands a worker is already absolute.
    """
    return sqlite_path(url)


class SQLiteStore(Store):
    """Job records in one SQLite file, blobs as files beside it."""

    sweep_interval: ClassVar[float] = 0.05
    scheme: ClassVar[str] = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(os.path.abspath(Path(path).expanduser()))
        self.url = f"sqlite://{self.path}"
        self.local_dir = Path(f"{self.path}.d")
        self._timeout = timeout
        self._blobs = BlobFiles(self.local_dir / "blobs")
        self._prepare_files()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._inherited: list[sqlite3.Connection] = []
        self._warned: set[str] = set()  # corrupted ids already reported
        self._closed_for_fork = False
        self._conn: sqlite3.Connection | None = self._connect()
        _close_across_fork(self)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(path_from_url(url))

    # -- opening -----------------------------------------------------------
    def _prepare_files(self) -> None:
        """Owner-only parent dirs, db file and ``local_dir``: a few stats when they exist."""
        try:
            make_private_dirs(self.path.parent)
            if not self.path.exists():
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                except FileExistsError:
                    pass
                else:
                    os.fchmod(fd, FILE_MODE)
                    os.close(fd)
            make_private_dirs(self._blobs.root)
        except OSError as exc:
            raise StoreError(
                f"cannot create sqlite store {self.path}: {exc.strerror or exc}; choose a "
                "writable location, e.g. JOBKIT_STORE=sqlite:///~/jobkit/jobkit.db"
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open sqlite store {self.path}: {exc}; check that it is a "
                "writable file, or choose another location with JOBKIT_STORE"
            ) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            if self._user_version(conn) != SCHEMA_VERSION:
                self._create_schema(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                full = self._disk_full()
                if full is not None:
                    raise StoreError(
                        f"cannot use sqlite store {self.path}: {exc}: its disk is full "
                        f"({full}); free space there and retry"
                    ) from exc
                fix = _fix_for(exc) or (
                    "; if it is not a jobkit database, point JOBKIT_STORE at another file"
                )
                raise StoreError(f"cannot use sqlite store {self.path}: {exc}{fix}") from exc
            raise
        return conn

    def _disk_full(self) -> str | None:
        """Where and how little room is left, if the store's disk is (nearly) full:
        SQLite calls a full disk a "disk I/O error" when it cannot create its WAL
        index, which would send users looking for a hardware fault."""
        try:
            info = os.statvfs(self.path.parent)
        except OSError:
            return None
        free = info.f_bavail * info.f_frsize
        return f"{free} bytes free in {self.path.parent}" if free < 64 * 1024 else None

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL (persistent in the file), waiting out concurrent openers.

        Leaving rollback mode needs an exclusive lock, and SQLite answers
        "locked" at once instead of calling the busy handler when several
        processes open a brand-new database together; so retry until the
        timeout.  On a database already in WAL mode this is one cheap query.
        """
        deadline = time.monotonic() + self._timeout
        pause = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @staticmethod
    def _user_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # another process may be creating it too
        try:
            version = self._user_version(conn)
            if version == 0:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version in MIGRATIONS:
                while version < SCHEMA_VERSION:
                    for statement in MIGRATIONS[version]:
                        conn.execute(statement)
                    version += 1
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"sqlite store {self.path} has schema version {version}, but this jobkit "
                    f"reads version {SCHEMA_VERSION}; upgrade jobkit (pip install -U jobkit) "
                    "or point JOBKIT_STORE at another database"
                )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        for suffix in ("-wal", "-shm"):  # SQLite copies the db's mode; make sure
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", FILE_MODE)

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction on this process's connection, sqlite errors translated."""
        if self._pid != os.getpid():
            self._reopen_after_fork()
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"store {self.url} is closed; open a new one")
            try:
                if write:
                    self._begin_write(conn)
                else:
                    conn.execute("BEGIN")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise StoreUnavailableError(
                        f"sqlite store {self.path}: {exc} (another process held the write "
                        f"lock for {self._timeout:g} s); retry later"
                    ) from exc
                full = self._disk_full() if "I/O" in str(exc) else None
                hint = f": its disk is full ({full}); free space there" if full else _fix_for(exc)
                raise StoreError(f"sqlite store {self.path}: {exc}{hint}") from exc

    def _begin_write(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting for the write lock in short steps.

        SQLite's own busy handler sleeps 1, 2, 5, 10, ... ms between tries, so
        a lock another process holds for 100 µs costs a millisecond or more;
        with the agent and its workers each committing per job, that was most
        of a trivial job's time.  So ask without waiting and retry here, from
        50 µs doubling up to 5 ms, until the store's timeout.
        """
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            pause, deadline = 0.00005, time.monotonic() + self._timeout
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")

    @property
    def identity(self) -> str:
        """The database file, resolved: links and relative paths name one store."""
        return f"sqlite:{os.path.realpath(self.path)}"

    def _reopen_after_fork(self) -> None:
        """Never use a connection across fork: the child gets its own.

        Normally the connection was closed just before the fork (see
        :func:`_close_across_fork`), so the child inherits no SQLite state and
        opens a clean connection.  If it could not be (the forking thread was
        inside a transaction), the inherited connection is kept referenced
        and never used or closed here, since closing it could checkpoint the
        parent's WAL from the child; the child's own connection then shares
        the inherited in-memory lock records, which is what the close before
        fork exists to avoid.
        """
        self._lock = threading.Lock()  # may have been held by a thread that is gone
        if self._conn is not None:
            self._inherited.append(self._conn)
            self._conn = self._connect()
        elif self._closed_for_fork:
            self._closed_for_fork = False
            self._conn = self._connect()
        self._pid = os.getpid()

    def _before_fork(self) -> None:
        if self._pid != os.getpid() or self._conn is None:
            return
        if not self._lock.acquire(timeout=self._timeout):
            return  # a transaction is in progress: fall back to _reopen_after_fork
        conn, self._conn = self._conn, None
        self._closed_for_fork = True
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def _after_fork_in_child(self) -> None:
        if self._closed_for_fork:
            self._lock = threading.Lock()  # held by the parent's forking thread

    def _after_fork_in_parent(self) -> None:
        if not self._closed_for_fork or self._pid != os.getpid():
            return
        self._closed_for_fork = False
        try:
            self._conn = self._connect()
        finally:
            self._lock.release()

    # -- records -----------------------------------------------------------
    def create(self, records: Sequence[JobRecord]) -> None:
        fresh = [normalised(r) for r in records]
        if not fresh:
            return
        with self._transaction(write=True) as conn:
            try:
                conn.executemany(INSERT, [row_values(r, text) for r, text in fresh])
            except sqlite3.IntegrityError:
                ids = [r.id for r, _ in fresh]
                clashes = {i for i, n in collections.Counter(ids).items() if n > 1}
                clashes.update(existing_ids(conn, ids))
                raise StoreError(
                    f"job id(s) already exist in {self.url}: {', '.join(sorted(clashes))}"
                ) from None

    def get(self, job_id: str) -> JobRecord:
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT id, state, data FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise JobNotFoundError(job_id, self.url)
        return self._parse(row)

    def get_many(self, job_ids: Collection[str]) -> dict[str, JobRecord]:
        return self._by_ids(job_ids)

    def finished_among(
        self, job_ids: Collection[str], *, since: float | None = None
    ) -> dict[str, JobRecord]:
        terminal = [s.value for s in TERMINAL_STATES]
        return self._by_ids(job_ids, " AND state IN (?,?,?)", terminal)

    def _by_ids(
        self, job_ids: Collection[str], condition: str = "", params: Sequence[Any] = ()
    ) -> dict[str, JobRecord]:
        """Records by id in chunks (SQLite caps the number of parameters)."""
        ids = list(dict.fromkeys(job_ids))
        rows = []
        with self._transaction(write=False) as conn:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                rows += conn.execute(
                    f"SELECT id, state, data FROM jobs WHERE id IN ({marks}){condition}",
                    [*chunk, *params],
                ).fetchall()
        return {r.id: r for r in self._parse_skipping(rows)}

    def transition(
        self,
        job_id: str,
        state: JobState,
        *,
        expect: Collection[JobState] | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        sources = expected_sources(state, expect)
        with self._transaction(write=True) as conn:
            current = self._locked_read(conn, job_id)
            if current.state not in sources:
                return None
            updated, text = apply_fields(current, fields, state=state)
            self._rewrite(conn, current, updated, text)
        return updated

    def transition_many(self, changes: Sequence[Change]) -> list[JobRecord | None]:
        """Every change in one transaction: one commit for a batch of claims or ends."""
        if not changes:
            return []
        sources = [expected_sources(c.state, c.expect) for c in changes]  # raises before writing
        files = {k: v for c in changes for k, v in c.blobs.items() if _too_big(v)}
        for key, data in files.items():  # before the state that points readers at them
            self.put_blob(key, data)
        now = time.time()
        results: list[JobRecord | None] = []
        with self._transaction(write=True) as conn:
            for change, allowed in zip(changes, sources, strict=True):
                inline = [(k, v) for k, v in change.blobs.items() if k not in files]
                if inline:
                    conn.executemany(PUT_BLOB, [(k, _joined(v), now) for k, v in inline])
                row = conn.execute(
                    "SELECT id, state, data FROM jobs WHERE id = ?", (change.job_id,)
                ).fetchone()
                if row is None:
                    results.append(None)
                    continue
                current = self._parse(row)
                if current.state not in allowed:
                    results.append(None)
                    continue
                updated, text = apply_fields(current, dict(change.fields), state=change.state)
                self._rewrite(conn, current, updated, text)
                results.append(updated)
        self._forget_files(k for c in changes for k in c.blobs if k not in files)
        return results

    def update(self, job_id: str, **fields: Any) -> JobRecord:
        with self._transaction(write=True) as conn:
            current = self._locked_read(conn, job_id)
            updated, text = apply_fields(current, fields)
            self._rewrite(conn, current, updated, text)
        return updated

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
        after: tuple[float, str] | None = None,
    ) -> list[JobRecord]:
        """:meth:`Store.query`; ``after`` (this store only, newest first) is a
        keyset cursor, ``(created_at, id)`` of the last row already shown: see
        :func:`.sqlite_sql.build_query`.  Paging by it costs the same on every
        page, even inside a map whose items share one creation time."""
        check_limit(limit)
        if limit == 0 or (states is not None and not states):
            return []
        sql, params = build_query(
            states=states,
            backend=backend,
            name=name,
            array_id=array_id,
            created_before=created_before,
            oldest_first=oldest_first,
            after=after,
        )
        found: list[JobRecord] = []
        offset = 0
        with self._transaction(write=False) as conn:
            while True:  # more than one page only when corrupted rows were skipped
                page = -1 if limit is None else limit - len(found)
                rows = conn.execute(sql, [*params, page, offset]).fetchall()
                found += self._parse_skipping(rows)
                if limit is None or len(rows) < page or len(found) >= limit:
                    return found
                offset += len(rows)

    def delete(self, job_ids: Collection[str]) -> int:
        ids = list(dict.fromkeys(job_ids))
        existed = 0
        with self._transaction(write=True) as conn:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                existed += conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk).rowcount
        self.delete_blobs([key for i in ids for key in job_blob_keys(i)])
        return existed

    def find_corrupted(self) -> dict[str, str]:
        """Ids of rows that cannot be read, with what is wrong: for ``jobkit prune``."""
        with self._transaction(write=False) as conn:
            rows = conn.execute("SELECT id, state, data FROM jobs").fetchall()
        problems = {}
        for row in rows:
            try:
                self._parse(row)
            except StoreError as exc:
                problems[str(row[0])] = str(exc)
        return problems

    def payload_blobs(self) -> dict[str, float]:
        found = self._blobs.modified("payloads")
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT key, written_at FROM blobs WHERE key >= 'payloads/' AND key < 'payloads0'"
            ).fetchall()
        for key, written in rows:
            name = str(key).partition("/")[2]
            if "/" not in name:  # directly under payloads/, as the files are
                found[name] = max(found.get(name, 0.0), float(written))
        return found

    # -- blobs -------------------------------------------------------------
    def put_blob(self, key: str, data: Buffer | Sequence[Buffer]) -> None:
        self.put_blobs({key: data})

    def put_blobs(self, blobs: Mapping[str, Buffer | Sequence[Buffer]]) -> None:
        """Small blobs in one transaction, large ones as files (see the module doc)."""
        for key in blobs:
            check_blob_key(key)
        inline = [(k, v) for k, v in blobs.items() if not _too_big(v)]
        files = [(k, v) for k, v in blobs.items() if _too_big(v)]
        for key, data in files:
            self._blobs.write(key, byte_views(data))
        if files:
            with self._transaction(write=True) as conn:
                conn.executemany("DELETE FROM blobs WHERE key = ?", [(k,) for k, _ in files])
        if inline:
            now = time.time()
            with self._transaction(write=True) as conn:
                conn.executemany(PUT_BLOB, [(k, _joined(v), now) for k, v in inline])
            self._forget_files(k for k, _ in inline)

    def get_blob(self, key: str) -> bytearray:
        check_blob_key(key)
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT data FROM blobs WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return bytearray(row[0])
        return self._blobs.read(key)

    def get_blobs(self, keys: Collection[str]) -> dict[str, bytearray]:
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_blob_key(key)
        found: dict[str, bytearray] = {}
        with self._transaction(write=False) as conn:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, data in conn.execute(
                    f"SELECT key, data FROM blobs WHERE key IN ({marks})", chunk
                ):
                    found[str(key)] = bytearray(data)
        for key in wanted:
            if key not in found:
                with contextlib.suppress(BlobNotFoundError):
                    found[key] = self._blobs.read(key)
        return found

    def blob_keys(self, prefix: str) -> list[str]:
        """Inline keys by a range scan of the primary key, then the files."""
        with self._transaction(write=False) as conn:
            if prefix:
                after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                rows = conn.execute(
                    "SELECT key FROM blobs WHERE key >= ? AND key < ?", (prefix, after)
                ).fetchall()
            else:
                rows = conn.execute("SELECT key FROM blobs").fetchall()
        keys = {str(row[0]) for row in rows}
        keys.update(self._blobs.keys(prefix))
        return sorted(keys)

    def blobs_present(self, keys: Collection[str]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_blob_key(key)
        found: set[str] = set()
        with self._transaction(write=False) as conn:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT key FROM blobs WHERE key IN ({marks})", chunk)
                found.update(str(row[0]) for row in rows)
        found.update(k for k in wanted if k not in found and self._blobs.exists(k))
        return found

    def blob_location(self, key: str) -> str:
        with self._transaction(write=False) as conn:
            inline = conn.execute("SELECT 1 FROM blobs WHERE key = ?", (key,)).fetchone()
        if inline is not None:
            return f"row {key!r} of table blobs in {self.path}"
        return str(self._blobs.path_of(key))

    def delete_blobs(self, keys: Iterable[str]) -> None:
        listed = list(keys)
        with self._transaction(write=True) as conn:
            for start in range(0, len(listed), CHUNK):
                chunk = listed[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM blobs WHERE key IN ({marks})", chunk)
        self._blobs.delete(listed)

    def _forget_files(self, keys: Iterable[str]) -> None:
        """Remove files that an inline write of the same keys replaced.

        Only payloads and outcomes are ever rewritten (a retried attempt's
        outcome); one ``unlink`` that finds nothing is the common cost, and
        only when a file of that key could exist: a blob is written inline
        first unless it is large.
        """
        root = str(self._blobs.root)
        for key in keys:  # already checked by check_blob_key
            with contextlib.suppress(OSError):
                os.unlink(f"{root}/{key}")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    # -- rows --------------------------------------------------------------
    def _locked_read(self, conn: sqlite3.Connection, job_id: str) -> JobRecord:
        row = conn.execute("SELECT id, state, data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id, self.url)
        return self._parse(row)

    def _rewrite(self, conn: sqlite3.Connection, old: JobRecord, new: JobRecord, text: str) -> None:
        cursor = conn.execute(UPDATE, (*row_values(new, text)[1:], old.id, old.state.value))
        if cursor.rowcount != 1:  # impossible under BEGIN IMMEDIATE; never write blind
            raise StoreError(f"job {old.id!r} changed during an update in {self.url}")

    def _parse(self, row: tuple[Any, ...]) -> JobRecord:
        """The record in a row, or StoreError naming the job, the problem and the fix."""
        job_id, state, data = row
        try:
            return decode(job_id, state, data)
        except StoreError as exc:
            raise StoreError(
                f"corrupted job record {job_id!r} in {self.path}: {exc}; remove it with "
                f"`jobkit prune --corrupted` (store.delete([{job_id!r}])) or restore the database "
                "from a backup"
            ) from exc

    def _parse_skipping(self, rows: Iterable[tuple[Any, ...]]) -> list[JobRecord]:
        records = []
        for row in rows:
            try:
                records.append(self._parse(row))
            except StoreError as exc:
                job_id = str(row[0]) if row else "?"
                if job_id not in self._warned:  # once per record: agents query every second
                    self._warned.add(job_id)
                    logger.warning("skipped a job record: %s", exc)
        return records


def _too_big(data: Buffer | Sequence[Buffer]) -> bool:
    """Whether a blob goes to a file rather than the ``blobs`` table."""
    return sum(v.nbytes for v in byte_views(data)) > INLINE_MAX


def _joined(data: Buffer | Sequence[Buffer]) -> bytes:
    views = byte_views(data)
    return bytes(views[0]) if len(views) == 1 else b"".join(views)


def _close_across_fork(store: SQLiteStore) -> None:
    """Close ``store``'s connection just before this process forks, and reopen
    it in the parent right after; the child opens its own when first used.

    Why: SQLite's POSIX advisory locks belong to a process and "are not
    inherited by a child created via fork(2)" (fcntl(2)), but SQLite's
    in-memory records of them (the unix VFS's per-inode and shared-memory
    objects) are copied into the child.  A connection the child opens to the
    same file reuses those records and so never takes the shared lock on the
    WAL index that tells other processes "a connection is open"; once the
    parent is gone, the next process to close the store thinks it is the
    last one, checkpoints and deletes the WAL, and the child's commits go
    into the deleted file (SQLite's "How To Corrupt", section 2.6: do not
    carry an open connection across fork).  With no connection open at fork
    time, SQLite has freed those records and the child starts clean.
    A weak reference: registering must not keep a store alive.
    """
    ref = weakref.ref(store)

    def before() -> None:
        target = ref()
        if target is not None:
            target._before_fork()

    def after_in_parent() -> None:
        target = ref()
        if target is not None:
            target._after_fork_in_parent()

    def after_in_child() -> None:
        target = ref()
        if target is not None:
            target._after_fork_in_child()

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=before, after_in_parent=after_in_parent, after_in_child=after_in_child
        )


def _fix_for(exc: sqlite3.Error) -> str:
    """What to do about an error SQLite reports on a damaged file or a full disk."""
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return (
            "; the database file is damaged: restore it from a backup, or recover what "
            "is readable with `sqlite3 FILE .recover | sqlite3 NEW` and point the store at NEW"
        )
    if "full" in text:
        return "; free space on its disk and retry (this write was not recorded)"
    return ""
