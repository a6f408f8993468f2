"""The per-user key that signs payloads and outcomes.

Payloads and outcomes are pickles, and unpickling runs code, so a worker
must never unpickle bytes that its owner's client did not write (and a
client must not trust an outcome someone else wrote).  Both sides share a
secret: HMAC-SHA256 over the whole envelope, checked before ``loads``.

Where the key comes from, first match wins:

1. an explicit key (``key=`` in config, e.g. from a cluster secret);
2. ``$JOBKIT_KEY`` (hex), how cluster backends hand it to workers;
3. ``$JOBKIT_KEY_FILE`` or a configured key file;
4. ``<jobkit home>/signing.key``, created on first use, mode 0600.

A key file readable by group or others is refused, as ssh refuses such keys.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from jobkit.errors import ConfigError
from jobkit.paths import ensure_private_dir, home_dir

KEY_BYTES = 32
KEY_FILENAME = "signing.key"


def _parse_hex(text: str, source: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(
            f"signing key from {source} is not hex; "
            f"expected {KEY_BYTES * 2} hex characters (e.g. `openssl rand -hex 32`)"
        ) from None
    if len(key) < 16:
        raise ConfigError(
            f"signing key from {source} is {len(key)} bytes; use at least 16 "
            "(e.g. `openssl rand -hex 32`)"
        )
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read signing key file {path}: {exc.strerror}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"signing key file {path} is accessible by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 600 {path}`"
        )
    return _parse_hex(path.read_text(), str(path))


def _create_key_file(path: Path) -> bytes:
    ensure_private_dir(path.parent)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return _read_key_file(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


def load_key(
    explicit: str | None = None,
    *,
    key_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> bytes:
    """The signing key, created on first use if none is configured."""
    env = os.environ if environ is None else environ
    if explicit:
        return _parse_hex(explicit, "config key")
    if env.get("JOBKIT_KEY"):
        return _parse_hex(env["JOBKIT_KEY"], "$JOBKIT_KEY")
    chosen = key_file or (Path(env["JOBKIT_KEY_FILE"]) if env.get("JOBKIT_KEY_FILE") else None)
    if chosen is not None:
        return _read_key_file(chosen.expanduser())
    path = home_dir(env) / KEY_FILENAME
    if path.exists():
        return _read_key_file(path)
    return _create_key_file(path)
