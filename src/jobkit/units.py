"""Units in settings: sizes in bytes and durations, parsed and formatted.

Apart from :mod:`jobkit.resources` because the CLI (``prune --older-than``,
rendering), the configuration (``idle_timeout``, ``poll_interval``) and the
backends read the same spellings without needing the resource model.

Sizes: ``"16GB"`` is decimal (10**9), ``"512MiB"`` and Kubernetes' ``"512Mi"``
are binary, and a bare letter (``"16G"``, ``"512M"``) is binary as in Slurm's
``--mem`` -- *not* decimal as in Kubernetes quantities.  Durations: ``"2h"``,
``"1h30m"``, ``"2d"``, Slurm's ``"HH:MM:SS"``/``"MM:SS"``/``"D-HH[:MM[:SS]]"``,
or a number of seconds (a string of digits is seconds too, unlike Slurm's
minutes, so that ``time=90`` and ``time="90"`` agree).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal

from jobkit.errors import ConfigError

__all__ = [
    "DURATION_HELP",
    "SIZE_HELP",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

# --------------------------------------------------------------------------- sizes

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*\Z")
_SIZE_UNITS: Mapping[str, int] = {
    "": 1,
    "b": 1,
    **{p: 1024 ** (i + 1) for i, p in enumerate("kmgtp")},  # Slurm: 16G = 16 GiB
    **{p + "i": 1024 ** (i + 1) for i, p in enumerate("kmgtp")},  # Kubernetes: 16Gi
    **{p + "ib": 1024 ** (i + 1) for i, p in enumerate("kmgtp")},
    **{p + "b": 1000 ** (i + 1) for i, p in enumerate("kmgtp")},
}
# Largest first, binary and decimal interleaved (PiB > PB > TiB > ...).
_FORMAT_UNITS: tuple[tuple[str, int], ...] = tuple(
    sorted(
        [(p.upper() + "iB", 1024 ** (i + 1)) for i, p in enumerate("kmgtp")]
        + [(p.upper() + "B", 1000 ** (i + 1)) for i, p in enumerate("kmgtp")],
        key=lambda unit: -unit[1],
    )
)
SIZE_HELP = "expected a size like '16GB', '512MiB' or a number of bytes"


def parse_size(value: int | float | str) -> int:
    """Bytes in ``value``: ``"16GB"`` (10**9), ``"512MiB"``/``"512Mi"``/``"512M"`` (2**20).

    Fractions round up to whole bytes, so a request is never smaller than asked.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"invalid size {value!r}: {SIZE_HELP}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"invalid size {value!r}: {SIZE_HELP}")
        number = Decimal(value)
    else:
        match = _SIZE_RE.match(value)
        unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise ConfigError(f"invalid size {value!r}: {SIZE_HELP}")
        number = Decimal(match.group(1)) * unit
    if number < 0:
        raise ConfigError(f"invalid size {value!r}: a size cannot be negative")
    return math.ceil(number)


def format_size(nbytes: int) -> str:
    """Shortest exact spelling of ``nbytes`` (``"16GB"``, ``"1.5GiB"``), else ~3 digits."""
    if nbytes < 0:
        return "-" + format_size(-nbytes)
    for name, unit in _FORMAT_UNITS:
        if nbytes >= unit and (nbytes * 100) % unit == 0:
            return f"{_trim(Decimal(nbytes) / unit)}{name}"
    if nbytes < 1024:
        return f"{nbytes}B"
    name, unit = next((n, u) for n, u in _FORMAT_UNITS if n.endswith("iB") and nbytes >= u)
    return f"{nbytes / unit:.3g}{name}"


def _trim(number: Decimal) -> str:
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# ----------------------------------------------------------------------- durations

_UNIT_SECONDS: Mapping[str, int] = {
    **dict.fromkeys(("w", "week", "weeks"), 604800),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
}
_DURATION_PART_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*")
_NUMBER_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*\Z")
_CLOCK_RE = re.compile(r"\s*(?:(\d+)-)?(\d+(?::\d+){0,2})\s*\Z")
DURATION_HELP = (
    "expected a duration like '2h', '90m', '1h30m', '2d', 'HH:MM:SS', 'D-HH:MM:SS' "
    "or a number of seconds"
)


def parse_duration(value: timedelta | int | float | str) -> timedelta:
    """``value`` as a ``timedelta``; see the module docstring for accepted forms."""
    if isinstance(value, timedelta):
        delta = value
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"invalid duration {value!r}: {DURATION_HELP}")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigError(f"invalid duration {value!r}: {DURATION_HELP}")
        delta = timedelta(seconds=value)
    else:
        seconds = _parse_duration_text(value.lower())
        if seconds is None:
            raise ConfigError(f"invalid duration {value!r}: {DURATION_HELP}")
        delta = timedelta(seconds=seconds)
    if delta < timedelta(0):
        raise ConfigError(f"invalid duration {value!r}: a duration cannot be negative")
    return delta


def _parse_duration_text(text: str) -> float | None:
    number = _NUMBER_RE.match(text)
    if number:
        return float(number.group(1))
    clock = _CLOCK_RE.match(text)
    if clock:
        return _parse_clock(clock.group(1), clock.group(2).split(":"))
    total, pos, last_unit = 0.0, 0, math.inf
    while pos < len(text):
        part = _DURATION_PART_RE.match(text, pos)
        unit = _UNIT_SECONDS.get(part.group(2)) if part else None
        if part is None or unit is None or unit >= last_unit:  # "30m1h", "1h1h"
            return None
        total += float(part.group(1)) * unit
        pos, last_unit = part.end(), unit
    return total if pos else None


def _parse_clock(days: str | None, fields: list[str]) -> float | None:
    """Slurm's time formats: MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    numbers = [int(f) for f in fields]
    if days is None:
        if any(n >= 60 for n in numbers[1:]):  # the leading field may exceed its unit
            return None
        hours, minutes, seconds = [0] * (3 - len(numbers)) + numbers
    else:
        hours, minutes, seconds = numbers + [0] * (3 - len(numbers))
        if hours >= 24 or minutes >= 60 or seconds >= 60:
            return None
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def format_duration(value: timedelta | float) -> str:
    """Compact spelling (``"1d2h30m"``, ``"1.5s"``) that :func:`parse_duration` reads back."""
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        return "-" + format_duration(-delta)
    micros = delta // timedelta(microseconds=1)
    whole, fraction = divmod(micros, 1_000_000)
    parts = []
    for name, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, unit)
        if count:
            parts.append(f"{count}{name}")
    if whole or fraction or not parts:
        parts.append(f"{_trim(Decimal(whole) + Decimal(fraction) / 1_000_000)}s")
    return "".join(parts)
