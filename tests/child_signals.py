"""Children that tests signal start with SIGINT and SIGTERM at their defaults.

The helpers live in :mod:`jobkit_testing.child_signals`, beside the
Kubernetes emulator that spawns pods with them; this module keeps the name
the tests import.
"""

from __future__ import annotations

from jobkit_testing.child_signals import reap, with_default_signals

__all__ = ["reap", "with_default_signals"]
