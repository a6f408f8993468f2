"""Workload ``k8s``: the Kubernetes API requests of the kubernetes backend, counted by the server.

On a shared cluster every API request loads the API server (and its etcd), so
this workload reports **request counts**; timings are informational.  The API
server is the emulated one of ``jobkit_testing.k8s_emulator`` over real HTTP, driven
by the unmodified ``kubernetes`` client; its test Job controller runs each pod's
command (``python -m jobkit.worker``) as a local process.  The store is S3 on
the counting moto server of ``s3_server.py`` (conditional writes atomic, as on
AWS), with fake credentials that reach the pods through a Secret, as the
backend's docs tell users to set up.

Every HTTP request the API server answers is logged here (the emulator's class
is wrapped for the workload's duration, ``tests/`` is not edited), with the
process that sent it: the client end of the TCP connection is found the way
``s3_server.Owners`` does for S3 (``sock_diag`` + ``/proc/<pid>/fd``), so this
process (``client``) is told from a ``python -m jobkit`` subprocess (``cli``);
the controller, which lives in this process, is told apart by its
User-Agent and left out.  Unlike the emulator's own request log this also
sees ``GET /version`` and API discovery; the two logs are cross-checked.

1. **A map of N items** (N = 1, 10, 100): ``map`` of ``tasks.trivial`` to the
   last result in a fresh client (the first map of a process opens the
   watch); then a second map of N on the same client (the watch already
   open).  Counted: Job creates (target: one for any N up to the Indexed Job
   limit), lists and watches (target: status of all jobs through the watch,
   whatever N), per-job GETs (target: none), every request of the client.
   Anchor: a naive backend, one Job create per item and one GET per job per
   second of the measured run time.
2. **Listing N active jobs from a fresh process**: ``python -m jobkit --store
   URL list`` with a ``jobkit.toml`` that selects the backend, while N items of
   a map of ``sleep`` are active (QUEUED or RUNNING): its reconcile asks the
   API about them.  Anchor: one GET per active job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from common import Context, Row, WorkloadResult
from s3 import BUCKET, fake_aws, store_url
from s3_server import CountingServer, Owners, describe, requests_only
from tasks import sleep_for, trivial

HERE = Path(__file__).resolve().parent
NAMESPACE = "jobkit"
SECRET = "jobkit-store"
INDEXED_LIMIT = 100_000
"""Completions of one Indexed Job the API server accepts."""
SLEEP_S = 120.0
"""How long the listed jobs would run: they are cancelled long before."""


def sizes(quick: bool) -> dict[str, Any]:
    """``warm``: the sizes that also get a second map on the same client (each pod
    is a fresh interpreter importing jobkit and boto3, ~0.55 CPU-s: a map of 100
    takes ~30 s on 2 cores, so it runs once)."""
    if quick:
        return {"maps": [1, 10], "warm": [1, 10], "lists": [1, 10], "parallelism": 4}
    return {"maps": [1, 10, 100], "warm": [1, 10], "lists": [1, 10, 100], "parallelism": 4}


# -- the request log ----------------------------------------------------------------------


@dataclasses.dataclass
class ApiCall:
    """One HTTP request the emulated API server received."""

    role: str
    """``client`` (this process), ``cli`` (``python -m jobkit``), ``controller``
    (the test Job controller, by User-Agent), ``worker``, ``other``, ``gone``."""
    pid: int
    verb: str
    """RBAC verb (``create``, ``get``, ``list``, ``watch``, ...); ``get`` for
    ``/version`` and discovery."""
    resource: str
    """``jobs``, ``pods``, ``pods/log``, ``version``, ``discovery``."""
    name: str | None
    at: float
    """``time.perf_counter()`` when it arrived."""
    size: int = 0
    """Bytes of the response body (0 for a watch: a stream)."""

    @property
    def key(self) -> str:
        return f"{self.verb} {self.resource}"

    @property
    def per_job(self) -> bool:
        """A request about one named Job or pod (what a status poll would be)."""
        return self.name is not None and self.resource.split("/")[0] in ("jobs", "pods")


class ApiLog:
    """Every request in arrival order; positions delimit phases (as ``s3_server.RequestLog``)."""

    def __init__(self) -> None:
        self._items: list[ApiCall] = []
        self._lock = threading.Lock()

    def add(self, call: ApiCall) -> None:
        with self._lock:
            self._items.append(call)

    def mark(self) -> int:
        with self._lock:
            return len(self._items)

    def between(
        self, start: int, end: int | None = None, roles: Sequence[str] = ("client",)
    ) -> list[ApiCall]:
        with self._lock:
            return [c for c in self._items[start:end] if c.role in roles]


def tally(calls: Sequence[ApiCall]) -> dict[str, int]:
    """``{"create jobs": 1, "list pods": 1, ...}``, most frequent first."""
    return dict(Counter(c.key for c in calls).most_common())


@contextlib.contextmanager
def counted(api_server_class: Any, port: int, log: ApiLog) -> Iterator[None]:
    """Log every request the emulator's ``ApiServer`` receives, with its sender."""
    from jobkit_testing import k8s_emulator

    owners = Owners(port)
    original = api_server_class.__call__

    async def call(self: Any, raw_request: Any) -> Any:
        agent = raw_request.headers.get("User-Agent", "")
        if agent.startswith(k8s_emulator.CONTROLLER_AGENT):
            role, pid = "controller", os.getpid()
        else:
            transport = raw_request.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            role, pid = owners._lookup(int(peer[1])) if peer else ("gone", 0)
        path = raw_request.path
        route = k8s_emulator.parse_route(path)
        name: str | None = None
        if path.rstrip("/") == "/version":
            verb, resource = "get", "version"
        elif route is None or route.kind is None:
            verb, resource = "get", "discovery"
        else:
            params = dict(raw_request.query)
            verb = api_server_class.verb(raw_request.method, route, params)
            resource = route.kind.plural + (f"/{route.subresource}" if route.subresource else "")
            name = route.name
        entry = ApiCall(role, pid, verb, resource, name, time.perf_counter())
        log.add(entry)  # on arrival: a watch answers only when its stream ends
        response = await original(self, raw_request)
        body = getattr(response, "body", None)
        if isinstance(body, bytes):
            entry.size = len(body)
        return response

    setattr(api_server_class, "__call__", call)  # noqa: B010 (a method of the class)
    try:
        yield
    finally:
        setattr(api_server_class, "__call__", original)  # noqa: B010


