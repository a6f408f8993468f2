"""boto3's errors translated into jobkit's, at the one place the S3 store calls boto3.

Each message is one line naming the bucket and key, what went wrong and the
fix.  Problems a retry cannot fix (no bucket, no or refused credentials,
access denied) become :class:`ConfigError`; what a later retry may fix
(endpoint unreachable, timeouts, throttling, HTTP 5xx) becomes
:class:`StoreUnavailableError`, which workers retry with backoff; anything
else a plain :class:`StoreError`.  Two outcomes the store handles itself come back as private
exceptions: :class:`Missing` (no such key) and :class:`Conflict` (a
conditional write lost: HTTP 412, or 409 when S3 saw two at once).
Credentials never appear in a message: botocore does not put them in its
errors, and the store URL refuses them.
"""

from __future__ import annotations

from typing import Any

from jobkit.errors import ConfigError, StoreError, StoreUnavailableError

_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "Forbidden", "403"})
_BAD_CREDENTIALS = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
    }
)
_CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
_MISSING = frozenset({"NoSuchKey", "NoSuchUpload", "404"})
_TRANSIENT = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
    }
)
_CREDENTIAL_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, choose a profile with AWS_PROFILE "
    "(or '?profile=' in the store URL), or run where an instance or pod role is available"
)


class Missing(Exception):
    """The object does not exist (the store raises its own not-found error)."""


class Conflict(Exception):
    """A conditional write found the object changed (or present): re-read and retry."""


def translate(exc: Exception, *, action: str, where: str, bucket: str, endpoint: str) -> Exception:
    """The exception to raise for ``exc``, which ``action`` on ``where`` raised.

    ``where`` is the ``s3://bucket/key`` (or prefix) the request touched.
    Anything that is not a botocore error is returned unchanged.
    """
    import botocore.exceptions as boto  # type: ignore[import-untyped]

    if isinstance(exc, boto.ClientError):
        return _client_error(exc, action=action, where=where, bucket=bucket, endpoint=endpoint)
    if isinstance(exc, (boto.NoCredentialsError, boto.PartialCredentialsError)):
        return ConfigError(f"no usable AWS credentials to {action} {where}: {_CREDENTIAL_FIX}")
    if isinstance(exc, boto.CredentialRetrievalError):
        return ConfigError(
            f"could not get AWS credentials to {action} {where} ({_line(exc)}): {_CREDENTIAL_FIX}"
        )
    if isinstance(exc, boto.ProfileNotFound):
        return ConfigError(
            f"{_line(exc)} (store bucket {bucket!r}): add the profile to ~/.aws/config or "
            "choose another with AWS_PROFILE or '?profile=' in the store URL"
        )
    if isinstance(exc, (boto.EndpointConnectionError, boto.ConnectionError)):
        return StoreUnavailableError(
            f"cannot reach the S3 endpoint {endpoint} to {action} {where} ({_line(exc)}): "
            "check AWS_ENDPOINT_URL (or '?endpoint_url=' in the store URL), the network, "
            "and that the service is running"
        )
    if isinstance(exc, boto.HTTPClientError):  # timeouts, dropped connections
        return StoreUnavailableError(f"S3 request to {action} {where} failed: {_line(exc)}")
    if _dropped_mid_body(exc):
        return StoreUnavailableError(
            f"S3 dropped the connection while sending {where} (to {action}): {_line(exc)}"
        )
    if isinstance(exc, boto.BotoCoreError):
        return StoreError(f"S3 request to {action} {where} failed: {_line(exc)}")
    return exc


def _dropped_mid_body(exc: BaseException) -> bool:
    """A connection reset or cut short while a response body was being read.

    botocore retries a request only until its headers arrive; ``Body.read()``
    afterwards raises urllib3's or http.client's own errors (``ProtocolError``,
    ``ReadTimeoutError``, ``IncompleteRead``) or botocore's wrappers of them
    (``ResponseStreamingError``, ``IncompleteReadError``): an outage like any
    other, which callers wait out (the patient store), not a bug to crash on.
    """
    import http.client

    import botocore.exceptions as boto
    import urllib3.exceptions

    cut = tuple(
        getattr(boto, name)
        for name in ("ResponseStreamingError", "IncompleteReadError")
        if hasattr(boto, name)
    )
    return isinstance(
        exc, (urllib3.exceptions.HTTPError, http.client.IncompleteRead, ConnectionError, *cut)
    )


def _client_error(exc: Any, *, action: str, where: str, bucket: str, endpoint: str) -> Exception:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(error.get("Code") or status or "")
    message = _line(error.get("Message") or exc)
    if code in _CONFLICT or status == 412:
        return Conflict(where)
    if code == "NoSuchBucket":
        return ConfigError(
            f"S3 bucket {bucket!r} does not exist at {endpoint} (needed to {action} {where}): "
            f"create it (aws s3 mb s3://{bucket}) or correct the bucket in the store URL"
        )
    if code in _MISSING:
        return Missing(where)
    if code in _BAD_CREDENTIALS:
        return ConfigError(
            f"the AWS credentials were refused when trying to {action} {where} ({code}: "
            f"{message}): check them, refresh an expired session token, or {_CREDENTIAL_FIX}"
        )
    if code in _DENIED or status == 403:
        return ConfigError(
            f"access denied to {action} {where} ({code}: {message}): allow s3:GetObject, "
            f"s3:PutObject, s3:DeleteObject and s3:ListBucket on s3://{bucket} for these "
            "credentials, or use credentials that have them (AWS_PROFILE)"
        )
    if code in _TRANSIENT or (isinstance(status, int) and (status >= 500 or status == 429)):
        return StoreUnavailableError(
            f"S3 could not {action} {where} just now ({code or 'error'}, HTTP {status}: "
            f"{message}); retry later, and if it persists check the service at {endpoint}"
        )
    return StoreError(
        f"S3 refused to {action} {where} ({code or 'error'}, HTTP {status}: {message}); "
        f"if it persists check the service at {endpoint}"
    )


def _line(value: object) -> str:
    """Text on one line: a multi-line service message must not break the error's line."""
    return " ".join(str(value).split())
