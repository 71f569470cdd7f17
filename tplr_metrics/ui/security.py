"""The UI's access rules, as one ASGI middleware in front of every route (pages, API, static).

* A token, when one is set (always, off loopback): ``Authorization: Bearer T``, ``?token=T``
  (the URL printed at start, as Jupyter does) or the cookie that URL leaves, compared in
  constant time. Without it: 401.
* On a loopback bind, the Host header must name loopback: a web page that rebinds its own DNS
  name to 127.0.0.1 must not read the API (DNS rebinding).
* A request that changes something (DELETE) must come from the UI's own origin: the browser's
  Origin header equals this server's, so another site cannot make a logged-in browser delete.
* Every answer says: no framing, no sniffing, no referrer (the URL may hold the token), and a
  content security policy that runs only our own scripts.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "tplr_metrics_ui_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


def is_loopback(host: str) -> bool:
    """A loopback address (127.0.0.0/8, ::1) or ``localhost``; nothing that merely starts like
    one (``127.0.0.1.evil.example`` passed a prefix check, and a rebound page read and deleted)."""
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1'; '[::1]:8765' -> '[::1]'."""
    if host_header.startswith("["):
        address, _, rest = host_header.partition("]")
        return address + "]" if rest == "" or rest[:1] == ":" and rest[1:].isdigit() else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class AccessControl:
    """ASGI middleware enforcing the rules above; ``token=None`` only on a loopback bind."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback: bool) -> None:
        self.app = app
        self.token = token
        self.loopback = loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await self._with_headers(refusal, scope, receive, send)
            return
        set_cookie = self.token is not None and self._query_token(scope) == self.token

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if set_cookie:
                    # The page's own fetch() calls then carry the token without putting it in JS.
                    cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                    extra.append((b"set-cookie", cookie.encode("latin-1")))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _with_headers(self, response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in SECURITY_HEADERS:
            response.headers[name.decode()] = value.decode()
        await response(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        path: str = scope.get("path", "")
        api = path.startswith("/api/")
        if self.loopback and not is_loopback(_host_name(headers.get("host", ""))):
            return _refuse(403, "this server answers only to a loopback Host (127.0.0.1, localhost)", api)
        if self.token is not None and not self._has_token(scope, headers):
            return _refuse(401, "an access token is needed: open the URL tplr-metrics ui printed (?token=...)", api)
        if scope.get("method", "GET") not in SAFE_METHODS:
            scheme = scope.get("scheme", "http")
            own = f"{scheme}://{headers.get('host', '')}"
            if headers.get("origin") != own:
                return _refuse(403, "cross-origin request refused (Origin must be this server)", api)
        return None

    def _query_token(self, scope: Scope) -> str | None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        values = query.get("token")
        return values[0] if values else None

    def _has_token(self, scope: Scope, headers: Headers) -> bool:
        assert self.token is not None
        offered: list[str] = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:].strip())
        query = self._query_token(scope)
        if query is not None:
            offered.append(query)
        cookie_header = headers.get("cookie")
        if cookie_header:
            cookies: SimpleCookie = SimpleCookie()
            try:
                cookies.load(cookie_header)
            except Exception:  # a malformed Cookie header is simply no token
                cookies = SimpleCookie()
            morsel = cookies.get(TOKEN_COOKIE)
            if morsel is not None:
                offered.append(morsel.value)
        expected = self.token.encode()
        return any(hmac.compare_digest(candidate.encode(), expected) for candidate in offered)


def _refuse(status: int, message: str, api: bool) -> Response:
    body: Any = {"error": message}
    if api:
        return JSONResponse(body, status_code=status)
    return PlainTextResponse(f"{status}: {message}\n", status_code=status)


__all__ = ["TOKEN_COOKIE", "AccessControl", "is_loopback"]
