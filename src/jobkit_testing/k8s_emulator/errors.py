"""API errors as the real API server words them: a ``Status`` body with reason and details.

The Kubernetes backend turns these into one-line errors; the wording here is
the API server's, so those tests exercise what a real cluster says.
"""

from __future__ import annotations

from typing import Any

from .kinds import Kind, Obj

# -- errors -------------------------------------------------------------------------

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error answered as the API server does: a ``Status`` object with a code."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(kind: Kind, name: str | None, **extra: Any) -> Obj:
    details: Obj = {"group": kind.group, "kind": kind.plural}
    if name:
        details["name"] = name
    details.update(extra)
    return details


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, f'{kind.qualified} "{name}" not found', "NotFound", _details(kind, name))


def already_exists(kind: Kind, name: str) -> ApiError:
    return ApiError(
        409, f'{kind.qualified} "{name}" already exists', "AlreadyExists", _details(kind, name)
    )


def conflict(kind: Kind, name: str, why: str | None = None) -> ApiError:
    why = (
        why
        or "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": {why}',
        "Conflict",
        _details(kind, name),
    )


def invalid(kind: Kind, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 with the API server's wording; ``causes`` are (field, detail) pairs."""
    parts = [f"{field}: {detail}" for field, detail in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {
        "name": name,
        "group": kind.group,
        "kind": kind.kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": detail, "field": field}
            for field, detail in causes
        ],
    }
    return ApiError(422, f'{kind.qualified_kind} "{name}" is invalid: {joined}', "Invalid", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def forbidden(
    user: str, verb: str, kind: Kind, resource: str, namespace: str | None, name: str | None
) -> ApiError:
    what = f'{kind.qualified} "{name}"' if name else kind.qualified
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = (
        f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{kind.group}"{where}'
    )
    return ApiError(403, message, "Forbidden", _details(kind, name))
