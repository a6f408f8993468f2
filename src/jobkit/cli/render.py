"""How the CLI shows things: rich tables for people, JSON for scripts.

Kept apart from the commands so that what a user sees is decided in one
place.  Only the standard library is imported at module level: rich costs
tens of milliseconds to import, so the tables of ``status``, ``backends``
and array summaries import it when called, and the ``list`` table -- the
command people run most, with a 0.3 s budget -- is aligned by hand in the
same look (columns two spaces apart, bold header, coloured states on a
terminal) without rich at all.

JSON output is the store's own record shape (:meth:`JobRecord.to_dict`):
timestamps stay epoch seconds (floats, UTC by definition), exactly as the
Python API returns them, so a script can compare and subtract them without
parsing and nothing is lost to rounding or time zones.  Tables show local
time and relative ages instead.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobkit.states import JobRecord, JobRow, JobState

if TYPE_CHECKING:
    from rich.console import Console

STATE_STYLES: Mapping[JobState, str] = {
    JobState.PENDING: "dim",
    JobState.QUEUED: "yellow",
    JobState.RUNNING: "cyan",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "bold red",
    JobState.CANCELLED: "magenta",
}

_TIME_FIELDS = ("created_at", "submitted_at", "started_at", "finished_at")


# -- plain text ------------------------------------------------------------------


def print_json(data: Any) -> None:
    """Indented JSON on stdout; plain (no colour) so pipes and ``jq`` get clean text."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def format_span(seconds: float) -> str:
    """A short duration: ``850ms``, ``12.3s``, ``5m07s``, ``3h05m``, ``2d04h``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_age(timestamp: float | None, now: float) -> str:
    """``5m ago``: how long before ``now``; ``-`` when unknown."""
    if not timestamp:
        return "-"
    delta = now - timestamp
    if delta < 1:
        return "just now"
    if delta < 60:
        return f"{int(delta)}s ago"
    if delta < 3600:
        return f"{int(delta // 60)}m ago"
    if delta < 86400:
        return f"{int(delta // 3600)}h ago"
    return f"{int(delta // 86400)}d ago"


def format_time(timestamp: float | None, now: float) -> str:
    """Local wall-clock time with its age: ``2024-05-01 12:00:03 (5m ago)``."""
    if not timestamp:
        return "-"
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    return f"{local} ({format_age(timestamp, now)})"


def run_time(record: JobRecord | JobRow, now: float) -> str:
    """How long the job ran (so far, while it runs); ``-`` if it never started."""
    if not record.started_at:
        return "-"
    end = record.finished_at or (None if record.is_terminal else now)
    if end is None:
        return "-"
    return format_span(end - record.started_at)


def state_text(record: JobRecord | JobRow) -> str:
    """``FAILED (TIMEOUT)``: the state with the failure reason when there is one."""
    if record.failure_reason is not None:
        return f"{record.state.value} ({record.failure_reason.value})"
    if record.cached_from:
        return f"{record.state.value} (cached from {record.cached_from})"
    return record.state.value


def first_line(text: str) -> str:
    """The first non-empty line of ``text``: errors are printed as one line."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


# -- the job list (hand-aligned) ------------------------------------------------


def jobs_table(records: Sequence[JobRow], now: float) -> None:
    """``jobkit list``: one row per job, newest first.

    Aligned by hand rather than with rich: importing and laying out a rich
    table costs ~40 ms, a sixth of the whole command's budget, for output
    that is plain columns anyway (greppable, never wrapped).
    """
    rows = [
        (
            printable(r.id),
            printable(r.name),
            printable(r.backend),
            state_text(r),
            format_age(r.created_at, now),
            run_time(r, now),
            printable(r.host or "-"),
        )
        for r in records
    ]
    styles = [STATE_ANSI.get(r.state, "") for r in records]
    out = sys.stdout
    out.write(columns(JOB_HEADERS, rows, style_column=3, styles=styles, color=use_color(out)))


JOB_HEADERS = ("ID", "NAME", "BACKEND", "STATE", "CREATED", "DURATION", "HOST")
_RIGHT_ALIGNED = frozenset({"DURATION"})

