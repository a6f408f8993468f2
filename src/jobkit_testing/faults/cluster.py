"""Ground truth for the cluster faults: what ran, what the store says, the figures.

::

    job function mark() ──► one marker file per execution (item, job id, pid)
    store file ──sqlite3, not jobkit──► raw rows (state, reason, message)
                       │
    count(markers, rows, handed_over) ──► Figures ──► one line on stdout
                                                  └─► a JSON line in $JOBKIT_FAULTS_REPORT

Nothing here goes through jobkit's API to judge jobkit: a bug that loses a
job in the store's code would also hide it from a check made with that code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from jobkit_testing.faults.report import emit, table

__all__ = [
    "TERMINAL",
    "Figures",
    "FlakyGate",
    "Row",
    "array_ids",
    "count",
    "executions",
    "mark",
    "raw_rows",
    "s3_rows",
    "wait_or_stall",
]

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


def mark(directory: str, item: int, seconds: float = 0.0) -> int:
    """A job function: sleeps, then leaves one file per execution so a rerun shows."""
    if seconds:
        time.sleep(seconds)
    job_id = os.environ.get("JOBKIT_JOB_ID", "")
    path = Path(directory) / f"{item}.{os.getpid()}.{time.time_ns()}"
    path.write_text(json.dumps({"item": item, "pid": os.getpid(), "job": job_id}))
    return item * item


def executions(directory: Path) -> Counter[int]:
    """How many times each item's function ran to its end."""
    return Counter(int(p.name.split(".", 1)[0]) for p in directory.iterdir())


@dataclasses.dataclass(frozen=True)
class Row:
    """One record as the SQLite file holds it."""

    id: str
    state: str
    array_index: int | None
    reason: str | None
    message: str | None
    backend_id: str | None


def _select(db: Path, query: str, args: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``query``; none while the file or its table is not there yet
    (a client killed before, or while, it created the store)."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return conn.execute(query, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def raw_rows(db: Path, array_id: str | None = None) -> list[Row]:
    """Every record of the store file (of one array), read with sqlite3 directly."""
    query = "SELECT id, state, data FROM jobs"
    args: tuple[str, ...] = ()
    if array_id is not None:
        query += " WHERE array_id = ?"
        args = (array_id,)
    found = _select(db, query, args)
    rows = []
    for job_id, state, data in found:
        fields: Mapping[str, Any] = json.loads(data)
        rows.append(
            Row(
                job_id,
                state,
                fields.get("array_index"),
                fields.get("failure_reason"),
                fields.get("message"),
                fields.get("backend_id"),
            )
        )
    return rows


def array_ids(db: Path) -> list[str]:
    """The arrays recorded in the store file (a killed client may have left none)."""
    found = _select(db, "SELECT DISTINCT array_id FROM jobs WHERE array_id IS NOT NULL")
    return [str(a) for (a,) in found]


@dataclasses.dataclass
class Figures:
    """What a scenario did to the jobs it handed over, from ground truth.

    lost: handed-over items whose record vanished, or that ended without success
    and without saying why (no message); duplicated: items whose function ran more than once;
    stuck: records still in a non-terminal state at the end; settle_s: seconds
    from the fault to the last record becoming terminal (None: never).
    """

    scenario: str
    backend: str
    items: int
    recorded: int
    handed_over: int
    succeeded: int
    failed: int
    lost: int
    duplicated: int
    stuck: int
    settle_s: float | None
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def report(self) -> None:
        """One line for ``pytest -s``; a JSON line in ``$JOBKIT_FAULTS_REPORT`` if set."""
        figures = dataclasses.asdict(self)
        emit(figures.pop("scenario"), figures.pop("backend"), **figures)


def count(
    scenario: str,
    backend: str,
    items: int,
    rows: Iterable[Row],
    ran: Counter[int],
    *,
    handed_over: Collection[int] | None = None,
    settle_s: float | None,
    **notes: Any,
) -> Figures:
    """The figures of one scenario: ``handed_over`` are the item indexes the
    backend was told of (None: every recorded item)."""
    rows = list(rows)
    by_index = {r.array_index if r.array_index is not None else -1: r for r in rows}
    told = set(by_index) if handed_over is None else set(handed_over)
    succeeded = {i for i, r in by_index.items() if r.state == "SUCCEEDED"}
    lost = {
        i
        for i in told
        if i not in by_index
        or (by_index[i].state in TERMINAL - {"SUCCEEDED"} and not by_index[i].message)
    }
    failures = Counter(
        f"{r.reason}: {(r.message or '')[:100]}" for r in rows if r.state == "FAILED"
    )
    return Figures(
        scenario=scenario,
        backend=backend,
        items=items,
        recorded=len(rows),
        handed_over=len(told),
        succeeded=len(succeeded),
        failed=sum(r.state == "FAILED" for r in rows),
        lost=len(lost),
        duplicated=sum(1 for n in ran.values() if n > 1),
        stuck=sum(r.state not in TERMINAL for r in rows),
        settle_s=settle_s,
        notes={
            "states": dict(Counter(r.state for r in rows)),
            **notes,
            **({"failures": dict(failures)} if failures else {}),
        },
    )


def s3_rows(s3: Any, bucket: str, prefix: str) -> list[Row]:
    """Every record of an S3 store (``<prefix>/jobs/<id>.json``), read with plain boto3."""
    rows = []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/jobs/")
    for page in pages:
        for item in page.get("Contents", ()):
            fields = json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            rows.append(
                Row(
                    fields["id"],
                    fields["state"],
                    fields.get("array_index"),
                    fields.get("failure_reason"),
                    fields.get("message"),
                    fields.get("backend_id"),
                )
            )
    return rows


def wait_or_stall(
    array: Any, ended: Callable[[], int], *, bound: float = 240.0, stalled: float = 30.0
) -> bool:
    """Wait on a ``JobArray`` until every job ended (True), or until ``ended()``
    (a ground-truth count of terminal records) stopped growing for ``stalled``
    seconds, or ``bound`` seconds passed (False).  Wait bounds, not pass/fail timings."""
    start = progress_at = time.monotonic()
    seen = -1
    while time.monotonic() - start < bound:
        if array.wait(timeout=2, progress=False):
            return True
        now_ended = ended()
        if now_ended != seen:
            seen, progress_at = now_ended, time.monotonic()
        elif time.monotonic() - progress_at > stalled:
            return False
    return False


# -- an S3 endpoint that misbehaves -------------------------------------------------------

_SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>\n"
)
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    + f"Content-Length: {len(_SLOW_DOWN_BODY)}\r\n\r\n".encode()
    + _SLOW_DOWN_BODY
)


