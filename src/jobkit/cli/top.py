"""``jobkit top``: running jobs with their live usage, refreshed until ``q``.

The figures are the summaries the workers' samplers write into the records
(``JobRecord.usage``, every ~10 s, see :mod:`jobkit.usage`); ``top`` only
reads the store, so it shows jobs of every backend alike::

    every INTERVAL s: store.query(running, filters) ─► session.fresh (schedulers asked)
        ─► sort (busy cores by default: --sort cores) ─► + jobs of the last screen that just ended
        ─► rich table in a Live display
    stdin in cbreak mode: `q` ─► leave; terminal settings restored on every exit
        (q, Ctrl-C, SIGTERM, an error)

``--json`` prints one snapshot (a JSON list) and exits; so does a run without
a terminal on stdin or stdout (a table then): no key could stop it, or no
screen redraw it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobkit.cli import render
from jobkit.cli.options import check_sort, parse_state_option
from jobkit.cli.session import Session
from jobkit.cli.usage_view import SORT_HELP, cpu_cell, figures_age, gpu_cell, mem_cell, sort_key
from jobkit.states import JobRecord, JobState
from jobkit.usage import flags

if TYPE_CHECKING:
    from rich.table import Table

    from jobkit.stores.base import Store

# Only the standard library and the CLI's own modules at import: the ``jobkit``
# app imports this module for every command, ``list`` included.

QUIT_KEYS = frozenset(b"qQ")


def top(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            "-s",
            metavar="STATE",
            help="Jobs in these states instead of RUNNING (repeat or comma-separate).",
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", "-b", metavar="NAME", help="Only jobs of this backend."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", metavar="GLOB", help="Only jobs whose name matches."),
    ] = None,
    sort: Annotated[
        str,
        typer.Option(
            "--sort",
            metavar="KEY",
            help=f"Biggest first: {SORT_HELP}; or created (newest first).",
        ),
    ] = "cores",
    interval: Annotated[
        float,
        typer.Option("--interval", metavar="S", min=0.1, help="Seconds between refreshes."),
    ] = 2.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one snapshot as a JSON list and exit.")
    ] = False,
) -> None:
    """Show running jobs with live CPU, memory and GPU use; `q` quits.

    Without a terminal (stdin or stdout a pipe, cron), prints one snapshot table and exits.
    """
    key = check_sort(sort)
    states = parse_state_option(state) if state else [JobState.RUNNING]
    session = ctx.find_object(Session) or Session()

    def take() -> list[JobRecord]:
        return snapshot(session, states=states, backend=backend, name=name, sort=key)

    if as_json:
        now = time.time()
        render.print_json([snapshot_entry(r, now) for r in take()])
        return
    if not _interactive():
        records = take()
        if not records:
            typer.echo(f"No {_states_text(states)} jobs in {session.store.url}.", err=True)
            return
        render.emit(render.console(), table(records, time.time()))
        return
    title = f"{session.store.url}: {_states_text(states)} jobs, sorted by {key}"
    live_loop(take, session.store, title, interval)


def snapshot(
    session: Session,
    *,
    states: Collection[JobState],
    backend: str | None,
    name: str | None,
    sort: str,
) -> list[JobRecord]:
    """The matching jobs, asked of their schedulers, biggest first."""
    now = time.time()
    records = session.fresh(session.store.query(states=states, backend=backend, name=name))
    records.sort(key=sort_key(sort, now), reverse=True)
    return records


def snapshot_entry(record: JobRecord, now: float) -> dict[str, Any]:
    """One job of ``--json``: where it runs, the usage summary, its flags."""
    elapsed = None
    if record.started_at:
        elapsed = (record.finished_at or now) - record.started_at
    return {
        "id": record.id,
        "name": record.name,
        "backend": record.backend,
        "host": record.host,
        "state": record.state.value,
        "started_at": record.started_at,
        "elapsed_seconds": elapsed,
        "resources": dict(record.resources),
        "usage": dict(record.usage),
        "figures_age_seconds": figures_age(record, now),
        "flags": [{"name": f.name, "text": f.text} for f in flags(record)],
    }


_HEADERS = ("ID", "NAME", "BACKEND", "HOST", "STATE", "ELAPSED", "CORES", "RSS/MEM", "GPU")


def table(records: list[JobRecord], now: float, title: str | None = None) -> Table:
    """The jobs as rows: where, how long, CPU cores, RSS/mem, GPU, flags, figures' age."""
    from rich.table import Table
    from rich.text import Text

    out = Table(box=None, header_style="bold", pad_edge=False, title=title, title_justify="left")
    id_width = max((len(r.id) for r in records), default=2)
    for header in _HEADERS:  # ids are never cut: they are what users copy
        out.add_column(
            header,
            no_wrap=True,
            justify="right" if header == "ELAPSED" else "left",
            min_width=id_width if header == "ID" else None,
        )
    out.add_column("FLAGS", style="bold yellow")
    out.add_column("UPDATED", no_wrap=True, style="dim")
    for r in records:
        age = figures_age(r, now)
        out.add_row(
            Text(r.id),
            Text(render.printable(r.name)),
            Text(r.backend),
            Text(render.printable(r.host or "-")),
            Text(render.state_text(r), style=render.STATE_STYLES.get(r.state, "")),
            render.run_time(r, now),
            cpu_cell(r.usage),
            mem_cell(r),
            gpu_cell(r.usage),
            Text(",".join(f.name for f in flags(r)) or "-"),
            "-" if age is None else f"{render.format_span(age)} ago",
        )
    if not records:
        out.caption = "no jobs match"
    return out


