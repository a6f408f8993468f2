"""The ``jobkit`` command: list, inspect, follow, cancel, retry and prune jobs.

A thin layer, in the manner of fastapi-cli: each command gathers its
arguments, calls the library (through :class:`~jobkit.cli.session.Session`,
which loads config, store and client only when asked) and renders the answer
with :mod:`jobkit.cli.render`.  No job logic lives here.

Errors become one line and an exit code at one edge,
:class:`~jobkit.cli.errors.JobkitGroup` (see :mod:`jobkit.cli.errors` for the
exit codes); ``result``'s waiting and loading live in :mod:`jobkit.cli.outcomes`.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from jobkit.cli import render, usage_view
from jobkit.cli.cache import cache_app
from jobkit.cli.errors import EXIT_ERROR, JobkitGroup, fail, print_error
from jobkit.cli.options import check_sort, parse_state_option
from jobkit.cli.outcomes import failure_line, load_outcome, wait_for
from jobkit.cli.session import Session, session_of
from jobkit.cli.store import store_app
from jobkit.cli.timeline import timeline
from jobkit.cli.top import top
from jobkit.cli.ui import ui
from jobkit.cli.watch import watch
from jobkit.errors import JobkitError
from jobkit.states import TERMINAL_STATES, FailureReason, JobState

app = typer.Typer(
    cls=JobkitGroup,
    name="jobkit",
    help="Find, inspect and control jobkit jobs recorded in the store.",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from jobkit._version import __version__

        typer.echo(f"jobkit {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help="Store URL, e.g. sqlite:///~/jobs.db (overrides JOBKIT_STORE and config files).",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", metavar="NAME", help="Configuration profile to apply."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Find, inspect and control jobkit jobs recorded in the store."""
    if ctx.invoked_subcommand is None:
        help_text = ctx.get_help()
        if help_text:
            typer.echo(help_text)
        raise typer.Exit(2)
    session = Session(store=store, profile=profile)
    ctx.obj = session
    ctx.call_on_close(session.close)
    _show_library_warnings(ctx)


def _show_library_warnings(ctx: typer.Context) -> None:
    """Library warnings (a skipped corrupted record) as ``Warning: ...`` lines on stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr)  # this command's stderr (test runners swap it)
    handler.setFormatter(logging.Formatter("Warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("jobkit")
    logger.addHandler(handler)
    ctx.call_on_close(lambda: logger.removeHandler(handler))


# -- option types ----------------------------------------------------------------


StateOption = Annotated[
    list[str] | None,
    typer.Option(
        "--state",
        "-s",
        metavar="STATE",
        help="Only jobs in this state (any case; repeat or comma-separate for several).",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts (times as epoch seconds).")
]
JobIdArgument = Annotated[str, typer.Argument(metavar="JOB_ID", help="A job id (jk-...).")]


# -- commands ------------------------------------------------------------------


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    state: StateOption = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", "-b", metavar="NAME", help="Only jobs of this backend."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", "-n", metavar="GLOB", help="Only jobs whose name matches, e.g. 'train*'."
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", "-l", metavar="N", help="Show at most this many (newest first)."),
    ] = 50,
    sort: Annotated[
        str,
        typer.Option(
            "--sort",
            metavar="KEY",
            help=f"created (newest first), or biggest first: {usage_view.SORT_HELP}.",
        ),
    ] = "created",
    idle_gpus: Annotated[
        bool, typer.Option("--idle-gpus", help="Only jobs that asked for GPUs and left them idle.")
    ] = False,
    flagged: Annotated[
        bool, typer.Option("--flagged", help="Only jobs with a waste flag (idle GPUs, CPUs, mem).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first (or by usage with --sort; adds USAGE and FLAGS columns)."""
    if limit < 1:
        raise typer.BadParameter(
            f"{limit} is not a positive number of jobs; use e.g. --limit 50",
            param_hint="'--limit'",
        )
    states = parse_state_option(state) if state else None
    session = session_of(ctx)
    sort = sort.strip().lower()
    if sort != "created" or idle_gpus or flagged:  # usage is in records: read them
        from jobkit.cli.usage_list import list_by_usage

        sort = check_sort(sort)
        list_by_usage(
            session,
            states=states,
            backend=backend,
            name=name,
            limit=limit,
            sort=sort,
            idle_gpus=idle_gpus,
            flagged=flagged,
            as_json=as_json,
        )
        return
    if as_json:  # whole records
        records = session.store.query(states=states, backend=backend, name=name, limit=limit + 1)
        render.print_json([r.to_dict() for r in session.fresh(records[:limit])])
        return
    # The table's columns only: an S3 store answers from its index keys, no record read.
    rows = session.store.rows(states=states, backend=backend, name=name, limit=limit + 1)
    more, rows = len(rows) > limit, rows[:limit]  # one extra row: are there more?
    rows = session.fresh_rows(rows)
    if not rows:
        # Name the store: the usual cause is a different store than the user meant.
        typer.echo(f"No jobs match in {session.store.url}.", err=True)
        return
    render.jobs_table(rows, time.time())
    if more:
        typer.echo(f"(the newest {limit} shown; use --limit to see more)", err=True)