# -- the cluster --------------------------------------------------------------------------


class Cluster(NamedTuple):
    emulator: Any
    controller: Any
    s3: CountingServer
    log: ApiLog
    settings: dict[str, Any]


@contextlib.contextmanager
def cluster(workdir: Path, parallelism: int) -> Iterator[Cluster]:
    """The emulated API and its controller, moto, a Secret; restored and stopped after."""
    import boto3

    import jobkit
    from jobkit_testing import k8s_emulator

    log = ApiLog()
    with fake_aws(), CountingServer() as s3:
        setup = boto3.client("s3", endpoint_url=s3.endpoint)
        setup.create_bucket(Bucket=BUCKET)
        setup.close()
        thread = k8s_emulator.ServerThread()
        emulator = thread.start()
        port = int(emulator.url.rsplit(":", 1)[1].split("/")[0])
        pods = workdir / "pods"
        pods.mkdir(exist_ok=True)
        controller = k8s_emulator.JobController(emulator, pods)
        try:
            with counted(k8s_emulator.ApiServer, port, log):
                controller.start()
                with jobkit.use(store=store_url(s3, "key")) as client:
                    key = client.key.hex()
                # What a pod needs, in the Secret named in [kubernetes] secret.
                secret = {"JOBKIT_KEY": key}
                secret.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
                emulator.put(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": SECRET, "namespace": NAMESPACE},
                        "stringData": secret,
                    }
                )
                settings = {
                    "api_server": emulator.url,
                    "namespace": NAMESPACE,
                    "image": "python:3.11-slim",
                    "python": sys.executable,
                    "secret": SECRET,
                    "array_parallelism": parallelism,
                }
                yield Cluster(emulator, controller, s3, log, settings)
        finally:
            controller.stop()
            thread.stop()


