"""An array's timeline: one row per item, queued → running → end, in SVG or PNG.

The layout is computed once, in seconds, from the records; each renderer only
maps it to pixels, so ``jobkit timeline -o x.svg``, ``-o x.png``, the notebook
and the web view's array page draw the same picture::

    records ──► layout(records, now) ──► Layout: origin (first submission), span,
                                          rows [Row: segments (queued, running,
                                          end, earlier attempts)], ticks
                        │
                        ├──► render_svg(...)  self-contained SVG text (no fonts,
                        │                     CSS or scripts from elsewhere)
                        └──► render_png(...)  Pillow (the ``ui`` extra), same frame

Each row of the SVG is ``<g class="item" data-index=I data-state=STATE>``
holding ``<rect class="bar queued|running|end|attempt state">`` (``state``
lower case) with a ``<title>`` (the hover text: id, state, queued for, ran
for, host, failure).  Waiting is light grey whatever came after; the running
bar takes the final state's colour (green, red, grey; blue while running) and
reaches ``now`` while the item runs; the end is a darker mark; an earlier
attempt (``record.attempts``) is a thin brown bar over the row.

Many items: beyond :data:`MAX_ROWS` items, consecutive items are folded into
one row per bucket of ``ceil(n / MAX_ROWS)`` items (``<g class="items"
data-index=FIRST data-last-index=LAST data-count=K>``): its queued bar spans
the bucket's earliest submission to its earliest start, its running bar the
earliest start to the latest end, coloured by the bucket's most telling state
(failed before cancelled before running before waiting before succeeded), and
its title counts the states.  So the file stays bounded (a few hundred KB)
however large the array; rows shrink to a few pixels before folding starts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from jobkit.display import format_duration, shorten
from jobkit.errors import ConfigError
from jobkit.states import JobRecord, JobState

if TYPE_CHECKING:
    from PIL import ImageDraw

__all__ = [
    "MAX_ROWS",
    "Layout",
    "Row",
    "Segment",
    "layout",
    "render_png",
    "render_svg",
]

MAX_ROWS = 500
"""Rows drawn at most; larger arrays fold consecutive items into one row each."""

UI_HINT = "pip install 'jobkit[ui]'"

COLOURS: dict[str, str] = {
    "SUCCEEDED": "#2e7d32",
    "FAILED": "#c62828",
    "CANCELLED": "#9e9e9e",
    "RUNNING": "#1976d2",
    "QUEUED": "#cfd8dc",
    "PENDING": "#e3e7ea",
    "queued": "#cfd8dc",
    "attempt": "#8d6e63",
}
"""Fill per state (running bar), for waiting time, and for earlier attempts."""

END_COLOURS: dict[str, str] = {
    "SUCCEEDED": "#1b5e20",
    "FAILED": "#7f0000",
    "CANCELLED": "#424242",
}
"""The end mark: a darker shade of the final state, so it shows at a bar's end."""

_SEVERITY = (
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.RUNNING,
    JobState.QUEUED,
    JobState.PENDING,
    JobState.SUCCEEDED,
)
"""Which state a folded row shows: the first found in this order."""

# Pixel frame shared by both renderers.
WIDTH = 900
LEFT = 64
RIGHT = 16
TOP = 8
AXIS = 28
MAX_ROW_HEIGHT = 16
MIN_ROW_HEIGHT = 2
PLOT_HEIGHT = 1200
"""Rows shrink (down to MIN_ROW_HEIGHT) to keep the plot within about this many pixels."""
END_WIDTH = 2.0
MIN_WIDTH = LEFT + RIGHT + 40
MIN_HEIGHT = TOP + AXIS + 10


@dataclasses.dataclass(frozen=True)
class Segment:
    """One bar of a row, in seconds since the layout's origin."""

    kind: str
    """``queued``, ``running``, ``end`` (a mark at the end) or ``attempt`` (an earlier one)."""
    start: float
    end: float
    state: JobState
    """The item's state (a folded row's: its most telling one); colours running and end."""
    title: str


