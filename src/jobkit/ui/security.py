"""Who may talk to the web view: the token, the origin, the host.

Every request passes these checks before any route runs (an ASGI
middleware, so streamed log events are checked too)::

    request ──► Host is the bound address?      no ─► 403  (DNS rebinding)
            ──► Origin, if any, is ours?        no ─► 403  (other sites' pages)
            ──► POST carries our Origin?        no ─► 403  (forms posted from elsewhere)
            ──► token: ?token=, cookie, Bearer? no ─► 403
            ──► ?token= in the URL: set the cookie, redirect to the URL without it
            ──► the route, its response with the headers of :data:`HEADERS`

The token is a :func:`secrets.token_urlsafe` printed in the URL as Jupyter
does; comparisons use :func:`hmac.compare_digest`.  The cookie is HttpOnly
and SameSite=Strict, named after the port (cookies ignore ports, and two
servers on one machine must not overwrite each other's).
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
"""Scripts only from the package (no inline script, no CDN); inline styles are
allowed for the SVG drawings, whose text is escaped."""
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",  # "no-referrer" makes Chromium post forms with Origin: null
    "cache-control": "no-store",
    "cross-origin-resource-policy": "same-origin",
}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Guard:
    """What a request must show: the token, and which host and origin are ours."""

    token: str
    host: str
    port: int

    @property
    def cookie_name(self) -> str:
        return f"jobkit_ui_{self.port}"

    def allowed_hosts(self) -> set[str]:
        """Host header values that name this server (DNS rebinding sends another)."""
        names = {self.host if ":" not in self.host else f"[{self.host}]"}
        if is_loopback(self.host):
            names.update(LOOPBACK_NAMES)
        return {f"{name}:{self.port}" for name in names}

    def refusal(self, scope: Scope) -> str | None:
        """Why this request is refused, or None to let it through."""
        headers = _headers(scope)
        host = headers.get("host", "")
        wildcard = self.host in ("0.0.0.0", "::")  # any address of the machine: token only
        if not wildcard and host not in self.allowed_hosts():
            return f"the Host header {host!r} does not name this server"
        own_origin = f"http://{host}"
        origin = headers.get("origin")
        if origin is not None and origin != own_origin:
            return f"requests from {origin!r} are refused: only pages of {own_origin} may ask"
        if scope.get("method") not in ("GET", "HEAD") and origin is None:
            return "a POST must come from this server's own pages (no Origin header was sent)"
        if not self.token_given(scope, headers):
            return "a valid token is needed: open the URL `jobkit ui` printed (with ?token=...)"
        return None

    def token_given(self, scope: Scope, headers: dict[str, str]) -> bool:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        cookies = _cookies(headers.get("cookie", ""))
        bearer = headers.get("authorization", "")
        candidates = [
            query.get("token"),
            cookies.get(self.cookie_name),
            bearer[7:] if bearer.lower().startswith("bearer ") else None,
        ]
        return any(c is not None and self._matches(c) for c in candidates)

    def _matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())


class GuardMiddleware:
    """The checks of :class:`Guard` and the security headers, around every request."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the view has none: refuse before any route
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        why = self.guard.refusal(scope)
        if why is not None:
            await _plain(send, 403, f"403 Forbidden: {why}\n")
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        if any(key == "token" for key, _ in query):  # keep the token out of history
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = same_origin(scope.get("path", "/")) + (f"?{rest}" if rest else "")
            cookie = (
                f"{self.guard.cookie_name}={self.guard.token}; HttpOnly; SameSite=Strict; Path=/"
            )
            await _plain(send, 303, "", location=location, cookie=cookie)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {bytes(k).lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.encode(), v.encode())
                    for k, v in HEADERS.items()
                    if k.encode() not in present
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def same_origin(path: str) -> str:
    """``path`` as a Location that stays on this server, whatever was asked.

    ``//evil.com/`` would be a protocol-relative URL (another site) and a
    decoded ``%0d%0a`` a header break: one leading slash, the rest quoted.
    """
    return "/" + quote(path.lstrip("/"), safe="/")


async def _plain(
    send: Send, status: int, text: str, *, location: str | None = None, cookie: str | None = None
) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in HEADERS.items()),
    ]
    if location is not None:
        headers.append((b"location", location.encode("latin-1", "replace")))
    if cookie is not None:
        headers.append((b"set-cookie", cookie.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    return {
        bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1") for k, v in scope["headers"]
    }


def _cookies(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            found[name] = value
    return found
