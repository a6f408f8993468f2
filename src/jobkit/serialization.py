"""Payloads (what to run) and outcomes (what came back), signed.

Envelope layout, one blob per payload or outcome::

    b"JKB1" | HMAC-SHA256 (32 bytes) | header length (4 bytes) | header JSON
           | pickle stream | out-of-band buffer 1 | buffer 2 | ...

* The MAC covers everything after itself and is checked before a single
  byte is unpickled; the header names the job, so a payload cannot be
  replayed under another job's id.
* The header is plain JSON so that versions, ``sys.path`` and the remote
  traceback text are readable even when the pickle is not.
* Pickles use protocol 5 with out-of-band buffers: a 100 MB NumPy argument
  travels as its own buffer, written straight from the array's memory to the
  store and read back into one writable bytearray that the unpickled array
  then shares.  No intermediate copy is made on either side.
* Functions from ``__main__``, notebooks, closures and lambdas go by value
  (cloudpickle); importable functions by reference, found again through the
  submitter's ``sys.path`` recorded in the header.
* Code pickled by value whose file is not on disk (a notebook cell, ``exec``'d
  text) takes its source lines along: the header's ``linecache`` maps each
  such file name to its text, and the worker registers them in its
  :mod:`linecache` before running, so the remote traceback shows the cell's
  lines rather than no source.  They are signed with the rest of the header.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import io
import json
import linecache
import os
import pickle
import struct
import sys
import traceback
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from jobkit._version import __version__
from jobkit.errors import (
    JobFailedError,
    SerializationError,
    SignatureError,
    VersionMismatchError,
)

MAGIC = b"JKB1"
_MAC_LEN = 32
_LEN = struct.Struct(">I")
PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"

Buffer = bytes | bytearray | memoryview


@dataclasses.dataclass(frozen=True)
class PickledFunction:
    """A function pickled once for a whole array, with the source lines it ships."""

    data: bytes
    sources: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Call:
    """The function call a worker runs."""

    fn: Callable[..., Any] | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    fn_pickle: bytes | PickledFunction | None = None
    """The function pickled once for a whole array (``map``)."""

    def resolve(self) -> Callable[..., Any]:
        if self.fn is not None:
            return self.fn
        assert self.fn_pickle is not None
        import cloudpickle

        data = self.fn_pickle
        if isinstance(data, PickledFunction):
            register_sources(data.sources)
            data = data.data
        fn: Callable[..., Any] = cloudpickle.loads(data)
        return fn


@dataclasses.dataclass
class Envelope:
    header: dict[str, Any]
    body: memoryview
    buffers: list[memoryview]


class RemoteTraceback(Exception):
    """The worker's traceback, chained as ``__cause__`` of a re-raised error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


# -- envelope ------------------------------------------------------------------


def _seal(
    key: bytes, header: dict[str, Any], body: Buffer, buffers: Sequence[Buffer]
) -> list[Buffer]:
    header = {**header, "sizes": [len(memoryview(b).cast("B")) for b in (body, *buffers)]}
    head = json.dumps(header, separators=(",", ":")).encode()
    parts: list[Buffer] = [_LEN.pack(len(head)), head, body, *buffers]
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return [MAGIC, mac.digest(), *parts]


