"""Who may see the dashboard: a random token, shown once as a URL (as Jupyter does).

The token guards every page, endpoint and asset: other users of a login node can reach a port on
127.0.0.1 too, and the pages show a campaign's data. A browser presents it once as ``?token=``;
the answer sets it as an HttpOnly, SameSite=Strict cookie and redirects to the same page without
it, so it leaves the address bar and the history. Scripts may send ``Authorization: Bearer``.
No token: 401. A wrong one: 403. The comparison takes the same time whatever the guess.

Binding to an address other than loopback exposes the token (and the data) to the network, so it
needs TLS or an explicit ``--insecure-bind`` (``check_bind``).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from lensd.errors import LensdError

COOKIE = "lensd_token"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind(host: str, tls: bool, insecure: bool) -> str | None:
    """Refuse a non-loopback bind without TLS or ``--insecure-bind``; returns a warning to print."""
    if is_loopback(host):
        return None
    if tls:
        return f"lensd web: serving on {host}, beyond this machine, over TLS: anyone with the URL can read it"
    if not insecure:
        raise LensdError(f"refusing to serve the dashboard on {host}, which is not a loopback address, "
                         "without TLS: pass --tls-cert and --tls-key, or --insecure-bind to accept that "
                         "the token and the pages travel in clear text")
    return (f"lensd web: WARNING: serving on {host} without TLS (--insecure-bind): the token and every page "
            "travel in clear text on the network")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _cookie(scope: Scope) -> str | None:
    text = _header(scope, b"cookie") or ""
    for part in text.split(";"):
        key, _, value = part.strip().partition("=")
        if key == COOKIE:
            return value
    return None


class TokenGuard:
    """ASGI middleware: every HTTP request must carry the token (query, cookie or bearer)."""

    def __init__(self, app: ASGIApp, token: str, secure_cookie: bool = False) -> None:
        self.app = app
        self._token = token.encode()
        self._secure = secure_cookie

    def _matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1"), keep_blank_values=True)
        offered = dict(query).get("token")
        if offered is not None:
            if not self._matches(offered):
                await _refuse(send, 403, "wrong token")
                return
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            path = "/" + str(scope["path"]).lstrip("/")  # never "//host": a redirect stays on this server
            location = path + (f"?{rest}" if rest else "")
            cookie = f"{COOKIE}={self._token.decode()}; HttpOnly; SameSite=Strict; Path=/"
            await _respond(send, 303, b"", [(b"location", location.encode()),
                                             (b"set-cookie", (cookie + ("; Secure" if self._secure else "")).encode())])
            return
        bearer = _header(scope, b"authorization")
        candidate = bearer[7:] if bearer and bearer.startswith("Bearer ") else _cookie(scope)
        if candidate is None:
            await _refuse(send, 401, "this dashboard needs the token: open the URL lensd web printed")
            return
        if not self._matches(candidate):
            await _refuse(send, 403, "wrong token: open the URL lensd web printed")
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, message: str) -> None:
    await _respond(send, status, f"lensd: {message}\n".encode(), [(b"content-type", b"text/plain; charset=utf-8")])


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
