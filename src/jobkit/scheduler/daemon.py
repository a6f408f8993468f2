"""The agent as a daemon: where it listens, one per store, detached, idle exit.

Apart from the scheduling loop because none of it decides which job runs:
it makes sure exactly one agent serves a store (a lock file), that it
outlives the process that started it (double fork, own session, SIGINT and
SIGHUP ignored), and that it leaves nothing behind when it exits (socket and
lock file removed).

Life cycle::

    LocalBackend._start_agent ── python -m jobkit.scheduler.agent SETTINGS ──┐
                                                                             ▼
    daemonize(): fork, parent exits ─► acquire_lock(): another agent listens?
                                           │ yes: exit 0    │ no: lock held
                                           ▼                ▼
                              detach_from_terminal(); open_listener(socket)
                                           │
                              Agent.serve(): select loop ...
                                           │ idle_timeout with nothing running,
                                           │ {"op": "stop"} or SIGTERM
                                           ▼
                              close_listener() (socket unlinked); release_lock()

An idle agent closes its listener first and then looks at the store once
more, so a job recorded while it was stopping is not stranded (the client
starts a new agent when it cannot connect).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import os
import signal
import socket
import time
from pathlib import Path

__all__ = [
    "AgentPaths",
    "acquire_lock",
    "agent_paths",
    "close_listener",
    "daemonize",
    "detach_from_terminal",
    "listening",
    "open_listener",
    "release_lock",
]


@dataclasses.dataclass(frozen=True)
class AgentPaths:
    socket: Path
    lock: Path
    log: Path


def agent_paths(store_identity: str, log_dir: Path) -> AgentPaths:
    """Where the agent for a store (its :attr:`~jobkit.stores.base.Store.identity`)
    listens; short enough for AF_UNIX."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime, "jobkit") if runtime else Path(f"/tmp/jobkit-{os.getuid()}")
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    tag = hashlib.sha256(store_identity.encode()).hexdigest()[:16]
    return AgentPaths(base / f"agent-{tag}.sock", base / f"agent-{tag}.lock", log_dir / "agent.log")


def daemonize() -> None:
    """Fork; the parent exits at once.

    Double fork: the agent is never the submitter's child, so it neither dies
    with it nor lingers as its zombie when it exits.
    """
    if os.fork():
        os._exit(0)


def detach_from_terminal() -> None:
    """Survive the terminal that started the agent (Ctrl-C, hangup)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def open_listener(path: Path) -> socket.socket:
    """A non-blocking AF_UNIX listener at ``path``, readable by this user only."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(128)
    listener.setblocking(False)
    return listener


def close_listener(listener: socket.socket, path: Path) -> None:
    """Stop accepting clients: a client that cannot connect starts a new agent."""
    listener.close()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def acquire_lock(path: Path, sock: Path, patience: float = 10.0) -> int | None:
    """Take the per-store agent lock, or None if a live agent already serves.

    The lock file is removed by the agent that exits, so after locking we
    check that the path still names the file we locked; if an exiting agent
    unlinked it meanwhile, we start over on the new file.
    """
    deadline = time.monotonic() + patience
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        else:
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                return fd
            os.close(fd)
            continue
        if listening(sock):
            return None  # a live agent serves this store
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def listening(sock: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def release_lock(path: Path, fd: int) -> None:
    """Remove the lock file while still holding it (see :func:`acquire_lock`), then unlock."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)
