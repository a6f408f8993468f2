"""How jobs look to people: one-line reprs, notebook HTML and wait progress.

Every view reads the job's *current* record (the store, unless the handle is
already final), because a repr cached at creation is a wrong answer the
moment the job moves on.  A repr never raises: if the store cannot be read,
the last record known is shown.

Progress while waiting depends on where the user is::

    Jupyter kernel ──► one HTML display, updated in place (display_id),
                       at most ten redraws a second, a final one at the end
    terminal (tty) ──► rich's progress bar on stderr
    anything else  ──► nothing: logs and pipes stay clean

rich is not used in a kernel: there it wants ipywidgets and, without them,
prints an install hint and an empty output instead of progress.

Everything a user controls (names, labels, messages, ids) is escaped before
it reaches HTML.
"""

from __future__ import annotations

import concurrent.futures
import html
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from jobkit.states import JobRecord, JobState

if TYPE_CHECKING:
    from jobkit.job import Job, JobArray

UPDATE_INTERVAL = 0.1
"""Seconds between two redraws of a notebook progress display, at least."""
TICK = 1.0
"""Seconds between redraws when nothing finishes, so the elapsed time moves."""
TIMELINE_MAX_HEIGHT = 480
"""Pixels of an array's timeline shown before its box scrolls."""

_COLOURS = {
    JobState.PENDING: "#9e9e9e",
    JobState.QUEUED: "#607d8b",
    JobState.RUNNING: "#1976d2",
    JobState.SUCCEEDED: "#2e7d32",
    JobState.FAILED: "#c62828",
    JobState.CANCELLED: "#ef6c00",
}


# -- what a job is now ---------------------------------------------------------


def current_record(job: Job[Any]) -> JobRecord:
    """The job's record now; the last one known if the store cannot be read."""
    try:
        return job.info
    except Exception:  # a repr must not raise because a store is unreachable
        return job._record


def current_states(array: JobArray[Any]) -> list[JobState]:
    try:
        return array.states()
    except Exception:  # as above
        return [job._record.state for job in array]


def current_records(array: JobArray[Any]) -> list[JobRecord]:
    """The items' records now, in one store read; the last ones known if it fails."""
    jobs = list(array)
    try:
        records = jobs[0]._client.store.get_many([j.id for j in jobs]) if jobs else {}
    except Exception:  # as above
        records = {}
    return [records.get(j.id, j._record) for j in jobs]


# -- text/plain ----------------------------------------------------------------


def job_text(record: JobRecord) -> str:
    """``<Job jk-… name STATE>``, with the failure reason when there is one."""
    text = f"<Job {record.id} {record.name} {record.state.value}"
    if record.failure_reason is not None:
        text += f" ({record.failure_reason.value}"
        if record.message:
            text += f": {shorten(record.message, 80)}"
        text += ")"
    elif record.cached_from:
        text += f" (cached from {record.cached_from})"
    return text + ">"


def array_text(array: JobArray[Any]) -> str:
    """``<JobArray jk-… name of N jobs: 3 SUCCEEDED, 1 RUNNING>``."""
    states = current_states(array)
    name = f" {array[0].name}" if len(array) else ""
    counts = _counts(states)
    summary = ", ".join(f"{n} {state.value}" for state, n in counts) or "empty"
    return f"<JobArray {array.id}{name} of {len(states)} jobs: {summary}>"


# -- text/html -----------------------------------------------------------------


def job_html(record: JobRecord, *, now: float | None = None) -> str:
    """A small table: id, name, state, backend, times, duration, failure."""
    now = time.time() if now is None else now
    rows: list[tuple[str, str]] = [
        ("job", f"<code>{_e(record.id)}</code>"),
        ("name", _e(record.name)),
        ("state", _badge(record.state)),
    ]
    backend = _e(record.backend)
    if record.backend_id:
        backend += f" <code>{_e(record.backend_id)}</code>"
    rows.append(("backend", backend))
    for label, stamp in (
        ("created", record.created_at),
        ("started", record.started_at),
        ("finished", record.finished_at),
    ):
        if stamp:
            rows.append((label, _e(_clock(stamp))))
    if record.started_at:
        end = record.finished_at or (None if record.is_terminal else now)
        if end is not None:
            rows.append(("duration", _e(format_duration(end - record.started_at))))
    if record.failure_reason is not None:
        failure = f"<b>{_e(record.failure_reason.value)}</b>"
        if record.message:
            failure += f": {_e(record.message)}"
        rows.append(("failure", failure))
    if record.cached_from:
        rows.append(("cached from", f"<code>{_e(record.cached_from)}</code>"))
    if record.host:
        rows.append(("host", _e(record.host)))
    if record.labels:
        rows.append(
            ("labels", ", ".join(f"{_e(k)}={_e(v)}" for k, v in sorted(record.labels.items())))
        )
    rows += _usage_rows(record)
    return _table(rows, css_class="jobkit-job")