# -- 1. maps ------------------------------------------------------------------------------


def one_map(c: Cluster, remote: Any, n: int) -> dict[str, Any]:
    """``map`` of n trivial items -> all results: the client's requests, by phase."""
    api_before, s3_before = c.log.mark(), c.s3.log.mark()
    emulator_before = len(c.emulator.requests())
    wall0, t0 = time.time(), time.perf_counter()
    array = remote.map(range(n))
    t1 = time.perf_counter()
    submitted, s3_submitted = c.log.mark(), c.s3.log.mark()
    values = array.results(timeout=600)
    t2 = time.perf_counter()
    api_end, s3_end = c.log.mark(), c.s3.log.mark()
    emulator_calls = c.emulator.requests()[emulator_before:]
    if values != [trivial(i) for i in range(n)]:
        raise RuntimeError(f"map of {n}: wrong results {values[:5]}...")
    finished = [job.info.finished_at for job in array]
    return {
        "n": n,
        "during_map": c.log.between(api_before, submitted),
        "calls": c.log.between(api_before, api_end),
        "others": c.log.between(api_before, api_end, ("cli", "worker", "other", "gone")),
        "emulator_log": len(emulator_calls),
        "s3_client": len(requests_only(c.s3.log.between(s3_before, s3_end), ["client"])),
        "s3_during_map": describe(
            requests_only(c.s3.log.between(s3_before, s3_submitted), ["client"])
        ),
        "s3_waiting": describe(requests_only(c.s3.log.between(s3_submitted, s3_end), ["client"])),
        "map_s": t1 - t0,
        "run_s": t2 - t0,
        "finished_after_s": sorted(f - wall0 for f in finished if f is not None),
    }


def maps(c: Cluster, ns: Sequence[int], warm: Sequence[int]) -> list[dict[str, Any]]:
    import jobkit

    out = []
    for n in ns:
        # A store prefix per N gives a client of its own (jobkit keeps one per
        # configuration), so its first map opens that client's watch.
        with jobkit.use(
            store=store_url(c.s3, f"map-{n}"), backend="kubernetes", kubernetes=c.settings
        ) as client:
            remote = jobkit.remote(trivial)
            try:
                entry = {"n": n, "cold": one_map(c, remote, n)}
                if n in warm:
                    entry["warm"] = one_map(c, remote, n)
            finally:
                client.backend("kubernetes").close()
        out.append(entry)
    return out


# -- 2. jobkit list with N active jobs ------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def cli_list(c: Cluster, cwd: Path, url: str, ids: set[str]) -> dict[str, Any]:
    """``python -m jobkit --store URL list`` in a fresh process; its requests."""
    start = c.log.mark()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jobkit", "--store", url, "list", "--limit", "1000"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )
    seconds = time.perf_counter() - t0
    time.sleep(0.2)  # anything still in flight from it
    rows = [line.split() for line in proc.stdout.splitlines()[1:] if line.strip()]
    shown = Counter(row[3] for row in rows if len(row) > 3 and row[0] in ids)
    return {
        "exit": proc.returncode,
        "stderr_tail": proc.stderr.strip()[-300:],
        "states_shown": dict(shown),
        "seconds": seconds,
        "calls": c.log.between(start, None, ("cli",)),
        "others": c.log.between(start, None, ("client", "worker", "other", "gone")),
        "namespace_pods": len(c.emulator.objects("pods", NAMESPACE)),
        "namespace_jobs": len(c.emulator.objects("jobs", NAMESPACE)),
    }


