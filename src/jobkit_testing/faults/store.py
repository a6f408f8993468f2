"""Ground truth for the submitter and store fault scenarios, read without jobkit.

The scenarios judge jobkit by what is on disk and in the process table, not
by what its API says: the raw rows of the SQLite file (the ``sqlite3`` module,
the row's own JSON), the marker files job functions write (one file per
execution, so a duplicate run is a second file), and ``/proc``.  Each
scenario reports its figures as one printed line and, when
``JOBKIT_FAULTS_REPORT`` names a file, one JSON line appended to it::

    scenario ──► raw_rows(db) ─┐
    job fn ──► markers/<i>.<pid>┼─► Figures(lost, duplicated, stuck, settle_s) ─► report()
    /proc ──► pids_running(...) ┘
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jobkit_testing.faults.report import emit

__all__ = [
    "Figures",
    "child_commands",
    "executions",
    "pids_running",
    "raw_rows",
    "report",
    "row_counts",
    "s3_raw_rows",
    "wait_until",
]

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


def _select(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """``sql``'s rows, read-only: this reader never checkpoints or deletes a WAL.

    On a full disk a read-only open cannot create the ``-shm`` index it needs;
    then the file is read as immutable, which is only right while nobody
    writes (the writers are failing for the same reason)."""
    for params in ("mode=ro", "mode=ro&immutable=1"):
        conn = sqlite3.connect(f"file:{db}?{params}", uri=True, timeout=30)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            if "disk I/O error" not in str(exc) or "immutable" in params:
                raise
        finally:
            conn.close()
    return []


def raw_rows(db: Path) -> list[dict[str, Any]]:
    """Every row's JSON (plus the ``state`` column), straight from the file."""
    rows = _select(db, "SELECT id, state, data FROM jobs")
    out = []
    for job_id, state, data in rows:
        try:
            values = json.loads(data)
        except ValueError:
            values = {}
        if not isinstance(values, dict):
            values = {}
        values["id"], values["column_state"] = job_id, state
        out.append(values)
    return out


def s3_raw_rows(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every record object's JSON under ``prefix`` (``jobs/<id>.json``), read with
    plain boto3; ``column_state`` is the record's own state (S3 has no column)."""
    out = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{prefix}jobs/"}
        if token:
            params["ContinuationToken"] = token
        listed = client.list_objects_v2(**params)
        for item in listed.get("Contents") or ():
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            try:
                values = json.loads(body)
            except ValueError:
                values = {}
            if isinstance(values, dict):
                values["column_state"] = values.get("state")
                out.append(values)
        if not listed.get("IsTruncated"):
            return out
        token = listed["NextContinuationToken"]


def blob_count(db: Path, folder: str) -> int:
    """Blobs under ``folder/`` (``payloads``, ``envs``): rows of the ``blobs``
    table (small ones) plus files beside the database (large ones)."""
    path = Path(f"{db}.d", "blobs", folder)
    files = len(os.listdir(path)) if path.is_dir() else 0
    found = _select(db, "SELECT count(*) FROM blobs WHERE key LIKE ?", (f"{folder}/%",))
    return files + (int(found[0][0]) if found else 0)


def payload_count(db: Path) -> int:
    """Payloads stored, however each is kept (see :func:`blob_count`)."""
    return blob_count(db, "payloads")


def row_counts(db: Path) -> tuple[int, int]:
    """(rows, rows whose ``submitted_at`` is null): cheap enough to poll every ms."""
    found = _select(
        db,
        "SELECT count(*), coalesce(sum(json_extract(data, '$.submitted_at') IS NULL), 0) FROM jobs",
    )
    if not found:
        return 0, 0
    total, unsubmitted = found[0]
    return int(total), int(unsubmitted)


def executions(markers: Path) -> collections.Counter[str]:
    """How many times each item ran: job functions write ``<item>.<pid>`` files."""
    counts: collections.Counter[str] = collections.Counter()
    if markers.is_dir():
        for entry in os.scandir(markers):
            counts[entry.name.split(".", 1)[0]] += 1
    return counts


def pids_running(*words: str) -> list[int]:
    """Processes whose command line contains every one of ``words`` (from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 :][:1] == b"Z":
            continue
        if all(word in cmdline for word in words):
            found.append(int(entry.name))
    return found


def child_commands(pid: int) -> list[str]:
    """Command lines of ``pid``'s live children (from /proc): is it in sbatch now?"""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[1]) != pid or fields[0] == b"Z":
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except (OSError, IndexError, ValueError):
            continue
    return found


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05
) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)


@dataclasses.dataclass
class Figures:
    """One scenario's outcome, counted from ground truth."""

    scenario: str
    backend: str
    jobs: int
    lost: int
    """Jobs that never ran and are not FAILED with a message saying why."""
    duplicated: int
    """Executions beyond one per job (no scenario here has retries)."""
    stuck: int
    """Jobs still PENDING/QUEUED/RUNNING at the end of the wait."""
    settle_s: float | None
    """Seconds from the fault until every job was terminal (None: not within the wait)."""
    note: str = ""

    @classmethod
    def count(
        cls,
        scenario: str,
        backend: str,
        rows: Iterable[dict[str, Any]],
        runs: collections.Counter[str],
        settle_s: float | None,
        *,
        item: Callable[[dict[str, Any]], str] = lambda row: str(row.get("array_index")),
        note: str = "",
    ) -> Figures:
        rows = list(rows)
        lost = stuck = 0
        for row in rows:
            state = row.get("column_state")
            if state not in TERMINAL:
                stuck += 1
            ran = runs.get(item(row), 0) > 0
            explained = state == "FAILED" and bool(row.get("message"))
            if not ran and not explained and state != "CANCELLED":
                lost += 1
        duplicated = sum(n - 1 for n in runs.values() if n > 1)
        return cls(scenario, backend, len(rows), lost, duplicated, stuck, settle_s, note)

    def line(self) -> str:
        settle = "-" if self.settle_s is None else f"{self.settle_s:.2f}s"
        return (
            f"[faults] {self.scenario} ({self.backend}): jobs={self.jobs} lost={self.lost} "
            f"duplicated={self.duplicated} stuck={self.stuck} settle={settle}"
            + (f" ({self.note})" if self.note else "")
        )


def report(figures: Figures) -> None:
    """Print the one-line summary; append a JSON line to ``$JOBKIT_FAULTS_REPORT``."""
    fields = dataclasses.asdict(figures)
    emit(fields.pop("scenario"), fields.pop("backend"), **fields)
