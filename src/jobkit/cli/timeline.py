"""``jobkit timeline``: an array's timeline written to an SVG or PNG file.

Reads the array's records once (a job id gives a one-row timeline), asks the
backends about the active ones as ``jobkit status`` does, and writes the
picture :mod:`jobkit.timeline` draws.  The format follows the file's suffix;
without ``-o`` it is ``timeline-<ID>.svg`` in the current directory.  The file
is written whole or not at all (a temporary file renamed into place), so a
failed run never leaves half a picture over an earlier one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from jobkit.cli.errors import fail
from jobkit.cli.session import Session

FORMATS = (".svg", ".png")
MAX_SIDE = 20_000
"""Largest --width/--height accepted: a picture past it is no use on a screen
or a page, and a PNG that size already takes over a gigabyte to draw."""
MAX_PNG_PIXELS = 100_000_000
"""Largest PNG area (width x height): each pixel costs Pillow 3 bytes while drawing."""


def timeline(
    ctx: typer.Context,
    job_id: Annotated[
        str, typer.Argument(metavar="ARRAY_ID", help="A job array's id (or one job's id).")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Where to write it: FILE.svg or FILE.png (default timeline-ARRAY_ID.svg).",
        ),
    ] = None,
    width: Annotated[
        int | None,
        typer.Option(
            "--width", metavar="PX", help=f"Width in pixels (default 900, at most {MAX_SIDE})."
        ),
    ] = None,
    height: Annotated[
        int | None,
        typer.Option(
            "--height",
            metavar="PX",
            help=f"Height in pixels (default: as rows need, at most {MAX_SIDE}).",
        ),
    ] = None,
) -> None:
    """Write an array's timeline (one row per item: queued -> running -> end) to SVG or PNG."""
    from jobkit.lookup import find

    job_id = job_id.strip()
    path = output if output is not None else Path(f"timeline-{job_id}.svg")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise typer.BadParameter(
            f"{str(path)!r} has {'suffix ' + repr(path.suffix) if path.suffix else 'no suffix'}; "
            f"choose a file ending in {' or '.join(FORMATS)}",
            param_hint="'--output'",
        )
    for name, value in (("--width", width), ("--height", height)):
        if value is not None and value < 1:
            raise typer.BadParameter(
                f"{value} is not a positive number of pixels", param_hint=f"'{name}'"
            )
        if value is not None and value > MAX_SIDE:
            raise typer.BadParameter(
                f"{value} pixels is more than the {MAX_SIDE} allowed; choose {MAX_SIDE} or fewer",
                param_hint=f"'{name}'",
            )
    area = (width or 0) * (height or 0)
    if suffix == ".png" and area > MAX_PNG_PIXELS:
        raise typer.BadParameter(
            f"{width}x{height} is {area} pixels, more than the {MAX_PNG_PIXELS} "
            "a PNG may have; make it smaller or write .svg",
            param_hint="'--width'/'--height'",
        )
    session = ctx.find_object(Session) or Session()
    found = find(session.store, job_id)
    records = session.fresh(found.records)
    now = time.time()
    if suffix == ".png":
        from jobkit.timeline import render_png

        data = render_png(records, now=now, width=width, height=height)
    else:
        from jobkit.timeline import render_svg

        data = render_svg(records, now=now, width=width, height=height).encode()
    _write(path, data)
    kind = "array" if found.is_array else "job"
    typer.echo(f"wrote {path} ({kind} {found.id}, {len(records)} item(s))")


def _write(path: Path, data: bytes) -> None:
    """``data`` to ``path`` atomically; one error line if the place is not writable."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:  # the user's umask, as any new file
            file.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        fail(f"cannot write {path}: {exc.strerror or exc}; choose another -o path")
