"""``jobkit watch``: keep held jobs moving with no client waiting on them.

Jobs held in the store for their dependencies (backends that do not hold
jobs themselves: third-party plugins, Kubernetes, a job after one on another
backend) are released by the reconciler of *any* jobkit process.  A chain
submitted from a notebook that was then shut down needs one such process;
this is it, meant to run in a tmux or as a Deployment::

    every INTERVAL s: store.query(active) ─► held ones ─► client.reconcile
        (dependencies.step: release ─► backend.submit / backend.release,
         or fail with DEPENDENCY)  ─► one line per job that moved

SIGINT or SIGTERM stop it between passes; ``--once`` makes one pass.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from jobkit.cli.session import Session


def watch(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[
        float,
        typer.Option("--interval", metavar="S", min=0.05, help="Seconds between passes."),
    ] = 2.0,
) -> None:
    """Release held jobs whose dependencies succeeded (fail those whose failed), until stopped.

    Run one (tmux, a Deployment) to keep long chains moving on backends that do
    not hold jobs themselves, with no client waiting on them."""
    from jobkit.dependencies import active_held

    session = ctx.find_object(Session) or Session()
    client = session.client
    stop = threading.Event()
    if not once:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"watching {client.store.url} for held jobs (Ctrl-C to stop)", err=True)
    while True:
        held = active_held(client.store)
        if held:
            client.reconcile(held)
            after = client.store.get_many([r.id for r in held])
            for record in held:
                now = after.get(record.id)
                if now is None:
                    continue
                if now.state.is_terminal:
                    typer.echo(f"{now.id} {now.state.value}: {now.message or ''}".rstrip(": "))
                elif now.extra.get("released_at") and not record.extra.get("released_at"):
                    typer.echo(f"{now.id} released ({now.state.value})")
        if once or stop.wait(interval):
            return