def cli_lists(c: Cluster, cwd: Path, counts: Sequence[int]) -> dict[str, Any]:
    """For each count, that many active jobs, then ``jobkit list`` from a fresh process.
    The active jobs are items of maps of ``sleep`` with parallelism 1 (one pod runs, the
    rest wait QUEUED in their Indexed Job), added map by map up to each count; the maps
    are cancelled at the end (their requests counted too)."""
    import jobkit

    (cwd / "jobkit.toml").write_text(
        'backend = "kubernetes"\n\n[kubernetes]\n'
        + "".join(f"{k} = {toml_value(v)}\n" for k, v in c.settings.items())
    )
    url = store_url(c.s3, "list")
    lists: list[dict[str, Any]] = []
    cancels: list[dict[str, Any]] = []
    arrays: list[Any] = []
    with jobkit.use(store=url, backend="kubernetes", kubernetes=c.settings) as client:
        remote = jobkit.remote(sleep_for).options(kubernetes={"parallelism": 1})
        try:
            active = 0
            for count in counts:
                arrays.append(remote.map([SLEEP_S] * (count - active)))
                active = count
                time.sleep(1.0)  # the new map's first pod starts
                ids = {job.id for array in arrays for job in array}
                lists.append({"active": count} | cli_list(c, cwd, url, ids))
        finally:
            for array in arrays:
                start = c.log.mark()
                array.cancel()
                cancels.append({"items": len(array), "calls": c.log.between(start)})
            client.backend("kubernetes").close()
    return {"lists": lists, "cancels": cancels}


# -- the workload -------------------------------------------------------------------------


def facts() -> dict[str, str]:
    """Versions for the report's header line."""
    from importlib.metadata import version

    return {name: version(name) for name in ("kubernetes", "kmock", "moto")}


def run(ctx: Context) -> WorkloadResult:
    size = sizes(ctx.quick)
    cwd = ctx.scratch("k8s")
    t0 = time.perf_counter()
    with cluster(cwd, size["parallelism"]) as c:
        map_runs = maps(c, size["maps"], size["warm"])
        listing = cli_lists(c, cwd, size["lists"])
        ours = c.log.between(0, None, ("client", "cli"))
        check = {
            "emulator_log": len(c.emulator.requests()),
            "ours": len(ours),
            "ours_routed": sum(x.resource not in ("version", "discovery") for x in ours),
            "by_role": dict(Counter(x.role for x in c.log.between(0, None, ROLES))),
            "pods_started": int(c.controller.pods_started),
        }
    problems = [f"emulator: {e}" for e in c.emulator.server.internal_errors]
    problems += [f"controller: {e}" for e in c.controller.errors]
    return report(map_runs, listing, size, check, problems, time.perf_counter() - t0)


ROLES = ("client", "cli", "controller", "worker", "other", "gone")


# -- the report ---------------------------------------------------------------------------


def naive(n: int, run_s: float) -> int:
    """A Job per item, and a GET per job per second until the last result."""
    return n + n * math.ceil(run_s)


def naive_until_done(n: int, finished_after: Sequence[float]) -> int:
    """The same, each job polled only until it finished."""
    return n + sum(math.ceil(max(f, 0.0)) for f in finished_after)


class Split(NamedTuple):
    creates: int
    lists: int
    watches: int
    per_job: int
    other: int
    total: int

    @classmethod
    def of(cls, calls: Sequence[ApiCall]) -> Split:
        creates = sum(c.verb == "create" and c.resource == "jobs" for c in calls)
        lists = sum(c.verb == "list" for c in calls)
        watches = sum(c.verb == "watch" for c in calls)
        per_job = sum(c.per_job for c in calls)
        total = len(calls)
        return cls(
            creates, lists, watches, per_job, total - creates - lists - watches - per_job, total
        )


def split_line(label: str, calls: Sequence[ApiCall], seconds: float | None) -> str:
    s = Split.of(calls)
    took = "-" if seconds is None else f"{seconds:.1f} s"
    cells = [label, *(str(v) for v in s[:-1]), f"**{s.total}**", took]
    return "| " + " | ".join(cells) + " |"


