"""``jobkit prune``'s rendering; the planning is :mod:`jobkit.pruning`."""

from __future__ import annotations

from datetime import timedelta

import typer

from jobkit.cli import render
from jobkit.errors import JobkitError
from jobkit.pruning import PrunePlan
from jobkit.states import JobRow

SHOWN_IN_DRY_RUN = 50


def parse_age(text: str, option: str = "--older-than") -> timedelta:
    """A duration option; a usage error names the option, the value and the forms."""
    from jobkit.units import parse_duration  # not jobkit.resources: that loads pydantic

    try:
        return parse_duration(text)
    except JobkitError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{option}'") from None


def show(planned: PrunePlan, *, dry_run: bool) -> None:
    """The human report: what was (or would be) deleted."""
    import time

    count = len(planned.records)
    if dry_run and planned.records:
        render.jobs_table([JobRow.of(r) for r in planned.records[:SHOWN_IN_DRY_RUN]], time.time())
        if count > SHOWN_IN_DRY_RUN:
            typer.echo(f"... and {count - SHOWN_IN_DRY_RUN} more")
    for job_id, problem in sorted(planned.corrupted.items()):
        typer.echo(f"corrupted record {job_id}: {render.first_line(problem)}")
    states = ", ".join(f"{n} {s.lower()}" for s, n in planned.state_counts().items())
    verb = "would delete" if dry_run else "deleted"
    summary = f"{verb} {count} job{'s' if count != 1 else ''}"
    if states:
        summary += f" ({states})"
    if planned.corrupted:
        summary += f" and {len(planned.corrupted)} corrupted record(s)"
    summary += f", {len(planned.log_files)} log file(s)"
    summary += f", {len(planned.orphans)} orphan payload(s)"
    if planned.orphan_series:
        summary += f", {len(planned.orphan_series)} orphan usage series"
    typer.echo(summary)
