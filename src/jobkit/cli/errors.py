"""Where the ``jobkit`` command's errors become one line and an exit code.

Handled at one edge, :meth:`JobkitGroup.main`, so a command body never needs
``try``: a library :class:`~jobkit.errors.JobkitError` becomes one
``Error: ...`` line on stderr and exit code 1; a usage error (bad option
value, missing argument) one line and exit 2; Ctrl-C exits 130 quietly.
Nothing ever prints a Python traceback (set ``JOBKIT_DEBUG=1`` to see one for
an unexpected internal error).  Kept apart from the commands so the rules for
what the user sees on failure are read, and changed, in one place.

Exit codes: 0 success, 1 error (unknown job, store unreachable, job failed or
not finished for ``result``), 2 usage, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from jobkit.cli import render
from jobkit.errors import JobkitError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class JobkitGroup(TyperGroup):
    """The root command; its ``main`` is the one place errors become exit codes."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except JobkitError as exc:
            code = print_error(render.first_line(str(exc)) or type(exc).__name__)
        except typer.Abort as exc:  # older typers turn Ctrl-C into Abort
            interrupted = isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt)
            code = EXIT_INTERRUPTED if interrupted else print_error("aborted")
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        except Exception as exc:
            if isinstance(exc, _CLICK_ERROR):  # usage errors (exit 2) and friends
                code = _print_click_error(exc)
            elif os.environ.get("JOBKIT_DEBUG"):
                raise
            else:
                code = print_error(
                    f"internal error: {type(exc).__name__}: {render.first_line(str(exc))} "
                    "(a bug in jobkit: please report it; run with JOBKIT_DEBUG=1 for the "
                    "traceback)"
                )
        else:
            code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


# click's ClickException: typer.TyperException in typers that vendor click, the
# external click.ClickException before; BadParameter derives from it in both.
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def _print_click_error(exc: Exception) -> int:
    """One line for a usage error, with where to find help; returns the exit code."""
    code = int(getattr(exc, "exit_code", 2))
    message = render.first_line(str(getattr(exc, "format_message", exc.__str__)()))
    if not message:  # click's NoArgsIsHelpError: the help was the message
        return code
    usage_ctx = getattr(exc, "ctx", None)
    if code == 2 and usage_ctx is not None:
        message += f" (see '{usage_ctx.command_path} --help')"
    typer.echo(f"Error: {message}", err=True)
    return code


def print_error(message: str) -> int:
    """One ``Error: ...`` line on stderr; returns the exit code for it."""
    typer.echo(f"Error: {message}", err=True)
    return EXIT_ERROR


def fail(message: str) -> NoReturn:
    """Stop the command with one error line and exit code 1."""
    print_error(message)
    raise typer.Exit(EXIT_ERROR)
