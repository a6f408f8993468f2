"""Workload ``s3``: the S3 requests jobkit's S3 store makes, counted by the server.

On S3 a request is what costs (money, and a round trip each), so this
workload reports request counts, not timings.  They are counted on the
server side (``s3_server.py``: moto over real HTTP in a thread of this
process), so requests from every process are seen and told apart: this
one (``client``), a ``python -m jobkit list`` subprocess (``cli``), the
local agent and the workers it forks, and ``s3_child.py``.  jobkit runs
unmodified with the store URL ``s3://jobkit-bench/<prefix>?endpoint_url=...``
and fake credentials in the environment.

1. **One job's life.**  ``submit`` -> ``result()`` of ``tasks.trivial`` on the
   local backend: the client's requests during ``submit()`` and during
   ``result()``, the agent's and the worker's; a first job (the agent starts)
   then warm ones (the run whose total is the median is reported); then what
   the idle agent sends per minute.  Anchor: the store-API sequence alone
   (create, put payload, QUEUED, RUNNING, put outcome, SUCCEEDED, get
   outcome) on an ``S3Store`` in this process.
2. **10,000 jobs.**  ``python -m jobkit list`` (first page, a real CLI
   subprocess), ``jobkit.jobs(limit=50)``, ``jobs(state="RUNNING")``, a
   common and a rare name glob (each ``jobs()`` in a fresh ``s3_child.py``,
   so that the client monitor that polls the active jobs it returned cannot
   leak into another count; what that monitor costs is measured last).
   Anchor: a naive scan, what a store without an index pays for any of
   these: LIST ``jobs/`` (its pages are sent) and one GET per record (counted
   from the listing, not sent: 10,000 GETs through moto take ~50 s here).

The store is filled with ``S3Store.create`` in batches (the store's own
parallel create).  Over HTTP that runs at ~100 records/s on 2 cores (two
PUTs each, moto and boto3 sharing one interpreter), so only the first
batches go over HTTP and are timed; for the rest the store's boto3 client is
swapped for :class:`DirectPuts`, which hands each PutObject straight to
moto's in-memory backend: same keys, bodies and metadata, no HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from common import Context, Row, WorkloadResult
from s3_server import OPS, CountingServer, Request, RequestLog, describe, requests_only

HERE = Path(__file__).resolve().parent
BUCKET = "jobkit-bench"
REGION = "us-east-1"
SETTLE_S = 0.3
"""Kept after ``result()`` returns, for the agent's bookkeeping on the finished job."""
AGENT_ROLES = ("agent", "worker")


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"records": 2_000, "http_records": 500, "warm": 3, "idle_s": 2.0, "linger_s": 2.0}
    return {"records": 10_000, "http_records": 1_000, "warm": 5, "idle_s": 5.0, "linger_s": 3.0}


BATCH = 500
LIMIT = 50


# -- environment --------------------------------------------------------------------------


