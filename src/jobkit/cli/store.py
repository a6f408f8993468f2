"""``jobkit store ...``: commands about stores themselves rather than jobs.

``jobkit store copy SRC DST`` moves a history between stores, e.g. from the
laptop's SQLite file to the bucket a cluster shares.  The copying itself is
:func:`jobkit.stores.copy.copy_jobs`; this module only parses and reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from jobkit.cli import render

if TYPE_CHECKING:
    from jobkit.stores.copy import CopyReport

store_app = typer.Typer(
    name="store",
    help="Work with stores themselves: copy every job from one to another.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
)

SHOWN = 10
"""Ids listed per problem kind before "... and N more"."""


@store_app.command("copy")
def copy(
    source: Annotated[str, typer.Argument(metavar="SRC", help="Store URL to copy from.")],
    destination: Annotated[str, typer.Argument(metavar="DST", help="Store URL to copy into.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be copied; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Copy every job (record, payload, result) from SRC to DST; safe to run again.

    Jobs already in DST are left alone; ones DST holds as still active are
    brought up to date; a job both stores hold with different final states
    is reported and never overwritten.  Exits 1 unless every job of SRC is
    in DST afterwards.
    """
    from jobkit.stores import open_store
    from jobkit.stores.copy import copy_jobs

    src = open_store(source)
    dst = open_store(destination)

    def progress(done: int, total: int) -> None:
        if not as_json and total > 1000:
            typer.echo(f"  {done}/{total} jobs...", err=True)

    try:
        report = copy_jobs(src, dst, dry_run=dry_run, progress=progress)
    finally:
        src.close()
        dst.close()
    if as_json:
        render.print_json(report.to_dict())
    else:
        _show(report)
    if not report.complete:
        raise typer.Exit(1)


def _show(report: CopyReport) -> None:
    verb = "would copy" if report.dry_run else "copied"
    lines = [
        f"{report.source} -> {report.destination}: {verb} {len(report.copied)} job(s), "
        f"{'would update' if report.dry_run else 'updated'} {len(report.updated)}, "
        f"{report.unchanged} already there."
    ]
    if report.active:
        lines.append(
            f"{len(report.active)} of them still active in the source (their workers write "
            f"there): copy again once they end ({_ids(report.active)})."
        )
    for title, problems in (
        ("conflict(s), left as they are", report.conflicts),
        ("job(s) not copied", report.failed),
    ):
        if problems:
            lines.append(f"{len(problems)} {title}:")
            shown = list(problems.items())[:SHOWN]
            lines += [f"  {job_id}: {why}" for job_id, why in shown]
            if len(problems) > SHOWN:
                lines.append(f"  ... and {len(problems) - SHOWN} more (--json lists them all)")
    typer.echo("\n".join(lines), err=not report.complete)


def _ids(ids: list[str]) -> str:
    more = f", ... {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return ", ".join(ids[:SHOWN]) + more
