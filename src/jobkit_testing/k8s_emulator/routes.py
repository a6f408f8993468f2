"""What a request is: its route, the record tests assert on, and the
state the server keeps beside objects (injected faults, watch events, pod log buffers).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ApiError
from .kinds import _KINDS_BY_PATH, CONTROLLER_AGENT, Kind, Obj, now_rfc3339_nano

# -- the server ---------------------------------------------------------------------


@dataclasses.dataclass
class ApiRequest:
    """One request the emulator answered, in RBAC terms (``verb`` on ``resource``)."""

    verb: str
    resource: str  # "jobs", "pods/log", "jobs/status"
    namespace: str | None
    name: str | None
    params: dict[str, str]
    body: Any
    user_agent: str
    status: int = 0

    @property
    def from_controller(self) -> bool:
        return self.user_agent.startswith(CONTROLLER_AGENT)


@dataclasses.dataclass
class _Fault:
    verb: str | None
    resource: str | None
    namespace: str | None
    name: str | None
    error: ApiError
    remaining: int | None


@dataclasses.dataclass
class _Event:
    rv: int
    plural: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


@dataclasses.dataclass
class _LogBuffer:
    lines: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)
    partial: bytes = b""
    partial_ts: str = ""
    closed: bool = False

    def append(self, data: bytes) -> None:
        if not self.partial:
            self.partial_ts = now_rfc3339_nano()
        pieces = (self.partial + data).split(b"\n")
        self.partial = pieces.pop()
        for piece in pieces:
            self.lines.append((self.partial_ts, piece + b"\n"))
            self.partial_ts = now_rfc3339_nano()

    def close(self) -> None:
        if self.partial:
            self.lines.append((self.partial_ts, self.partial))
            self.partial = b""
        self.closed = True


@dataclasses.dataclass(frozen=True)
class Route:
    kind: Kind | None  # None: an unknown resource
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool  # the deprecated /watch/ prefix


def parse_route(path: str) -> Route | None:
    """A resource path -> its parts; None for paths kmock's scaffold serves (discovery)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch_path = bool(rest) and rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace: str | None = None
    if (
        rest
        and rest[0] == "namespaces"
        and (len(rest) >= 4 or (len(rest) == 3 and rest[2] not in ("status", "finalize")))
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    kind = _KINDS_BY_PATH.get((group, version, rest[0]))
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return Route(kind, namespace, name, subresource, watch_path)


def _strip_list_item(obj: Obj) -> Obj:
    item = dict(obj)
    item.pop("kind", None)
    item.pop("apiVersion", None)
    return item