def array_html(array: JobArray[Any], *, now: float | None = None) -> str:
    """Counts by state, then the array's timeline (:mod:`jobkit.timeline`):
    one row per item, hover for its id, times, host and failure.

    One store read for all items; the SVG is inline (no files, no scripts),
    so a saved notebook keeps the picture.  Arrays beyond the timeline's
    :data:`~jobkit.timeline.MAX_ROWS` show folded rows; the box scrolls
    past :data:`TIMELINE_MAX_HEIGHT` pixels.
    """
    from jobkit.timeline import render_svg

    records = current_records(array)
    name = records[0].name if records else ""
    states = [r.state for r in records]
    counts = " ".join(f"{_badge(state)}&nbsp;{n}" for state, n in _counts(states)) or "empty"
    rows = [
        ("array", f"<code>{_e(array.id)}</code>"),
        ("name", _e(name)),
        ("jobs", str(len(states))),
        ("states", counts),
    ]
    rows += _array_usage_rows(records, time.time() if now is None else now)
    if records:
        picture = render_svg(records, now=now)
        rows.append(
            (
                "timeline",
                f'<div class="jobkit-timeline" style="max-height:{TIMELINE_MAX_HEIGHT}px;'
                f'overflow:auto">{picture}</div>',
            )
        )
    return _table(rows, css_class="jobkit-array")


def progress_bundle(
    label: str, total: int, finished: Counter[JobState], elapsed: float, *, final: bool = False
) -> dict[str, str]:
    """text/html and text/plain of a progress display."""
    done = sum(finished.values())
    parts = [f"{done}/{total} done"]
    parts += [f"{n} {state.value}" for state, n in _ordered(finished)]
    parts.append(format_duration(elapsed))
    if final and done < total:
        parts.append("stopped waiting")
    plain = f"{label}: " + ", ".join(parts)
    badges = " ".join(f"{_badge(state)}&nbsp;{n}" for state, n in _ordered(finished))
    markup = (
        f'<div class="jobkit-progress"><code>{_e(label)}</code> '
        f'<progress value="{done}" max="{max(total, 1)}" style="width:20em"></progress> '
        f"{done}/{total} {badges} <span style='color:#757575'>"
        f"{_e(format_duration(elapsed))}{' (stopped waiting)' if final and done < total else ''}"
        "</span></div>"
    )
    return {"text/html": markup, "text/plain": plain}


# -- usage (jobkit.usage) ---------------------------------------------------------

_WARNING = "color:#b26a00;font-weight:bold"


def _usage_rows(record: JobRecord) -> list[tuple[str, str]]:
    """CPU, cores, peak memory against what was asked, each GPU, then the waste
    flags as a warning: what ``jobkit status`` shows, so a notebook answers
    "did it use what it asked for" without leaving the cell."""
    from jobkit.usage import flags

    usage = record.usage
    if not usage:
        return []
    rows: list[tuple[str, str]] = []
    cpu = _num(usage.get("cpu_seconds"))
    if cpu is not None:
        rows.append(("cpu time", _e(f"{cpu:.1f} s")))
    mean, peak = _num(usage.get("mean_cpu_util")), _num(usage.get("max_cpu_util"))
    if mean is not None:
        cores = f"{mean:.2f} mean, {peak or 0.0:.2f} max"
        asked = record.resources.get("cpus")
        rows.append(("cpu cores", _e(f"{cores} (asked for {asked})" if asked else cores)))
    peak_rss = _num(usage.get("peak_rss_bytes"))
    if peak_rss is not None:
        memory = f"{_size(peak_rss)} peak"
        mem = record.resources.get("mem")
        if isinstance(mem, int) and mem > 0:
            memory += f" (asked for {_size(mem)})"
        rows.append(("memory", _e(memory)))
    gpus = usage.get("gpus")
    for gpu in gpus if isinstance(gpus, list) else []:
        if isinstance(gpu, dict):
            util = f"util {_num(gpu.get('util_mean')) or 0.0:.0f}% mean"
            util += f", {_num(gpu.get('util_max')) or 0.0:.0f}% max"
            memory = f"mem {_size(_num(gpu.get('mem_peak_bytes')))} peak"
            total = _num(gpu.get("mem_total_bytes"))
            if total:
                memory += f" of {_size(total)}"
            text = f"{gpu.get('name') or 'GPU'}: {util}; {memory}"
            rows.append((f"gpu {gpu.get('index', '?')}", _e(text)))
    found = flags(record)
    if found:
        warnings = "<br>".join(f"&#9888; {_e(f.name)}: {_e(f.text)}" for f in found)
        rows.append(("waste", f'<span class="jobkit-flags" style="{_WARNING}">{warnings}</span>'))
    return rows