@contextlib.contextmanager
def fake_aws() -> Iterator[None]:
    """Fake credentials, us-east-1, and nothing from the user's AWS setup (restored after)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/nonexistent/jobkit-bench/aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/jobkit-bench/aws-credentials",
        AWS_EC2_METADATA_DISABLED="true",
    )
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[name]
        os.environ.update(saved)


def store_url(server: CountingServer, prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}?endpoint_url={server.endpoint}"


def stop_agent(url: str) -> None:
    """Stop the local agent serving ``url``, if one runs (it starts none)."""
    import jobkit
    from jobkit.backends.local import LocalBackend

    with jobkit.use(store=url) as client:
        backend = client.backend("local")
        assert isinstance(backend, LocalBackend)
        backend.stop_agent()


# -- summaries ----------------------------------------------------------------------------


def where(items: Sequence[Request]) -> str:
    """``record 3, index 4, blob 2``: which part of the store the requests touched."""
    groups: dict[str, int] = {}
    for r in requests_only(items):
        group = r.area.split(":", 1)[0]
        group = {"records": "record listing", "batch": "batch delete"}.get(group, group)
        groups[group] = groups.get(group, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(groups.items(), key=lambda kv: -kv[1]))


def breakdown_row(label: str, items: Sequence[Request]) -> str:
    info = describe(items)
    cells = [label, *(str(info["ops"][op]) for op in OPS), f"**{info['total']}**", where(items)]
    return "| " + " | ".join(cells) + " |"


def breakdown_table(lines: Sequence[tuple[str, Sequence[Request]]]) -> str:
    head = ["requests by operation", *OPS, "total", "objects touched"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += [breakdown_row(label, items) for label, items in lines]
    return "\n".join(out)


# -- 1. one job's life --------------------------------------------------------------------


def one_job(log: RequestLog, remote: Any, arg: int) -> dict[str, Any]:
    """submit -> result of one trivial job; every request of every process, by phase."""
    start = log.mark()
    t0 = time.perf_counter()
    job = remote.submit(arg)
    submitted = log.mark()
    t1 = time.perf_counter()
    value = job.result(timeout=120)
    returned = log.mark()
    t2 = time.perf_counter()
    if value != arg + 1:
        raise RuntimeError(f"trivial({arg}) returned {value!r}")
    time.sleep(SETTLE_S)
    end = log.mark()
    items = requests_only(log.between(start, end))
    phases = {
        "submit": requests_only(log.between(start, submitted), ["client"]),
        "result": requests_only(log.between(submitted, returned), ["client"]),
        "client_after": requests_only(log.between(returned, end), ["client"]),
        "agent": [r for r in items if r.role == "agent"],
        "worker": [r for r in items if r.role == "worker"],
        "other": [r for r in items if r.role not in ("client", *AGENT_ROLES)],
    }
    return {
        "items": items,
        "phases": phases,
        "submit_ms": (t1 - t0) * 1000,
        "submit_to_result_ms": (t2 - t0) * 1000,
    }


def lifecycle(server: CountingServer, warm: int, idle_s: float) -> dict[str, Any]:
    from tasks import trivial

    import jobkit

    url = store_url(server, "life")
    with jobkit.use(store=url, local={"cpus": 2}):
        remote = jobkit.remote(cpus=1)(trivial)
        runs = [one_job(server.log, remote, i) for i in range(1 + warm)]
        start = server.log.mark()
        time.sleep(idle_s)
        idle = requests_only(server.log.between(start), AGENT_ROLES)
    stop_agent(url)
    return {"url": url, "first": runs[0], "warm": runs[1:], "idle": idle, "idle_s": idle_s}


def api_sequence(server: CountingServer) -> list[tuple[str, list[Request]]]:
    """The store calls one job needs, straight on an S3Store: requests per call."""
    from jobkit.states import JobRecord, JobState
    from jobkit.stores import open_store
    from jobkit.stores.base import outcome_key, payload_key

    store = open_store(store_url(server, "api"))
    job_id = "jk-apiseq00001"
    record = JobRecord(id=job_id, name="trivial", backend="local", created_at=time.time())
    payload = b"p" * 600  # about a pickled trivial call
    steps: list[tuple[str, Callable[[], object]]] = [
        ("create (PENDING)", lambda: store.create([record])),
        ("put payload", lambda: store.put_blob(payload_key(job_id), payload)),
        ("-> QUEUED", lambda: store.transition(job_id, JobState.QUEUED, backend_id="local:x")),
        ("-> RUNNING", lambda: store.transition(job_id, JobState.RUNNING, host="x", pid=1)),
        ("put outcome", lambda: store.put_blob(outcome_key(job_id), b"o" * 60)),
        ("-> SUCCEEDED", lambda: store.transition(job_id, JobState.SUCCEEDED, exit_code=0)),
        ("get outcome", lambda: store.get_blob(outcome_key(job_id))),
    ]
    out = []
    for label, call in steps:
        start = server.log.mark()
        call()
        out.append((label, requests_only(server.log.between(start), ["client"])))
    store.close()
    return out


# -- 2. 10,000 jobs -----------------------------------------------------------------------


class DirectPuts:
    """Stands in for an S3Store's boto3 client while it fills the store: each
    PutObject goes straight into moto's in-memory backend (the one the server
    serves), with the same key, body, content type and metadata; no HTTP."""

    def __init__(self) -> None:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        self._backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]

    def put_object(
        self,
        *,
        Bucket: str,
        Key: str,
        Body: Any,
        ContentType: str | None = None,
        Metadata: dict[str, str] | None = None,
        **_conditions: Any,
    ) -> dict[str, Any]:
        data = Body if isinstance(Body, bytes) else bytes(Body.read())
        key = self._backend.put_object(Bucket, Key, data)
        meta = {f"x-amz-meta-{k}": v for k, v in (Metadata or {}).items()}
        if ContentType:
            meta["Content-Type"] = ContentType
        if meta:
            key.set_metadata(meta)
        return {"ETag": key.etag}


FILL_STATES: tuple[str, ...] = ("SUCCEEDED",) * 10 + ("FAILED", "RUNNING") * 3
FILL_STATES += ("CANCELLED", "CANCELLED", "QUEUED", "PENDING")
"""A cycle of 20: half SUCCEEDED, 15% FAILED and RUNNING, 10% CANCELLED, 5% QUEUED, PENDING."""
RARE_EVERY = 200
"""One job in 200 is named ``eval-<i>`` (the rare glob); the others ``train-<i % 37>``."""


def bench_record(i: int, now: float) -> Any:
    from jobkit.states import TERMINAL_STATES, FailureReason, JobRecord, JobState

    state = JobState(FILL_STATES[i % len(FILL_STATES)])
    created = now - 7 * 86400 + i * 30.0
    started = state not in (JobState.PENDING, JobState.QUEUED)
    done = state in TERMINAL_STATES
    failed = state is JobState.FAILED
    return JobRecord(
        id=f"jk-s3b{i:06d}",
        name=f"eval-{i}" if i % RARE_EVERY == 7 else f"train-{i % 37}",
        backend="local",
        state=state,
        created_at=created,
        submitted_at=created + 0.01,
        started_at=created + 0.02 if started else None,
        finished_at=created + 1.5 if done else None,
        host=f"node-{i % 8}" if started else None,  # other machines sharing the bucket
        pid=10_000 + i if started else None,
        exit_code=(1 if failed else 0) if done else None,
        failure_reason=FailureReason.ERROR if failed else None,
        message="ValueError: bad lr" if failed else None,
        resources={"cpus": 1, "mem": 2**30},
        labels={"project": "bench"},
        extra={"stdout": f"/tmp/logs/jk-s3b{i:06d}.out"},
    )


def fill(server: CountingServer, url: str, count: int, over_http: int) -> dict[str, Any]:
    from jobkit.stores import open_store

    store: Any = open_store(url)
    now = time.time()
    real_client = store._client
    out: dict[str, Any] = {"records": count, "batch": BATCH, "http_records": over_http}
    start = server.log.mark()
    t0 = time.perf_counter()
    for first in range(0, over_http, BATCH):
        store.create([bench_record(i, now) for i in range(first, min(first + BATCH, over_http))])
    http_s = time.perf_counter() - t0
    out["http_seconds"] = http_s
    out["http_records_per_s"] = over_http / http_s if http_s else None
    out["http_requests"] = describe(server.log.between(start))
    store._client = DirectPuts()
    try:
        t0 = time.perf_counter()
        for first in range(over_http, count, BATCH):
            store.create([bench_record(i, now) for i in range(first, min(first + BATCH, count))])
        out["direct_seconds"] = time.perf_counter() - t0
    finally:
        store._client = real_client
    store.close()
    return out


def naive_scan(server: CountingServer, prefix: str) -> dict[str, Any]:
    """LIST every record object (really sent); the GETs it would need are counted."""
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION)
    start = server.log.mark()
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=f"{prefix}/jobs/"
        )
        for item in page.get("Contents", ())
    ]
    listed = describe(server.log.between(start))
    client.close()
    return {"lists": listed["ops"]["LIST"], "gets": len(keys), "total": listed["total"] + len(keys)}


def cli_list(server: CountingServer, url: str, cwd: Path) -> dict[str, Any]:
    env = dict(os.environ, JOBKIT_STORE=url)
    cmd = [sys.executable, "-m", "jobkit", "list"]
    start = server.log.mark()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=120, check=False)
    seconds = time.perf_counter() - t0
    items = requests_only(server.log.between(start))
    rows = [line for line in proc.stdout.decode(errors="replace").splitlines() if "jk-s3b" in line]
    return {
        "command": " ".join(["python", *cmd[1:]]),
        "exit": proc.returncode,
        "stderr_tail": proc.stderr.decode(errors="replace").strip().splitlines()[-1:],
        "rows_shown": len(rows),
        "seconds": seconds,
        "items": [r for r in items if r.role == "cli"],
        "others": [r for r in items if r.role != "cli"],
    }


def child_jobs(
    server: CountingServer, url: str, cwd: Path, kwargs: dict[str, Any], linger: float = 0.0
) -> dict[str, Any]:
    """``jobkit.jobs(**kwargs)`` in a fresh ``s3_child.py``, split at its mark."""
    env = dict(os.environ, JOBKIT_STORE=url)
    cmd = [sys.executable, str(HERE / "s3_child.py"), server.endpoint, json.dumps(kwargs)]
    cmd.append(str(linger))
    start = server.log.mark()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=120, check=False)
    if linger:
        stop_agent(url)  # the one the child's monitor may have started
        time.sleep(SETTLE_S)
    if proc.returncode != 0:
        raise RuntimeError(f"s3_child.py {kwargs} failed: {proc.stderr.decode(errors='replace')}")
    answer = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    items = server.log.between(start)
    mine = [r for r in items if r.role == "child"]
    marks = [i for i, r in enumerate(mine) if r.action == "MARK" and r.key == "returned"]
    cut = marks[0] if marks else len(mine)
    # The monitor starts with the first active Job that jobs() builds, so a
    # few of its GETs can land before the mark.  The query never reads a
    # record twice and the monitor reads only records the query returned: a
    # record GET seen before in this window is the monitor's.
    own: list[Request] = []
    raced: list[Request] = []
    read: set[str] = set()
    for r in requests_only(mine[:cut]):
        again = r.action == "GetObject" and r.key in read
        (raced if again else own).append(r)
        if r.action == "GetObject":
            read.add(r.key)
    return {
        "kwargs": kwargs,
        "answer": answer,
        "items": own,
        "raced": raced,
        "monitor": raced + requests_only(mine[cut:]),
        "agents": requests_only(items, AGENT_ROLES),
        "gone": requests_only(items, ["gone"]),
        "others": requests_only(items, ["client", "cli", "other"]),
        "linger_s": linger,
    }


def store_query(server: CountingServer, url: str, kwargs: dict[str, Any]) -> list[Request]:
    """The same query on the store in this process (no Job objects, no monitor)."""
    from jobkit.client import parse_states
    from jobkit.stores import open_store

    store = open_store(url)
    states = parse_states(kwargs.get("state"))
    start = server.log.mark()
    store.query(states=states, name=kwargs.get("name"), limit=kwargs.get("limit"))
    items = requests_only(server.log.between(start), ["client"])
    store.close()
    return items


QUERIES: dict[str, dict[str, Any]] = {
    "jobs(limit=50)": {"limit": LIMIT},
    'jobs(state="RUNNING", limit=50)': {"state": "RUNNING", "limit": LIMIT},
    'jobs(name="train-1*", limit=50)': {"name": "train-1*", "limit": LIMIT},
    'jobs(name="eval-*", limit=50)': {"name": "eval-*", "limit": LIMIT},
}
"""Each ``jobkit.jobs`` call measured, by label."""


def listing(server: CountingServer, cwd: Path, count: int, over_http: int, linger: float) -> Any:
    url = store_url(server, "big")
    out: dict[str, Any] = {"url": url, "fill": fill(server, url, count, over_http)}
    out["naive"] = naive_scan(server, "big")
    if out["naive"]["gets"] != count:
        raise RuntimeError(f"the store holds {out['naive']['gets']} records, not {count}")
    out["cli"] = cli_list(server, url, cwd)
    out["store_query"] = {label: store_query(server, url, kw) for label, kw in QUERIES.items()}
    out["jobs"] = {}
    for label, kwargs in QUERIES.items():
        out["jobs"][label] = child_jobs(server, url, cwd, kwargs)
        stop_agent(url)  # in case the child's monitor started one before it exited
    out["held"] = child_jobs(server, url, cwd, QUERIES["jobs(limit=50)"], linger=linger)
    return out


# -- the workload -------------------------------------------------------------------------


def facts() -> dict[str, str]:
    """Versions for the report's header line."""
    import boto3
    import moto

    return {"moto": moto.__version__, "boto3": boto3.__version__}


