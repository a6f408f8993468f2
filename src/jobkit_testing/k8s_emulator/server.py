"""The API server: objects, verbs, watch, garbage collection and pod logs over real HTTP.

:class:`ApiServer` subclasses kmock's stateless ``KubernetesScaffold`` (HTTP
server, API discovery, ``Status`` error bodies) and keeps the object store.
It is one class over 1,000 lines because its verbs, watches and collector
share one object store, one resourceVersion counter and one event history
under the asyncio loop; the parts that stand alone (kinds, errors,
selectors, patches, validation, routes) are sibling modules.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import json
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
from typing_extensions import override

from .errors import ApiError, already_exists, bad_request, conflict, forbidden, invalid, not_found
from .kinds import (
    _KINDS_BY_KIND,
    _KINDS_BY_PLURAL,
    KINDS,
    TEST_NAMESPACE,
    Kind,
    Obj,
    log,
    now_rfc3339,
    random_suffix,
    truthy,
)
from .patches import json_patch, merge_patch, strategic_merge_patch
from .routes import ApiRequest, Route, _Event, _Fault, _LogBuffer, _strip_list_item, parse_route
from .selectors import (
    Requirement,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from .validation import (
    _check_labels,
    _check_name,
    _check_quantities,
    _default_job,
    _default_pod_spec,
    _validate_job,
    _validate_pod_spec,
)


@attrs.define(kw_only=True, eq=False)
class ApiServer(kmock.KubernetesScaffold):
    """The emulated API server; runs in the event loop of the server thread.

    Everything here runs on that one loop: the state needs no locks. Other
    threads use the :class:`K8sEmulator` facade, which hops onto the loop.
    """

    gc_delay: float = 0.05  # seconds between a delete and the garbage collector's pass
    user: str = f"system:serviceaccount:{TEST_NAMESPACE}:jobkit"  # for 403 messages
    token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
    role_rules: list[Obj] | None = None  # when set, requests outside these RBAC rules get 403
    server_version: tuple[str, str] = ("1", "33")

    _objects: dict[tuple[str, str, str], Obj] = attrs.field(factory=dict, init=False)
    _uids: dict[str, tuple[str, str, str]] = attrs.field(factory=dict, init=False)
    _events: list[_Event] = attrs.field(factory=list, init=False)
    _event_rvs: list[int] = attrs.field(factory=list, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _compacted_rv: int = attrs.field(default=0, init=False)
    _logs: dict[tuple[str, str, str], _LogBuffer] = attrs.field(factory=dict, init=False)
    _faults: list[_Fault] = attrs.field(factory=list, init=False)
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _drops: int = attrs.field(default=0, init=False)
    _abort_drops: bool = attrs.field(default=False, init=False)
    _gc_handle: asyncio.TimerHandle | None = attrs.field(default=None, init=False)
    stall_creates: float = attrs.field(default=0.0, init=False)
    """Seconds a client's create waits for its answer after the object was stored
    (a slow API server: the caller may die before it learns what it created)."""
    api_requests: list[ApiRequest] = attrs.field(factory=list, init=False)
    internal_errors: list[str] = attrs.field(factory=list, init=False)  # bugs of the emulator

    @override
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in KINDS:
            verbs = {
                "create",
                "get",
                "list",
                "watch",
                "update",
                "patch",
                "delete",
                "deletecollection",
            }
            self.resources[kmock.resource(kind.group, kind.version, kind.plural)] = (
                kmock.ResourceInfo(
                    kind=kind.kind,
                    namespaced=kind.namespaced,
                    singular=kind.kind.lower(),
                    verbs=verbs,
                    subresources=set(kind.subresources),
                )
            )
        self.reset()

    # -- state --------------------------------------------------------------------

    def reset(self) -> None:
        """An empty cluster with namespaces ``default`` and ``jobkit``; streams dropped."""
        self.drop_streams()
        self._objects.clear()
        self._uids.clear()
        self._events.clear()
        self._event_rvs.clear()
        self._compacted_rv = self._rv
        self._logs.clear()
        self._faults.clear()
        self.stall_creates = 0.0
        self.api_requests.clear()
        self.internal_errors.clear()
        self.token = None
        self.role_rules = None
        if self._gc_handle is not None:
            self._gc_handle.cancel()
            self._gc_handle = None
        for namespace in ("default", TEST_NAMESPACE):
            self.put_object(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )

    def put_object(self, obj: Obj) -> Obj:
        """Create ``obj`` behind the API's back (no request is logged); returns it."""
        kind = _KINDS_BY_KIND[obj["kind"]]
        namespace = obj.get("metadata", {}).get("namespace") if kind.namespaced else None
        return self._create(kind, namespace, copy.deepcopy(obj), {})

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    def _changed_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def drop_streams(self, abort: bool = False) -> None:
        """End every open watch and log-follow stream (cleanly, or by resetting the connection)."""
        self._drops += 1
        self._abort_drops = abort
        self._wake()

    def compact(self) -> None:
        """Forget the event history: watches from an older resourceVersion get 410 Expired."""
        self._events.clear()
        self._event_rvs.clear()
        self._compacted_rv = self._rv

    def _key(self, kind: Kind, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (kind.plural, namespace or "", name)

    def read_object(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        return self._objects.get(self._key(kind, namespace, name))

    def objects_of(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        return [
            obj
            for (plural, ns, _), obj in sorted(self._objects.items())
            if plural == kind.plural and (namespace is None or ns == namespace)
        ]

    def history(self, kind: Kind, namespace: str | None, name: str) -> list[tuple[str, Obj]]:
        return [
            (event.type, event.obj)
            for event in self._events
            if event.plural == kind.plural
            and event.obj["metadata"].get("namespace", "") == (namespace or "")
            and event.obj["metadata"]["name"] == name
        ]

    def _commit(self, kind: Kind, event_type: str, obj: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        uid = obj["metadata"]["uid"]
        if event_type == "DELETED":
            self._objects.pop(key, None)
            self._uids.pop(uid, None)
            if kind.plural == "pods":
                for log_key in [k for k in self._logs if k[:2] == key[1:]]:
                    del self._logs[log_key]
        else:
            self._objects[key] = obj
            self._uids[uid] = key
        self._events.append(_Event(self._rv, kind.plural, event_type, obj, old))
        self._event_rvs.append(self._rv)
        self._wake()
        if event_type == "DELETED" or obj["metadata"].get("ownerReferences"):
            self._schedule_gc()
        return obj

    # -- logs (written by the controller, which plays kubelet) ---------------------------

    def open_log(self, namespace: str, pod: str, container: str) -> None:
        self._logs[(namespace, pod, container)] = _LogBuffer()
        self._wake()

    def append_log(self, namespace: str, pod: str, container: str, data: bytes) -> None:
        buffer = self._logs.get((namespace, pod, container))
        if buffer is not None and not buffer.closed:
            buffer.append(data)
            self._wake()

    def close_log(self, namespace: str, pod: str, container: str) -> None:
        buffer = self._logs.get((namespace, pod, container))
        if buffer is not None:
            buffer.close()
            self._wake()

    def log_text(self, namespace: str, pod: str, container: str) -> str | None:
        buffer = self._logs.get((namespace, pod, container))
        if buffer is None:
            return None
        return b"".join(line for _, line in buffer.lines).decode(
            errors="replace"
        ) + buffer.partial.decode(errors="replace")

    # -- faults -------------------------------------------------------------------

    def add_fault(self, fault: _Fault) -> None:
        self._faults.append(fault)

    def _take_fault(
        self, verb: str, resource: str, namespace: str | None, name: str | None
    ) -> ApiError | None:
        for fault in self._faults:
            if fault.verb not in (None, verb):
                continue
            if (
                fault.resource not in (None, resource)
                and fault.resource != resource.split("/")[0] + "/*"
            ):
                continue
            if fault.namespace not in (None, namespace) or fault.name not in (None, name):
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault.error
        return None

    def _authorize(
        self, verb: str, kind: Kind, resource: str, namespace: str | None, name: str | None
    ) -> None:
        if self.role_rules is None:
            return
        for rule in self.role_rules:
            groups = rule.get("apiGroups") or []
            resources = rule.get("resources") or []
            verbs = rule.get("verbs") or []
            names = rule.get("resourceNames") or []
            if (
                ("*" in groups or kind.group in groups)
                and ("*" in resources or resource in resources)
                and ("*" in verbs or verb in verbs)
                and (not names or name in names)
            ):
                return
        raise forbidden(self.user, verb, kind, resource, namespace, name)

    # -- HTTP ---------------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path
        if path.rstrip("/") == "/version":
            major, minor = self.server_version
            return aiohttp.web.json_response(
                {
                    "major": major,
                    "minor": minor,
                    "gitVersion": f"v{major}.{minor}.0",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.23.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        route = parse_route(path)
        if route is None:  # kmock's scaffold: /, /api, /apis, /apis/GROUP[/VERSION] discovery
            if len(path) > 1 and path.endswith("/"):  # clients ask for /apis/batch/v1/
                raw_request = raw_request.clone(rel_url=path.rstrip("/"))
            return await super().__call__(raw_request)
        body = await raw_request.read()
        params = dict(raw_request.query)
        record = ApiRequest(
            verb=self.verb(raw_request.method, route, params),
            resource=route.kind.plural + (f"/{route.subresource}" if route.subresource else "")
            if route.kind
            else path,
            namespace=route.namespace,
            name=route.name,
            params=params,
            body=None,
            user_agent=raw_request.headers.get("User-Agent", ""),
        )
        self.api_requests.append(record)
        try:
            response = await self._serve(raw_request, route, record, body, params)
        except ApiError as error:
            response = aiohttp.web.json_response(error.status(), status=error.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as error:  # a bug in the emulator: answer 500 and fail the test
            log.exception("k8s emulator: %s %s", raw_request.method, raw_request.path_qs)
            self.internal_errors.append(f"{raw_request.method} {raw_request.path_qs}: {error!r}")
            response = aiohttp.web.json_response(
                ApiError(500, f"emulator error: {error!r}").status(), status=500
            )
        record.status = response.status
        return response

    @staticmethod
    def verb(method: str, route: Route, params: Mapping[str, str]) -> str:
        if method == "GET":
            if truthy(params.get("watch")) or route.watch_path:
                return "watch"
            return "get" if route.name else "list"
        return {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if route.name else "deletecollection",
        }.get(method, method.lower())

    async def _serve(
        self,
        raw_request: aiohttp.web.BaseRequest,
        route: Route,
        record: ApiRequest,
        body: bytes,
        params: dict[str, str],
    ) -> aiohttp.web.StreamResponse:
        kind = route.kind
        if kind is None or (route.namespace is not None and not kind.namespaced):
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if route.subresource and route.subresource not in kind.subresources:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        controller = record.from_controller
        authorization = raw_request.headers.get("Authorization")
        if self.token is not None and not controller and authorization != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if not controller:
            self._authorize(record.verb, kind, record.resource, route.namespace, route.name)
            fault = self._take_fault(record.verb, record.resource, route.namespace, route.name)
            if fault is not None:
                raise fault
        data: Any = None
        if body:
            try:
                data = json.loads(body)
            except ValueError as error:
                content_type = raw_request.headers.get("Content-Type", "")
                if "yaml" in content_type:
                    raise ApiError(415, f"the emulator does not decode {content_type}") from error
                raise bad_request(f"error decoding request body: {error}") from error
        record.body = data
        method, verb = raw_request.method, record.verb
        if verb == "watch":
            return await self._watch(raw_request, kind, route, params)
        if method == "GET" and route.subresource == "log":
            return await self._serve_log(raw_request, kind, route, params)
        if verb == "list":
            return aiohttp.web.json_response(self._list(kind, route.namespace, params))
        if verb == "get":
            obj = self.read_object(kind, route.namespace, str(route.name))
            if obj is None:
                raise not_found(kind, str(route.name))
            return aiohttp.web.json_response(obj)
        if params.get("dryRun") not in (None, "All"):
            raise bad_request(f"Invalid dry run value: {params['dryRun']} (only All is supported)")
        dry_run = params.get("dryRun") == "All"
        if route.subresource == "log":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if verb == "create":
            if route.name:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource"
                )
            obj = self._create(kind, route.namespace, data, params, dry_run=dry_run)
            if self.stall_creates and not controller:
                await asyncio.sleep(self.stall_creates)
            return aiohttp.web.json_response(obj, status=201)
        if verb in ("update", "patch"):
            current = self.read_object(kind, route.namespace, str(route.name))
            if current is None:
                raise not_found(kind, str(route.name))
            if verb == "patch":
                data = self._apply_patch(
                    kind, current, data, raw_request.headers.get("Content-Type", "")
                )
            obj = self._update(kind, current, data, route.subresource, dry_run=dry_run)
            return aiohttp.web.json_response(obj)
        if verb == "delete":
            status, answer = self._delete(
                kind, route.namespace, str(route.name), data, params, dry_run=dry_run
            )
            return aiohttp.web.json_response(answer, status=status)
        if verb == "deletecollection":
            return aiohttp.web.json_response(
                self._delete_collection(kind, route.namespace, data, params)
            )
        raise ApiError(405, "the server does not allow this method on the requested resource")

    # -- verbs --------------------------------------------------------------------

    def _matching(self, kind: Kind, namespace: str | None, params: Mapping[str, str]) -> list[Obj]:
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(kind, params.get("fieldSelector"))
        return [
            obj
            for obj in self.objects_of(kind, namespace)
            if labels_match(labels, obj["metadata"].get("labels")) and fields_match(fields, obj)
        ]

    def _list(self, kind: Kind, namespace: str | None, params: Mapping[str, str]) -> Obj:
        items = self._matching(kind, namespace, params)
        metadata: Obj = {"resourceVersion": str(self._rv)}
        start = params.get("continue")
        if start:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(start.encode())))
            except ValueError as error:
                raise bad_request(f"continue key is not valid: {error}") from error
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
            ]
        limit = int(params.get("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = json.dumps([last.get("namespace", ""), last["name"]]).encode()
            metadata["continue"] = base64.urlsafe_b64encode(token).decode()
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": metadata,
            "items": [_strip_list_item(obj) for obj in items],
        }

    def _create(
        self,
        kind: Kind,
        namespace: str | None,
        data: Any,
        params: Mapping[str, str],
        dry_run: bool = False,
    ) -> Obj:
        if not isinstance(data, dict):
            raise bad_request(
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json"
            )
        obj = copy.deepcopy(data)
        if (
            obj.get("apiVersion", kind.api_version) != kind.api_version
            or obj.get("kind", kind.kind) != kind.kind
        ):
            raise bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match "
                f"the expected API version ({kind.api_version})"
                if obj.get("apiVersion") != kind.api_version
                else f'{obj.get("kind")} in version "{kind.version}" cannot be handled '
                f"as a {kind.kind}"
            )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise ApiError(404, "the server could not find the requested resource")
            if self.read_object(_KINDS_BY_PLURAL["namespaces"], None, namespace) is None:
                raise not_found(_KINDS_BY_PLURAL["namespaces"], namespace)
            ns_obj = self.read_object(_KINDS_BY_PLURAL["namespaces"], None, namespace)
            if ns_obj and ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    f'{kind.plural} "{meta.get("name", "")}" is forbidden: '
                    "unable to create new content "
                    f"in namespace {namespace} because it is being terminated",
                    "Forbidden",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + random_suffix()
            else:
                raise invalid(
                    kind,
                    "",
                    [("metadata.name", "Required value: name or generateName is required")],
                )
        name = meta["name"]
        causes = _check_name(kind, name) + _check_labels(meta)
        if causes:
            raise invalid(kind, name, causes)
        if self.read_object(kind, namespace, name) is not None:
            raise already_exists(kind, name)
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        self._default(kind, obj)
        self._validate(kind, obj)
        if dry_run:
            return obj
        return self._commit(kind, "ADDED", obj, None)

    def _default(self, kind: Kind, obj: Obj) -> None:
        if kind.plural == "jobs":
            _check_quantities(kind, obj)
            _default_job(obj)
            obj["status"] = {}
        elif kind.plural == "pods":
            _check_quantities(kind, obj)
            spec = obj.setdefault("spec", {})
            _default_pod_spec(spec)
            spec.setdefault("serviceAccountName", "default")
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        elif kind.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
        elif kind.plural == "secrets":
            data = obj.setdefault("data", {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault("type", "Opaque")

    def _validate(self, kind: Kind, obj: Obj) -> None:
        if kind.plural == "jobs":
            causes = _validate_job(obj)
        elif kind.plural == "pods":
            causes = _validate_pod_spec(obj.get("spec"), "spec", job=False)
        else:
            causes = []
        if causes:
            raise invalid(kind, obj["metadata"]["name"], causes)

    def _apply_patch(self, kind: Kind, current: Obj, patch: Any, content_type: str) -> Obj:
        media = content_type.split(";")[0].strip()
        if media == "application/json-patch+json":
            return json_patch(copy.deepcopy(current), patch)
        if media == "application/merge-patch+json":
            merged: Obj = merge_patch(current, patch)
            return merged
        if media == "application/strategic-merge-patch+json":
            result = strategic_merge_patch(current, patch)
            assert isinstance(result, dict)
            return result
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, "
            f"application/strategic-merge-patch+json (the emulator does not do {media or 'that'})",
            "UnsupportedMediaType",
        )

    def _update(
        self, kind: Kind, current: Obj, data: Any, subresource: str | None, dry_run: bool = False
    ) -> Obj:
        if not isinstance(data, dict):
            raise bad_request("the body of the request was in an unknown format")
        meta = data.get("metadata") or {}
        name = current["metadata"]["name"]
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )
        if meta.get("resourceVersion") not in (None, "", current["metadata"]["resourceVersion"]):
            raise conflict(kind, name)
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(data.get("status") or {})
        else:
            new = copy.deepcopy(data)
            new["apiVersion"], new["kind"] = kind.api_version, kind.kind
            new_meta = new.setdefault("metadata", {})
            for field in (
                "uid",
                "creationTimestamp",
                "namespace",
                "deletionTimestamp",
                "generation",
            ):
                if field in current["metadata"]:
                    new_meta[field] = current["metadata"][field]
                else:
                    new_meta.pop(field, None)
            new_meta["name"] = name
            if "status" in current or "status" in new:
                new["status"] = copy.deepcopy(current.get("status", {}))
            causes = _check_labels(new_meta)
            if causes:
                raise invalid(kind, name, causes)
            if kind.plural == "jobs":
                self._check_job_update(kind, current, new)
            if new.get("spec") != current.get("spec"):
                new_meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return current  # a no-op update neither bumps the resourceVersion nor sends an event
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._commit(kind, "DELETED", new, current)
            return new
        self._commit(kind, "MODIFIED", new, current)
        if new["metadata"].get("deletionTimestamp"):
            self._schedule_gc()
        return new

    @staticmethod
    def _check_job_update(kind: Kind, current: Obj, new: Obj) -> None:
        old_spec, new_spec = current.get("spec") or {}, new.get("spec") or {}
        name = current["metadata"]["name"]
        new_template = copy.deepcopy(new_spec.get("template") or {})
        if isinstance(new_template.get("spec"), dict):
            _default_pod_spec(new_template["spec"])
        causes = []
        if new_spec.get("selector") != old_spec.get("selector"):
            causes.append(("spec.selector", "Invalid value: field is immutable"))
        if new_template != old_spec.get("template") and not old_spec.get("suspend"):
            causes.append(("spec.template", "Invalid value: field is immutable"))
        for field in ("completionMode", "backoffLimitPerIndex"):
            if new_spec.get(field) != old_spec.get(field):
                causes.append((f"spec.{field}", "Invalid value: field is immutable"))
        if causes:
            raise invalid(kind, name, causes)

    def _delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        options: Any,
        params: Mapping[str, str],
        dry_run: bool = False,
    ) -> tuple[int, Obj]:
        current = self.read_object(kind, namespace, name)
        if current is None:
            raise not_found(kind, name)
        options = options if isinstance(options, dict) else {}
        preconditions = options.get("preconditions") or {}
        meta = current["metadata"]
        if preconditions.get("uid") not in (None, meta["uid"]):
            raise conflict(
                kind,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        if preconditions.get("resourceVersion") not in (None, meta["resourceVersion"]):
            raise conflict(
                kind,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        policy = options.get("propagationPolicy") or params.get("propagationPolicy")
        orphan = options.get("orphanDependents", params.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if truthy(str(orphan)) else "Background"
        if policy is None:
            # batch/v1 Jobs (and a few other legacy kinds) orphan their pods by default.
            policy = "Orphan" if kind.plural == "jobs" else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise invalid(
                kind,
                name,
                [
                    (
                        "propagationPolicy",
                        f'Unsupported value: "{policy}": supported values: '
                        '"Foreground", "Background", "Orphan"',
                    )
                ],
            )
        if dry_run:
            return 200, current
        if meta.get("deletionTimestamp"):
            return 202, current
        return self._remove(kind, current, policy)

    def _remove(self, kind: Kind, current: Obj, policy: str) -> tuple[int, Obj]:
        meta = current["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if kind.plural == "namespaces":
            finalizers = finalizers or ["kubernetes"]
        elif policy == "Orphan":
            finalizers.append("orphan")
        elif policy == "Foreground":
            finalizers.append("foregroundDeletion")
        if finalizers:
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["finalizers"] = finalizers
            if kind.plural == "namespaces":
                new["status"] = {"phase": "Terminating"}
            self._commit(kind, "MODIFIED", new, current)
            self._schedule_gc()
            return 202, new
        deleted = copy.deepcopy(current)
        self._commit(kind, "DELETED", deleted, current)
        if kind.plural == "pods":
            return 200, deleted  # the pod registry returns the deleted object
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": meta["name"],
                "group": kind.group,
                "kind": kind.plural,
                "uid": meta["uid"],
            },
        }

    def _delete_collection(
        self, kind: Kind, namespace: str | None, options: Any, params: Mapping[str, str]
    ) -> Obj:
        items = self._matching(kind, namespace, params)
        for obj in items:
            meta = obj["metadata"]
            self._delete(kind, meta.get("namespace"), meta["name"], options, params)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [_strip_list_item(obj) for obj in items],
        }

    # -- garbage collection -------------------------------------------------------------

    def _schedule_gc(self) -> None:
        if self._gc_handle is None:
            loop = asyncio.get_running_loop()
            self._gc_handle = loop.call_later(self.gc_delay, self._collect_garbage)

    def _collect_garbage(self) -> None:
        """One pass of the garbage collector and the namespace controller."""
        self._gc_handle = None
        try:
            for _ in range(100):
                if not self._collect_once():
                    break
        except Exception as error:  # pragma: no cover - a bug in the emulator
            log.exception("k8s emulator: garbage collector")
            self.internal_errors.append(f"garbage collector: {error!r}")

    def _dependents(self, uid: str) -> list[tuple[Kind, Obj]]:
        return [
            (_KINDS_BY_PLURAL[plural], obj)
            for (plural, _, _), obj in list(self._objects.items())
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _drop_finalizer(self, kind: Kind, obj: Obj, finalizer: str) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
            self._commit(kind, "DELETED", new, obj)
        else:
            self._commit(kind, "MODIFIED", new, obj)

    def _collect_once(self) -> bool:
        for (plural, _namespace, _name), obj in list(self._objects.items()):
            kind = _KINDS_BY_PLURAL[plural]
            meta = obj["metadata"]
            finalizers = meta.get("finalizers") or []
            if meta.get("deletionTimestamp"):
                if kind.plural == "namespaces" and "kubernetes" in finalizers:
                    content = [
                        (k, o)
                        for (p, ns, _), o in self._objects.items()
                        if ns == meta["name"]
                        for k in [_KINDS_BY_PLURAL[p]]
                    ]
                    for content_kind, content_obj in content:
                        if not content_obj["metadata"].get("deletionTimestamp"):
                            self._remove(content_kind, content_obj, "Background")
                    if not content:
                        self._drop_finalizer(kind, obj, "kubernetes")
                    return True
                if "orphan" in finalizers:
                    for dep_kind, dep in self._dependents(meta["uid"]):
                        new = copy.deepcopy(dep)
                        refs = [
                            r
                            for r in dep["metadata"]["ownerReferences"]
                            if r.get("uid") != meta["uid"]
                        ]
                        if refs:
                            new["metadata"]["ownerReferences"] = refs
                        else:
                            del new["metadata"]["ownerReferences"]
                        self._commit(dep_kind, "MODIFIED", new, dep)
                    self._drop_finalizer(kind, obj, "orphan")
                    return True
                if "foregroundDeletion" in finalizers:
                    dependents = self._dependents(meta["uid"])
                    for dep_kind, dep in dependents:
                        if not dep["metadata"].get("deletionTimestamp"):
                            self._remove(dep_kind, dep, "Foreground")
                    if not self._dependents(meta["uid"]):
                        self._drop_finalizer(kind, obj, "foregroundDeletion")
                        return True
            refs = meta.get("ownerReferences") or []
            if (
                refs
                and all(ref.get("uid") not in self._uids for ref in refs)
                and not meta.get("deletionTimestamp")
            ):
                self._remove(kind, obj, "Background")
                return True
        return False

    # -- watch --------------------------------------------------------------------

    def _visible(
        self,
        event: _Event,
        kind: Kind,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[tuple[str, bool, str]],
    ) -> tuple[str, Obj] | None:
        if event.plural != kind.plural:
            return None

        def matches(obj: Obj | None) -> bool:
            return (
                obj is not None
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
                and labels_match(labels, obj["metadata"].get("labels"))
                and fields_match(fields, obj)
            )

        now, before = matches(event.obj), matches(event.old)
        if event.type == "ADDED":
            return ("ADDED", event.obj) if now else None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if before or now else None
        if now and before:
            return "MODIFIED", event.obj
        if now:
            return "ADDED", event.obj
        if before:
            return "DELETED", event.obj
        return None

    async def _watch(
        self,
        raw_request: aiohttp.web.BaseRequest,
        kind: Kind,
        route: Route,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        if route.name:  # GET .../jobs/NAME?watch=true (deprecated): a field selector on the name
            selector = ",".join(
                filter(None, [params.get("fieldSelector"), f"metadata.name={route.name}"])
            )
            params = {**params, "fieldSelector": selector}
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(kind, params.get("fieldSelector"))
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        bookmarks = truthy(params.get("allowWatchBookmarks"))
        since = params.get("resourceVersion") or ""
        lines: list[Obj] = []
        if since in ("", "0"):
            cursor = self._rv
            for obj in self._matching(kind, route.namespace, params):
                lines.append({"type": "ADDED", "object": obj})
        else:
            try:
                cursor = int(since)
            except ValueError as error:
                raise bad_request(f'invalid resource version: "{since}"') from error
            if cursor < self._compacted_rv:
                expired = ApiError(
                    410, f"too old resource version: {cursor} ({self._compacted_rv})", "Expired"
                )
                lines.append({"type": "ERROR", "object": expired.status()})
                cursor = -1
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        response.enable_chunked_encoding()
        drops = self._drops  # before the client can see the stream
        await response.prepare(raw_request)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            for line in lines:
                await response.write(json.dumps(line).encode() + b"\n")
            while cursor >= 0:
                changed = self._changed_event()
                start = bisect.bisect_right(self._event_rvs, cursor)
                for event in self._events[start:]:
                    cursor = event.rv
                    visible = self._visible(event, kind, route.namespace, labels, fields)
                    if visible is not None:
                        line = {"type": visible[0], "object": visible[1]}
                        await response.write(json.dumps(line).encode() + b"\n")
                if self._drops != drops:
                    if self._abort_drops and raw_request.transport is not None:
                        raw_request.transport.abort()
                        return response
                    break
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    if bookmarks:
                        mark = {
                            "kind": kind.kind,
                            "apiVersion": kind.api_version,
                            "metadata": {"resourceVersion": str(self._rv)},
                        }
                        await response.write(
                            json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n"
                        )
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):  # the client went away
            pass
        return response

    # -- logs ---------------------------------------------------------------------

    async def _serve_log(
        self,
        raw_request: aiohttp.web.BaseRequest,
        kind: Kind,
        route: Route,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        name, namespace = str(route.name), str(route.namespace)
        pod = self.read_object(kind, namespace, name)
        if pod is None:
            raise not_found(kind, name)
        spec = pod.get("spec") or {}
        containers = [c["name"] for c in spec.get("containers") or []]
        others = [
            c["name"]
            for c in (spec.get("initContainers") or []) + (spec.get("ephemeralContainers") or [])
        ]
        container = params.get("container")
        if not container:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, "
                    f"choose one of: [{' '.join(containers)}]"
                )
            container = containers[0]
        if container not in containers + others:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if truthy(params.get("previous")):
            raise bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        buffer = self._logs.get((namespace, name, container))
        if buffer is None:
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: '
                f"{_waiting_reason(pod, container)}"
            )
        tail = int(params["tailLines"]) if params.get("tailLines") else None
        timestamps = truthy(params.get("timestamps"))
        limit = int(params["limitBytes"]) if params.get("limitBytes") else None
        follow = truthy(params.get("follow"))

        def render(lines: list[tuple[str, bytes]]) -> bytes:
            return b"".join(
                (ts.encode() + b" " if timestamps else b"") + line for ts, line in lines
            )

        start = 0 if tail is None else max(0, len(buffer.lines) - tail)
        if not follow:
            lines = list(buffer.lines[start:])
            if buffer.partial:
                lines.append((buffer.partial_ts, buffer.partial))
            data = render(lines)
            return aiohttp.web.Response(
                body=data[:limit] if limit is not None else data, content_type="text/plain"
            )
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        drops, sent = self._drops, 0
        await response.prepare(raw_request)
        try:
            while True:
                changed = self._changed_event()
                current = self._logs.get((namespace, name, container))
                if current is not buffer:  # the pod was deleted (or re-created)
                    break
                chunk = render(buffer.lines[start:])
                start = len(buffer.lines)
                if limit is not None:
                    chunk = chunk[: max(0, limit - sent)]
                if chunk:
                    await response.write(chunk)
                    sent += len(chunk)
                if buffer.closed or (limit is not None and sent >= limit):
                    break
                if self._drops != drops:
                    if self._abort_drops and raw_request.transport is not None:
                        raw_request.transport.abort()
                        return response
                    break
                await changed.wait()
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response


def _waiting_reason(pod: Obj, container: str) -> str:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason == "ErrImagePull":
                return "image can't be pulled"
            if reason == "ImagePullBackOff":
                return "trying and failing to pull image"
            if reason:
                return str(reason)
    return "ContainerCreating"


def _qos_class(spec: Obj) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(res) is not None
        and (r.get("requests") or {}).get(res, (r.get("limits") or {}).get(res))
        == (r.get("limits") or {}).get(res)
        for r in resources
        for res in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"