def _array_usage_rows(records: Sequence[JobRecord], now: float) -> list[tuple[str, str]]:
    """The aggregate of :func:`jobkit.usage.aggregate`: CPU-hours, items with
    idle GPUs (a warning), the slowest items."""
    from jobkit.usage import SLOWEST_SHOWN, aggregate

    if not records:
        return []
    found = aggregate(records, now)
    if not found["sampled"]:
        return [("usage", "no item sampled")]
    rows = [
        (
            "usage",
            _e(
                f"{found['cpu_hours']:.3f} CPU-hours over {found['sampled']} sampled "
                f"item(s) of {len(records)}"
            ),
        )
    ]
    idle: list[str] = found["idle_gpu_items"]
    if idle:
        more = f", ... {len(idle) - SLOWEST_SHOWN} more" if len(idle) > SLOWEST_SHOWN else ""
        text = f"{len(idle)} item(s) with idle GPUs: {', '.join(idle[:SLOWEST_SHOWN])}{more}"
        rows.append(
            (
                "idle GPUs",
                f'<span class="jobkit-flags" style="{_WARNING}">&#9888; {_e(text)}</span>',
            )
        )
    if found["slowest"]:
        slow = ", ".join(
            f"{s['id']} {format_duration(s['wall_seconds'])}" for s in found["slowest"]
        )
        rows.append(("slowest", _e(slow)))
    return rows


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _size(nbytes: float | None) -> str:
    if nbytes is None:
        return "-"
    from jobkit.units import format_size

    return format_size(int(nbytes))


# -- progress while waiting ----------------------------------------------------


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not a terminal IPython, not a plain import)."""
    if "ipykernel" not in sys.modules:
        return False
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def interactive() -> bool:
    """Whether someone is watching: a notebook, or stderr on a terminal."""
    if in_notebook():
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def wait_with_progress(jobs: Sequence[Job[Any]], timeout: float | None, *, label: str) -> bool:
    """Wait for ``jobs`` showing progress; True if all ended within ``timeout``."""
    if in_notebook():
        return _wait_in_notebook(jobs, timeout, label=label)
    return _wait_in_terminal(jobs, timeout, label=label)


def _wait_in_notebook(jobs: Sequence[Job[Any]], timeout: float | None, *, label: str) -> bool:
    from IPython.display import display

    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    pending: set[Job[Any]] = set(jobs)
    finished: Counter[JobState] = Counter()
    first = progress_bundle(label, len(jobs), finished, 0.0)
    handle = display(first, raw=True, display_id=True)  # type: ignore[no-untyped-call]
    drawn = start
    dirty = False
    while pending:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        wait = max(0.0, UPDATE_INTERVAL - (now - drawn)) if dirty else TICK
        if deadline is not None:
            wait = min(wait, deadline - now)
        done, not_done = concurrent.futures.wait(
            pending, timeout=wait, return_when=concurrent.futures.FIRST_COMPLETED
        )
        pending = cast("set[Job[Any]]", not_done)
        for job in cast("set[Job[Any]]", done):
            finished[job.info.state] += 1  # final: read from the handle, not the store
        dirty = dirty or bool(done)
        now = time.monotonic()
        if pending and (now - drawn >= TICK or (dirty and now - drawn >= UPDATE_INTERVAL)):
            handle.update(progress_bundle(label, len(jobs), finished, now - start), raw=True)
            drawn, dirty = now, False
    handle.update(
        progress_bundle(label, len(jobs), finished, time.monotonic() - start, final=True),
        raw=True,
    )
    return not pending


def _wait_in_terminal(jobs: Sequence[Job[Any]], timeout: float | None, *, label: str) -> bool:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=len(jobs))
        try:
            for _job in concurrent.futures.as_completed(jobs, timeout=timeout):
                bar.advance(task)
        except concurrent.futures.TimeoutError:
            return False
    return True


# -- helpers -------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _counts(states: Sequence[JobState]) -> list[tuple[JobState, int]]:
    return _ordered(Counter(states))


def _ordered(counts: Counter[JobState]) -> list[tuple[JobState, int]]:
    """Non-zero counts in the order of the states' life cycle."""
    return [(state, counts[state]) for state in JobState if counts[state]]


def _clock(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def shorten(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _badge(state: JobState) -> str:
    return f'<span style="color:{_COLOURS[state]};font-weight:bold">{_e(state.value)}</span>'


def _table(rows: Sequence[tuple[str, str]], *, css_class: str) -> str:
    body = "".join(
        f'<tr><th style="text-align:left;padding-right:1em">{_e(label)}</th>'
        f'<td style="text-align:left">{cell}</td></tr>'
        for label, cell in rows
    )
    return f'<table class="{css_class}">{body}</table>'
