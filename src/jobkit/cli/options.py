"""Option values shared by several commands, parsed once: ``--state`` (list,
top, prune) and ``--sort`` (list, top).

Its own module so that every command module imports it at top level: before,
``top`` reached into :mod:`jobkit.cli.app`, which imports ``top`` -- a cycle
dodged with an import inside the function.  Only typer and jobkit's light
modules are imported here (``jobkit list`` imports this).
"""

from __future__ import annotations

import typer

from jobkit.cli.usage_view import SORT_KEYS
from jobkit.errors import JobkitError
from jobkit.states import TERMINAL_STATES, JobState


def parse_state_option(values: list[str] | None, *, terminal_only: bool = False) -> list[JobState]:
    """``--state`` values: any case, repeatable, comma-separated; usage error if bad."""
    from jobkit.client import parse_states

    names = [part.strip() for value in values or () for part in value.split(",") if part.strip()]
    if not names:
        raise typer.BadParameter(
            "no state given; use e.g. --state failed or --state running,queued",
            param_hint="'--state'",
        )
    try:
        states = parse_states(names) or []
    except JobkitError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--state'") from None
    if terminal_only:
        active = [s.value for s in states if s not in TERMINAL_STATES]
        if active:
            raise typer.BadParameter(
                f"{', '.join(active)} is not a final state and prune never deletes live jobs; "
                f"choose from {', '.join(s.value for s in JobState if s in TERMINAL_STATES)}",
                param_hint="'--state'",
            )
    return list(dict.fromkeys(states))


def check_sort(value: str) -> str:
    """``--sort``'s value, or a one-line usage error naming the choices."""
    key = value.strip().lower()
    if key not in SORT_KEYS:
        raise typer.BadParameter(
            f"{value!r} is not a sort key; choose from {', '.join(SORT_KEYS)}",
            param_hint="'--sort'",
        )
    return key
