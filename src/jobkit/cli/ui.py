"""``jobkit ui``: serve the web view of the store on this machine.

Binds the socket first (``--port 0`` picks a free port), so the printed URL
names the real port before the server answers; then uvicorn serves
:func:`jobkit.ui.app.build_app` on that socket until Ctrl-C.  Starlette and
uvicorn are imported here, only when this command runs.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
from typing import Annotated

import typer

from jobkit.cli.errors import fail
from jobkit.cli.session import session_of


def ui(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option("--port", "-p", metavar="N", help="Port to serve on (0: a free one).")
    ] = 8765,
    host: Annotated[
        str,
        typer.Option("--host", metavar="ADDRESS", help="Address to bind (default loopback only)."),
    ] = "127.0.0.1",
    allow_actions: Annotated[
        bool,
        typer.Option("--allow-actions", help="Draw cancel/retry buttons and accept them."),
    ] = False,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Do not open a browser; just print the URL.")
    ] = False,
) -> None:
    """Serve a local web view of the jobs (read-only unless --allow-actions)."""
    if not 0 <= port <= 65535:
        raise typer.BadParameter(
            f"{port} is not a port; use 0-65535 (0: any free port)", param_hint="'--port'"
        )
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        fail(f"the web view needs {exc.name or 'starlette and uvicorn'}: pip install 'jobkit[ui]'")
    from jobkit.ui.app import build_app
    from jobkit.ui.security import Guard, is_loopback, new_token

    session = session_of(ctx)
    client = session.client
    client.store  # noqa: B018 - open the store now: a bad URL fails before the port opens
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot serve on {host}:{port}: {bind_advice(exc, host, port)}")
    sock.listen(128)
    bound = sock.getsockname()[1]
    if not is_loopback(host):
        typer.echo(
            f"Warning: serving on {host}, reachable from other machines; anyone with the "
            "token can read job records and logs. Use the default 127.0.0.1 unless you must.",
            err=True,
        )
    guard = Guard(token=new_token(), host=host, port=bound)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{bound}/?token={guard.token}"
    typer.echo(f"jobkit ui: {client.store.url}{' (actions allowed)' if allow_actions else ''}")
    typer.echo(f"Open {url}")
    sys.stdout.flush()
    if not no_browser:
        import webbrowser

        webbrowser.open(url)
    app = build_app(client, guard, actions=allow_actions)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down
        uvicorn.Server(config).run(sockets=[sock])


def bind_advice(exc: OSError, host: str, port: int) -> str:
    """Why the socket could not be bound and which option to change: an
    address this machine does not have is --host's fault, a taken port --port's."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return (
            f"{host!r} is not a known address ({reason}); "
            "use an address of this machine with --host"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"address {host} is not available on this machine; use one of its addresses with "
            "--host (default 127.0.0.1)"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use; choose another --port (0: any free one)"
    if exc.errno == errno.EACCES:
        return (
            f"{reason} (ports below 1024 need privileges); choose another --port (0: any free one)"
        )
    return f"{reason}; check --host and --port"