@app.command()
def status(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Show everything known about a job, or a per-state summary of a job array."""
    from jobkit.lookup import find

    session = session_of(ctx)
    found = find(session.store, job_id)
    if found.is_array:
        members = session.fresh(found.members)
        if as_json:
            render.print_json(
                {
                    "array_id": found.id,
                    "total": len(members),
                    "states": render.state_counts(members),
                    "usage": usage_view.array_usage(members, time.time()),
                    "jobs": [m.to_dict() for m in members],
                }
            )
        else:
            now = time.time()
            render.array_summary(found.id, members, now)
            usage_view.array_section(members, now)
        return
    record = session.fresh(found.records)[0]
    waits = _waiting_on(session, record)
    if as_json:
        data = record.to_dict()
        if waits:
            data["waiting_on"] = waits
        render.print_json(data)
    else:
        now = time.time()
        render.record_table(record, now, waiting_on=waits)
        usage_view.usage_section(record, now)
        render.attempts_section(record, now)


def _waiting_on(session: Session, record: Any) -> dict[str, str]:
    """A held job's dependencies and their states (empty for any other job)."""
    from jobkit.dependencies import is_held, waiting_on

    if not record.depends_on or record.is_terminal or not is_held(record):
        return {}
    return waiting_on(session.store, record)


@app.command()
def logs(
    ctx: typer.Context,
    job_id: JobIdArgument,
    stderr: Annotated[
        bool, typer.Option("--stderr", help="Show stderr instead of stdout.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")
    ] = False,
) -> None:
    """Print what a job wrote to stdout (or stderr)."""
    session = session_of(ctx)
    client = session.client
    record = session.record(job_id.strip())
    stream = "stderr" if stderr else "stdout"
    out = sys.stdout
    if not follow:  # straight from the backend: a Job handle would start watching it
        out.write(client.read_logs(record, stream))
        out.flush()
        return
    from jobkit.job import Job

    job: Job[Any] = Job(client, record)
    for line in job.logs(stream, follow=True):
        out.write(line)
        out.flush()


@app.command()
def result(
    ctx: typer.Context,
    job_id: JobIdArgument,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON (if it is serialisable).")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for the job to end instead of failing.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", metavar="SECONDS", help="Wait at most this long (implies --wait)."
        ),
    ] = None,
) -> None:
    """Print a finished job's return value (exit 1 if it failed or has not finished)."""
    if timeout is not None and not timeout >= 0:
        raise typer.BadParameter(
            f"{timeout:g} is not a number of seconds >= 0", param_hint="'--timeout'"
        )
    session = session_of(ctx)
    client = session.client
    job_id = job_id.strip()
    record = session.record(job_id)
    if not record.is_terminal:
        if not (wait or timeout is not None):
            fail(
                f"job {job_id} is {record.state.value} and has no result yet; "
                f"wait for it with `jobkit result {job_id} --wait`"
            )
        record = wait_for(client, record, timeout)
    if record.state is JobState.CANCELLED:
        fail(f"job {job_id} was cancelled; it has no result")
    if record.state is JobState.FAILED and record.failure_reason not in (None, FailureReason.ERROR):
        detail = f": {render.first_line(record.message)}" if record.message else ""
        fail(f"job {job_id} failed: {record.failure_reason}{detail}")
    outcome = load_outcome(client, record)
    if not outcome.ok:
        fail(failure_line(job_id, outcome.error))
    value = outcome.value
    if as_json:
        import json

        try:
            text = json.dumps(value, indent=2, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            fail(
                f"the result of job {job_id} ({type(value).__name__}) is not JSON-serialisable "
                f"({render.first_line(str(exc))}); run without --json to print its repr()"
            )
        typer.echo(text)
    else:
        typer.echo(repr(value))


@app.command()
def cancel(
    ctx: typer.Context,
    job_ids: Annotated[
        list[str], typer.Argument(metavar="JOB_ID...", help="Jobs (or job arrays) to cancel.")
    ],
) -> None:
    """Cancel jobs, killing those that run; report those that had already ended.

    A job array's id cancels every job of the array still live, reported in one line.
    """
    from jobkit.cancelling import cancel_ids

    report = cancel_ids(session_of(ctx).client, job_ids)
    for target in report.targets:
        if not target.is_array:
            if target.cancelled:
                typer.echo(f"cancelled {target.id}")
            elif target.ended:
                typer.echo(f"{target.id} had already ended ({render.state_text(target.ended[0])})")
        else:
            typer.echo(
                f"array {target.id}: cancelled {len(target.cancelled)} of {target.total} jobs "
                f"({len(target.ended)} had already ended)"
            )
    for message in [*report.problems, *report.unknown]:
        print_error(message)
    if not report.ok:
        raise typer.Exit(EXIT_ERROR)


@app.command()
def retry(
    ctx: typer.Context,
    job_ids: Annotated[
        list[str],
        typer.Argument(metavar="JOB_ID...", help="FAILED/CANCELLED jobs, or job arrays."),
    ],
    as_json: JsonOption = False,
) -> None:
    """Rerun failed or cancelled jobs as new attempts of the same ids.

    A job array's id reruns just its FAILED and CANCELLED items, in one
    submission; its succeeded items keep their results.
    """
    jobs = session_of(ctx).client.retry(job_ids)
    rows = [
        {"id": j.id, "attempt": j._record.attempt, "state": j._record.state.value} for j in jobs
    ]
    if as_json:
        render.print_json(rows)
        return
    if not rows:
        typer.echo(f"nothing to retry: no FAILED or CANCELLED job in {', '.join(job_ids)}")
    for row in rows:
        typer.echo(f"retrying {row['id']} (attempt {row['attempt']}, {row['state']})")


@app.command()
def backends(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show which backends are usable here, and why not."""
    from jobkit.backends import availability, known_backends

    config = session_of(ctx).config
    names = dict.fromkeys([*sorted(known_backends()), *_entry_point_backends()])
    rows = []
    for name in names:
        try:
            ok, detail = availability(name, config)
        except (ImportError, JobkitError) as exc:  # the library's message has the install hint
            ok, detail = (
                False,
                f"not available: {render.first_line(str(exc)) or type(exc).__name__}",
            )
        except Exception as exc:  # a broken third-party backend must not hide the others
            ok, detail = (
                False,
                f"not available: {type(exc).__name__}: {render.first_line(str(exc))}",
            )
        rows.append(
            {
                "name": name,
                "available": bool(ok),
                "detail": str(detail),
                "default": name == config.backend,
            }
        )
    if as_json:
        render.print_json(rows)
    else:
        render.backends_table(rows)


def _entry_point_backends() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="jobkit.backends"))


@app.command()
def plan(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="MODULE:FUNC, e.g. train:main or pkg.mod:fn")],
    backend: Annotated[
        str | None, typer.Option("--backend", "-b", help="Plan for this backend.")
    ] = None,
    after: Annotated[
        list[str] | None,
        typer.Option(
            "--after", help="A job or array id it would depend on (repeatable): shows the hold."
        ),
    ] = None,
) -> None:
    """Dry run: the exact sbatch script (or description) a submission would use."""
    from jobkit.cli.planning import job_name, load_target

    fn, resources, chosen = load_target(target)
    client = session_of(ctx).client
    backend_obj = client.backend(backend or chosen)
    res = client.resolve_resources(resources)
    backend_obj.check_resources(res)
    checkpointable = callable(getattr(fn, "checkpoint", None))
    name = res.name or job_name(fn)  # as a submit names it
    for warning in backend_obj.plan_warnings(res):
        typer.echo(f"Warning: {warning}", err=True)
    if after:  # only then: backends written before ``after`` still plan
        import inspect

        if "after" not in inspect.signature(backend_obj.plan).parameters:
            fail(f"backend {backend_obj.name!r} cannot plan with --after: plan without it")
        planned = backend_obj.plan(res, checkpointable=checkpointable, name=name, after=after)
    else:
        planned = backend_obj.plan(res, checkpointable=checkpointable, name=name)
    typer.echo(planned, nl=False)


@app.command()
def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Delete ended jobs created longer ago than this, e.g. 7d, 12h, 90m.",
        ),
    ] = None,
    state: StateOption = None,
    corrupted: Annotated[
        bool,
        typer.Option("--corrupted", help="Also delete records the store can no longer read."),
    ] = False,
    orphans: Annotated[
        bool,
        typer.Option(
            "--orphans",
            help="Only delete payloads no record points to (every prune deletes those too).",
        ),
    ] = False,
    orphan_grace: Annotated[
        str,
        typer.Option(
            "--orphan-grace",
            metavar="DURATION",
            help="How old a payload without a record must be to go (default 1h).",
        ),
    ] = "1h",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete old ended jobs: records, results and log files. Never touches live jobs.

    Also deletes payloads that no record points to (their submitter died
    before recording its jobs) once older than --orphan-grace."""
    from jobkit import pruning
    from jobkit.cli.prune import parse_age, show

    if older_than is None and not corrupted and not orphans:
        raise typer.BadParameter(
            "give how old a job must be to go, e.g. --older-than 7d (or --corrupted, or --orphans)",
            param_hint="'--older-than'",
        )
    grace = parse_age(orphan_grace, option="--orphan-grace").total_seconds()
    states = parse_state_option(state, terminal_only=True) if state else sorted(TERMINAL_STATES)
    age = parse_age(older_than) if older_than is not None else None
    store = session_of(ctx).store
    plan = pruning.plan(
        store,
        states=states,
        age=age,
        corrupted=corrupted,
        now=time.time(),
        orphan_grace=grace,
    )
    report = plan.to_dict(dry_run=dry_run)
    if not dry_run:
        failures = pruning.execute(store, plan)
        report["log_files_not_removed"] = failures
    if as_json:
        render.print_json(report)
    else:
        show(plan, dry_run=dry_run)
    if not dry_run and report["log_files_not_removed"]:
        failures = report["log_files_not_removed"]
        fail(f"could not remove {len(failures)} log file(s), e.g. {failures[0]}")


app.add_typer(store_app)
app.add_typer(cache_app)
app.command()(watch)
app.command()(timeline)
app.command()(top)
app.command()(ui)


def main() -> int:
    """Console-script entry point (``jobkit = "jobkit.cli.app:main"``)."""
    code: int = app(standalone_mode=False)
    return code
