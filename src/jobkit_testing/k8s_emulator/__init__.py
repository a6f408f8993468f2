"""A Kubernetes API over real HTTP for tests, and a Job controller that runs pods locally.

Tests load the fixtures with
``pytest_plugins = ["jobkit_testing.k8s_emulator.fixtures"]``; benchmarks start
a :class:`ServerThread` and a :class:`JobController` themselves.

No kube-apiserver can run on these machines (see ``backends/kubernetes/README.md``).
``kmock`` (0.8) serves a Kubernetes-shaped HTTP API from an asyncio handler; its
stateful ``KubernetesEmulator`` lacks what a Job backend relies on, so
:class:`ApiServer` subclasses kmock's stateless ``KubernetesScaffold`` and
implements the object store itself:

- every object gets ``uid``, ``creationTimestamp``, ``generation`` and a global
  ``resourceVersion``; lists carry the collection's resourceVersion;
- label and field selectors on list, watch and deletecollection; ``limit`` and
  ``continue`` on list;
- watch from a resourceVersion (resume), from "now" (synthetic ADDED events),
  ``timeoutSeconds``, BOOKMARK events, 410 Expired after :meth:`K8sEmulator.compact`;
  a label-selected watch turns label changes into ADDED/DELETED like the real one;
- POST, GET, PUT, PATCH (JSON, merge and strategic merge patch), DELETE,
  deletecollection; the ``status`` subresource; optimistic concurrency (409 on
  a stale resourceVersion), ``dryRun``;
- Job defaulting and the Job validation a backend trips over (422 with the API
  server's wording);
- deletion with ``propagationPolicy`` Background / Foreground / Orphan and a
  garbage collector that deletes dependents whose owners are gone;
- pod logs as ``text/plain`` with ``container``, ``tailLines``, ``timestamps``,
  ``limitBytes`` and ``follow=true`` streaming; ``/version``;
- test hooks: drop every watch and log stream, compact the watch history,
  inject API errors, require a bearer token, enforce an RBAC Role, and a log of
  every API request (verb, resource, body) for request-count assertions.

Modules, one concept each::

    kinds       resource kinds, shared names (namespace, controller agent), time stamps
    errors      API errors with the API server's wording (Status bodies)
    selectors   label and field selectors
    patches     JSON, merge and strategic merge patches
    validation  Job and pod defaulting and validation
    routes      request routes, request records, faults, events, log buffers
    server      ApiServer: objects, verbs, watch, garbage collection, logs
    facade      K8sEmulator (what tests call, from any thread) and ServerThread
    faults      SimulatedFault: failures imposed on pods on request
    controller  JobController: kube-controller-manager and kubelet for Jobs
    fixtures    the pytest fixtures (imported by pytest, not by this package)
    clients     jobkit clients of the emulated cluster (Secret, settings), for tests
"""

from __future__ import annotations

from .controller import JobController
from .errors import ApiError
from .facade import K8sEmulator, ServerThread
from .faults import FAULTS, SimulatedFault
from .kinds import (
    CONTROLLER_AGENT,
    INDEX_LABEL,
    KINDS,
    NODE_NAME,
    TEST_NAMESPACE,
    Kind,
    Obj,
    find_kind,
)
from .routes import ApiRequest, Route, parse_route
from .server import ApiServer

__all__ = [
    "CONTROLLER_AGENT",
    "FAULTS",
    "INDEX_LABEL",
    "KINDS",
    "NODE_NAME",
    "TEST_NAMESPACE",
    "ApiError",
    "ApiRequest",
    "ApiServer",
    "JobController",
    "K8sEmulator",
    "Kind",
    "Obj",
    "Route",
    "ServerThread",
    "SimulatedFault",
    "find_kind",
    "parse_route",
]
