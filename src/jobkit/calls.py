"""Check calls against the function's signature before anything is recorded.

A call that cannot bind (``sq(1, 2, 3)`` for ``def sq(x)``) would otherwise
be written to the store, started by a backend and fail in the worker minutes
later on a cluster.  Python's own binding rules decide (``inspect.Signature.
bind``), so the answer is the one a local call would give.  The signature is
computed once per function (cached weakly, so a lambda made in a loop is not
kept alive), which keeps a 10,000-item map cheap: binding costs microseconds.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_cache: weakref.WeakKeyDictionary[Any, inspect.Signature | None] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def signature_of(fn: Callable[..., Any]) -> inspect.Signature | None:
    """``fn``'s signature, or None where Python has none (some builtins)."""
    try:
        with _lock:
            if fn in _cache:
                return _cache[fn]
    except TypeError:  # not weakly referenceable or not hashable: compute each time
        return _compute(fn)
    sig = _compute(fn)
    try:
        with _lock:
            _cache[fn] = sig
    except TypeError:
        pass
    return sig


def _compute(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (ValueError, TypeError):
        return None


def check_calls(
    fn: Callable[..., Any],
    calls: Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]],
    *,
    array: bool = False,
) -> None:
    """Raise TypeError naming ``fn`` and the first call that cannot bind."""
    sig = signature_of(fn)
    if sig is None:
        return
    bind = sig.bind
    for index, (args, kwargs) in enumerate(calls):
        try:
            bind(*args, **kwargs)
        except TypeError as exc:
            name = getattr(fn, "__qualname__", None) or type(fn).__name__
            name += str(_bare(sig))
            where = f"item {index} of the map " if array else ""
            raise TypeError(
                f"{name} cannot be called with {where}{_describe(args, kwargs)}: {exc}; "
                f"pass arguments that match {name} (nothing was submitted)"
            ) from None


def _bare(sig: inspect.Signature) -> inspect.Signature:
    """The signature without annotations: short, and readable when they are strings."""
    empty = inspect.Parameter.empty
    params = [p.replace(annotation=empty) for p in sig.parameters.values()]
    return sig.replace(parameters=params, return_annotation=empty)


def _describe(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return f"({', '.join(parts)})"


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the binding error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."