STATE_ANSI: Mapping[JobState, str] = {
    JobState.PENDING: "\x1b[2m",
    JobState.QUEUED: "\x1b[33m",
    JobState.RUNNING: "\x1b[36m",
    JobState.SUCCEEDED: "\x1b[32m",
    JobState.FAILED: "\x1b[1;31m",
    JobState.CANCELLED: "\x1b[35m",
}
"""The same colours as :data:`STATE_STYLES`, as ANSI codes for hand-made tables."""


def use_color(stream: Any) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def columns(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    style_column: int | None = None,
    styles: Sequence[str] = (),
    color: bool = False,
) -> str:
    """Rows as left-aligned columns two spaces apart, header first (bold in colour)."""
    widths = [cell_width(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], cell_width(cell))
    last = len(headers) - 1

    def line(cells: Sequence[str], style: str = "") -> str:
        parts = []
        for i, cell in enumerate(cells):
            pad = " " * (widths[i] - cell_width(cell))
            right = headers[i] in _RIGHT_ALIGNED
            text = pad + cell if right else cell if i == last else cell + pad
            if color and style and (i == style_column or style == _BOLD):
                text = f"{style}{text}{_RESET}"
            parts.append(text)
        return "  ".join(parts).rstrip() + "\n"

    out = [line(headers, _BOLD)]
    for index, row in enumerate(rows):
        out.append(line(row, styles[index] if index < len(styles) else ""))
    return "".join(out)


_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"


def printable(text: str) -> str:
    """``text`` with control characters escaped: a job name holding ``\\x1b[...``
    or a newline must not recolour the terminal or break the columns."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def cell_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide (CJK) characters count two."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


# -- rich ------------------------------------------------------------------------


def console() -> Console:
    """A console on the *current* stdout (test runners swap it).

    When the output is not a terminal the width is made generous so that a
    ``jobkit status ... | grep`` never sees a value wrapped onto two lines.
    """
    from rich.console import Console

    stream = sys.stdout
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    width = None if interactive or os.environ.get("COLUMNS") else 1000
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


_TRAILING_SPACES = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$", re.MULTILINE)


def emit(out: Console, *objects: Any, **options: Any) -> None:
    """``out.print(...)``, but piped output has no trailing spaces.

    rich pads every cell of a table to its column's widest, the last one too;
    on a terminal that is invisible, in a file or a pipe it is noise that
    ``diff`` and ``grep ' $'`` see.  Colour codes after the padding are kept.
    """
    if out.is_terminal:
        out.print(*objects, **options)
        return
    with out.capture() as captured:
        out.print(*objects, **options)
    out.file.write(_TRAILING_SPACES.sub(r"\1", captured.get()))
    out.file.flush()


def record_table(
    record: JobRecord, now: float, *, waiting_on: Mapping[str, str] | None = None
) -> None:
    """``jobkit status``: every field of one record, timestamps made readable;
    ``waiting_on``: a held job's dependencies with their states."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in record.to_dict().items():
        if name == "state":
            shown: Text | str = Text(state_text(record), style=STATE_STYLES.get(record.state, ""))
        elif name == "failure_reason":
            continue  # part of the state line
        elif name in ("attempts", "usage"):
            continue  # sections of their own, below
        elif name in _TIME_FIELDS:
            shown = format_time(value, now)
        elif name == "resources":
            shown = _mapping_text(_readable_resources(value))
        elif isinstance(value, dict):
            shown = _mapping_text(value)
        else:
            shown = "-" if value is None or value == "" else str(value)
        table.add_row(name, Text(shown) if isinstance(shown, str) else shown)
        if name == "finished_at":
            table.add_row("run time", run_time(record, now))
        if name == "state" and waiting_on:
            waits = ", ".join(f"{i} ({s})" for i, s in waiting_on.items())
            table.add_row("waiting on", Text(waits))
            held_by = record.extra.get("held_by")  # backends/waiting.py: HELD_BY
            if held_by:
                table.add_row("held by", Text(str(held_by)))
    emit(console(), table)


def attempts_section(record: JobRecord, now: float) -> None:
    """``jobkit status``'s attempts, after the record and its usage; nothing if none."""
    if record.attempts:
        sys.stdout.write("\nattempts:\n" + attempts_table(record, now))
        sys.stdout.flush()


