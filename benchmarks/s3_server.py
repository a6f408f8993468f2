"""A moto S3 server in a thread of this process that counts every request it serves.

The ``s3`` workload counts requests on the server side so that every process
is seen: this one, a ``jobkit list`` subprocess, the local agent and the
workers it forks.  Nothing in jobkit is patched or wrapped; the store talks
to the server over real HTTP through its own unmodified boto3 client.

* :class:`CountingServer` runs ``moto.server``'s WSGI application under
  werkzeug on 127.0.0.1 (an ephemeral port), wrapped in :class:`CountingApp`.
* Each request is logged as a :class:`Request`: which process sent it
  (:class:`Owners` maps the client end of the TCP connection to a pid
  through ``/proc``), the S3 action (``ListObjectsV2`` is a GET on the bucket
  with ``list-type=2``; an object GET is ``GetObject``), which part of the
  store it touched, and the status.
* A request to ``/_jobkit_bench/mark`` is logged as a mark and answered here:
  a child process uses it to split its own requests into phases.

moto 5.2 checks ``If-Match``/``If-None-Match`` and then writes without a
lock between the two, so two concurrent conditional writes could both win.
As in ``tests/s3_fixtures.py``, its PutObject and DeleteObject handlers run
one at a time here (AWS makes each conditional write atomic); reads stay
concurrent.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import socket
import struct
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import parse_qs

MARK_PATH = "/_jobkit_bench/mark"
"""GET it to put a mark in the log (answered here, never by moto)."""

OPS = ("GET", "PUT", "DELETE", "LIST", "HEAD", "other")
"""The operation columns of the report, in order."""
OP_OF_ACTION = {
    "GetObject": "GET",
    "PutObject": "PUT",
    "DeleteObject": "DELETE",
    "DeleteObjects": "DELETE",
    "ListObjectsV2": "LIST",
    "ListObjects": "LIST",
    "HeadObject": "HEAD",
    "HeadBucket": "HEAD",
}

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Request(NamedTuple):
    """One request the server answered (or one mark)."""

    role: str
    """Who sent it: ``client`` (this process), ``cli`` (``python -m jobkit``),
    ``agent``, ``worker`` (forked or spawned by the agent), ``child``
    (``s3_child.py``), ``other``, or ``gone`` (the sender had exited, or
    closed the connection, before it could be identified)."""
    pid: int
    action: str
    """S3 action (``GetObject``, ``ListObjectsV2``, ...) or ``MARK``."""
    area: str
    """``record``, ``records`` (a listing of jobs/), ``index:<STATE>``,
    ``index:array``, ``blob:<kind>``, ``bucket``; ``-`` for a mark."""
    status: int
    conditional: bool
    """An If-Match / If-None-Match request."""
    key: str

    @property
    def op(self) -> str:
        return OP_OF_ACTION.get(self.action, "other")


class RequestLog:
    """Every request in arrival order; positions (``mark()``) delimit phases."""

    def __init__(self) -> None:
        self._items: list[Request] = []
        self._lock = threading.Lock()

    def add(self, request: Request) -> None:
        with self._lock:
            self._items.append(request)

    def mark(self) -> int:
        """The current position: requests logged from now on come after it."""
        with self._lock:
            return len(self._items)

    def between(self, start: int, end: int | None = None) -> list[Request]:
        """Requests (marks included) logged in ``[start, end)``."""
        with self._lock:
            return self._items[start:end]


def requests_only(items: Iterable[Request], roles: Collection[str] | None = None) -> list[Request]:
    """The S3 requests among ``items`` (no marks), of ``roles`` if given."""
    return [r for r in items if r.action != "MARK" and (roles is None or r.role in roles)]


def describe(items: Iterable[Request]) -> dict[str, Any]:
    """Counts for the report and the JSON: total, by op, action, area, role, status."""
    reqs = requests_only(items)

    def tally(values: Iterator[str]) -> dict[str, int]:
        return dict(sorted(collections.Counter(values).items()))

    ops = collections.Counter(r.op for r in reqs)
    return {
        "total": len(reqs),
        "ops": {op: ops.get(op, 0) for op in OPS},
        "actions": tally(r.action for r in reqs),
        "areas": tally(r.area for r in reqs),
        "roles": tally(r.role for r in reqs),
        "conditional": sum(r.conditional for r in reqs),
        "not_2xx": tally(str(r.status) for r in reqs if not 200 <= r.status < 300),
    }


# -- what a request is ------------------------------------------------------------------


def area_of(key: str) -> str:
    """Which part of a jobkit store ``key`` (or a listing prefix) is in."""
    parts = key.split("/")
    for i, part in enumerate(parts):
        rest = parts[i + 1 :]
        if part == "jobs":
            return "record" if rest and rest[0] else "records"
        if part == "index":
            return f"index:{rest[0]}" if rest and rest[0] else "index"
        if part == "blobs":
            return f"blob:{rest[0]}" if rest and rest[0] else "blobs"
    return "other"


def classify(method: str, path: str, query: str, headers: dict[str, Any]) -> tuple[str, str, str]:
    """(action, area, key) of a path-style S3 request."""
    bucket_and_key = path.lstrip("/").split("/", 1)
    key = bucket_and_key[1] if len(bucket_and_key) > 1 else ""
    params = parse_qs(query, keep_blank_values=True)
    if not key:
        if method == "GET" and params.get("list-type") == ["2"]:
            prefix = params.get("prefix", [""])[0]
            return "ListObjectsV2", area_of(prefix), prefix
        if method == "GET" and not params.keys() - {"prefix", "marker", "max-keys", "delimiter"}:
            prefix = params.get("prefix", [""])[0]
            return "ListObjects", area_of(prefix), prefix
        if method == "POST" and "delete" in params:
            return "DeleteObjects", "batch", ""
        if method == "PUT" and not params:
            return "CreateBucket", "bucket", ""
        if method == "HEAD":
            return "HeadBucket", "bucket", ""
        return f"{method} bucket ?{'&'.join(sorted(params))}", "bucket", ""
    area = area_of(key)
    if method == "GET":
        return "GetObject", area, key
    if method == "HEAD":
        return "HeadObject", area, key
    if method == "PUT":
        if "uploadId" in params:
            return "UploadPart", area, key
        if "HTTP_X_AMZ_COPY_SOURCE" in headers:
            return "CopyObject", area, key
        return "PutObject", area, key
    if method == "DELETE":
        return ("AbortMultipartUpload" if "uploadId" in params else "DeleteObject"), area, key
    if method == "POST" and "uploads" in params:
        return "CreateMultipartUpload", area, key
    if method == "POST" and "uploadId" in params:
        return "CompleteMultipartUpload", area, key
    return f"{method} object", area, key


# -- who sent it ------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _stat(pid: int) -> tuple[int, int]:
    """(parent pid, start time in clock ticks) from ``/proc/<pid>/stat``."""
    text = _read(f"/proc/{pid}/stat")
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return 0, 0


def _cmdline(pid: int) -> list[str]:
    return [a for a in _read(f"/proc/{pid}/cmdline").split("\0") if a]


def _holds(pid: int | str, target: str) -> bool:
    """Whether process ``pid`` has the socket ``target`` (``socket:[inode]``) open."""
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"{base}/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def _role(pid: int) -> str:
    """What kind of jobkit process ``pid`` is, from its command line (and its parent's)."""
    if pid == os.getpid():
        return "client"
    args = _cmdline(pid)
    if "jobkit.scheduler.agent" in args:
        # A forked worker keeps the agent's command line; its parent is the agent.
        return "worker" if "jobkit.scheduler.agent" in _cmdline(_stat(pid)[0]) else "agent"
    if "jobkit.worker" in args:
        return "worker"
    if any(a.endswith("s3_child.py") for a in args):
        return "child"
    if "jobkit" in args[1:3] or (args and os.path.basename(args[0]) == "jobkit"):
        return "cli"
    return "other"


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF


def _inode_by_netlink(local_port: int, peer_port: int) -> str | None:
    """The inode of the TCP socket 127.0.0.1:local_port -> 127.0.0.1:peer_port.

    One ``sock_diag`` request for that exact connection (what ``ss`` uses),
    about 20 us; ``/proc/net/tcp`` is the fallback, but reading it takes
    ~10 ms once thousands of closed connections sit in TIME_WAIT.
    """
    ip = socket.inet_aton("127.0.0.1") + bytes(12)
    sockid = struct.pack("!HH", local_port, peer_port) + ip + ip
    sockid += struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
    request += sockid
    header = struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(1.0)
        diag.send(header + request)
        data = diag.recv(65536)
    if len(data) < 16 + 4 + 48 + 20 or struct.unpack_from("=H", data, 4)[0] == NLMSG_ERROR:
        return None
    inode: int = struct.unpack_from("=I", data, 16 + 4 + 48 + 16)[0]
    return str(inode)


def _inode_by_proc(local_port: int, peer_port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(table).splitlines()[1:]:
            fields = line.split()
            if (
                len(fields) >= 10
                and int(fields[1].rsplit(":", 1)[1], 16) == local_port
                and int(fields[2].rsplit(":", 1)[1], 16) == peer_port
            ):
                return fields[9]
    return None


class Owners:
    """Which process holds the client end of a connection to the server.

    Looked up on every connection (werkzeug closes each one after its
    response, so that is every request): the socket's inode through
    ``sock_diag`` (or ``/proc/net/tcp``), then the process holding it
    through ``/proc/<pid>/fd``: this process first, then the processes seen
    before, then all.  A socket held by several processes (a forked child
    inherits open connections) belongs to the oldest of them, which opened it.
    """

    def __init__(self, server_port: int) -> None:
        self._server_port = server_port
        self._by_connection: weakref.WeakKeyDictionary[Any, tuple[str, int]] = (
            weakref.WeakKeyDictionary()
        )
        self._seen: dict[int, str] = {}  # pid -> role, most recent last
        self._lock = threading.Lock()

    def of(self, environ: dict[str, Any]) -> tuple[str, int]:
        """(role, pid) of the process that sent this request."""
        connection = environ.get("werkzeug.socket")
        with self._lock:
            known = self._by_connection.get(connection) if connection is not None else None
        if known is not None:
            return known
        owner = self._lookup(int(environ.get("REMOTE_PORT") or 0))
        if connection is not None:
            with self._lock:
                self._by_connection[connection] = owner
        return owner

    def _lookup(self, client_port: int) -> tuple[str, int]:
        try:
            inode = _inode_by_netlink(client_port, self._server_port)
        except OSError:
            inode = _inode_by_proc(client_port, self._server_port)
        if inode is None:
            return "gone", 0
        target = f"socket:[{inode}]"
        if _holds("self", target):
            return "client", os.getpid()
        with self._lock:
            recent = list(reversed(self._seen))
        holders = [pid for pid in recent if _holds(pid, target)]
        if not holders:
            holders = [
                int(name) for name in os.listdir("/proc") if name.isdigit() and _holds(name, target)
            ]
        if not holders:
            return "gone", 0
        pid = min(holders, key=lambda p: _stat(p)[1])
        role = _role(pid)
        with self._lock:
            self._seen.pop(pid, None)
            self._seen[pid] = role
            for gone in [p for p in self._seen if not os.path.exists(f"/proc/{p}")]:
                del self._seen[gone]
        return role, pid


# -- the server -------------------------------------------------------------------------


class CountingApp:
    """WSGI middleware: log each request, then let moto answer it."""

    def __init__(self, app: WsgiApp, log: RequestLog, owners: Owners) -> None:
        self._app = app
        self._log = log
        self._owners = owners

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith("/moto-api"):
            return self._app(environ, start_response)
        role, pid = self._owners.of(environ)
        if path == MARK_PATH:
            label = parse_qs(str(environ.get("QUERY_STRING", ""))).get("label", [""])[0]
            self._log.add(Request(role, pid, "MARK", "-", 200, False, label))
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        method = str(environ.get("REQUEST_METHOD", ""))
        action, area, key = classify(method, path, str(environ.get("QUERY_STRING", "")), environ)
        conditional = "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        status = [0]

        def recording(line: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            status[0] = int(line.split(" ", 1)[0])
            return start_response(line, headers, *exc)

        body = self._app(environ, recording)
        # Logged before the body goes out: once a client has its answer, the
        # request is in the log, so a mark taken after a call includes it.
        self._log.add(Request(role, pid, action, area, status[0], conditional, key))
        return body


def _one_at_a_time(handler: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    @functools.wraps(handler)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return handler(*args, **kwargs)

    return locked


class CountingServer:
    """``with CountingServer() as server:`` a moto S3 endpoint at ``server.endpoint``."""

    def __init__(self) -> None:
        self.log = RequestLog()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._patched: dict[str, Any] = {}
        self._log_level = logging.NOTSET

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> CountingServer:
        from moto.moto_server.werkzeug_app import create_backend_app
        from moto.s3.responses import S3Response
        from werkzeug.serving import make_server

        lock = threading.Lock()
        for name in ("put_object", "delete_object"):
            self._patched[name] = getattr(S3Response, name)
            setattr(S3Response, name, _one_at_a_time(self._patched[name], lock))
        werkzeug_log = logging.getLogger("werkzeug")
        self._log_level = werkzeug_log.level
        werkzeug_log.setLevel(logging.WARNING)  # no line per request
        # moto's S3 application itself: DomainDispatcherApplication, which picks
        # a service per request, spends ~2 ms of each request walking moto's
        # package directories (under one global lock), 40% of a PutObject.
        moto_app = create_backend_app("s3")
        self._server = make_server("127.0.0.1", 0, moto_app, threaded=True)
        self._server.app = CountingApp(moto_app, self.log, Owners(self._server.server_address[1]))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="moto-s3", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from moto.s3.responses import S3Response

        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for name, original in self._patched.items():
            setattr(S3Response, name, original)
        logging.getLogger("werkzeug").setLevel(self._log_level)