def check_answers(data: dict[str, Any]) -> list[str]:
    """What each listing returned, checked against the fill; problems as text."""
    import fnmatch

    problems = []
    if data["cli"]["exit"] != 0 or data["cli"]["rows_shown"] != LIMIT:
        problems.append(
            f"jobkit list: exit {data['cli']['exit']}, {data['cli']['rows_shown']} rows "
            f"({data['cli']['stderr_tail']})"
        )
    for label, run in data["jobs"].items():
        answer, kwargs = run["answer"], run["kwargs"]
        expected = LIMIT
        if kwargs.get("name") == "eval-*":
            expected = min(LIMIT, len(range(7, data["fill"]["records"], RARE_EVERY)))
        if answer["count"] != expected:
            problems.append(f"{label}: {answer['count']} jobs, expected {expected}")
        if "state" in kwargs and answer["states"] != [kwargs["state"]]:
            problems.append(f"{label}: states {answer['states']}")
        names = answer["names"]
        if "name" in kwargs and not all(fnmatch.fnmatchcase(x, kwargs["name"]) for x in names):
            problems.append(f"{label}: a name does not match")
    return problems


def representative(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run whose all-process total is the median (the lower one for an even count)."""
    ordered = sorted(runs, key=lambda r: len(r["items"]))
    return ordered[(len(ordered) - 1) // 2]


def run(ctx: Context) -> WorkloadResult:
    size = sizes(ctx.quick)
    cwd = ctx.scratch("s3")
    with fake_aws(), CountingServer() as server:
        import boto3

        setup = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION)
        setup.create_bucket(Bucket=BUCKET)
        setup.close()
        life = lifecycle(server, size["warm"], size["idle_s"])
        api = api_sequence(server)
        t0 = time.perf_counter()
        data = listing(server, cwd, size["records"], size["http_records"], size["linger_s"])
        listing_s = time.perf_counter() - t0
    return report(life, api, data, size, listing_s)


def lifecycle_expectations(api: Sequence[tuple[str, list[Request]]]) -> list[Request]:
    return [r for _, items in api for r in items]


def report(
    life: dict[str, Any],
    api: Sequence[tuple[str, list[Request]]],
    data: dict[str, Any],
    size: dict[str, Any],
    listing_s: float,
) -> WorkloadResult:
    records = size["records"]
    warm = representative(life["warm"])
    first = life["first"]
    api_all = lifecycle_expectations(api)
    api_total = len(api_all)
    naive = data["naive"]["total"]
    per_minute = len(life["idle"]) * 60.0 / life["idle_s"]

    def n(items: Sequence[Request]) -> int:
        return len(requests_only(items))

    def ops(items: Sequence[Request]) -> dict[str, int]:
        counts: dict[str, int] = describe(items)["ops"]
        return counts

    def page_row(label: str, items: Sequence[Request], lists: int, gets: int) -> Row:
        got = ops(items)
        return Row(
            f"{label}, {records:,} jobs",
            "requests",
            "lower",
            {"jobkit": n(items), "naive": naive},
            target=f"<= {lists} LIST + {gets} GET" if lists else f"<= {gets} GET",
            met=(got["LIST"] <= lists or not lists) and got["GET"] <= gets,
            note=f"{got['LIST']} LIST + {got['GET']} GET",
        )

    phases = warm["phases"]
    run_items = phases["agent"] + phases["worker"]
    first_phases = first["phases"]
    rows = [
        Row(
            "one job submit->result, every process (warm agent)",
            "requests",
            "lower",
            {"jobkit": n(warm["items"]), "api": api_total},
        ),
        Row("one job: submit(), client", "requests", "lower", {"jobkit": n(phases["submit"])}),
        Row("one job: the run, agent + worker", "requests", "lower", {"jobkit": n(run_items)}),
        Row("one job: result(), client", "requests", "lower", {"jobkit": n(phases["result"])}),
        Row(
            "first job (the agent starts), every process",
            "requests",
            "lower",
            {"jobkit": n(first["items"]), "api": api_total},
        ),
        Row("idle agent", "requests/min", "lower", {"jobkit": per_minute}),
    ]
    cli = data["cli"]
    rows.append(page_row("`python -m jobkit list` (first page, CLI process)", cli["items"], 6, 51))
    expected = {  # (LISTs, GETs) the S3 store's docstring promises for a page of 50
        "jobs(limit=50)": (6, LIMIT),
        'jobs(state="RUNNING", limit=50)': (1, LIMIT),
        'jobs(name="train-1*", limit=50)': (0, LIMIT),
        'jobs(name="eval-*", limit=50)': (0, LIMIT),
    }
    for label, run in data["jobs"].items():
        lists, gets = expected[label]
        rows.append(page_row(f"`jobkit.{label}`", run["items"], lists, gets))
    held = data["held"]
    held_total = n(held["monitor"]) + n(held["agents"])
    rows.append(
        Row(
            f"`jobkit.jobs(limit=50)`, then holding the jobs {held['linger_s']:g} s: "
            "client monitor + the agent it starts",
            "requests",
            "lower",
            {"jobkit": held_total},
        )
    )

    lines: list[tuple[str, Sequence[Request]]] = [
        ("one job (warm): submit(), client", phases["submit"]),
        ("one job (warm): agent", phases["agent"]),
        ("one job (warm): worker", phases["worker"]),
        ("one job (warm): result(), client", phases["result"]),
        ("one job (warm): every process", warm["items"]),
        ("first job: submit(), client", first_phases["submit"]),
        ("first job: agent", first_phases["agent"]),
        ("first job: worker", first_phases["worker"]),
        ("first job: result(), client", first_phases["result"]),
        ("first job: every process", first["items"]),
        (f"idle agent, {life['idle_s']:g} s", life["idle"]),
    ]
    lines += [(f"store API alone: {label}", items) for label, items in api]
    lines.append(("store API alone: total", api_all))
    lines.append(("`python -m jobkit list`", cli["items"]))
    for label, run in data["jobs"].items():
        lines.append((f"`jobkit.{label}`", run["items"]))
    lines.append((f"held jobs, {held['linger_s']:g} s: client monitor", held["monitor"]))
    lines.append((f"held jobs, {held['linger_s']:g} s: agent it started", held["agents"]))
    extra = [breakdown_table(lines)]

    fill_info = data["fill"]
    spread = {
        phase: [n(r["phases"][phase]) for r in life["warm"]]
        for phase in ("submit", "agent", "worker", "result")
    }
    totals = [n(r["items"]) for r in life["warm"]]
    latency = statistics.median(r["submit_to_result_ms"] for r in life["warm"])
    agent_actions = describe(held["agents"])["actions"]
    notes = [
        f"s3: counted by the server (moto over HTTP in this process); store "
        f"s3://{BUCKET}/<prefix>?endpoint_url=...; local backend, local.cpus=2",
        f"s3: one job: {len(life['warm'])} warm runs after the first, the run with the median "
        f"total shown; totals {totals}; per run submit {spread['submit']}, agent "
        f"{spread['agent']}, worker {spread['worker']}, result() {spread['result']}; "
        f"submit->result median {latency:.0f} ms "
        "(timings are informational)",
        f"s3: the idle agent sent {len(life['idle'])} requests in {life['idle_s']:g} s "
        f"({', '.join(sorted({r.action + ' ' + r.area for r in life['idle']})) or 'none'})",
        f"s3: fill of {records:,} jobs with S3Store.create in batches of {BATCH}: the first "
        f"{fill_info['http_records']:,} over HTTP at {fill_info['http_records_per_s']:.0f} "
        f"records/s ({fill_info['http_requests']['total'] / fill_info['http_records']:.2f} "
        f"requests per record), the rest straight into moto's backend in "
        f"{fill_info['direct_seconds']:.1f} s",
        f"s3: naive scan: {data['naive']['lists']} LIST of jobs/ sent, "
        f"{data['naive']['gets']:,} GETs counted (not sent)",
        f"s3: `python -m jobkit list` showed {cli['rows_shown']} rows in {cli['seconds']:.2f} s",
        "s3: each `jobkit.jobs` ran in a fresh process; its count stops at its mark "
        "after the call returned; the same query straight on the store in this process: "
        + ", ".join(f"{label} {len(items)}" for label, items in data["store_query"].items()),
        f"s3: holding the {held['answer']['count']} jobs of jobs(limit=50) for "
        f"{held['linger_s']:g} s: the client monitor sent {n(held['monitor'])} requests and "
        f"an agent it started sent {n(held['agents'])} "
        f"({', '.join(f'{k} {v}' for k, v in agent_actions.items()) or 'none'})",
        f"s3: the agent started by that monitor: {held_agent_summary(held['agents'])}",
        f"s3: store listing part took {listing_s:.0f} s",
    ]
    for label, run in data["jobs"].items():
        if run["raced"] or run["gone"] or run["agents"]:
            notes.append(
                f"s3: {label}: besides the row's count, the child's client monitor sent "
                f"{len(run['monitor'])} requests ({len(run['raced'])} of them before the mark), "
                f"{len(run['gone'])} more arrived as the child exited (sender gone), and an "
                f"agent it started sent {len(run['agents'])}"
            )
    stray = [r for run in data["jobs"].values() for r in run["others"]]
    stray += cli["others"] + [r for r in life["first"]["phases"]["other"]]
    stray += [req for one in life["warm"] for req in one["phases"]["other"]]
    if stray:
        notes.append(f"s3: requests from unexpected processes: {describe(stray)}")
    problems = check_answers(data)
    notes += [f"s3: **check failed**: {p}" for p in problems]

    raw = {
        "sizes": size,
        "lifecycle": {
            "first": summarise_run(first),
            "warm": [summarise_run(r) for r in life["warm"]],
            "idle": describe(life["idle"]),
            "idle_s": life["idle_s"],
        },
        "api_sequence": {label: describe(items) for label, items in api},
        "fill": fill_info,
        "naive": data["naive"],
        "cli": {k: v for k, v in cli.items() if k not in ("items", "others")}
        | {"requests": describe(cli["items"]), "others": describe(cli["others"])},
        "jobs": {label: summarise_child(run) for label, run in data["jobs"].items()},
        "store_query": {label: describe(items) for label, items in data["store_query"].items()},
        "held": summarise_child(held),
        "problems": problems,
    }
    return WorkloadResult("s3", rows, raw, notes, extra)


def held_agent_summary(items: Sequence[Request]) -> str:
    """What the agent that a listing client started did, from its requests."""
    reqs = requests_only(items)
    if not reqs:
        return "none started"
    gets = sum(r.action == "GetObject" and r.area == "record" for r in reqs)
    moved = {
        state: sum(r.action == "PutObject" and r.area == f"index:{state}" for r in reqs)
        for state in ("QUEUED", "RUNNING", "FAILED")
    }
    pids = sorted({r.pid for r in reqs})
    return (
        f"{len(pids)} process(es), {len(reqs)} requests: {gets} record GETs (recovery reads "
        f"every RUNNING local job, the queue every PENDING/QUEUED one, whatever host made "
        f"them), state keys written: QUEUED {moved['QUEUED']}, RUNNING {moved['RUNNING']} "
        f"(queued jobs this machine never submitted, claimed to run here), "
        f"FAILED {moved['FAILED']}"
    )


def summarise_run(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "total": describe(run["items"]),
        "phases": {k: describe(v) for k, v in run["phases"].items()},
        "submit_ms": run["submit_ms"],
        "submit_to_result_ms": run["submit_to_result_ms"],
        "sequence": [f"{r.role} {r.action} {r.area} {r.status}" for r in run["items"]],
    }


def summarise_child(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "kwargs": run["kwargs"],
        "answer": {k: v for k, v in run["answer"].items() if k != "names"},
        "requests": describe(run["items"]),
        "monitor_before_mark": len(run["raced"]),
        "monitor": describe(run["monitor"]),
        "gone": describe(run["gone"]),
        "agent": describe(run["agents"]),
        "others": describe(run["others"]),
        "linger_s": run["linger_s"],
    }
