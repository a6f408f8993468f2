"""Cache keys: a hash of a function and its arguments, equal in every Python session.

The key must be the same in another process, on another machine and after a
restart, so nothing that varies between interpreters may reach the hash:
``hash()`` (randomised for strings), ``id()``, set iteration order, dict
insertion order, file paths and line numbers.  Values are fed to SHA-256 as a
tagged, length-prefixed stream::

    key = sha256("jobkit-cache/1" | python major.minor | function | arguments)

    function, by value (``__main__``, notebooks, closures, lambdas: what
    cloudpickle ships by value):
        qualname | code | defaults | closure values | referenced globals
    function, importable by reference:   module | qualname | code | plain-valued
                                         globals it names (constants of its module)
    function with ``cache="v2"``:         module | qualname | "v2"   (no code)
    code:     co_code | names | argument layout | consts (nested code recursively);
              never co_filename, co_firstlineno or the line table
    globals:  the names the code (and its nested code) reads that the
              function's globals hold: functions recursively, modules by
              name, classes by module and qualname, plain values canonically
    arguments: bound to the signature with defaults applied, so ``f(1)`` and
              ``f(1, b=2)`` with ``b=2`` the default are one call

Canonical values: None, bool, int, float, complex, str, bytes, list, tuple,
dict (items ordered by their own digests: equal dicts hash equal), set and
frozenset (elements ordered by digest), numpy arrays by dtype, shape and
bytes (numpy is never imported here: an array can only exist if it is),
jobs by id (a job passed as an argument stands for its result).  Anything
else is pickled; a value that cannot be pickled cannot be keyed and raises
:class:`~jobkit.errors.SerializationError` before anything is recorded (it
could not be shipped to a worker either).
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
import struct
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jobkit.errors import SerializationError

KEY_VERSION = b"jobkit-cache/1"
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"

_CODE_FLAGS_KEPT = 0xFFFF
"""co_flags bits that matter (generator, varargs...); higher bits are compiler
feature flags that ``from __future__`` imports set."""


def call_key(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    version: str | None = None,
) -> str:
    """The cache key of ``fn(*args, **kwargs)`` (64 hex digits).

    ``version``: the user's explicit version (``cache="v2"``): the code is then
    not hashed, only the function's name and the version.
    """
    return call_keys(fn, [(args, kwargs)], version=version)[0]


def call_keys(
    fn: Callable[..., Any],
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] | list[tuple[tuple[Any, ...], Any]],
    *,
    version: str | None = None,
) -> list[str]:
    """Keys of many calls of one function; the function is hashed once."""
    head = hashlib.sha256()
    head.update(_frame(KEY_VERSION))
    head.update(_frame(PYTHON.encode()))
    head.update(_frame(function_digest(fn, version=version)))
    signature = _signature(fn)
    keys = []
    for index, (args, kwargs) in enumerate(calls):
        digest = head.copy()
        where = f"item {index} of the map" if len(calls) > 1 else "the call"
        digest.update(_Hasher(where).digest(_bound(signature, args, kwargs)))
        keys.append(digest.hexdigest())
    return keys


def function_digest(fn: Callable[..., Any], *, version: str | None = None) -> bytes:
    """The part of a key that names the function (its code unless ``version``)."""
    target = _unwrap(fn)
    if version is not None:
        module = getattr(target, "__module__", None) or ""
        qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
        return _Hasher("the function").digest(("versioned", module, qualname, version))
    return _Hasher("the function").digest(target)


# -- binding ----------------------------------------------------------------------


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    from jobkit.calls import signature_of

    return signature_of(fn)


def _bound(
    signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """The call as ``{parameter: value}`` with defaults, or the raw arguments."""
    if signature is None:
        return ("raw", tuple(args), dict(kwargs))
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:  # check_calls has already said so; key what was given
        return ("raw", tuple(args), dict(kwargs))
    bound.apply_defaults()
    return ("bound", dict(bound.arguments))


def _unwrap(fn: Any) -> Any:
    inner = getattr(fn, "_fn", None)  # a RemoteFunction passed to jobkit.submit
    return inner if callable(inner) and type(fn).__name__ == "RemoteFunction" else fn


# -- the hasher ---------------------------------------------------------------------


def _frame(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


class _Hasher:
    """Turns a value into a digest; remembers functions met, for recursion."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._seen: dict[int, int] = {}  # id(function) -> order met, for cycles
        self._keep: list[Any] = []  # keeps ids in _seen valid while hashing

    def digest(self, value: Any) -> bytes:
        out = hashlib.sha256()
        for chunk in self._tokens(value):
            out.update(chunk)
        return out.digest()

    def _tokens(self, value: Any) -> Iterator[bytes]:
        if value is None:
            yield b"N"
        elif value is True or value is False:
            yield b"T" if value else b"F"
        elif type(value) is int:
            yield b"i" + _frame(str(value).encode())
        elif type(value) is float:
            yield b"f" + _frame(float.hex(value).encode())
        elif type(value) is complex:
            yield b"c" + _frame(f"{value.real.hex()},{value.imag.hex()}".encode())
        elif type(value) is str:
            yield b"s" + _frame(value.encode("utf-8", "surrogatepass"))
        elif type(value) in (bytes, bytearray):
            yield b"b" + _frame(bytes(value))
        elif type(value) in (list, tuple):
            yield (b"l" if type(value) is list else b"t") + struct.pack(">Q", len(value))
            for item in value:
                yield from self._tokens(item)
        elif type(value) is dict:
            pairs = sorted((self.digest(k), self.digest(v)) for k, v in value.items())
            yield b"d" + struct.pack(">Q", len(pairs))
            for key, item in pairs:
                yield key + item
        elif type(value) in (set, frozenset):
            members = sorted(self.digest(item) for item in value)
            yield (b"S" if type(value) is set else b"z") + struct.pack(">Q", len(members))
            yield from members
        elif type(value).__name__ == "RemoteFunction" and callable(getattr(value, "_fn", None)):
            yield from self._tokens(value._fn)
        elif isinstance(value, types.CodeType):
            yield from self._code(value)
        elif isinstance(value, (types.FunctionType, types.LambdaType)):
            yield from self._function(value)
        elif isinstance(value, types.MethodType):
            yield b"m"
            yield from self._tokens(value.__func__)
            yield from self._tokens(value.__self__)
        elif isinstance(value, types.ModuleType):
            yield b"M" + _frame(value.__name__.encode())
        elif isinstance(value, type):
            yield from self._class(value)
        elif (job_id := _job_id(value)) is not None:
            yield b"J" + _frame(job_id.encode())
        elif (array := _ndarray(value)) is not None:
            yield from array
        elif type(value).__name__ == "partial" and hasattr(value, "func"):
            yield b"p"
            yield from self._tokens((value.func, tuple(value.args), dict(value.keywords)))
        else:
            yield b"P" + _frame(self._pickled(value))

    # -- code and functions ------------------------------------------------------
    def _code(self, code: types.CodeType) -> Iterator[bytes]:
        yield b"C"
        yield _frame(code.co_code)
        yield from self._tokens(
            (
                code.co_name,
                code.co_argcount,
                code.co_posonlyargcount,
                code.co_kwonlyargcount,
                code.co_flags & _CODE_FLAGS_KEPT,
                code.co_names,
                code.co_varnames,
                code.co_freevars,
                code.co_cellvars,
            )
        )
        yield struct.pack(">Q", len(code.co_consts))
        for const in code.co_consts:
            yield from self._tokens(const)

    def _function(self, fn: types.FunctionType) -> Iterator[bytes]:
        if id(fn) in self._seen:  # recursion (a function naming itself): say which
            yield b"r" + struct.pack(">Q", self._seen[id(fn)])
            return
        self._seen[id(fn)] = len(self._seen)
        self._keep.append(fn)
        module = fn.__module__ or ""
        if _by_reference(fn):
            yield b"R" + _frame(module.encode()) + _frame(fn.__qualname__.encode())
            yield from self._code(fn.__code__)
            # Constants of its module count too (SCALE = 2 edited to 3 must miss);
            # functions and objects it names are the module's own business.
            for name, value in self._globals(fn):
                if _plain(value):
                    yield b"g" + _frame(name.encode())
                    yield from self._tokens(value)
            return
        yield b"V" + _frame(fn.__qualname__.encode())
        yield from self._code(fn.__code__)
        yield from self._tokens(fn.__defaults__)
        yield from self._tokens(fn.__kwdefaults__)
        cells = fn.__closure__ or ()
        yield b"cl" + struct.pack(">Q", len(cells))
        for cell in cells:
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                yield b"e"
                continue
            yield from self._tokens(content)
        for name, value in self._globals(fn):
            yield b"g" + _frame(name.encode())
            yield from self._global(value)

    @staticmethod
    def _globals(fn: types.FunctionType) -> list[tuple[str, Any]]:
        """The globals ``fn``'s code names, in name order."""
        module_globals = fn.__globals__
        names = sorted(_global_names(fn.__code__))
        return [(name, module_globals[name]) for name in names if name in module_globals]

    def _global(self, value: Any) -> Iterator[bytes]:
        """A global the code names.  ``co_names`` holds attribute names too, so
        a global that merely shares a name with an attribute may be met: one
        that cannot be pickled counts by its type rather than failing the call
        (were the code to use it, shipping the function would fail anyway)."""
        try:
            tokens = list(self._tokens(value))
        except SerializationError:
            tokens = [b"u" + _frame(type(value).__qualname__.encode())]
        yield from tokens

    def _class(self, cls: type) -> Iterator[bytes]:
        yield b"K" + _frame((cls.__module__ or "").encode()) + _frame(cls.__qualname__.encode())
        if _by_reference(cls):
            return
        # A class shipped by value: its methods' code counts, as a function's would.
        for name in sorted(vars(cls)):
            member = vars(cls)[name]
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, types.FunctionType):
                yield b"a" + _frame(name.encode())
                yield from self._function(member)

    def _pickled(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=5)
        except Exception:
            pass
        try:
            import cloudpickle

            return bytes(cloudpickle.dumps(value, protocol=5))
        except Exception as exc:
            raise SerializationError(
                f"cannot compute the cache key of {self.where}: "
                f"{type(value).__name__} value {_short(value)} cannot be pickled ({exc}); "
                "pass picklable values, or submit with .options(cache=False)"
            ) from None


