"""The ``s3://bucket/prefix?option=...`` URL: bucket, prefix and how to reach the service.

The options narrow boto3's standard chain (``AWS_ENDPOINT_URL``, ``AWS_*``
credentials, profiles, region); anything left out is the chain's to decide.
Credentials are refused wherever they could hide in a URL (``user@bucket``,
``endpoint_url=http://user:pass@host``, a ``secret_key=`` parameter): the
store URL is passed to every worker and printed in listings.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jobkit.errors import ConfigError

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_URL_FORM = "'s3://bucket' or 's3://bucket/prefix' (options: ?endpoint_url=...&region=...)"
_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


@dataclasses.dataclass(frozen=True)
class S3Options:
    """How to reach the service, from the store URL's query; None: boto3's chain decides."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str | None = None
    """``path`` for services without virtual-hosted buckets (some MinIO setups)."""
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int | None = None
    """Total attempts per request, retries included (boto3's default: AWS_MAX_ATTEMPTS or 3-5)."""
    workers: int = 16
    """Requests in flight at once for batched reads and writes."""

    @classmethod
    def from_query(cls, url: str, query: str) -> S3Options:
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for name, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            if name not in names:
                raise ConfigError(
                    f"store URL {url!r}: unknown parameter {name!r}; known: {', '.join(names)}"
                )
            values[name] = _option(url, name, raw)
        return cls(**values)

    def to_query(self) -> str:
        """The non-default options, in field order, for the canonical store URL."""
        default = S3Options()
        pairs = [
            (f.name, str(getattr(self, f.name)))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return urlencode(pairs)


def _option(url: str, name: str, raw: str) -> Any:
    if name == "addressing_style":
        if raw not in ("auto", "path", "virtual"):
            raise ConfigError(
                f"store URL {url!r}: addressing_style must be auto, path or virtual, not {raw!r}"
            )
        return raw
    if name in ("connect_timeout", "read_timeout"):
        try:
            value: float = float(raw)
            if value > 0:
                return value
        except ValueError:
            pass
        raise ConfigError(f"store URL {url!r}: {name} must be a positive number of seconds")
    if name in ("max_attempts", "workers"):
        if raw.isdigit() and int(raw) >= 1:
            return int(raw)
        raise ConfigError(f"store URL {url!r}: {name} must be a positive whole number")
    if not raw:
        raise ConfigError(f"store URL {url!r}: {name} is empty; give a value or leave it out")
    return raw


def _refuse_credentials(path: str, query: str) -> None:
    """ConfigError, before anything echoes the URL, if it carries anything like a secret."""
    where = None
    if "@" in path.partition("/")[0]:
        where = "before its bucket ('user@bucket')"
    for name, raw in parse_qsl(query, keep_blank_values=True):
        if any(word in name.lower() for word in _SECRET_WORDS):
            where = f"in its parameter {name!r}"
        elif name == "endpoint_url" and "@" in raw:
            where = "in its endpoint_url ('user@host')"
    if where is not None:
        raise ConfigError(
            f"the s3 store URL has credentials {where}: never put credentials in the store "
            "URL (it is passed to every worker and shown in listings); use "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        )


def parse_url(url: str) -> tuple[str, str, S3Options]:
    """Bucket, prefix (no leading or trailing ``/``) and options of an ``s3://`` URL."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "s3" or not sep:
        raise ConfigError(f"store URL {url!r} is not an s3 URL; write {_URL_FORM}")
    path, _, query = rest.partition("?")
    _refuse_credentials(path, query.partition("#")[0])
    if "#" in rest:
        raise ConfigError(f"store URL {url!r}: s3 URLs take no fragment; write {_URL_FORM}")
    bucket, _, prefix = path.partition("/")
    if not bucket:
        raise ConfigError(f"store URL {url!r} names no bucket; write {_URL_FORM}")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"store URL {url!r}: {bucket!r} is not a valid S3 bucket name (3-63 lowercase "
            "letters, digits, '.' or '-', starting and ending with a letter or digit)"
        )
    segments = [s for s in prefix.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ConfigError(f"store URL {url!r}: the prefix may not contain '.' or '..' segments")
    return bucket, "/".join(segments), S3Options.from_query(url, query)
