"""The console's local-web-app defences, in one ASGI middleware.

* **A per-run session token.** `broker console` prints a login URL carrying a
  random token; opening it sets an HttpOnly, SameSite=Strict cookie. Every other
  request without that cookie gets 401: another user of the same machine can
  reach the port but cannot drive the console.
* **Host check.** Only the Host names the console listens under are served
  (127.0.0.1:PORT, localhost:PORT, [::1]:PORT), which defeats DNS rebinding.
* **CSRF.** Every state-changing request is a POST that must carry the per-run
  CSRF token in a hidden form field (checked by :func:`checked_form`, the only
  way page handlers read a form) and, when the browser sends one, an Origin
  header naming the console itself.
* **Headers.** A strict Content-Security-Policy (no script at all, styles and
  images only from the console, forms only to the console, no framing), no
  referrer to other sites, no caching, no MIME sniffing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import FormData
from starlette.requests import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
CSRF_FIELD = "csrf"


class CsrfRefused(Exception):
    """A POST without the console's CSRF token: nothing was done."""


class Guard:
    """The run's secrets and the names the console answers to."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.csrf = hmac.new(self.token.encode(), b"csrf", hashlib.sha256).hexdigest()
        self.cookie = f"broker_console_{port}"
        self.port = port
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    def login_url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/login?token={self.token}"

    def session_ok(self, cookie_header: str) -> bool:
        for part in cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie and hmac.compare_digest(value, self.token):
                return True
        return False

    def csrf_ok(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self.csrf.encode())


async def checked_form(request: Request) -> FormData:
    """The POSTed form, once its CSRF token is checked; raise CsrfRefused otherwise."""
    guard: Guard = request.app.state.guard
    form = await request.form()
    value = form.get(CSRF_FIELD)
    if not isinstance(value, str) or not guard.csrf_ok(value):
        raise CsrfRefused("the form carries no valid CSRF token: reload the page and try again")
    return form


def _header(scope: Scope, name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k == name:
            return bytes(v).decode("latin-1")
    return ""


class GuardMiddleware:
    """Session, Host and Origin checks, and the security headers on every response."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            status, text, extra = refusal
            await _plain(send_with_headers, status, text, extra)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        g = self.guard
        if _header(scope, b"host") not in g.hosts:
            return 421, "This console answers only to 127.0.0.1, localhost or [::1].", []
        path = scope.get("path", "")
        if scope.get("method") not in ("GET", "HEAD", "POST"):
            return 405, "Method not allowed.", []
        origin = _header(scope, b"origin")
        if (
            scope.get("method") == "POST"
            and origin
            and origin.removeprefix("http://") not in g.hosts
        ):
            return 403, "Cross-origin form refused: nothing was done.", []
        if path == "/login":
            token = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
            if not hmac.compare_digest(token.encode(), g.token.encode()):
                return 403, "Wrong or missing token: open the URL `broker console` printed.", []
            cookie = f"{g.cookie}={g.token}; HttpOnly; SameSite=Strict; Path=/"
            return 303, "Signed in.", [(b"location", b"/"), (b"set-cookie", cookie.encode())]
        if path.startswith("/static/"):
            return None
        if not g.session_ok(_header(scope, b"cookie")):
            return (
                401,
                "Not signed in: open the login URL `broker console` printed when it started "
                "(a new token each run).",
                [],
            )
        return None


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