def _open(key: bytes, data: Buffer, *, kind: str, job_id: str) -> Envelope:
    view = memoryview(data).cast("B")
    if len(view) < len(MAGIC) + _MAC_LEN + _LEN.size or view[: len(MAGIC)] != MAGIC:
        raise SignatureError(
            f"{kind} of job {job_id} is not a jobkit envelope (unsigned or truncated); "
            "it was not unpickled"
        )
    start = len(MAGIC) + _MAC_LEN
    expected = hmac.new(key, view[start:], digestmod=hashlib.sha256).digest()
    if not hmac.compare_digest(expected, view[len(MAGIC) : start]):
        raise SignatureError(
            f"{kind} of job {job_id} has a bad signature: it was altered or signed with "
            "another key (check JOBKIT_KEY / the signing key file); it was not unpickled"
        )
    (head_len,) = _LEN.unpack_from(view, start)
    offset = start + _LEN.size
    header = json.loads(bytes(view[offset : offset + head_len]))
    offset += head_len
    if header.get("kind") != kind or header.get("job") != job_id:
        raise SignatureError(
            f"{kind} blob for job {job_id} was signed for {header.get('kind')} of job "
            f"{header.get('job')}; refusing it"
        )
    pieces = []
    for size in header["sizes"]:
        pieces.append(view[offset : offset + size])
        offset += size
    return Envelope(header=header, body=pieces[0], buffers=pieces[1:])


def seal_json(obj: Any, *, key: bytes, kind: str, ident: str) -> list[Buffer]:
    """A signed JSON document (e.g. a submitter's environment)."""
    return _seal(key, {"kind": kind, "job": ident}, json.dumps(obj).encode(), [])


def open_json(data: Buffer, *, key: bytes, kind: str, ident: str) -> Any:
    return json.loads(bytes(_open(key, data, kind=kind, job_id=ident).body))


# -- source lines of by-value code ---------------------------------------------


@functools.cache
def _collecting_pickler() -> type[Any]:
    """cloudpickle's pickler, noting (and keeping) the file of every code object.

    cloudpickle pickles a code object only for a function (or a method of a
    class) it ships by value; importable ones go by reference and are never
    visited.  So the files noted are exactly those of by-value code, nested
    functions and closures included.  Built lazily: cloudpickle is imported
    on first use only.
    """
    import cloudpickle

    class CollectingPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.code_files: set[str] = set()

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, types.CodeType):
                self.code_files.add(obj.co_filename)
                return _code_reduce_keeping_filename(self.dispatch_table, obj)
            return super().reducer_override(obj)

    return CollectingPickler


def _code_reduce_keeping_filename(table: Mapping[type, Any], code: types.CodeType) -> Any:
    """cloudpickle's reduction of ``code``, with its real file name.

    cloudpickle writes ``<dynamic-code>`` in place of the file name (for
    deterministic pickles), which leaves a remote traceback no way to find
    the source lines.  The name goes back in: the 11th argument of
    ``CodeType`` on every Python jobkit supports (3.10+).
    """
    constructor, args = table[types.CodeType](code)
    if len(args) > 10 and args[10] == "<dynamic-code>":
        args = (*args[:10], code.co_filename, *args[11:])
    return constructor, args


