"""``@jobkit.remote`` and the module-level verbs users call.

A :class:`RemoteFunction` wraps a function with validated resources and an
optional backend.  Calling it runs the function here, unchanged; ``submit``
and ``map`` run it as jobs through the client in force (see
:func:`jobkit.use`).  ``options`` returns a new wrapper, never mutating the
original, so one decorated function can be sent to several backends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, overload

from jobkit.context import current_client
from jobkit.errors import ConfigError
from jobkit.job import Job, JobArray
from jobkit.resources import Resources, parse_resources

T = TypeVar("T")


class RemoteFunction(Generic[T]):
    """A function that can also run as a job; made by :func:`remote`."""

    def __init__(
        self,
        fn: Callable[..., T],
        resources: Resources,
        backend: str | None = None,
        after: tuple[Job[Any] | JobArray[Any], ...] = (),
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"@jobkit.remote needs a callable, got {type(fn).__name__} {fn!r}")
        self._fn = fn
        self.resources = resources
        self.backend = backend
        self.after = after
        """Jobs and arrays every submission waits for (``options(after=...)``)."""
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        return self._fn(*args, **kwargs)

    def options(
        self, *, backend: str | None = None, after: Any = None, **resources: Any
    ) -> RemoteFunction[T]:
        """A copy with some resources or the backend overridden.

        ``after``: Jobs and JobArrays that must succeed before each job of
        this copy runs (their results are not passed; pass a Job as an
        argument for that).  If one fails, the job ends FAILED/DEPENDENCY.
        """
        from jobkit.dependencies import check_after

        if backend is not None and not isinstance(backend, str):
            raise ConfigError(
                f"invalid backend {backend!r}: expected a backend name such as 'local'"
            )
        waits = self.after if after is None else check_after(after)
        merged = self.resources.merged(**resources) if resources else self.resources
        return RemoteFunction(self._fn, merged, backend or self.backend, waits)

    def submit(self, *args: Any, **kwargs: Any) -> Job[T]:
        """Run ``fn(*args, **kwargs)`` as a job; returns at once.

        A Job among the arguments (also inside lists, tuples, dicts and sets)
        makes this job wait for it and receive its result in its place; a
        JobArray, the list of its results."""
        job: Job[T] = current_client().submit(
            self._fn,
            args,
            kwargs,
            resources=self.resources,
            backend=self.backend,
            after=self.after,
        )
        return job

    def map(self, *iterables: Iterable[Any], **kwargs: Any) -> JobArray[T]:
        """One job per item (``zip`` of the iterables), submitted as one array.

        Keyword arguments are passed unchanged to every call.  A JobArray
        as an iterable is item-wise: item *i* receives the result of the
        array's item *i*, and waits for that item only.
        """
        if not iterables:
            raise ConfigError("map() needs at least one iterable of arguments")
        items = [(tuple(args), kwargs) for args in zip(*iterables, strict=False)]
        array: JobArray[T] = current_client().map(
            self._fn, items, resources=self.resources, backend=self.backend, after=self.after
        )
        return array

    def __repr__(self) -> str:
        name = getattr(self._fn, "__qualname__", repr(self._fn))
        return f"<RemoteFunction {name} backend={self.backend or 'default'}>"

    def __reduce__(self) -> Any:
        # Pickle as the plain function: a job calling another decorated function
        # runs it in-process, exactly as a plain call does.
        return (_identity, (self._fn,))


def _identity(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


@overload
def remote(fn: Callable[..., T], /) -> RemoteFunction[T]: ...
@overload
def remote(
    fn: None = None, /, *, backend: str | None = None, **resources: Any
) -> Callable[[Callable[..., T]], RemoteFunction[T]]: ...
def remote(
    fn: Callable[..., T] | None = None, /, *, backend: str | None = None, **resources: Any
) -> RemoteFunction[T] | Callable[[Callable[..., T]], RemoteFunction[T]]:
    """Make ``fn`` submittable; works bare (``@remote``) or with resources.

    Resources are validated now, so ``@remote(gpus="two")`` fails at import
    time with a ConfigError rather than at submit time on a cluster.
    """
    if backend is not None and not isinstance(backend, str):
        raise ConfigError(f"invalid backend {backend!r}: expected a backend name such as 'local'")
    parsed = parse_resources(**resources)
    if fn is not None:
        return RemoteFunction(fn, parsed, backend)

    def decorate(inner: Callable[..., T]) -> RemoteFunction[T]:
        return RemoteFunction(inner, parsed, backend)

    return decorate


def _as_remote(fn: Callable[..., T] | RemoteFunction[T]) -> RemoteFunction[T]:
    if isinstance(fn, RemoteFunction):
        return fn
    return RemoteFunction(fn, parse_resources())


def submit(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Job[T]:
    """Submit an undecorated callable as a job with default resources."""
    return _as_remote(fn).submit(*args, **kwargs)


def map(fn: Callable[..., T], /, *iterables: Iterable[Any], **kwargs: Any) -> JobArray[T]:
    """Submit one job per item as one array; see :meth:`RemoteFunction.map`."""
    return _as_remote(fn).map(*iterables, **kwargs)


def get(job_id: str) -> Job[Any] | JobArray[Any]:
    """The job (or array) with this id, from any process, after any restart."""
    return current_client().get(job_id)


def jobs(
    *,
    state: Any = None,
    backend: str | None = None,
    name: str | None = None,
    limit: int | None = 50,
) -> list[Job[Any]]:
    """Jobs in the store, newest first, filtered by state, backend and name glob."""
    return current_client().jobs(state=state, backend=backend, name=name, limit=limit)