def attempts_table(record: JobRecord, now: float) -> str:
    """The attempt history under ``jobkit status``, hand-aligned like ``jobkit
    list`` (never wrapped): each earlier attempt (how it ended, where, with how
    much memory, when, why), then the current one."""
    rows = [dict(a) for a in record.attempts]
    rows.append(
        {
            "attempt": record.attempt,
            "reason": state_text(record),
            "host": record.host,
            "mem": record.resources.get("mem"),
            "started_at": record.started_at,
            "ended_at": record.finished_at,
            "message": (
                record.message
                if record.state in (JobState.FAILED, JobState.CANCELLED)
                else "-"
                if record.is_terminal
                else "(current attempt)"
            ),
        }
    )
    cells = []
    for row in rows:
        mem = row.get("mem")
        cells.append(
            tuple(
                printable(cell)
                for cell in (
                    str(row.get("attempt", "-")),
                    str(row.get("reason") or "-"),
                    str(row.get("host") or "-"),
                    str(_readable_resources({"mem": mem})["mem"]) if mem else "-",
                    format_time(row.get("started_at"), now),
                    format_time(row.get("ended_at"), now),
                    first_line(str(row.get("message") or "")) or "-",
                )
            )
        )
    return columns(_ATTEMPT_HEADERS, cells)


_ATTEMPT_HEADERS = ("ATTEMPT", "ENDED AS", "HOST", "MEM", "STARTED", "ENDED", "MESSAGE")


def array_summary(array_id: str, members: Sequence[JobRecord], now: float) -> None:
    """``jobkit status ARRAY_ID``: how many jobs of the array are in each state."""
    from rich.table import Table
    from rich.text import Text

    out = console()
    counts = state_counts(members)
    names = sorted({m.name for m in members})
    created = min((m.created_at for m in members), default=0.0)
    emit(
        out,
        f"array {array_id}: {len(members)} jobs of {', '.join(names)}, "
        f"created {format_time(created, now)}",
        markup=False,
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("STATE")
    table.add_column("JOBS", justify="right")
    for state, count in counts.items():
        if count:
            table.add_row(Text(state, style=STATE_STYLES.get(JobState(state), "")), str(count))
    emit(out, table)
    failed = [m for m in members if m.state is JobState.FAILED]
    for m in failed[:5]:
        detail = f": {first_line(m.message)}" if m.message else ""
        emit(out, f"  {m.id} {state_text(m)}{detail}", markup=False)
    if len(failed) > 5:
        emit(out, f"  ... and {len(failed) - 5} more failed jobs", markup=False)


def backends_table(rows: Iterable[Mapping[str, Any]]) -> None:
    """``jobkit backends``: name, usable or not, and why."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("BACKEND", no_wrap=True)
    table.add_column("AVAILABLE", no_wrap=True)
    table.add_column("DETAILS", overflow="fold")
    for row in rows:
        name = f"{row['name']} (default)" if row["default"] else row["name"]
        ok = Text("yes", style="green") if row["available"] else Text("no", style="red")
        table.add_row(Text(name), ok, Text(row["detail"]))
    emit(console(), table)


def state_counts(records: Iterable[JobRecord]) -> dict[str, int]:
    """Jobs per state, every state present (zeros included), in lifecycle order."""
    counts = {state.value: 0 for state in JobState}
    for record in records:
        counts[record.state.value] += 1
    return counts


def _readable_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """``mem`` as ``16GiB`` and ``time`` as ``2h`` instead of bytes and seconds."""
    from jobkit.resources import format_duration, format_size

    shown = dict(resources)
    try:
        if isinstance(shown.get("mem"), int):
            shown["mem"] = format_size(shown["mem"])
        if isinstance(shown.get("time"), (int, float)):
            shown["time"] = format_duration(shown["time"])
    except (TypeError, ValueError, OverflowError):
        return dict(resources)  # odd values: show them as stored
    return shown


def _mapping_text(value: Mapping[str, Any]) -> str:
    if not value:
        return "-"
    return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())


def _scalar(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