def live_loop(take: Any, store: Store, title: str, interval: float) -> None:
    """Refresh the table every ``interval`` s until `q` (or Ctrl-C, SIGTERM)."""
    from rich.live import Live

    console = render.console()
    heading = f"{title} (every {interval:g}s; q to quit)"
    shown: list[str] = []
    with keys_in_cbreak() as fd, Live(console=console, auto_refresh=False) as live:
        while True:
            now = time.time()
            records = with_just_ended(store, shown, take(), now)
            shown = [r.id for r in records]
            live.update(table(records, now, heading), refresh=True)
            if wait_for_quit(fd, interval):
                return


ENDED_SHOWN = 10.0
"""Seconds a job that ended while on screen stays there, under the live ones:
the user sees how it ended (and its final figures) instead of a row vanishing."""


def with_just_ended(
    store: Store, shown: list[str], records: list[JobRecord], now: float
) -> list[JobRecord]:
    """``records``, then the jobs of the last refresh that ended in the last
    :data:`ENDED_SHOWN` seconds (newest end first)."""
    current = {r.id for r in records}
    gone = [job_id for job_id in shown if job_id not in current]
    if not gone:
        return records
    ended = [
        r
        for r in store.get_many(gone).values()
        if r.is_terminal and r.finished_at and now - r.finished_at <= ENDED_SHOWN
    ]
    ended.sort(key=lambda r: r.finished_at or 0.0, reverse=True)
    return records + ended


@contextlib.contextmanager
def keys_in_cbreak() -> Iterator[int]:
    """stdin in cbreak mode (keys arrive one at a time, unechoed), restored on
    every way out: SIGTERM is turned into an exit so that ``finally`` runs."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGTERM, previous)


def wait_for_quit(fd: int, seconds: float) -> bool:
    """Read keys for ``seconds``; True as soon as `q` is pressed (or stdin closes)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return False
        data = os.read(fd, 64)
        if not data or any(byte in QUIT_KEYS for byte in data):
            return True
    return False


def _interactive() -> bool:
    """Keys can be read (stdin) and the table redrawn in place (stdout)."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _states_text(states: Collection[JobState]) -> str:
    return "/".join(s.value for s in states)
