"""``jobkit list --sort cpu`` / ``--idle-gpus`` / ``--flagged``: the job list by usage.

The plain listing reads only the store's rows (:meth:`Store.rows`: index
keys on S3, no record read) and stays fast among tens of thousands of jobs.
Usage lives in the records, so this path -- taken only when a usage sort or
filter is asked -- reads every record matching the other filters::

    store.query(state, backend, name) ─► keep flagged ones (--idle-gpus, --flagged)
        ─► sort by the key, biggest first ─► first LIMIT ─► session.fresh
        ─► table (FLAGS column) / JSON (each record with its "flags": [{name, text}])

A sort by ``created`` keeps the store's order (newest first).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Sequence
from typing import Any

import typer

from jobkit.cli import render
from jobkit.cli.session import Session
from jobkit.cli.usage_view import flag_names, sort_key, usage_cell
from jobkit.states import JobRecord, JobState
from jobkit.usage import flags


def list_by_usage(
    session: Session,
    *,
    states: Collection[JobState] | None,
    backend: str | None,
    name: str | None,
    limit: int,
    sort: str,
    idle_gpus: bool,
    flagged: bool,
    as_json: bool,
) -> None:
    now = time.time()
    records = session.store.query(states=states, backend=backend, name=name)
    if idle_gpus or flagged:
        records = [
            r
            for r in records
            if (names := flag_names(r)) and (not idle_gpus or "idle_gpu" in names)
        ]
    if sort != "created":
        records.sort(key=sort_key(sort, now), reverse=True)  # stable: newest first on ties
    more, page = len(records) > limit, session.fresh(records[:limit])
    if as_json:
        render.print_json([with_flags(r) for r in page])
        return
    if not page:
        typer.echo(f"No jobs match in {session.store.url}.", err=True)
        return
    usage_table(page, now)
    if more:
        shown = f"(the first {limit} of {len(records)} shown; use --limit to see more)"
        typer.echo(shown, err=True)


def with_flags(record: JobRecord) -> dict[str, Any]:
    """The whole record plus its waste flags, as the table's FLAGS column shows
    them: a script filtering with ``--flagged`` should not recompute why."""
    return {**record.to_dict(), "flags": [{"name": f.name, "text": f.text} for f in flags(record)]}


def usage_table(records: Sequence[JobRecord], now: float) -> None:
    """The list's columns plus USAGE (CPU seconds, peak RSS, GPU) and FLAGS."""
    rows = [
        (
            render.printable(r.id),
            render.printable(r.name),
            render.printable(r.backend),
            render.state_text(r),
            render.format_age(r.created_at, now),
            render.run_time(r, now),
            render.printable(r.host or "-"),
            usage_cell(r),
            ",".join(flag_names(r)) or "-",
        )
        for r in records
    ]
    styles = [render.STATE_ANSI.get(r.state, "") for r in records]
    out = sys.stdout
    out.write(
        render.columns(
            (*render.JOB_HEADERS, "USAGE", "FLAGS"),
            rows,
            style_column=3,
            styles=styles,
            color=render.use_color(out),
        )
    )