def kib(calls: Sequence[ApiCall], key: str) -> str:
    return f"{sum(c.size for c in calls if c.key == key) / 1024:.0f} KiB"


def report(
    map_runs: Sequence[dict[str, Any]],
    listing: dict[str, Any],
    size: dict[str, Any],
    check: dict[str, Any],
    problems: list[str],
    seconds: float,
) -> WorkloadResult:
    rows: list[Row] = []
    notes: list[str] = []
    lines = [
        "| Kubernetes API requests, by kind | Job creates | lists | watches | per-job "
        "(GET/DELETE/PATCH of one Job or pod) | other | total | run time (informational) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in map_runs:
        n, cold = entry["n"], entry["cold"]
        calls = cold["calls"]
        s = Split.of(calls)
        rows += [
            Row(
                f"map of {n}: Job create requests",
                "requests",
                "lower",
                {"jobkit": s.creates, "naive": n},
                target=f"1 for any N up to {INDEXED_LIMIT:,}",
                met=s.creates == 1,
            ),
            Row(
                f"map of {n}: list + watch requests (status of every job)",
                "requests",
                "lower",
                {"jobkit": s.lists + s.watches},
                target="one list + one watch of Jobs and of pods, whatever N",
                met=s.lists <= 2 and s.watches <= 2,
                note=", ".join(
                    f"{k} {v}" for k, v in tally(calls).items() if k.split()[0] in ("list", "watch")
                ),
            ),
            Row(
                f"map of {n}: per-job requests",
                "requests",
                "lower",
                {"jobkit": s.per_job, "naive": n * math.ceil(cold["run_s"])},
                target="0",
                met=s.per_job == 0,
            ),
            Row(
                f"map of {n}: every request of the client process, map -> all results "
                f"({cold['run_s']:.1f} s)",
                "requests",
                "lower",
                {"jobkit": s.total, "naive": naive(n, cold["run_s"])},
            ),
        ]
        lines.append(
            split_line(f"map of {n}, first of its client (opens the watch)", calls, cold["run_s"])
        )
        warm = entry.get("warm")
        if warm is not None:
            rows.append(
                Row(
                    f"map of {n}, a client whose watch is open: every request "
                    f"({warm['run_s']:.1f} s)",
                    "requests",
                    "lower",
                    {"jobkit": len(warm["calls"]), "naive": naive(n, warm["run_s"])},
                    target="1 (the create)",
                    met=len(warm["calls"]) == 1,
                )
            )
            lines.append(
                split_line(f"map of {n}, watch already open", warm["calls"], warm["run_s"])
            )
        notes.append(
            f"k8s: map of {n}: {tally(calls)}; during map() ({cold['map_s'] * 1000:.0f} ms): "
            f"{tally(cold['during_map'])}; naive polling each job only until it finished: "
            f"{naive_until_done(n, cold['finished_after_s'])} requests (vs "
            f"{naive(n, cold['run_s'])}); the client's S3 requests (informational): "
            f"{cold['s3_during_map']['total']} during map() "
            f"({', '.join(f'{k} {v}' for k, v in cold['s3_during_map']['actions'].items())}), "
            f"{cold['s3_waiting']['total']} while waiting for the results "
            f"({', '.join(f'{k} {v}' for k, v in cold['s3_waiting']['actions'].items())}; "
            f"{', '.join(f'{k} {v}' for k, v in cold['s3_waiting']['areas'].items())})"
            + (f"; the second map: {warm['s3_client']} in all" if warm else "")
        )
        stray = cold["others"] + (warm["others"] if warm else [])
        if stray:
            notes.append(f"k8s: map of {n}: requests from other processes: {tally(stray)}")
        if cold["emulator_log"] != s.total - sum(c.resource == "version" for c in calls):
            notes.append(
                f"k8s: map of {n}: the emulator's own log saw {cold['emulator_log']} requests"
            )
    fewest = len(listing["lists"][0]["calls"]) if listing["lists"] else 0
    for entry in listing["lists"]:
        calls, active = entry["calls"], entry["active"]
        rows.append(
            Row(
                f"`python -m jobkit list` (fresh process), {active} active job(s)",
                "requests",
                "lower",
                {"jobkit": len(calls), "naive": active},
                target="independent of N",
                met=len(calls) == fewest,
                note=", ".join(f"{k} {v}" for k, v in tally(calls).items()),
            )
        )
        lines.append(split_line(f"`jobkit list`, {active} active", calls, entry["seconds"]))
        shown = sum(entry["states_shown"].values())
        notes.append(
            f"k8s: `jobkit list` with {active} active: exit {entry['exit']}, showed {shown} of "
            f"them ({entry['states_shown']}) in {entry['seconds']:.2f} s; {tally(calls)}; "
            f"the list of pods returned {kib(calls, 'list pods')} (the namespace holds "
            f"{entry['namespace_pods']} jobkit pods), of Jobs {kib(calls, 'list jobs')} "
            f"({entry['namespace_jobs']} Jobs there)"
        )
        if entry["others"]:
            notes.append(f"k8s: during that list, other processes sent {tally(entry['others'])}")
        if entry["exit"] != 0 or shown != active:
            problems.append(f"jobkit list with {active} active: {entry['stderr_tail']!r}")
    for entry in listing["cancels"]:
        lines.append(split_line(f"cancel() of a map of {entry['items']}", entry["calls"], None))
    notes.append(
        "k8s: counted by the emulated API server (jobkit_testing.k8s_emulator, real HTTP) "
        "per sending process, the test controller's requests left out; store S3 on moto; "
        f"array_parallelism {size['parallelism']} (pods of a map at once, on 2 cores); the "
        "listed jobs: maps of sleep with parallelism 1 (one pod runs, the rest QUEUED); "
        "naive = one Job create per item + one GET per job per second of the run (rounded up)"
    )
    notes.append(
        f"k8s: cross-check: the emulator's own log holds {check['emulator_log']} requests of "
        f"jobkit's processes, this log {check['ours_routed']} on resources + "
        f"{check['ours'] - check['ours_routed']} on /version and discovery (which the emulator "
        f"does not log); by process over the workload: {check['by_role']}; "
        f"{check['pods_started']} pods run; workload took {seconds:.0f} s"
    )
    notes += [f"k8s: **check failed**: {p}" for p in problems]

    def sequence(calls: Sequence[ApiCall]) -> list[str]:
        return [c.key + (f" {c.name}" if c.name else "") for c in calls]

    def phase(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "requests": tally(data["calls"]),
            "during_map": tally(data["during_map"]),
            "sequence": sequence(data["calls"]),
            "others": tally(data["others"]),
            "emulator_log": data["emulator_log"],
            "s3_client": data["s3_client"],
            "s3_during_map": data["s3_during_map"],
            "s3_waiting": data["s3_waiting"],
            "map_s": data["map_s"],
            "run_s": data["run_s"],
            "finished_after_s": data["finished_after_s"],
            "naive": naive(data["n"], data["run_s"]),
            "naive_until_done": naive_until_done(data["n"], data["finished_after_s"]),
        }

    raw = {
        "sizes": size,
        "maps": [
            {"n": e["n"], "cold": phase(e["cold"])}
            | ({"warm": phase(e["warm"])} if "warm" in e else {})
            for e in map_runs
        ],
        "lists": [
            {k: v for k, v in e.items() if k not in ("calls", "others")}
            | {
                "requests": tally(e["calls"]),
                "sequence": sequence(e["calls"]),
                "response_bytes": {c.key: c.size for c in e["calls"] if c.size},
                "others": tally(e["others"]),
            }
            for e in listing["lists"]
        ],
        "cancels": [
            {"items": e["items"], "requests": tally(e["calls"]), "sequence": sequence(e["calls"])}
            for e in listing["cancels"]
        ],
        "check": check,
        "problems": problems,
        "seconds": seconds,
    }
    return WorkloadResult("k8s", rows, raw, notes, ["\n".join(lines)])
