"""The routes of ``jobkit ui``: a Starlette app over one client's store.

::

    browser ──► GuardMiddleware (token, origin, host; see :mod:`.security`)
            ──► route ──► thread: store reads / client.read_logs / cancel, retry
                      ──► pages (HTML) | charts (SVG) | sse (log events)

Read-only unless built with ``actions=True``: then POST cancel/retry call
:func:`jobkit.cancelling.cancel_ids` and :meth:`Client.retry`; otherwise
those routes answer 403 and no button is drawn.  The only blobs served are
usage series (``usage/<id>``): never payloads or outcomes (pickles), never
the signing key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from jobkit.errors import JobkitError, JobNotFoundError
from jobkit.ui import pages, paging
from jobkit.ui.freshness import Freshener
from jobkit.ui.security import Guard, GuardMiddleware

if TYPE_CHECKING:
    from jobkit.client import Client

LOG_SHOWN = 256 * 1024
"""Characters of a log put in the page at most (its end); live lines follow."""
ITEMS_SHOWN = 1000
STREAMS = ("stdout", "stderr")
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}


def build_app(client: Client, guard: Guard, *, actions: bool = False) -> Starlette:
    """The web view of ``client``'s store, guarded by ``guard``."""

    freshener = Freshener(client)

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def jobs(request: Request) -> Response:
        form = {k: request.query_params.get(k, "") for k in ("state", "backend", "name", "label")}
        try:
            filters = _filters(form)
            found = await run(
                paging.page, client.store, filters, request.query_params.get("before")
            )
        except ValueError as exc:
            body = pages.jobs_page([], form=form, next_url=None, now=time.time(), error=str(exc))
            return HTMLResponse(body, status_code=400)
        next_url = (
            pages.query_url("/", {**form, "before": found.next_cursor})
            if found.next_cursor
            else None
        )
        return HTMLResponse(
            pages.jobs_page(found.records, form=form, next_url=next_url, now=time.time())
        )

    async def job(request: Request) -> Response:
        from jobkit import usage

        job_id = request.path_params["job_id"]
        stored = await run(client.store.get, job_id)
        refreshed, note = await run(freshener.fresh, [stored])
        record = refreshed[0]
        logs: dict[str, tuple[str, int]] = {}
        for stream in STREAMS:
            try:
                text = await run(client.read_logs, record, stream)
                size = len(text)  # live lines follow from the log's end, not the cut's
            except (JobkitError, OSError, ImportError) as exc:
                text, size = f"(logs not readable: {exc})\n", 0
            logs[stream] = (text[-LOG_SHOWN:] if len(text) > LOG_SHOWN else text, size)
        charts: list[str] = []
        if record.usage:
            series = await run(_series, client, job_id)
            from jobkit.ui.charts import usage_charts

            charts = usage_charts(series)
        flags = [(f.name, f.text) for f in usage.flags(record)]
        body = pages.job_page(
            record,
            logs=logs,
            charts=charts,
            flags=flags,
            actions=actions,
            now=time.time(),
            note=note,
        )
        return HTMLResponse(body)

    async def log_events(request: Request) -> Response:
        from jobkit.ui.sse import log_events as events

        job_id, stream = request.path_params["job_id"], request.path_params["stream"]
        if stream not in STREAMS:
            return PlainTextResponse(f"no stream {stream!r}: use stdout or stderr", 404)
        await run(client.store.get, job_id)  # 404 now rather than in the stream
        try:
            # EventSource reconnects by itself, sending the last event's id (an offset)
            given = request.headers.get("last-event-id") or request.query_params.get("offset")
            offset = max(0, int(given or "0"))
        except ValueError:
            return PlainTextResponse("offset must be a whole number of characters", 400)
        return StreamingResponse(
            events(client, job_id, stream, offset, request.is_disconnected, freshener.fresh),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def array(request: Request) -> Response:
        array_id = request.path_params["array_id"]
        stored = await run(lambda: client.store.query(array_id=array_id, oldest_first=True))
        if not stored:
            raise JobNotFoundError(f"no job array {array_id!r} in {client.store.url}")
        items, note = await run(freshener.fresh, stored)
        items.sort(key=lambda r: (r.array_index is None, r.array_index or 0))
        body = pages.array_page(
            array_id,
            items,
            timeline=_timeline(items),
            actions=actions,
            now=time.time(),
            shown=ITEMS_SHOWN,
            note=note,
        )
        return HTMLResponse(body)

    async def usage_series(request: Request) -> Response:
        """A job's usage series as JSON: the one kind of blob the view serves."""
        from jobkit.usage import USAGE_PREFIX

        key = request.path_params["key"]
        job_id = key[len(USAGE_PREFIX) :] if key.startswith(USAGE_PREFIX) else ""
        if not job_id or "/" in job_id:
            return PlainTextResponse(
                f"the web view serves no blob {key!r}: only usage series (usage/JOB_ID); "
                "payloads and outcomes stay in the store",
                403,
            )
        await run(client.store.get, job_id)
        return JSONResponse(await run(_series, client, job_id))

    async def act(request: Request) -> Response:
        if not actions:
            return PlainTextResponse(
                "actions are off: restart with `jobkit ui --allow-actions` to cancel or retry",
                403,
            )
        target = request.path_params.get("job_id") or request.path_params["array_id"]
        verb = request.path_params["verb"]
        if verb == "cancel":
            from jobkit.cancelling import cancel_ids

            report = await run(cancel_ids, client, [target])
            if report.unknown:
                return PlainTextResponse("; ".join(report.unknown), 404)
            if not report.ok:
                return PlainTextResponse("; ".join(report.problems), 409)
        elif verb == "retry":
            try:
                await run(client.retry, [target])
            except JobNotFoundError:
                raise
            except JobkitError as exc:  # e.g. a job that succeeded: nothing to rerun
                return PlainTextResponse(str(exc), 409)
        else:
            return PlainTextResponse(f"no action {verb!r}: use cancel or retry", 404)
        kind = "jobs" if "job_id" in request.path_params else "arrays"
        return RedirectResponse(f"/{kind}/{target}", status_code=303)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        data = resources.files("jobkit.ui").joinpath("static").joinpath(name).read_bytes()
        return Response(data, media_type=STATIC[name])

    async def not_found(request: Request, exc: Exception) -> Response:
        return HTMLResponse(pages.message_page("Not found", str(exc)), 404)

    async def store_error(request: Request, exc: Exception) -> Response:
        return HTMLResponse(pages.message_page("Store error", str(exc)), 500)

    routes = [
        Route("/", jobs),
        Route("/jobs/{job_id}", job),
        Route("/jobs/{job_id}/logs/{stream}/events", log_events),
        Route("/jobs/{job_id}/{verb}", act, methods=["POST"]),
        Route("/arrays/{array_id}", array),
        Route("/arrays/{array_id}/{verb}", act, methods=["POST"]),
        Route("/blobs/{key:path}", usage_series),
        Route("/static/{name}", static),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=guard)],
        exception_handlers={JobNotFoundError: not_found, JobkitError: store_error},
    )


def _filters(form: dict[str, str]) -> paging.Filters:
    """The table's filters from its form; ValueError says which value is wrong."""
    from jobkit.client import parse_states

    states = None
    if form["state"]:
        try:
            states = parse_states([form["state"]])
        except JobkitError as exc:
            raise ValueError(str(exc)) from None
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in form["label"].split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"label filter {part!r} is not KEY=VALUE, e.g. team=vision")
        labels[key.strip()] = value.strip()
    return paging.Filters(
        states=states, backend=form["backend"] or None, name=form["name"] or None, labels=labels
    )


def _series(client: Client, job_id: str) -> dict[str, Any]:
    from jobkit.errors import BlobNotFoundError
    from jobkit.usage import decode_series, usage_key

    try:
        return decode_series(client.store.get_blob(usage_key(job_id)))
    except BlobNotFoundError:
        return {}


def _timeline(items: list[Any]) -> str:
    """The array's timeline, the SVG ``jobkit timeline`` writes."""
    from jobkit.timeline import render_svg

    return render_svg(items, now=time.time())