class FlakyGate:
    """A TCP forwarder to an S3 endpoint that can go bad for a while.

    In an outage every live connection is cut at once; then each new
    connection is, in turn, answered ``503 SlowDown`` (as AWS does under
    load) or reset before any answer.  ``answered``/``reset`` count them.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.outage = False
        self.answered = 0
        self.reset = 0
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def start_outage(self) -> None:
        with self._lock:
            self.outage = True
            live, self._live = self._live, []
        for sock in live:
            _cut(sock)

    def end_outage(self) -> None:
        self.outage = False

    def close(self) -> None:
        self.start_outage()
        self._listener.close()

    def _accept(self) -> None:
        turn = 0
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.outage:
                turn += 1
                threading.Thread(target=self._misbehave, args=(client, turn), daemon=True).start()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _cut(client)
                continue
            with self._lock:
                self._live += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def _misbehave(self, client: socket.socket, turn: int) -> None:
        if turn % 2:
            with contextlib.suppress(OSError):
                client.settimeout(5)
                client.recv(65536)  # the request line and headers
                client.sendall(SLOW_DOWN)
            self.answered += 1
        else:
            self.reset += 1
        _cut(client)


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until EOF, then half-close ``sink`` (one direction)."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _cut(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a dropped connection looks to the peer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


# -- the client that gets killed ------------------------------------------------------


def submit_map(config: Mapping[str, Any], markers: str, items: int, seconds: float) -> None:
    """Submit one map of :func:`mark` with ``config`` (``jobkit.use`` arguments),
    say so on stdout, then wait to be killed: a test kills this process."""
    import jobkit

    with jobkit.use(**config):
        print("SUBMITTING", flush=True)
        array = jobkit.map(mark, [markers] * items, range(items), [seconds] * items)
        print(f"SUBMITTED {array.id}", flush=True)
        time.sleep(600)


def main(argv: list[str]) -> int:
    """``python -m jobkit_testing.faults.cluster CONFIG_JSON MARKERS ITEMS SECONDS`` (the
    client to kill), or ``... table REPORT`` (print a report's figures)."""
    if argv[:1] == ["table"]:
        print(table(Path(argv[1])))
        return 0
    config, markers, items, seconds = argv
    submit_map(json.loads(config), markers, int(items), float(seconds))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
