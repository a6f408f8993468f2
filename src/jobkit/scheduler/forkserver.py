"""The fork server: forks workers from a process that never opened the store.

Why not fork the agent itself: the agent holds an open SQLite connection,
and SQLite keeps per-process state about the file (the unix VFS's inode and
shared-memory records) that a forked child inherits in memory but not in the
kernel, because POSIX advisory locks (``fcntl(F_SETLK)``) belong to a process
and "are not inherited by a child created via fork(2)" (fcntl(2), "Advisory
record locking").  A new connection opened in the child reuses the inherited
shared-memory record, so it never takes the shared lock on the WAL index that
tells other processes "a connection is open" (SQLite's "How To Corrupt",
section 2.6: do not carry an open connection across fork).  Once the agent
died, the next process to close the store believed it was the last one,
checkpointed and deleted the WAL, and the orphaned worker's commit went into
the deleted file.  A worker forked from this server starts from an
interpreter that imported jobkit but never touched a database, and opens its
own (patient) store.

Data flow::

    agent main ── start() before the store is opened ──► fork server (warm imports)
      │ request: one JSON line (job, env, cwd, logs) ──►   │ fork
      │                                                     ▼
      │                                   middle ── fork ──► worker: setsid, stdio,
      │                                   (exits at once;    env, cwd, pid file,
      │                                    server reaps it)  run_job(patient store)
      │◄── worker pid ── server
      ▼
    agent is a child subreaper (PR_SET_CHILD_SUBREAPER): when the middle process
    exits, the worker is re-parented to the agent, which waits for it (exit
    codes, pidfd) exactly as for a child it forked itself.

A warm worker (:mod:`jobkit.scheduler.warm`) is started the same way; the
request carries one end of a socket pair (``SCM_RIGHTS``) that becomes the
worker's line to the agent, so the requests are datagrams on a
``SOCK_SEQPACKET`` pair: one message, one request, with its descriptor.

The server exits when the agent's end of its socket closes (the agent ended).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from jobkit.scheduler.launch import WorkerIO, redirect_stdio
from jobkit.scheduler.pidfile import write_pidfile

__all__ = ["ForkServer", "become_subreaper"]

_PR_SET_CHILD_SUBREAPER = 36
_EXIT_SOFTWARE = 70  # EX_SOFTWARE: the child failed before the worker decided a code
_MESSAGE_MAX = 4 * 2**20  # one request: a whole environment fits


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux 3.4+); False if refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class ForkServer:
    """The agent's handle on its fork server (see the module docstring)."""

    def __init__(self, store_url: str, key: bytes) -> None:
        self.store_url = store_url
        self.key = key
        self._sock: socket.socket | None = None
        self.pid = 0

    def start(self) -> None:
        """Fork the server; call before this process opens any store."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MESSAGE_MAX)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _MESSAGE_MAX)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            ours.close()
            code = 0
            try:
                _serve(theirs, self.store_url, self.key)
            except BaseException:
                code = _EXIT_SOFTWARE
            os._exit(code)
        theirs.close()
        self._sock = ours
        self.pid = pid

    def fork(self, job_id: str, io_: WorkerIO, pidfile: Path) -> int:
        """Start a worker for ``job_id``; its pid (it is this process's child
        once the server's middle process has exited)."""
        request: dict[str, object] = {
            "job": job_id,
            "env": io_.env,
            "cwd": io_.cwd,
            "stdout": str(io_.stdout),
            "stderr": str(io_.stderr),
            "pidfile": str(pidfile),
        }
        return self._request(request)

    def start_warm(self) -> tuple[int, socket.socket]:
        """Start a warm worker; its pid and the agent's end of its socket."""
        ours, theirs = socket.socketpair()
        try:
            pid = self._request({"warm": True}, theirs.fileno())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return pid, ours

    def _request(self, request: dict[str, object], fd: int | None = None) -> int:
        if self._sock is None:
            raise OSError("the fork server is not running")
        self._sock.settimeout(30.0)
        message = json.dumps(request).encode()
        if fd is None:
            self._sock.send(message)
        else:
            socket.send_fds(self._sock, [message], [fd])
        reply = self._sock.recv(64)
        if not reply:
            raise OSError("the fork server exited")
        pid = int(reply)
        if pid <= 0:
            raise OSError("the fork server could not fork")
        return pid

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)


def _serve(conn: socket.socket, store_url: str, key: bytes) -> None:
    """The server's loop: one request message in, one pid message out, until EOF."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # signals sent to the agent's group do not reach it
    while True:
        message, fds, _flags, _addr = socket.recv_fds(conn, _MESSAGE_MAX, 1)
        if not message:
            return
        request = json.loads(message)
        read, write = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.close(read)
            worker = os.fork()
            if worker == 0:
                os.close(write)
                conn.close()
                if request.get("warm") and fds:
                    _run_warm(fds[0], store_url, key)  # never returns
                _run_worker(request, store_url, key)  # never returns
            os.write(write, str(worker).encode())
            os._exit(0)
        os.close(write)
        for fd in fds:
            os.close(fd)
        with os.fdopen(read, "rb") as pipe:
            got = pipe.read()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(middle, 0)  # the worker is re-parented to the agent now
        conn.send(got or b"0")


def _exit_with(body: Callable[[], int]) -> None:
    """Run a forked child's ``body`` and leave with its code, never returning
    into the server's loop (a traceback and EX_SOFTWARE if it raised)."""
    code = _EXIT_SOFTWARE
    try:
        code = body()
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run_warm(fd: int, store_url: str, key: bytes) -> None:
    from jobkit.scheduler.warm import main_from_forkserver

    _exit_with(lambda: int(main_from_forkserver(fd, store_url, key)))


def _run_worker(request: dict[str, object], store_url: str, key: bytes) -> None:
    _exit_with(lambda: _worker(request, store_url, key))


def _worker(request: dict[str, object], store_url: str, key: bytes) -> int:
    os.setsid()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    job_id = str(request["job"])
    write_pidfile(Path(str(request["pidfile"])), os.getpid())
    redirect_stdio(Path(str(request["stdout"])), Path(str(request["stderr"])))
    env = request["env"]
    os.environ.clear()
    if isinstance(env, dict):
        os.environ.update({str(k): str(v) for k, v in env.items()})
    cwd = request.get("cwd")
    if cwd:
        os.chdir(str(cwd))
    sys.argv = ["jobkit-worker", job_id]
    from jobkit.errors import StoreUnavailableError
    from jobkit.stores.patient import open_patient_store
    from jobkit.worker import _store_unreachable, run_job

    try:
        return run_job(open_patient_store(store_url), job_id, key)
    except StoreUnavailableError as exc:
        return _store_unreachable(job_id, exc)