def _dumps_collecting(
    obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    """``cloudpickle.dumps`` that also returns the sources its by-value code needs."""
    file = io.BytesIO()
    pickler = _collecting_pickler()(file, protocol=5, buffer_callback=buffer_callback)
    pickler.dump(obj)
    return file.getvalue(), sources_to_ship(pickler.code_files)


def sources_to_ship(filenames: Iterable[str]) -> dict[str, str]:
    """The text of each file a worker cannot read: in linecache, not on disk.

    IPython registers every cell under a file name that does not exist
    (``/tmp/ipykernel_…/….py``); ``exec``'d code can be registered the same
    way.  Files on disk are left out: the worker reads its own copy.
    """
    sources: dict[str, str] = {}
    for name in sorted(filenames):
        entry = linecache.cache.get(name)
        if entry is None or len(entry) < 3 or not entry[2] or os.path.exists(name):
            continue  # unknown, lazily loaded from a module, or a real file
        sources[name] = "".join(entry[2])
    return sources


def register_sources(sources: Mapping[str, str]) -> None:
    """Make shipped cell sources readable by :mod:`traceback` in this process.

    The entries carry no modification time, as IPython's own do, so
    ``linecache.checkcache`` keeps them.
    """
    for name, text in sources.items():
        if isinstance(name, str) and isinstance(text, str):
            lines = text.splitlines(keepends=True)
            linecache.cache[name] = (len(text), None, lines, name)


# -- payloads ------------------------------------------------------------------


def pickle_function(fn: Callable[..., Any]) -> PickledFunction:
    """Pickle a function once (shared by every item of a ``map``)."""
    try:
        data, sources = _dumps_collecting(fn)
        return PickledFunction(data, sources)
    except Exception as exc:
        raise SerializationError(
            f"function {_describe(fn)} cannot be pickled: {exc}; "
            "define it at module level or avoid capturing unpicklable objects"
        ) from exc


def dump_payload(
    call: Call,
    *,
    key: bytes,
    job_id: str,
) -> list[Buffer]:
    """Signed envelope of ``call``; SerializationError names what failed."""
    sources: dict[str, str] = {}
    if isinstance(call.fn_pickle, PickledFunction):
        sources.update(call.fn_pickle.sources)  # shipped in the header, not in every pickle
        call = dataclasses.replace(call, fn_pickle=call.fn_pickle.data)
    buffers: list[pickle.PickleBuffer] = []
    try:
        body, found = _dumps_collecting(call, buffers.append)
    except Exception as exc:
        raise _explain_unpicklable(call, exc) from exc
    sources.update(found)
    header: dict[str, Any] = {
        "kind": "payload",
        "job": job_id,
        "python": PYTHON_VERSION,
        "jobkit": __version__,
        "sys_path": [p for p in sys.path if p],
        "cwd": os.getcwd(),
    }
    if sources:
        header["linecache"] = sources
    return _seal(key, header, body, [b.raw() for b in buffers])


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__name__
    text = repr(obj)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{name} ({text})" if name not in text else text


def _explain_unpicklable(call: Call, exc: Exception) -> SerializationError:
    """Find the first argument that does not pickle and name it."""
    import cloudpickle

    candidates: list[tuple[str, Any]] = []
    if call.fn is not None:
        candidates.append((f"function {getattr(call.fn, '__qualname__', call.fn)!s}", call.fn))
    candidates += [(f"argument {i}", a) for i, a in enumerate(call.args)]
    candidates += [(f"argument {k!r}", v) for k, v in call.kwargs.items()]
    for label, value in candidates:
        try:
            cloudpickle.dumps(value, protocol=5, buffer_callback=lambda _b: None)
        except Exception as inner:
            return SerializationError(
                f"{label} cannot be pickled: {type(value).__name__} object "
                f"{_describe(value)}: {inner}; pass something picklable "
                "(e.g. a path or config instead of an open file, lock or connection)"
            )
    return SerializationError(f"call cannot be pickled: {exc}")


def read_payload_header(data: Buffer, *, key: bytes, job_id: str) -> dict[str, Any]:
    return _open(key, data, kind="payload", job_id=job_id).header


def load_payload(data: Buffer, *, key: bytes, job_id: str) -> tuple[dict[str, Any], Call]:
    """Verify, check versions, then unpickle.  Never unpickles unverified bytes."""
    envelope = _open(key, data, kind="payload", job_id=job_id)
    header = envelope.header
    if header.get("python") != PYTHON_VERSION:
        raise VersionMismatchError(
            f"job {job_id} was submitted from Python {header.get('python')} "
            f"(jobkit {header.get('jobkit')}) but this worker runs Python {PYTHON_VERSION} "
            f"(jobkit {__version__}) at {sys.executable}; run the worker with the same "
            "Python minor version as the client (pickles do not cross minor versions)"
        )
    for entry in reversed(header.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    sources = header.get("linecache")
    if isinstance(sources, dict):
        register_sources(sources)
    import cloudpickle

    try:
        call = cloudpickle.loads(envelope.body, buffers=envelope.buffers)
    except Exception as exc:
        raise SerializationError(
            f"payload of job {job_id} cannot be unpickled here: {type(exc).__name__}: {exc}; "
            "the worker needs the same packages (and versions) as the client"
        ) from exc
    if not isinstance(call, Call):
        raise SerializationError(f"payload of job {job_id} holds {type(call).__name__}, not a call")
    return header, call


# -- outcomes ------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    ok: bool
    value: Any = None
    error: BaseException | None = None
    traceback: str = ""

    def unwrap(self) -> Any:
        """The result, or raise the original exception with its remote traceback."""
        if self.ok:
            return self.value
        assert self.error is not None
        raise self.error


def dump_outcome(
    *,
    key: bytes,
    job_id: str,
    value: Any = None,
    error: BaseException | None = None,
) -> list[Buffer]:
    """Signed outcome; a result or exception that won't pickle is reported, not lost."""
    import cloudpickle

    header: dict[str, Any] = {"kind": "outcome", "job": job_id, "ok": error is None}
    if error is not None:
        header["traceback"] = "".join(
            traceback.format_exception(type(error), error, error.__traceback__)
        )
        header["error_type"] = f"{type(error).__module__}.{type(error).__qualname__}"
        header["error"] = _safe_str(error)
        payload: Any = error
    else:
        payload = value
    buffers: list[pickle.PickleBuffer] = []
    try:
        body = cloudpickle.dumps(payload, protocol=5, buffer_callback=buffers.append)
    except Exception as exc:
        buffers = []
        if error is None:
            replacement: BaseException = SerializationError(
                f"result of job {job_id} cannot be pickled: {type(value).__name__}: {exc}; "
                "return something picklable"
            )
            header.update(
                ok=False,
                traceback="",
                error_type="jobkit.errors.SerializationError",
                error=str(replacement),
            )
        else:
            replacement = JobFailedError(
                f"job {job_id} raised {header['error_type']}: {header['error']} "
                f"(the exception itself cannot be pickled: {exc})",
                job_id=job_id,
                reason="ERROR",
                remote_traceback=header["traceback"],
            )
        body = pickle.dumps(replacement, protocol=5)
    return _seal(key, header, body, [b.raw() for b in buffers])


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # a broken __str__ must not lose the outcome
        return f"<{type(error).__name__} with unprintable message>"


def read_outcome_header(data: Buffer, *, key: bytes, job_id: str) -> dict[str, Any]:
    """Verify an outcome and return its header (``ok``, ``error_type``, ``error``)
    without unpickling: enough for the agent to record how a job ended when
    its worker wrote the outcome but died before recording the state."""
    return _open(key, data, kind="outcome", job_id=job_id).header


def load_outcome(data: Buffer, *, key: bytes, job_id: str) -> Outcome:
    """Verify and unpickle an outcome, rebuilding the original exception.

    If the exception class cannot be imported here, a JobFailedError carrying
    the type name and remote traceback takes its place.
    """
    envelope = _open(key, data, kind="outcome", job_id=job_id)
    header = envelope.header
    import cloudpickle

    try:
        obj = cloudpickle.loads(envelope.body, buffers=envelope.buffers)
    except Exception as exc:
        if header.get("ok"):
            raise SerializationError(
                f"result of job {job_id} cannot be unpickled here: {type(exc).__name__}: {exc}; "
                "install the packages the job's result needs"
            ) from exc
        obj = JobFailedError(
            f"job {job_id} raised {header.get('error_type')}: {header.get('error')} "
            f"(cannot rebuild it here: {exc})",
            job_id=job_id,
            reason="ERROR",
            remote_traceback=header.get("traceback", ""),
        )
    if header.get("ok"):
        return Outcome(ok=True, value=obj)
    if not isinstance(obj, BaseException):
        obj = JobFailedError(f"job {job_id} failed with a non-exception {obj!r}", job_id=job_id)
    text = header.get("traceback", "")
    if text and obj.__cause__ is None:
        obj.__cause__ = RemoteTraceback(text)
    return Outcome(ok=False, error=obj, traceback=text)