def _global_names(code: types.CodeType) -> set[str]:
    """Names the code and its nested code read (globals and attributes alike:
    only those the function's globals hold are used)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


_PLAIN = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)


def _plain(value: Any) -> bool:
    """A constant of the canonical kinds (containers judged by their own type)."""
    return type(value) in _PLAIN


def _by_reference(obj: Any) -> bool:
    """Whether cloudpickle ships ``obj`` by reference (importable by name)."""
    try:
        from cloudpickle import cloudpickle as internals

        return bool(internals._should_pickle_by_reference(obj))
    except Exception:
        module = getattr(obj, "__module__", None)
        return module not in (None, "__main__") and module in sys.modules


def _job_id(value: Any) -> str | None:
    """A Job or JobArray (or a placeholder for one) keys by its id."""
    job_module = sys.modules.get("jobkit.job")
    if job_module is not None and isinstance(value, (job_module.Job, job_module.JobArray)):
        return f"{type(value).__name__}:{value.id}"
    return None


def _ndarray(value: Any) -> list[bytes] | None:
    numpy = sys.modules.get("numpy")
    if numpy is None or not isinstance(value, numpy.ndarray) or value.dtype.hasobject:
        return None
    header = f"{value.dtype.str}|{value.dtype.descr}|{value.shape}".encode()
    return [b"A" + _frame(header) + _frame(numpy.ascontiguousarray(value).tobytes())]


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."
