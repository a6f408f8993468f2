"""Run every jobkit benchmark side by side with its anchors, in one process.

    python benchmarks/run.py            # full run, about 3 minutes on 2 cores
    python benchmarks/run.py --quick    # fewer repetitions, under a minute
    python benchmarks/run.py --only slurm   # the Slurm workloads (a live cluster)
    python benchmarks/run.py --only s3      # S3 request counts (moto over HTTP)
    python benchmarks/run.py --only k8s     # Kubernetes API request counts (emulated API)
    python benchmarks/run.py --huge         # plus scale-huge: a 100,000-item map (minutes)

Numbers from different runs or machines are not comparable, so every
workload runs jobkit and its anchors (Ray local when the ``bench`` extra is
installed, ProcessPoolExecutor, a subprocess per job, submitit's
LocalExecutor) in this same run, and the report gives ratios.  Everything
happens in a throwaway directory with its own ``JOBKIT_HOME`` and stores;
the user's jobkit state is never touched.
Results: a markdown table on stdout, raw numbers in ``results/latest.json``
(``results/latest-quick.json`` for ``--quick``) and the table in
``results/latest.md``.

The Slurm workloads (``slurm-*``, ``slurm.py``) need a live cluster and take
minutes, so a plain run leaves them out; ``--only slurm`` runs them all.
The ``s3`` workload (``s3.py``: request counts against a moto server) is
left out of a plain run too; ``--only s3`` runs it.
A results file is only ever written by the complete set it is named after:
``latest`` by the default set, ``slurm`` by all the Slurm workloads, ``s3``
by the S3 one, ``latest-huge`` by the default set plus ``scale-huge``,
``scale-huge`` by that one alone, and any other selection goes to ``partial`` (``-quick``
appended for ``--quick``), so a subset never overwrites the committed full
results.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bigarg
import k8s
import latency
import makespan
import report
import s3
import scale
import slurm
import startup
import systems
import throughput
from common import Context, Row, WorkloadResult, timed
from tasks import trivial

HERE = Path(__file__).resolve().parent
WORKLOADS: dict[str, Callable[[Context], WorkloadResult]] = {
    "latency": latency.run,
    "throughput": throughput.run,
    "makespan": makespan.run,
    "scale": scale.run,
    "bigarg": bigarg.run,
    "imports": startup.run_imports,
    "list": startup.run_list,
    "slurm-latency": slurm.run_latency,
    "slurm-map": slurm.run_map,
    "slurm-queries": slurm.run_queries,
    "s3": s3.run,
    "k8s": k8s.run,
    "scale-huge": scale.run_huge,
}
SLURM = [name for name in WORKLOADS if name.startswith("slurm-")]
S3 = ["s3"]
K8S = ["k8s"]
HUGE = ["scale-huge"]
DEFAULT = [name for name in WORKLOADS if name not in SLURM + S3 + K8S + HUGE]
WORKLOADS["bigstore"] = __import__("bigstore").run  # --only bigstore: not in a plain run
GROUPS = {"slurm": SLURM}
"""``--only`` shorthands for several workloads."""
OUTPUTS = {
    "latest": DEFAULT,
    "latest-huge": DEFAULT + HUGE,
    "slurm": SLURM,
    "s3": S3,
    "k8s": K8S,
    "scale-huge": HUGE,
}
"""Results file stem -> the exact workload set that may write it."""
NEED_SYSTEMS = {"latency", "throughput", "makespan", "scale", "scale-huge"}
STARTUP_TABLE = {"imports", "list"}


def git(*args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(HERE), *args], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def machine_info(quick: bool) -> dict[str, Any]:
    import cloudpickle
    import numpy
    import submitit

    import jobkit

    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gb": mem_kb / 2**20,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jobkit": jobkit.__version__,
        "numpy": numpy.__version__,
        "cloudpickle": cloudpickle.__version__,
        "submitit": submitit.__version__,
        "git_commit": git("rev-parse", "HEAD") or "unknown",
        "src_dirty": bool(git("status", "--porcelain", "--", ":/src")),  # from the top
        "load_start": os.getloadavg()[0],
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def start_systems(workdir: Path) -> tuple[dict[str, Any], dict[str, float], dict[str, str]]:
    """Create and warm the systems; returns them, each first call's ms, and the absent ones.

    Ray is started here, once per run (``ray.init`` takes ~5 s); without the
    ``bench`` extra it is absent and every Ray cell says so.
    """
    made: dict[str, Any] = {"jobkit": systems.JobkitLocal(workdir / "jobkit", cpus=2)}
    ray, why = systems.start_ray(2)
    if ray is not None:
        made["ray"] = ray
    made["pool"] = systems.Pool(2)
    made["floor"] = systems.SubprocessFloor(workdir / "floor", slots=2)
    made["submitit"] = systems.Submitit(workdir / "submitit")
    cold = {}
    for key, system in made.items():
        seconds, value = timed(system.call, trivial, 0)
        assert value == 1, f"{key} returned {value!r}"
        cold[key] = seconds * 1000
    return made, cold, {"ray": why} if ray is None else {}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 1 min)")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of {','.join(WORKLOADS)}, or 'slurm' for all slurm-* "
        "(default: all but the Slurm ones, s3, k8s and scale-huge)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON output (default: results/latest.json for the default set, "
        "results/slurm.json for all Slurm workloads, results/s3.json for s3, "
        "results/partial.json otherwise)",
    )
    parser.add_argument(
        "--huge",
        action="store_true",
        help="also run scale-huge: a 100,000-item map (minutes)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    chosen = [w for w in args.only.split(",") if w]
    expanded = [name for w in chosen for name in GROUPS.get(w, [w])]
    unknown = set(expanded) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    args.only = list(dict.fromkeys(expanded)) or DEFAULT  # each once, in the order given
    if args.huge and "scale-huge" not in args.only:
        args.only = [*args.only, "scale-huge"]
    if args.out is None:
        stem = next((k for k, v in OUTPUTS.items() if set(v) == set(args.only)), "partial")
        args.out = HERE / "results" / f"{stem}{'-quick' if args.quick else ''}.json"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="jobkit-bench-"))
    for name in [k for k in os.environ if k.startswith("JOBKIT_")]:
        del os.environ[name]
    os.environ["JOBKIT_HOME"] = str(workdir / "home")
    os.chdir(workdir)  # no project jobkit.toml or [tool.jobkit] applies
    machine = machine_info(args.quick)
    if set(SLURM) & set(args.only) and slurm.cluster_available()[0]:
        machine["slurm"] = slurm.cluster_facts()
    if set(S3) & set(args.only):
        machine["s3"] = s3.facts()
    if set(K8S) & set(args.only):
        machine["k8s"] = k8s.facts()

    ctx = Context(quick=args.quick, workdir=workdir, systems={})
    results: list[WorkloadResult] = []
    try:
        if NEED_SYSTEMS & set(args.only):
            ctx.systems, ctx.cold_start_ms, ctx.missing = start_systems(workdir)
            for key, why in ctx.missing.items():
                print(f"{key}: {why}", file=sys.stderr, flush=True)
            if "ray" in ctx.systems:
                machine["ray"] = ctx.systems["ray"].version
        for name in args.only:
            print(
                f"[{time.perf_counter() - started:6.1f} s] {name} ...", file=sys.stderr, flush=True
            )
            results.append(WORKLOADS[name](ctx))
    finally:
        for system in ctx.systems.values():
            system.close()
        if args.keep:
            print(f"scratch directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    machine["total_s"] = time.perf_counter() - started
    machine["load_end"] = os.getloadavg()[0]
    elsewhere = STARTUP_TABLE | set(SLURM) | set(S3) | set(K8S)
    main_rows: list[Row] = [r for res in results if res.name not in elsewhere for r in res.rows]
    startup_rows = [r for res in results if res.name in STARTUP_TABLE for r in res.rows]
    slurm_rows = [r for res in results if res.name in SLURM for r in res.rows]
    s3_rows = [r for res in results if res.name in S3 for r in res.rows]
    k8s_rows = [r for res in results if res.name in K8S for r in res.rows]
    notes = [note for res in results for note in res.notes]
    tables = [t for res in results for t in res.tables]
    machine["workloads"] = args.only
    text = report.markdown(
        main_rows, startup_rows, notes, machine, slurm_rows, s3_rows, tables, k8s_rows
    )
    print(text)
    report.write_json(
        args.out,
        machine,
        main_rows + startup_rows + slurm_rows + s3_rows + k8s_rows,
        {res.name: res.raw for res in results},
        notes,
    )
    args.out.with_suffix(".md").write_text(text + "\n")
    print(f"\nraw numbers: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
