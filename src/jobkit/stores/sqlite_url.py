"""The one reading of ``sqlite://`` URLs, shared by every entry point.

Two conventions collide in ``sqlite:///x.db``: a file-URL reader (RFC 8089)
sees an empty host and the absolute path ``/x.db``; SQLAlchemy strips three
slashes and sees the relative path ``x.db``.  jobkit prints store URLs as
``sqlite:///abs/path.db``, so it reads them as file URLs do -- otherwise a URL
pasted from ``jobkit list`` or an error message would name another file.  The
whole rule, applied by :func:`sqlite_path` for the config layers (files,
``JOBKIT_STORE``, ``configure``/``use``, ``--store``) and for the store
itself (``open_store``, ``jobkit store copy``)::

    sqlite:///abs/x.db     /abs/x.db          the form jobkit prints
    sqlite:////abs/x.db    /abs/x.db          SQLAlchemy's absolute form; both readings agree
    sqlite:///~/x.db       ~/x.db             the home directory (also sqlite://~/x.db)
    sqlite://./x.db        <base>/x.db        relative: an explicit ./ or ../
    sqlite://../d/x.db     <base>/../d/x.db   base = the naming config file's directory,
                                              else the working directory
    sqlite://x.db          refused            host 'x.db', or relative path 'x.db'?
    sqlite:///./x.db       refused            '/x.db' (file URL) or './x.db' (SQLAlchemy)?

An ambiguous URL is refused with both readings and the spelling of each,
never guessed.  :func:`canonical_sqlite_url` turns any accepted URL into the
single printed form, so no store or worker ever sees a relative path (which
would name a different file in every working directory).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from jobkit.errors import ConfigError
from jobkit.paths import expand

__all__ = ["SQLITE_URL_FORMS", "canonical_sqlite_url", "is_sqlite_url", "sqlite_path"]

SQLITE_URL_FORMS = (
    "'sqlite:///abs/path/jobkit.db', 'sqlite:///~/path/jobkit.db' or (relative) "
    "'sqlite://./path/jobkit.db'"
)
"""The spellings to suggest in errors: absolute, home, relative."""

_PREFIX = "sqlite://"


def is_sqlite_url(url: str) -> bool:
    """Whether ``url`` has the ``sqlite`` scheme (any case), so :func:`sqlite_path` applies."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() == "sqlite"


def sqlite_path(
    url: str, base_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The absolute database path ``url`` names, read by the module's rule.

    ``base_dir`` anchors ``./`` and ``../`` paths (the directory of the config
    file naming the URL; the working directory when ``None``); ``environ``
    supplies ``HOME`` for ``~`` (``os.environ`` when ``None``).
    """
    if not is_sqlite_url(url):
        raise ConfigError(f"store URL {url!r} is not a sqlite URL; write {SQLITE_URL_FORMS}")
    rest = url.partition("://")[2]
    if "?" in rest or "#" in rest:
        raise ConfigError(
            f"store URL {url!r}: sqlite URLs take no query or fragment; write {SQLITE_URL_FORMS}"
        )
    if not rest.strip("/"):
        raise ConfigError(f"store URL {url!r} names no database file; write {SQLITE_URL_FORMS}")
    if rest.startswith("//"):  # four or more slashes: absolute in every reading
        return _normal(Path("/" + rest.lstrip("/")))
    if rest.startswith("/"):
        path = rest[1:]
        if _is_home(path):
            return _normal(expand(path, environ))
        if _is_dotted(path):
            raise ConfigError(_dotted_error(url, path))
        return _normal(Path(rest))
    if _is_home(rest):
        return _normal(expand(rest, environ))
    if _is_dotted(rest):
        return _normal((base_dir if base_dir is not None else Path.cwd()) / rest)
    raise ConfigError(_bare_error(url, rest))


def canonical_sqlite_url(
    url: str, base_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """``url`` in the one printed form, ``sqlite:///abs/path.db`` (see :func:`sqlite_path`)."""
    return f"{_PREFIX}{sqlite_path(url, base_dir, environ)}"


def _is_home(path: str) -> bool:
    return path == "~" or path.startswith("~/")


def _is_dotted(path: str) -> bool:
    return path in (".", "..") or path.startswith(("./", "../"))


def _normal(path: Path) -> Path:
    """Absolute, ``.``/``..`` folded, and exactly one leading slash (POSIX keeps ``//``)."""
    text = os.path.normpath(os.path.abspath(path))
    return Path("/" + text.lstrip("/")) if text.startswith("/") else Path(text)


def _bare_error(url: str, rest: str) -> str:
    host, _, tail = rest.partition("/")
    file_url_reading = (
        f"the host {host!r} with path {'/' + tail!r}" if tail else f"the host {host!r} and no path"
    )
    return (
        f"store URL {url!r} is ambiguous: a URL reader takes it as {file_url_reading}, a path "
        f"reader as the relative path {rest!r}. Write 'sqlite://./{rest}' for {rest!r} relative "
        f"to the config file naming it (else the working directory), or 'sqlite:///{rest}' for "
        f"the absolute path '/{rest}'"
    )


def _dotted_error(url: str, path: str) -> str:
    absolute = os.path.normpath("/" + path)
    return (
        f"store URL {url!r} is ambiguous: a file-URL reader takes it as the absolute path "
        f"{absolute!r}, a SQLAlchemy reader as the relative path {path!r}. Write "
        f"'sqlite://{path}' for the relative path, or 'sqlite://{absolute}' for the absolute "
        f"path {absolute!r}"
    )
