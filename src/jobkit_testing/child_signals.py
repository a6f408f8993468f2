"""Children that tests signal start with SIGINT and SIGTERM at their defaults.

A process inherits ignored signals: pytest started from a non-interactive
background shell (``cmd &``, CI runners, ``nohup``) has SIGINT ignored, and so
would every child it spawns -- a test that sends Ctrl-C would then hang
instead of testing jobkit.  ``preexec_fn`` could reset them, but is unsafe
in threaded parents (the k8s emulator spawns pods from threads), so the
child's argv goes through a tiny wrapper that resets both signals and
``exec``s the real program under the same pid (``exec`` keeps SIG_DFL).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

_RESET = (
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def with_default_signals(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that it runs with default SIGINT/SIGTERM dispositions."""
    return [sys.executable, "-S", "-E", "-c", _RESET, *argv]


def reap(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Kill ``process`` if it still runs and wait for it: no test leaks a child."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
