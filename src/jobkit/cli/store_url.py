"""The store URL of a CLI command, without loading the configuration when it cannot matter.

``jobkit list`` must answer in a fraction of a second, and the configuration
loader (:mod:`jobkit.config_loading`) imports pydantic and builds its models:
about 90 ms, a third of the command on a small machine.  Most invocations
have no configuration file at all, and then only the command line and the
environment can name the store, by the same precedence the loader applies::

    --store URL  >  JOBKIT_STORE  >  default (jobkit.db in JOBKIT_HOME)

:func:`store_url_without_config` answers from those alone, and only when it
is sure that the loader would give the same answer and no error: no config
file (user or project) may exist, no profile be selected, no other
``JOBKIT_*`` setting be set (the loader would validate it and might refuse
it).  Otherwise it returns ``None`` and the caller loads the configuration.
A project file is detected more eagerly than the loader reads one (any
``jobkit.toml``, any ``pyproject.toml`` that mentions jobkit): a false alarm
costs only the slow path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from jobkit.errors import ConfigError
from jobkit.paths import default_store_url, user_config_file
from jobkit.stores.sqlite_url import canonical_sqlite_url, is_sqlite_url

OTHER_SETTINGS = (
    "JOBKIT_BACKEND",
    "JOBKIT_PROFILE",
    "JOBKIT_KEY",
    "JOBKIT_KEY_FILE",
    "JOBKIT_POLL_INTERVAL",
)
"""The settings of ``config_loading.ENV_VARS`` besides ``JOBKIT_STORE`` (a test
keeps the two lists equal); with any of them set, the loader decides and
validates them."""
_STORE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # as jobkit.config.STORE_RE


def store_url_without_config(
    option: str | None,
    profile: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str | None:
    """The store URL the loader would resolve, or ``None`` when only it can say.

    ``option``/``profile``: the command's ``--store`` and ``--profile`` values.
    """
    env = os.environ if environ is None else environ
    if profile or any(env.get(var, "").strip() for var in OTHER_SETTINGS):
        return None
    here = (cwd or Path.cwd()).absolute()
    if _config_file_may_exist(here, env):
        return None
    given = [(option or "").strip(), env.get("JOBKIT_STORE", "").strip()]
    urls = [_checked(url, here, env) for url in given if url]
    if any(url is None for url in urls):
        return None  # the loader checks every layer, the ones that lose included
    return urls[0] if urls else default_store_url(env)


def _checked(url: str, cwd: Path, environ: Mapping[str, str]) -> str | None:
    """``url`` as the loader would hold it, or ``None`` if the loader refuses it."""
    if not _STORE_RE.match(url):
        return None
    if not is_sqlite_url(url):
        return url
    try:
        return canonical_sqlite_url(url, cwd, environ)
    except ConfigError:
        return None


def _config_file_may_exist(cwd: Path, environ: Mapping[str, str]) -> bool:
    """Whether the loader could find a file: ``config_loading._user_file`` and
    ``_project_file`` look at these, the latter from ``cwd`` up."""
    try:
        if user_config_file(environ).is_file():
            return True
        for directory in (cwd, *cwd.parents):
            if (directory / "jobkit.toml").is_file():
                return True
            pyproject = directory / "pyproject.toml"
            if pyproject.is_file() and b"jobkit" in pyproject.read_bytes():
                return True
    except OSError:
        return True  # unreadable: the loader reports it
    return False
