"""Records brought up to date by their backends before the view shows them.

The view reads the store, and the store only learns of a job's end from its
worker, its agent or a reconcile: a job whose worker died with nobody asking
its backend (a dead local agent, a Slurm node lost, the submitter gone) would
show RUNNING forever.  ``jobkit status`` asks the backends about the active
records it shows (:meth:`jobkit.cli.session.Session.fresh`); the view does the
same through :meth:`Client.reconcile`, with two differences a long-lived
server needs:

- at most once every :data:`INTERVAL` seconds per job, however many tabs and
  log streams poll it (a scheduler query is not free);
- a backend that cannot be asked is a one-line note beside the stored record,
  never an error page.

Local RUNNING jobs are included (``jobkit status`` leaves them to their
agent): observing them costs one socket connect, and starts an agent where
the one that watched them died, which then settles them (LOST) on recovery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.states import JobRecord

INTERVAL = 3.0


class Freshener:
    """Asks backends about non-terminal records, throttled per job."""

    def __init__(self, client: Client, interval: float = INTERVAL) -> None:
        self.client = client
        self.interval = interval
        self._asked: dict[str, float] = {}
        self._lock = threading.Lock()

    def fresh(self, records: Sequence[JobRecord]) -> tuple[list[JobRecord], str | None]:
        """``records``, the active ones read again after their backends were
        asked (those asked less than ``interval`` s ago as they are), and a
        note when a backend could not be asked.  Blocks: call it in a thread."""
        now = time.monotonic()
        with self._lock:
            never = now - self.interval
            due = [
                r
                for r in records
                if not r.is_terminal and now - self._asked.get(r.id, never) >= self.interval
            ]
            for r in due:
                self._asked[r.id] = now
            if len(self._asked) > 100_000:  # forget the oldest: a server runs for weeks
                for key in sorted(self._asked, key=self._asked.__getitem__)[:50_000]:
                    del self._asked[key]
        if not due:
            return list(records), None
        try:
            self.client.reconcile(due)
            updated = self.client.store.get_many([r.id for r in due])
        except Exception as exc:  # any backend or store failure: show what the store had
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return list(records), f"state as last recorded: its backend was not reachable ({first})"
        return [updated.get(r.id, r) for r in records], None
