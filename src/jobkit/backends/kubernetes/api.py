"""The few Kubernetes API calls jobkit makes, and their errors in one line each.

The unmodified ``kubernetes`` client is used (imported when the backend is
first used), configured from ``[kubernetes]``: an ``api_server`` URL, else a
kubeconfig (``kubeconfig``/``context``, or ``$KUBECONFIG``), else the
in-cluster service account.  Responses are read as plain dicts, the shape
the manifests are written in.

Errors a user can act on, translated at this boundary::

    unreachable      -> BackendError naming the server and how it was found
    401              -> BackendError: the credentials were refused
    403              -> BackendError naming the verb, the resource and the namespace
                        (and the Role in backends/kubernetes/ that grants it)
    409 on create    -> SubmitError: a Job of that name exists
    422 / 400        -> SubmitError with the API's own message (what field, why)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from jobkit.errors import BackendError, ConfigError, SubmitError

from .settings import KubernetesSettings

T = TypeVar("T")

ROLE_HINT = (
    "apply backends/kubernetes/role.yaml and rolebinding.yaml (jobs, pods, pods/log "
    "in that namespace) for this user or service account"
)


class KubeApi:
    """Jobs and pods in one namespace, through the official client."""

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self._client = _api_client(settings)
        from kubernetes import client

        # Typed as Any: the client's stubs want model objects, we send and read dicts.
        self.batch: Any = client.BatchV1Api(self._client)
        self.core: Any = client.CoreV1Api(self._client)
        self.server = str(self._client.configuration.host)

    def close(self) -> None:
        self._client.close()

    # -- calls -----------------------------------------------------------------------
    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """POST the Job; any refusal is a SubmitError (nothing was created)."""
        name = manifest["metadata"]["name"]
        try:
            return self._json(
                "create",
                f"jobs/{name}",
                lambda: self.batch.create_namespaced_job(
                    self.namespace, manifest, _preload_content=False
                ),
            )
        except SubmitError:
            raise
        except BackendError as exc:
            raise SubmitError(str(exc)) from exc.__cause__

    def delete_job(self, name: str) -> bool:
        """Delete a Job and, in the background, its pods; False if it was gone."""
        try:
            self._json(
                "delete",
                f"jobs/{name}",
                lambda: self.batch.delete_namespaced_job(
                    name, self.namespace, propagation_policy="Background", _preload_content=False
                ),
            )
        except _NotFound:
            return False
        return True

    def patch_job(self, name: str, patch: dict[str, Any]) -> bool:
        """Merge-patch a Job (one request); False if it is gone."""
        try:
            self._json(
                "patch",
                f"jobs/{name}",
                lambda: self.batch.patch_namespaced_job(
                    name,
                    self.namespace,
                    patch,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                ),
            )
        except _NotFound:
            return False
        return True

    def delete_pod(self, name: str) -> bool:
        try:
            self._json(
                "delete",
                f"pods/{name}",
                lambda: self.core.delete_namespaced_pod(
                    name, self.namespace, _preload_content=False
                ),
            )
        except _NotFound:
            return False
        return True

    def list(self, kind: str, selector: str) -> dict[str, Any]:
        """``{"items": [...], "metadata": {"resourceVersion": ...}}`` of jobs or pods."""
        call = self.batch.list_namespaced_job if kind == "jobs" else self.core.list_namespaced_pod
        return self._json(
            "list",
            kind,
            lambda: call(self.namespace, label_selector=selector, _preload_content=False),
        )

    def watch(
        self, kind: str, selector: str, resource_version: str | None, timeout: int
    ) -> Iterator[dict[str, Any]]:
        """Raw watch events (``{"type", "object"}``) until the server ends the stream."""
        from kubernetes import watch as watch_module

        watch: Any = watch_module
        call = self.batch.list_namespaced_job if kind == "jobs" else self.core.list_namespaced_pod
        stream = watch.Watch()
        kwargs: dict[str, Any] = {
            "label_selector": selector,
            "timeout_seconds": timeout,
            "allow_watch_bookmarks": True,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        try:
            for event in stream.stream(call, self.namespace, **kwargs):
                yield {"type": event["type"], "object": event["raw_object"]}
        except Exception as exc:
            raise self._translate(exc, "watch", kind) from exc
        finally:
            stream.stop()

    def read_log(self, pod: str) -> str:
        try:
            response: Any = self._call(
                "get",
                f"pods/{pod}/log",
                lambda: self.core.read_namespaced_pod_log(
                    pod, self.namespace, _preload_content=False
                ),
            )
        except _NotFound:
            return ""
        data: bytes = response.data
        return data.decode("utf-8", "replace")

    def version(self) -> tuple[int, int] | None:
        """The server's (major, minor), or None if it does not say."""
        from kubernetes import client

        try:
            info = client.VersionApi(self._client).get_code()
        except Exception:
            return None
        try:
            return int(info.major), int(str(info.minor).rstrip("+"))
        except (TypeError, ValueError):
            return None

    # -- plumbing --------------------------------------------------------------------
    def _json(self, verb: str, resource: str, call: Callable[[], Any]) -> dict[str, Any]:
        response = self._call(verb, resource, call)
        data: dict[str, Any] = json.loads(response.data or b"{}")
        return data

    def _call(self, verb: str, resource: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as exc:
            raise self._translate(exc, verb, resource) from exc

    def _translate(self, exc: Exception, verb: str, resource: str) -> Exception:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        where = f"{resource} in namespace {self.namespace!r} at {self.server}"
        if isinstance(exc, ApiException):
            status = exc.status
            message = _api_message(exc)
            if status == 404:
                return _NotFound(f"{where}: not found")
            if status == 410:
                return WatchExpired(f"{where}: the watch's resourceVersion expired (410)")
            if status == 401:
                return BackendError(
                    f"the Kubernetes API refused our credentials (401) to {verb} {where}: "
                    "refresh them (kubeconfig token, client certificate) or choose another "
                    "context with [kubernetes] context"
                )
            if status == 403:
                return BackendError(
                    f"forbidden (403): this identity may not {verb} {resource.split('/')[0]} "
                    f"in namespace {self.namespace!r} ({message}); {ROLE_HINT}"
                )
            if status == 409:
                return AlreadyExists(f"{where} already exists (409): {message}")
            if status in (400, 422):
                return SubmitError(
                    f"the Kubernetes API rejected the {resource.split('/')[0]} ({status}): "
                    f"{message}; check the resources and kubernetes={{...}} options "
                    "(`jobkit plan` prints the manifest)"
                )
            return BackendError(f"Kubernetes API error {status} on {verb} {where}: {message}")
        if isinstance(exc, (HTTPError, OSError)):
            return BackendError(
                f"cannot reach the Kubernetes API at {self.server} to {verb} {resource} "
                f"({_line(exc)}): check [kubernetes] api_server/kubeconfig/context and that "
                "the cluster is up"
            )
        return exc


class AlreadyExists(SubmitError):
    """409 on create: a Job of that name exists (for a resubmitted attempt's
    deterministic name: another jobkit process created it first)."""


class WatchExpired(BackendError):
    """410 Gone: too old a resourceVersion to resume a watch from; list again."""


class _NotFound(BackendError):
    """404: callers decide whether that is fine (deleting what is gone)."""


def _api_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body)
        return _line(body.get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return _line(exc.reason or exc)


def _line(value: object) -> str:
    return " ".join(str(value).split())


def _api_client(settings: KubernetesSettings) -> Any:
    try:
        from kubernetes import client
        from kubernetes import config as config_module
    except ImportError as exc:
        raise ConfigError(
            f"the kubernetes backend needs the kubernetes client ({exc}); install it with: "
            "pip install 'jobkit[kubernetes]'"
        ) from exc
    config: Any = config_module
    if settings.api_server:
        configuration = client.Configuration()
        configuration.host = settings.api_server.rstrip("/")
        return client.ApiClient(configuration)
    try:
        if settings.kubeconfig or settings.context or _has_kubeconfig():
            path = os.path.expanduser(settings.kubeconfig) if settings.kubeconfig else None
            return config.new_client_from_config(
                config_file=path or os.environ.get("KUBECONFIG") or None, context=settings.context
            )
        config.load_incluster_config()
        return client.ApiClient()
    except Exception as exc:
        raise ConfigError(
            f"no usable Kubernetes configuration ({_line(exc)}): set [kubernetes] kubeconfig "
            "and context, or api_server, or run inside a cluster"
        ) from exc


def _has_kubeconfig() -> bool:
    from pathlib import Path

    return bool(os.environ.get("KUBECONFIG")) or Path("~/.kube/config").expanduser().exists()
