"""A job's log as server-sent events, while it runs.

The store and the backends block (SQLite, files, HTTP to a scheduler), so
each poll runs in a worker thread; the event loop only waits::

    every poll:    record = store.get(id)            (thread)
                   text   = client.read_logs(record)  (thread)
                   text[offset:] ──► "id: <new offset>" + "event: text"
    record ended:  the last text, then "event: end" and the stream closes

The record is read before the log, so the log read after seeing the end is
complete: nothing the job wrote is lost between the two.  Each text event
carries the offset after it as its id, so a browser that reconnects by itself
(``Last-Event-ID``) resumes there instead of resending from the page's offset.

Backends offer the whole log only (``Backend.read_logs``: no size, no read
from an offset), so every poll re-reads it; the poll backs off from
:data:`POLL` to :data:`MAX_POLL` while nothing changes, so a quiet job costs
a read every few seconds per open tab, and a chatty one is followed closely.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from jobkit.errors import JobkitError

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.states import JobRecord

Fresh = Callable[[Sequence["JobRecord"]], tuple[list["JobRecord"], str | None]]

POLL = 0.3
MAX_POLL = 3.0
BACKOFF = 1.5
HEARTBEAT = 15.0
"""Seconds between comments sent while nothing is written (keeps proxies and
the browser from timing the stream out)."""


def event(name: str, data: object, *, ident: int | None = None) -> bytes:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def log_events(
    client: Client,
    job_id: str,
    stream: str,
    offset: int,
    disconnected: Callable[[], Awaitable[bool]],
    fresh: Fresh | None = None,
) -> AsyncIterator[bytes]:
    """The events of ``stream`` from character ``offset`` until the job ends.

    ``fresh`` (:meth:`jobkit.ui.freshness.Freshener.fresh`) brings the record
    up to date from its backend, so a job whose worker died ends the stream
    too; a note it returns is sent once as a ``note`` event."""
    noted: str | None = None
    idle, pause = 0.0, POLL
    while not await disconnected():
        record = await asyncio.to_thread(client.store.get, job_id)
        if fresh is not None:
            refreshed, note = await asyncio.to_thread(fresh, [record])
            record = refreshed[0]
            if note and note != noted:
                yield event("note", note)
            noted = note
        try:
            text = await asyncio.to_thread(client.read_logs, record, stream)
        except (JobkitError, OSError, ImportError) as exc:  # e.g. a backend not installed here
            yield event("end", f"logs not readable: {exc}")
            return
        if len(text) < offset:  # a new attempt started a new log
            offset = 0
        if len(text) > offset:
            offset, chunk = len(text), text[offset:]
            yield event("text", chunk, ident=offset)
            idle, pause = 0.0, POLL
        elif idle >= HEARTBEAT:
            yield b": still running\n\n"
            idle = 0.0
        if record.is_terminal:
            yield event("end", record.state.value)
            return
        await asyncio.sleep(pause)
        idle += pause
        pause = min(MAX_POLL, pause * BACKOFF)
