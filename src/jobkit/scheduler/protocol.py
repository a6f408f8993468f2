"""The wire protocol between clients and the local agent, used by both sides.

The client (:mod:`jobkit.backends.local`) and the agent
(:mod:`jobkit.scheduler.agent`) used to spell the messages as string
literals each; a typo on one side was silently ignored by the other.  Here
each message kind is a member of :class:`Op` or :class:`Event`, and the
helpers below are the only code that turns messages into bytes and back.

Messages are JSON objects, one per line, over one AF_UNIX stream socket per
client::

    client (LocalBackend)                               agent
      │  argv: AgentSettings.to_json()  ── starts ──►     │
      │  {"op": "configure", "machine": {...}, "pid": N}  │  reload capacity
      │  {"op": "wake"}                     ──────────►   │  schedule
      │  {"op": "cancel", "ids": [...]}     ──────────►   │  kill running jobs
      │  {"op": "ping"}                     ──────────►   │
      │  ◄──── {"pid": N, "running": [...], "machine": {...}}
      │  {"op": "stop"}                     ──────────►   │  kill jobs, exit
      │  ◄──── {"event": "done" | "requeued", "id": ID}   │  (pushed to every client)

Requests a reader does not understand (bad JSON, unknown op, wrong field
types) decode to ``None`` and are ignored: clients of another jobkit version
must not crash the agent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

__all__ = [
    "MACHINE_FIELDS",
    "AgentSettings",
    "Event",
    "FrameReader",
    "LineReader",
    "Op",
    "Request",
    "decode_event",
    "decode_request",
    "encode_event",
    "encode_frame",
    "encode_request",
    "encode_status",
]

MACHINE_FIELDS = ("cpus", "mem", "gpus", "max_jobs")
"""Settings a submitter may change while the agent runs (``configure``)."""


class Op(str, Enum):
    """What a client asks of the agent."""

    CONFIGURE = "configure"
    """Adopt this client's machine settings (``machine``, ``pid``)."""
    WAKE = "wake"
    """New jobs are recorded: schedule now."""
    CANCEL = "cancel"
    """Kill these running jobs (``ids``)."""
    PING = "ping"
    """Answer with the agent's status."""
    STOP = "stop"
    """Kill every job and exit."""


class Event(str, Enum):
    """What the agent pushes to every connected client."""

    DONE = "done"
    """A job reached a terminal state."""
    REQUEUED = "requeued"
    """A job failed and waits for its next attempt."""


@dataclasses.dataclass(frozen=True)
class Request:
    """One decoded client message; fields other than ``op`` only where it uses them."""

    op: Op
    machine: Mapping[str, Any] | None = None
    pid: int | None = None
    ids: tuple[str, ...] = ()


@dataclasses.dataclass
class AgentSettings:
    """How the agent runs; sent by the client that starts it, as JSON on argv."""

    store: str
    cpus: float | None = None
    mem: int | None = None
    gpus: int | list[str] | None = None
    max_jobs: int | None = None
    idle_timeout: float = 60.0
    start_method: str = "warm"
    kill_grace: float = 3.0
    rescan_interval: float = 1.0
    memory_interval: float = 0.5

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def machine(self) -> dict[str, Any]:
        """The settings that say what the machine offers (capacity), as JSON-safe values."""
        return {name: getattr(self, name) for name in MACHINE_FIELDS}

    @classmethod
    def from_json(cls, text: str) -> AgentSettings:
        return cls(**json.loads(text))


def _line(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def encode_request(
    op: Op,
    *,
    machine: Mapping[str, Any] | None = None,
    pid: int | None = None,
    ids: Sequence[str] = (),
) -> bytes:
    """One request line; only the fields ``op`` uses are sent."""
    message: dict[str, Any] = {"op": op.value}
    if op is Op.CONFIGURE:
        message["machine"] = dict(machine or {})
        message["pid"] = pid
    elif op is Op.CANCEL:
        message["ids"] = list(ids)
    return _line(message)


def decode_request(line: bytes) -> Request | None:
    """The request in ``line``, or ``None`` if it is not one this agent understands."""
    try:
        message = json.loads(line)
        op = Op(message["op"])
    except (ValueError, KeyError, TypeError):
        return None
    if op is Op.CONFIGURE:
        machine, pid = message.get("machine"), message.get("pid")
        return Request(
            op,
            machine=machine if isinstance(machine, dict) else None,
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        )
    if op is Op.CANCEL:
        ids = message.get("ids")
        if not isinstance(ids, list):
            return Request(op)
        return Request(op, ids=tuple(str(i) for i in ids))
    return Request(op)


def encode_event(event: Event, job_id: str) -> bytes:
    """One event line about ``job_id``."""
    return _line({"event": event.value, "id": job_id})


def decode_event(line: bytes) -> str | None:
    """The job id an event line is about, or ``None`` for anything else."""
    try:
        message = json.loads(line)
        return str(message["id"])
    except (ValueError, KeyError, TypeError):
        return None


def encode_status(pid: int, running: Sequence[str], machine: Mapping[str, Any]) -> bytes:
    """The answer to :attr:`Op.PING`."""
    return _line({"pid": pid, "running": sorted(running), "machine": dict(machine)})


class LineReader:
    """Splits a byte stream into complete lines, keeping a partial last line."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines in what has arrived so far, without their newlines."""
        self._pending += data
        *lines, rest = bytes(self._pending).split(b"\n")
        self._pending[:] = rest
        return lines


def encode_frame(
    header: Mapping[str, Any], body: Sequence[bytes | bytearray | memoryview] = ()
) -> bytes:
    """One message between the agent and a warm worker: a JSON header line,
    then ``header["size"]`` raw bytes (an outcome, a record) that JSON would
    have to escape or base64-encode."""
    size = sum(memoryview(part).nbytes for part in body)
    line = json.dumps({**header, "size": size}, separators=(",", ":")).encode() + b"\n"
    return b"".join([line, *(bytes(part) for part in body)]) if size else line


class FrameReader:
    """Splits a byte stream into :func:`encode_frame` messages: (header, body)."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        """The complete messages in what has arrived so far; a header that is
        not a JSON object is skipped (a worker of another version)."""
        self._pending += data
        out: list[tuple[dict[str, Any], bytes]] = []
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                return out
            try:
                header = json.loads(self._pending[:end])
            except ValueError:
                header = None
            if not isinstance(header, dict):
                del self._pending[: end + 1]
                continue
            size = header.get("size") or 0
            if not isinstance(size, int) or size < 0:
                size = 0
            if len(self._pending) < end + 1 + size:
                return out
            body = bytes(self._pending[end + 1 : end + 1 + size])
            del self._pending[: end + 1 + size]
            out.append((header, body))
