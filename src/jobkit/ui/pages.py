"""The web view's HTML, rendered on the server: plain tables and forms.

No template engine and no JS framework: each page is a function from records
to text, every value passing through :func:`html.escape`.  The only script is
``static/app.js`` (live logs through server-sent events); the pages work
without it, and offline (nothing is fetched from elsewhere).
"""

from __future__ import annotations

import datetime
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from jobkit.states import JobRecord, JobState

HIDDEN = "(hidden)"
SECRET_WORDS = re.compile(r"secret|token|passw|key|credential|auth|env|cookie", re.IGNORECASE)
"""Entries of ``resources``, ``extra`` and attempts (at any depth) whose name
looks like one of these have their values shown as :data:`HIDDEN` (the names
stay): ``env={"API_TOKEN": ...}`` is how users hand a job its credentials,
and a backend or plugin could keep anything in ``extra``."""


def redact(value: Any) -> Any:
    """``value`` with the values under secret-looking names replaced by :data:`HIDDEN`."""
    if isinstance(value, dict):
        return {
            k: (_hide(v) if SECRET_WORDS.search(str(k)) else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _hide(value: Any) -> Any:
    """Names of a secret mapping are kept (which variables were set), values never."""
    if isinstance(value, dict):
        return {k: HIDDEN for k in value}
    return HIDDEN


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None, now: float) -> str:
    if start is None:
        return "-"
    seconds = max(0.0, (end if end is not None else now) - start)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def layout(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · jobkit</title>"
        '<link rel=stylesheet href="/static/app.css">'
        '<script src="/static/app.js" defer></script></head><body>'
        '<header><a class=home href="/">jobkit</a></header>'
        f"<main>{body}</main></body></html>"
    )


def state_badge(state: JobState) -> str:
    return f'<span class="state state-{state.value.lower()}">{state.value}</span>'


def job_link(job_id: str) -> str:
    return f'<a href="/jobs/{quote(job_id)}">{e(job_id)}</a>'


def array_link(array_id: str | None) -> str:
    return "-" if not array_id else f'<a href="/arrays/{quote(array_id)}">{e(array_id)}</a>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, css: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def definitions(items: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


# -- the jobs table -------------------------------------------------------------


def jobs_page(
    records: Sequence[JobRecord],
    *,
    form: Mapping[str, str],
    next_url: str | None,
    now: float,
    error: str | None = None,
) -> str:
    states = "".join(
        f'<option value="{s.value}"{" selected" if form.get("state") == s.value else ""}>'
        f"{s.value}</option>"
        for s in JobState
    )
    filters = (
        '<form class=filters method=get action="/">'
        f'<label>state <select name=state id=f-state><option value="">any</option>{states}'
        "</select></label>"
        f'<label>backend <input name=backend id=f-backend value="{e(form.get("backend"))}">'
        "</label>"
        f'<label>name <input name=name id=f-name placeholder="train*" '
        f'value="{e(form.get("name"))}"></label>'
        f'<label>label <input name=label id=f-label placeholder="key=value" '
        f'value="{e(form.get("label"))}"></label>'
        "<button id=f-apply type=submit>Filter</button></form>"
    )
    problem = f'<p class="error" id=error>{e(error)}</p>' if error else ""
    rows = [
        [
            job_link(r.id),
            e(r.name),
            state_badge(r.state),
            e(r.backend),
            array_link(r.array_id),
            e(when(r.created_at)),
            e(duration(r.started_at, r.finished_at, now)),
            e(r.host or "-"),
            flag_cell(r),
        ]
        for r in records
    ]
    listing = (
        table(
            ["id", "name", "state", "backend", "array", "created", "ran", "host", "flags"],
            rows,
            css="jobs",
        )
        if rows
        else "<p id=empty>No jobs match.</p>"
    )
    more = f'<p><a id=older href="{e(next_url)}">older jobs →</a></p>' if next_url else ""
    return layout("jobs", f"<h1>Jobs</h1>{filters}{problem}{listing}{more}")


# -- one job ---------------------------------------------------------------------


def job_page(
    record: JobRecord,
    *,
    logs: Mapping[str, tuple[str, int]],
    charts: Sequence[str],
    flags: Sequence[tuple[str, str]],
    actions: bool,
    now: float,
    note: str | None = None,
) -> str:
    r = record
    facts = [
        ("state", f"<span id=job-state>{state_badge(r.state)}</span>"),
        ("name", e(r.name)),
        ("backend", e(r.backend) + (f" ({e(r.backend_id)})" if r.backend_id else "")),
        ("array", array_link(r.array_id) + (f" item {r.array_index}" if r.array_id else "")),
        ("attempt", e(r.attempt)),
        ("created", e(when(r.created_at))),
        ("submitted", e(when(r.submitted_at))),
        ("started", e(when(r.started_at))),
        ("finished", e(when(r.finished_at))),
        ("ran for", e(duration(r.started_at, r.finished_at, now))),
        ("host", e(r.host or "-")),
        ("native state", e(r.native_state or "-")),
        ("owner", e(r.owner or "-")),
        ("priority", e(r.priority)),
        ("depends on", ", ".join(job_link(d) for d in r.depends_on) or "-"),
        ("labels", e(", ".join(f"{k}={v}" for k, v in r.labels.items()) or "-")),
        ("cached from", job_link(r.cached_from) if r.cached_from else "-"),
    ]
    parts = [f"<h1>Job {e(r.id)}</h1>", action_buttons(f"/jobs/{quote(r.id)}", r, actions)]
    parts.append(stale_note(note))
    parts.append(definitions(facts))
    if r.state is JobState.FAILED or r.message:
        parts.append(
            "<section id=failure><h2>Failure</h2>"
            + definitions(
                [
                    ("reason", e(r.failure_reason or "-")),
                    ("exit code", e(r.exit_code if r.exit_code is not None else "-")),
                ]
            )
            + (f"<pre class=message>{e(r.message)}</pre>" if r.message else "")
            + "</section>"
        )
    parts.append(
        "<h2>Resources</h2>" + definitions((k, e(_json(v))) for k, v in redact(r.resources).items())
    )
    parts.append(usage_section(r, charts, flags))
    live = "" if r.is_terminal else " data-live"
    for stream in ("stdout", "stderr"):
        text, size = logs.get(stream, ("", 0))
        cut = (
            f'<p class=log-cut id="cut-{stream}">The first {size - len(text)} characters '
            "are not shown.</p>"
            if size > len(text)
            else ""
        )
        parts.append(
            f"<h2>{stream}</h2>{cut}"
            f'<pre class=log id="log-{stream}" data-stream="{stream}" '
            f'data-offset="{size}" data-job="{e(r.id)}"{live}>{e(text)}</pre>'
        )
    if r.attempts:
        keys = list(dict.fromkeys(k for a in r.attempts for k in a))
        parts.append(
            "<h2>Earlier attempts</h2>"
            + table(
                keys,
                ([e(_json(a.get(k))) for k in keys] for a in redact(r.attempts)),
                css="attempts",
            )
        )
    if r.extra:
        shown = redact(r.extra)
        parts.append(
            "<h2>Backend facts</h2>" + definitions((k, e(_json(v))) for k, v in shown.items())
        )
    return layout(f"job {r.id}", "".join(parts))


def usage_section(
    record: JobRecord, charts: Sequence[str], flags: Sequence[tuple[str, str]]
) -> str:
    """The usage figures in the words and units of ``jobkit status``
    (:mod:`jobkit.cli.usage_view`), so the two never tell different stories."""
    import time

    from jobkit.cli.usage_view import figure_rows, freshness

    usage = record.usage
    if record.cached_from:
        return (
            "<section id=usage><h2>Usage</h2><p id=usage-note>did not run: cached from "
            f"{job_link(record.cached_from)}</p></section>"
        )
    if not usage:
        missing = "not sampled" if record.is_terminal else "not sampled yet"
        return f"<section id=usage><h2>Usage</h2><p id=usage-note>{missing}</p></section>"
    fresh = freshness(record, time.time())
    items = figure_rows(record)
    warned = "".join(f'<li class="flag flag-{e(n)}">{e(n)}: {e(t)}</li>' for n, t in flags)
    return (
        f"<section id=usage><h2>Usage <small id=usage-freshness>({e(fresh)})</small></h2>"
        + (f"<ul class=flags>{warned}</ul>" if warned else "")
        + definitions((k, e(v)) for k, v in items)
        + "<div class=charts>"
        + "".join(charts)
        + "</div></section>"
    )


def stale_note(note: str | None) -> str:
    """Why the states shown may be old (a backend that could not be asked)."""
    return f"<p class=note id=stale-note>{e(note)}</p>" if note else ""


def action_buttons(
    base: str, record: JobRecord | None, actions: bool, *, array: bool = False
) -> str:
    """Cancel/retry forms, drawn only when the server allows actions."""
    if not actions:
        return ""
    buttons = []
    if array or (record is not None and not record.is_terminal):
        buttons.append(
            f'<form method=post action="{base}/cancel"><button id=cancel type=submit>'
            "Cancel</button></form>"
        )
    if array or (record is not None and record.state in (JobState.FAILED, JobState.CANCELLED)):
        buttons.append(
            f'<form method=post action="{base}/retry"><button id=retry type=submit>'
            "Retry</button></form>"
        )
    return f"<div class=actions>{''.join(buttons)}</div>"


# -- an array ----------------------------------------------------------------------


def array_page(
    array_id: str,
    items: Sequence[JobRecord],
    *,
    timeline: str,
    actions: bool,
    now: float,
    shown: int,
    note: str | None = None,
) -> str:
    counts: dict[str, int] = {}
    for r in items:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    summary = " ".join(
        f'<span class="count state-{s.lower()}">{e(s)}: {n}</span>' for s, n in counts.items()
    )
    rows = [
        [
            e(r.array_index),
            job_link(r.id),
            state_badge(r.state),
            e(when(r.started_at)),
            e(duration(r.started_at, r.finished_at, now)),
            e(r.failure_reason or "-"),
            e(r.host or "-"),
            flag_cell(r),
        ]
        for r in items[:shown]
    ]
    more = (
        f"<p>The first {shown} of {len(items)} items are listed.</p>" if len(items) > shown else ""
    )
    return layout(
        f"array {array_id}",
        f"<h1>Array {e(array_id)}</h1>"
        + action_buttons(f"/arrays/{quote(array_id)}", None, actions, array=True)
        + stale_note(note)
        + f"<p id=counts>{len(items)} items: {summary}</p>"
        + f"<section id=timeline><h2>Timeline</h2>{timeline}</section>"
        + array_usage_section(items, now)
        + table(
            ["index", "id", "state", "started", "ran", "failure", "host", "flags"],
            rows,
            css="items",
        )
        + more,
    )


def flag_cell(record: JobRecord) -> str:
    """The waste flags of :func:`jobkit.usage.flags` by name, each with its
    text as a tooltip; ``-`` when none (or nothing measured)."""
    from jobkit.usage import flags

    found = flags(record)
    if not found:
        return "-"
    return " ".join(
        f'<span class="flag flag-{e(f.name)}" title="{e(f.text)}">{e(f.name)}</span>' for f in found
    )


def array_usage_section(items: Sequence[JobRecord], now: float) -> str:
    """What the array used, from the aggregate ``jobkit status ARRAY`` and the
    notebook show too (:func:`jobkit.usage.aggregate`): CPU-hours, the items
    with idle GPUs, the slowest items."""
    from jobkit.cli.render import format_span
    from jobkit.usage import SLOWEST_SHOWN, aggregate

    found = aggregate(items, now)
    by_id = {r.id: r for r in items}

    def item(job_id: str) -> str:
        index = by_id[job_id].array_index
        label = job_id if index is None else str(index)
        return f'<a href="/jobs/{quote(job_id)}" title="{e(job_id)}">{e(label)}</a>'

    lines = []
    if found["sampled"]:
        lines.append(
            f"<p id=cpu-hours>{found['cpu_hours']:.3f} CPU-hours over {found['sampled']} "
            f"sampled item(s) of {len(items)}</p>"
        )
    else:
        lines.append("<p id=cpu-hours>No item sampled.</p>")
    idle: list[str] = found["idle_gpu_items"]
    if idle:
        more = f", … {len(idle) - SLOWEST_SHOWN} more" if len(idle) > SLOWEST_SHOWN else ""
        lines.append(
            f"<p class=flag id=idle-gpus>{len(idle)} item(s) with idle GPUs: "
            + ", ".join(item(i) for i in idle[:SLOWEST_SHOWN])
            + f"{more}</p>"
        )
    if found["slowest"]:
        lines.append(
            "<p id=slowest>slowest: "
            + ", ".join(
                f"{item(s['id'])} {e(format_span(s['wall_seconds']))}" for s in found["slowest"]
            )
            + "</p>"
        )
    return "<section id=array-usage><h2>Usage</h2>" + "".join(lines) + "</section>"


def message_page(title: str, text: str) -> str:
    return layout(title, f"<h1>{e(title)}</h1><p class=error id=error>{e(text)}</p>")


def query_url(path: str, params: Mapping[str, str | None]) -> str:
    kept = {k: v for k, v in params.items() if v}
    return path + (f"?{urlencode(kept)}" if kept else "")


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)