@dataclasses.dataclass(frozen=True)
class Row:
    """One item (or, beyond :data:`MAX_ROWS`, a bucket of consecutive items)."""

    index: int
    last_index: int
    count: int
    state: JobState
    label: str
    segments: tuple[Segment, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The picture in seconds; renderers map it to pixels."""

    origin: float
    """Epoch seconds of the array's first submission (the earliest ``created_at``,
    when the user submitted; a backend's ``submitted_at`` is later): the axis' zero."""
    span: float
    """Seconds from the origin to the last end (or ``now`` while items run)."""
    rows: tuple[Row, ...]
    ticks: tuple[tuple[float, str], ...]
    items: int
    folded: bool


def layout(records: Sequence[JobRecord], *, now: float | None = None) -> Layout:
    """The timeline of ``records`` (ordered by array index, then id)."""
    now = time.time() if now is None else now
    ordered = sorted(
        records, key=lambda r: (r.array_index is None, r.array_index or 0, r.created_at, r.id)
    )
    if not ordered:
        return Layout(now, 1.0, (), _ticks(1.0), 0, False)
    origin = min(_stamps_from(r) for r in ordered)
    item_rows = [_item_row(r, position, origin, now) for position, r in enumerate(ordered)]
    folded = len(item_rows) > MAX_ROWS
    rows = _fold(item_rows, math.ceil(len(item_rows) / MAX_ROWS)) if folded else item_rows
    span = max([1.0, *(s.end for row in rows for s in row.segments)])
    return Layout(origin, span, tuple(rows), _ticks(span), len(ordered), folded)


def _stamps_from(record: JobRecord) -> float:
    """The earliest moment drawn for ``record``."""
    first = record.created_at or record.submitted_at or record.started_at or 0.0
    for entry in record.attempts:
        started = entry.get("started_at")
        if isinstance(started, (int, float)) and started and started < first:
            first = float(started)
    return float(first)


def _item_row(record: JobRecord, position: int, origin: float, now: float) -> Row:
    index = record.array_index if record.array_index is not None else position
    # Only a running or ended attempt has started: a requeued one (QUEUED, attempt
    # >= 1) written before requeues cleared it still carries its last attempt's start.
    started = record.state is JobState.RUNNING or record.is_terminal
    start = record.started_at if started else None
    ended: float | None = None
    if record.is_terminal:  # a record ended without a time: at its last known moment
        ended = record.finished_at or start or record.submitted_at or record.created_at
    waited_to = start or ended or now
    # A later attempt waits from its previous one's end (a retry keeps the first
    # submission's time; a rerun's new submission is later than that end).
    waited_from = record.submitted_at or record.created_at
    previous = record.attempts[-1].get("ended_at") if record.attempts else None
    if isinstance(previous, (int, float)) and previous <= waited_to:
        waited_from = max(waited_from, previous)
    # A worker can record its start before the submitter records the submission:
    # then the wait is counted from the record's creation.
    if waited_from > waited_to:
        waited_from = min(record.created_at, waited_to)
    run_to = max(start, ended or now) if start else None  # a clock behind: no negative bar
    ran = run_to - start if run_to is not None and start else None
    title = _title(record, index, waited_to - waited_from, ran)
    segments = [Segment("queued", waited_from - origin, waited_to - origin, record.state, title)]
    if start and run_to is not None:
        segments.append(Segment("running", start - origin, run_to - origin, record.state, title))
    if ended is not None:
        segments.append(Segment("end", ended - origin, ended - origin, record.state, title))
    for entry in record.attempts:  # last: thin bars drawn over the current attempt's
        segment = _attempt_segment(record, index, entry, origin)
        if segment is not None:
            segments.append(segment)
    return Row(index, index, 1, record.state, str(index), tuple(segments))


def _attempt_segment(
    record: JobRecord, index: int, entry: dict[str, Any], origin: float
) -> Segment | None:
    started, ended = entry.get("started_at"), entry.get("ended_at")
    if not isinstance(started, (int, float)) or not isinstance(ended, (int, float)) or not started:
        return None
    parts = [
        f"item {index} · {record.id} · attempt {entry.get('attempt', '?')}",
        f"ended: {entry.get('reason', '?')}"
        + (f" ({entry['message']})" if entry.get("message") else ""),
        f"ran for {format_duration(ended - started)}",
    ]
    if entry.get("host"):
        parts.append(f"host: {entry['host']}")
    return Segment(
        "attempt", started - origin, max(started, ended) - origin, record.state, "\n".join(parts)
    )


def _title(record: JobRecord, index: int, waited: float, ran: float | None) -> str:
    """The hover text of an item's bars."""
    state = record.state.value
    if record.failure_reason is not None:
        state += f" ({record.failure_reason.value})"
    lines = [f"item {index} · {record.id}", state, f"queued for {format_duration(waited)}"]
    if ran is not None:
        lines.append(f"ran for {format_duration(ran)}")
    if record.attempts:
        lines.append(f"{len(record.attempts)} earlier attempt(s)")
    if record.host:
        lines.append(f"host: {record.host}")
    if record.message and record.failure_reason is not None:
        lines.append(f"failure: {shorten(record.message, 200)}")
    return "\n".join(lines)


def _fold(rows: list[Row], size: int) -> list[Row]:
    """One row per ``size`` consecutive rows (see the module docstring)."""
    folded: list[Row] = []
    for first in range(0, len(rows), size):
        bucket = rows[first : first + size]
        counts = Counter(row.state for row in bucket)
        state = next(s for s in _SEVERITY if counts[s])
        low, high = bucket[0].index, bucket[-1].index
        summary = ", ".join(f"{counts[s]} {s.value}" for s in JobState if counts[s])
        title = f"items {low}-{high} ({len(bucket)}): {summary}"
        queued = [s for row in bucket for s in row.segments if s.kind == "queued"]
        running = [s for row in bucket for s in row.segments if s.kind == "running"]
        ends = [s for row in bucket for s in row.segments if s.kind == "end"]
        segments: list[Segment] = []
        if queued:
            first_start = min((s.start for s in running), default=None)
            start = min(s.start for s in queued)
            stop = first_start if first_start is not None else max(s.end for s in queued)
            segments.append(Segment("queued", start, max(start, stop), state, title))
        if running:
            start = min(s.start for s in running)
            segments.append(Segment("running", start, max(s.end for s in running), state, title))
        if ends and len(ends) == len(bucket):
            last = max(s.end for s in ends)
            segments.append(Segment("end", last, last, state, title))
        folded.append(Row(low, high, len(bucket), state, f"{low}-{high}", tuple(segments)))
    return folded


_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def _ticks(span: float) -> tuple[tuple[float, str], ...]:
    """Round steps (seconds, minutes, hours) giving at most about 8 ticks."""
    step: float = next((s for s in _STEPS if span / s <= 8), 86400.0)
    while span / step > 8:
        step *= 2
    count = int(span // step)
    return tuple((i * step, _tick_label(i * step)) for i in range(count + 1))


def _tick_label(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes}m" + (f"{secs:02d}s" if secs else "")
    hours, rest = divmod(whole, 3600)
    return f"{hours}h" + (f"{rest // 60:02d}m" if rest // 60 else "")


# -- the pixel frame -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Frame:
    """Where seconds and rows land, in pixels; one for both renderers."""

    width: int
    height: int
    row_height: float
    span: float

    @classmethod
    def of(cls, plan: Layout, width: int | None, height: int | None) -> _Frame:
        width = WIDTH if width is None else width
        if width < MIN_WIDTH:
            raise ConfigError(f"timeline width {width} is too small: give at least {MIN_WIDTH} px")
        rows = max(1, len(plan.rows))
        row_height: float
        if height is None:
            row_height = max(MIN_ROW_HEIGHT, min(MAX_ROW_HEIGHT, PLOT_HEIGHT // rows))
            height = int(TOP + rows * row_height + AXIS)
        elif height < MIN_HEIGHT:
            raise ConfigError(
                f"timeline height {height} is too small: give at least {MIN_HEIGHT} px"
            )
        else:
            row_height = (height - TOP - AXIS) / rows
        return cls(width, height, float(row_height), plan.span)

    def x(self, seconds: float) -> float:
        return LEFT + (self.width - LEFT - RIGHT) * max(0.0, seconds) / self.span

    def y(self, row: int) -> float:
        return TOP + row * self.row_height

    @property
    def axis_y(self) -> float:
        return self.height - AXIS

    def bar(self, segment: Segment, row: int) -> tuple[float, float, float, float]:
        """x, y, width, height of ``segment`` in row ``row``."""
        y, h = self.y(row), self.row_height
        gap = h * 0.15 if h >= 4 else 0.0
        x0 = self.x(segment.start)
        if segment.kind == "end":
            return x0 - END_WIDTH / 2, y + gap, END_WIDTH, h - 2 * gap
        w = max(self.x(segment.end) - x0, 1.0)
        if segment.kind == "attempt":  # thin: a bar across the row's middle
            thin = max(1.0, h * 0.2)
            return x0, y + (h - thin) / 2, w, thin
        return x0, y + gap, w, h - 2 * gap

    def label_every(self) -> int:
        """Label every n-th row, so that labels (10 px) never overlap."""
        return max(1, math.ceil(10 / self.row_height))


def _fill(segment: Segment) -> str:
    """Waiting is light whatever came after; bars and end marks take the item's state."""
    if segment.kind == "queued":
        return COLOURS["PENDING" if segment.state is JobState.PENDING else "queued"]
    if segment.kind == "attempt":
        return COLOURS["attempt"]
    if segment.kind == "end":
        return END_COLOURS.get(segment.state.value, COLOURS[segment.state.value])
    return COLOURS[segment.state.value]


# -- SVG -----------------------------------------------------------------------


def render_svg(
    records: Sequence[JobRecord],
    *,
    now: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> str:
    """The timeline of ``records`` as a self-contained SVG document (text).

    ``width``/``height`` in pixels; by default 900 wide and as tall as the rows
    need (rows shrink for large arrays, see the module docstring).
    """
    plan = layout(records, now=now)
    frame = _Frame.of(plan, width, height)
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="jobkit-timeline" '
        f'width="{frame.width}" height="{frame.height}" '
        f'viewBox="0 0 {frame.width} {frame.height}" '
        f'data-items="{plan.items}" data-rows="{len(plan.rows)}" '
        f'data-origin="{plan.origin:.3f}" data-span="{plan.span:.3f}" '
        'font-family="sans-serif" font-size="10">',
        f'<rect class="background" x="0" y="0" width="{frame.width}" height="{frame.height}" '
        'fill="#ffffff"/>',
    ]
    _svg_axis(out, plan, frame)
    every = frame.label_every()
    for position, row in enumerate(plan.rows):
        if row.count == 1:
            attrs = f'class="item" data-index="{row.index}"'
        else:
            attrs = (
                f'class="items" data-index="{row.index}" data-last-index="{row.last_index}" '
                f'data-count="{row.count}"'
            )
        out.append(f'<g {attrs} data-state="{row.state.value}">')
        if position % every == 0:
            y = frame.y(position) + frame.row_height / 2 + 3.5
            out.append(
                f'<text class="label" x="{LEFT - 6}" y="{y:.1f}" text-anchor="end" '
                f'fill="#424242">{escape(row.label)}</text>'
            )
        for segment in row.segments:
            x, y, w, h = frame.bar(segment, position)
            css = f"bar {segment.kind} {segment.state.value.lower()}"
            out.append(
                f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                f'height="{h:.1f}" fill="{_fill(segment)}">'
                f"<title>{escape(segment.title)}</title></rect>"
            )
        out.append("</g>")
    if plan.folded:
        out.append(
            f'<text class="note" x="{frame.width - RIGHT}" y="{frame.height - 2}" '
            f'text-anchor="end" fill="#757575">{plan.items} items, '
            f"{math.ceil(plan.items / len(plan.rows))} per row</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _svg_axis(out: list[str], plan: Layout, frame: _Frame) -> None:
    axis_y = frame.axis_y
    out.append('<g class="axis">')
    out.append(
        f'<line x1="{LEFT}" y1="{axis_y:.1f}" x2="{frame.width - RIGHT}" y2="{axis_y:.1f}" '
        'stroke="#616161"/>'
    )
    for seconds, label in plan.ticks:
        x = frame.x(seconds)
        out.append(
            f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{axis_y + 4:.1f}" '
            'stroke="#eeeeee"/>'
        )
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{axis_y + 16:.1f}" text-anchor="middle" '
            f'fill="#424242" data-seconds="{seconds:g}">{escape(label)}</text>'
        )
    out.append("</g>")


# -- PNG -----------------------------------------------------------------------


def render_png(
    records: Sequence[JobRecord],
    *,
    now: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> bytes:
    """The same picture as :func:`render_svg`, as PNG bytes (needs Pillow: the ``ui`` extra)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ConfigError(f"PNG timelines need Pillow: {UI_HINT} (or write .svg)") from None
    import io

    plan = layout(records, now=now)
    frame = _Frame.of(plan, width, height)
    image = Image.new("RGB", (frame.width, frame.height), "#ffffff")
    draw = ImageDraw.Draw(image)
    _png_axis(draw, plan, frame)
    every = frame.label_every()
    for position, row in enumerate(plan.rows):
        if position % every == 0 and frame.row_height >= 2:
            y = frame.y(position) + frame.row_height / 2
            draw.text((LEFT - 6, y), row.label, fill="#424242", anchor="rm")
        for segment in row.segments:
            x, y, w, h = frame.bar(segment, position)
            draw.rectangle((x, y, x + max(w, 1.0) - 1, y + max(h, 1.0) - 1), fill=_fill(segment))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _png_axis(draw: ImageDraw.ImageDraw, plan: Layout, frame: _Frame) -> None:
    axis_y = frame.axis_y
    for seconds, _label in plan.ticks:
        x = frame.x(seconds)
        draw.line((x, TOP, x, axis_y + 4), fill="#eeeeee")
    draw.line((LEFT, axis_y, frame.width - RIGHT, axis_y), fill="#616161")
    for seconds, label in plan.ticks:
        draw.text((frame.x(seconds), axis_y + 12), label, fill="#424242", anchor="mm")
