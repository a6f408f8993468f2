"""The test-facing handle of the emulated API server, and the thread that serves it."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock

from .errors import _REASONS, ApiError, _details, already_exists, forbidden, not_found
from .kinds import _KINDS_BY_PLURAL, TEST_NAMESPACE, Obj, T, find_kind
from .routes import ApiRequest, _Fault
from .server import ApiServer

# -- the facade tests use -----------------------------------------------------------------


class K8sEmulator:
    """The test-facing handle of the emulated API server (safe to call from any thread)."""

    namespace = TEST_NAMESPACE

    def __init__(self, server: ApiServer, loop: asyncio.AbstractEventLoop, url: str) -> None:
        self.server = server
        self.loop = loop
        self.url = url

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the server's event loop (where its state lives) and return its result."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    # -- clients ------------------------------------------------------------------

    def configuration(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        configuration.connection_pool_maxsize = 32
        if self.server.token:
            configuration.api_key = {"authorization": f"Bearer {self.server.token}"}
        return configuration

    def api_client(self, user_agent: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server (close it when done)."""
        from kubernetes import client

        api = client.ApiClient(self.configuration())
        if user_agent:
            api.user_agent = user_agent
        return api

    def kubeconfig(self, path: Path, namespace: str = TEST_NAMESPACE) -> Path:
        """Write a kubeconfig for this server (context ``emulator``) to ``path``."""
        user: Obj = {"token": self.server.token} if self.server.token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": user}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    # -- state --------------------------------------------------------------------

    def reset(self) -> None:
        self.call(self.server.reset)

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object (a deep copy), or None."""
        obj = self.call(self.server.read_object, find_kind(resource), namespace, name)
        return copy.deepcopy(obj)

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return copy.deepcopy(self.call(self.server.objects_of, find_kind(resource), namespace))

    def history(self, resource: str, namespace: str | None, name: str) -> list[tuple[str, Obj]]:
        """Every event of one object since the last reset: (ADDED|MODIFIED|DELETED, object)."""
        return copy.deepcopy(self.call(self.server.history, find_kind(resource), namespace, name))

    def put(self, obj: Obj) -> Obj:
        """Create an object behind the API's back (no request is logged)."""
        return copy.deepcopy(self.call(self.server.put_object, obj))

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str | None:
        """A container's log so far; None before it started."""
        if container is None:
            obj = self.get("pods", namespace, pod)
            if obj is None:
                return None
            container = obj["spec"]["containers"][0]["name"]
        return self.call(self.server.log_text, namespace, pod, container)

    # -- request log ----------------------------------------------------------------

    def requests(
        self,
        verb: str | None = None,
        resource: str | None = None,
        *,
        include_controller: bool = False,
    ) -> list[ApiRequest]:
        """API requests answered since the reset, oldest first, without the controller's own."""
        answered: list[ApiRequest] = self.call(list, self.server.api_requests)
        return [
            r
            for r in answered
            if (include_controller or not r.from_controller)
            and (verb is None or r.verb == verb)
            and (resource is None or r.resource == resource)
        ]

    def clear_requests(self) -> None:
        self.call(self.server.api_requests.clear)

    # -- hooks --------------------------------------------------------------------

    def drop_watches(self, abort: bool = False) -> None:
        """End every open watch and ``follow`` log stream: cleanly (the API server's
        own timeout) or, with ``abort``, by resetting the TCP connection."""
        self.call(self.server.drop_streams, abort)

    def stall_creates(self, seconds: float) -> None:
        """Store each client's create at once but answer it ``seconds`` later (0: at once),
        so a test can kill the client after the cluster was told, before it knew."""

        def stall() -> None:
            self.server.stall_creates = seconds

        self.call(stall)

    def compact(self) -> None:
        """Forget the watch history (etcd compaction): resuming from an older
        resourceVersion answers an ERROR event with 410 Expired."""
        self.call(self.server.compact)

    def fail(
        self,
        verb: str | None,
        resource: str | None,
        code: int = 500,
        message: str | None = None,
        *,
        namespace: str | None = None,
        name: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer the next ``times`` matching requests (None: all) with an error ``Status``.

        ``verb`` is an RBAC verb (create, get, list, watch, update, patch, delete,
        deletecollection), ``resource`` a resource as RBAC names it (``jobs``,
        ``pods/log``); None matches any. Requests of the controller are never failed.
        403 gets the RBAC wording by default, 409 ``AlreadyExists``.
        """
        kind = find_kind(resource) if resource else _KINDS_BY_PLURAL["jobs"]
        if message is None and code == 403:
            error = forbidden(
                self.server.user, verb or "get", kind, resource or kind.plural, namespace, name
            )
        elif message is None and code == 409:
            error = already_exists(kind, name or "")
        elif message is None and code == 404:
            error = not_found(kind, name or "")
        else:
            error = ApiError(
                code, message or _REASONS.get(code, "error"), details=_details(kind, name)
            )
        self.call(self.server.add_fault, _Fault(verb, resource, namespace, name, error, times))

    def require_token(self, token: str | None) -> None:
        """Answer 401 to requests without ``Authorization: Bearer <token>`` (None: open)."""
        self.call(setattr, self.server, "token", token)

    def enforce_role(self, rules: list[Obj] | None) -> None:
        """Answer 403 (RBAC wording) to requests outside these Role ``rules`` (None: allow all)."""
        self.call(setattr, self.server, "role_rules", copy.deepcopy(rules))

    def set_version(self, major: str, minor: str) -> None:
        """What ``/version`` answers (default 1.33; reset() does not change it)."""
        self.call(setattr, self.server, "server_version", (major, minor))

    def take_errors(self) -> list[str]:
        """Internal errors of the server since the last call (a bug in the emulator)."""

        def take() -> list[str]:
            errors = list(self.server.internal_errors)
            self.server.internal_errors.clear()
            return errors

        return self.call(take)


class ServerThread:
    """The session's server: an asyncio loop in a daemon thread serving :class:`ApiServer`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.emulator: K8sEmulator | None = None
        self.thread = threading.Thread(target=self._main, name="k8s-emulator", daemon=True)

    def start(self) -> K8sEmulator:
        self.thread.start()
        if not self._ready.wait(30) or self.emulator is None:
            raise RuntimeError(f"the Kubernetes API emulator did not start: {self._failure!r}")
        return self.emulator

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as error:  # reported by start()
            self._failure = error
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ApiServer() as handler, kmock.Server(handler, user_agent="") as server:
            self.emulator = K8sEmulator(handler, self.loop, str(server.url).rstrip("/"))
            self._ready.set()
            await self._stop.wait()
            handler.drop_streams()
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
        if not self.thread.is_alive():
            self.loop.close()
