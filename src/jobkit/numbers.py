"""The one rule for numbers in settings, shared by resources and configuration.

``Resources`` and ``LocalConfig`` used to read numbers differently
(``Resources(nodes=2.0)`` passed where ``LocalConfig(max_jobs=2.0)`` failed),
so the same TOML value meant different things in two tables.  Both now read
numbers through this module:

* ``int``, finite ``float`` or a numeric string (``"2"``, ``" 0.5 "``) is a number;
* a whole float (``2.0``, ``"2.0"``) becomes the int ``2``, so it passes where
  a whole number is expected, while ``2.5`` is refused;
* booleans are refused (``True`` is not 1 CPU), as are ``nan`` and ``inf``.

Validators raise :class:`NumberError`, a ``ValueError`` whose text is the
"expected ..." part of a one-line message; the model around them adds the
field name and the value.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["NumberError", "to_number", "whole_number", "whole_number_help"]


class NumberError(ValueError):
    """A value that is not the number a setting expects; ``str()`` says what is."""


def whole_number_help(minimum: int) -> str:
    """The one wording for a whole-number setting, used by every model."""
    return f"expected a whole number >= {minimum}"


def to_number(value: Any) -> int | float:
    """``value`` as an int or float; whole floats become ints, booleans are refused."""
    if isinstance(value, bool):
        raise NumberError("expected a number, not a boolean")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise NumberError("expected a number") from None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if value.is_integer() else value
    raise NumberError("expected a finite number")


def whole_number(value: Any, *, minimum: int) -> int:
    """``value`` as an int ``>= minimum``; ``2.0`` and ``"2"`` are 2, ``2.5`` is refused."""
    try:
        result = to_number(value)
    except NumberError:
        raise NumberError(whole_number_help(minimum)) from None
    if not isinstance(result, int) or result < minimum:
        raise NumberError(whole_number_help(minimum))
    return result
