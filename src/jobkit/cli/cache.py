"""``jobkit cache list`` and ``jobkit cache clear``: the cache pointers of a store.

A pointer (``cache/<key>``, see :mod:`jobkit.caching`) names the job whose
result answers a cached call.  Listing shows each with its source job's
state now (a pointer to a job that failed or was pruned is a miss); clearing
deletes pointers only, never jobs or results, so a cleared call runs again
at its next submit.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from jobkit.cli import render
from jobkit.cli.errors import fail
from jobkit.cli.session import Session

cache_app = typer.Typer(
    name="cache",
    help="Cached calls (@jobkit.remote(cache=True)): list them, or forget them.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
)

NameOption = Annotated[
    str | None,
    typer.Option(
        "--name", "-n", metavar="GLOB", help="Only entries whose job name matches, e.g. 'feat*'."
    ),
]


def _session(ctx: typer.Context) -> Session:
    session = ctx.find_object(Session)
    return session if session is not None else Session()


@cache_app.command("list")
def list_entries(
    ctx: typer.Context,
    name: NameOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List cached calls, newest first: key, function, source job and its state."""
    from jobkit import caching

    store = _session(ctx).store
    entries = caching.entries(store, name=name)
    records = store.get_many({e.job_id for e in entries if e.job_id})
    states = {i: r.state.value for i, r in records.items()}
    if as_json:
        render.print_json(
            [{**e.to_dict(), "state": states.get(e.job_id, "MISSING")} for e in entries]
        )
        return
    if not entries:
        typer.echo(f"No cached calls in {store.url}.", err=True)
        return
    now = time.time()
    rows = [
        (
            e.key[:16],
            render.printable(e.function),
            render.printable(e.name),
            render.printable(e.job_id),
            states.get(e.job_id, "MISSING"),
            render.format_age(e.created_at, now),
        )
        for e in entries
    ]
    headers = ("KEY", "FUNCTION", "NAME", "SOURCE JOB", "STATE", "CREATED")
    sys.stdout.write(render.columns(headers, rows))


@cache_app.command("clear")
def clear(
    ctx: typer.Context,
    name: NameOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Clear without asking for confirmation.")
    ] = False,
) -> None:
    """Forget cached calls (all, or those matching --name): they run again when next
    submitted.  Jobs and their results are kept."""
    from jobkit import caching

    store = _session(ctx).store
    entries = caching.entries(store, name=name)
    which = f" matching {name!r}" if name is not None else ""
    if not entries:
        typer.echo(f"No cached calls{which} in {store.url}.", err=True)
        return
    if not yes:
        if not sys.stdin.isatty():
            fail(
                f"would clear {len(entries)} cached call(s){which} in {store.url}; "
                "run again with --yes to clear them"
            )
        typer.confirm(
            f"Clear {len(entries)} cached call(s){which} in {store.url}?", abort=True, err=True
        )
    cleared = caching.clear(store, entries)
    typer.echo(f"Cleared {cleared} cached call(s){which} in {store.url}.")
