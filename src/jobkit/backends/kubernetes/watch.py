"""Every jobkit pod and Job of a namespace, kept current by one label-selected watch each.

The informer pattern of client-go, reduced to what jobkit needs: LIST once
(``app.kubernetes.io/managed-by=jobkit``), then WATCH from the list's
``resourceVersion``; when the stream ends or the connection drops, WATCH
again from the last version seen; when the server says that version is too
old (410 Gone), LIST again.  Two streams for the whole namespace, whatever
the number of jobs: status never costs a request per job.

Each change of a pod is handed to ``on_pod``; the backend judges it
(:mod:`.states`) and records what the worker could not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from jobkit.errors import BackendError

from .api import KubeApi, WatchExpired
from .manifest import SELECTOR

logger = logging.getLogger(__name__)

KINDS = ("jobs", "pods")
WATCH_TIMEOUT = 60
"""Seconds the server keeps one watch open before we resume it."""
IDLE_AFTER = 60.0
"""A watch nobody asked about for this long stops (a notebook whose jobs all
ended holds no connection open); the next question lists and watches again."""

Handler = Callable[[Mapping[str, Any]], None]


class ClusterWatch:
    """A cache of jobkit's Jobs and pods by name, fed by two watches in threads."""

    def __init__(self, api: KubeApi, on_pod: Handler, *, retry_pause: float = 1.0) -> None:
        self.api = api
        self.on_pod = on_pod
        self.retry_pause = retry_pause
        self.objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.resumes = 0
        """Watches restarted from a resourceVersion (after a drop or a timeout)."""
        self.relists = 0
        self._lock = threading.Lock()
        self._synced = {kind: threading.Event() for kind in KINDS}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.idle_after = IDLE_AFTER
        self._used = time.monotonic()

    # -- reading the cache -------------------------------------------------------------
    def synced(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self._synced.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not event.wait(left):
                return False
        return True

    def snapshot(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.objects[kind].values())

    # -- running -----------------------------------------------------------------------
    def touch(self) -> None:
        """Someone relies on this watch: keep it running for another ``idle_after``."""
        self._used = time.monotonic()

    @property
    def alive(self) -> bool:
        return not self._stop.is_set() and all(t.is_alive() for t in self._threads)

    def start(self) -> None:
        if self._threads:
            return
        for kind in KINDS:
            thread = threading.Thread(
                target=self._run, args=(kind,), name=f"jobkit-k8s-watch-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def load(self, kind: str) -> str | None:
        """LIST ``kind`` into the cache (replacing it); the list's resourceVersion."""
        listing = self.api.list(kind, SELECTOR)
        items = {_name(obj): obj for obj in listing.get("items") or ()}
        with self._lock:
            self.objects[kind] = items
        self._synced[kind].set()
        if kind == "pods":
            for pod in items.values():
                self.on_pod(pod)
        version = (listing.get("metadata") or {}).get("resourceVersion")
        return str(version) if version else None

    def _run(self, kind: str) -> None:
        version: str | None = None
        listed = False
        while not self._stop.is_set():
            if time.monotonic() - self._used > self.idle_after:
                self._stop.set()  # both kinds: the cache would go stale
                return
            try:
                if not listed:
                    version = self.load(kind)
                    listed = True
                    self.relists += 1
                version = self._follow(kind, version)
                self.resumes += 1
            except (_Gone, WatchExpired):
                listed = False
            except BackendError as exc:
                logger.warning("kubernetes %s watch interrupted: %s; resuming", kind, exc)
                self._stop.wait(self.retry_pause)
                self.resumes += 1
            except Exception as exc:  # never let the thread die: jobs would stop updating
                logger.warning("kubernetes %s watch failed: %s; resuming", kind, exc)
                self._stop.wait(self.retry_pause)

    def _follow(self, kind: str, version: str | None) -> str | None:
        """Apply watch events until the stream ends; the last resourceVersion seen."""
        for event in self.api.watch(kind, SELECTOR, version, WATCH_TIMEOUT):
            if self._stop.is_set():
                break
            kind_of_event = event["type"]
            obj = event["object"]
            if kind_of_event == "ERROR":
                if (obj or {}).get("code") == 410:
                    raise _Gone()
                continue
            seen = (obj.get("metadata") or {}).get("resourceVersion")
            if seen:
                version = str(seen)
            if kind_of_event == "BOOKMARK":
                continue
            with self._lock:
                if kind_of_event == "DELETED":
                    self.objects[kind].pop(_name(obj), None)
                else:
                    self.objects[kind][_name(obj)] = obj
            if kind == "pods":
                self.on_pod(obj if kind_of_event != "DELETED" else _deleted(obj))
        return version


class _Gone(Exception):
    """410: the resourceVersion is too old to resume from; list again."""


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name"))


def _deleted(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A deleted pod, marked so handlers can tell it from a live one."""
    marked = dict(pod)
    marked["metadata"] = {**(pod.get("metadata") or {}), "deletionTimestamp": "deleted"}
    return marked
