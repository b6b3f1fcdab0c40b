"""Cross-origin requests from browsers: CORS on the routes a web page calls.

A web app served from another origin (``https://app.example.com`` calling
``https://api.example.com``) needs CORS for every REST call that carries its bearer token
(the browser asks first, with a preflight), for the ticket its EventSource or WebSocket
opens with, for the SSE stream itself, and for Laravel Echo's ``POST /broadcasting/auth``.
Laravel answers these out of the box (``config/cors.php``: any origin on ``api/*``), so an
app moving to courtside expects the same.

Credentials (cookies) are never allowed: courtside authenticates by bearer tokens and
tickets only, which a page must hold to send, so letting any origin read the answers gives
it nothing it did not already have. Pusher's HTTP events API (a backend's, signed) and the
operational routes get no CORS. WebSocket handshakes are not concerned: browsers do not
apply CORS to them.

``COURTSIDE_CORS_ORIGINS``: unset, any origin (``*``); a comma-separated list of origins
(``https://app.example.com,http://localhost:5173``) allows those only; ``none`` turns CORS off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

ENV = "COURTSIDE_CORS_ORIGINS"
ANY = ("*",)
# Paths a web page calls: the REST API (SSE and tickets included), the OpenAPI document,
# and Laravel Echo's channel authorization.
PREFIXES = ("/api/", "/broadcasting/auth", "/openapi.json")
# Response headers a page may read beyond the CORS-safelisted ones.
EXPOSED = ("Retry-After", "Idempotent-Replayed")
# A preflight's answer is cached this long by the browser (Chromium caps it at 2 hours).
MAX_AGE = 7200

# scheme://host[:port], nothing after: what a browser sends in Origin.
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+$")


def origins_from_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The allowed origins: ``()`` for none, ``("*",)`` for any. Raises ValueError naming
    the variable and the entry that is not an origin."""
    raw = environ.get(ENV, "").strip()
    if not raw:
        return ANY
    if raw.lower() == "none":
        return ()
    origins: list[str] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        if entry == "*":
            return ANY
        if not _ORIGIN.match(entry.lower()):
            raise ValueError(f"{ENV}: {entry!r} is not an origin "
                             "(scheme://host[:port], no path, no trailing slash)")
        origins.append(entry.lower())
    if not origins:
        raise ValueError(f"{ENV}={raw!r}: no origin given (use 'none' to turn CORS off)")
    return tuple(origins)


class Cors:
    """Starlette's CORSMiddleware on the paths of `PREFIXES`; other requests pass by."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.cors: ASGIApp | None = CORSMiddleware(
            app, allow_origins=origins, allow_methods=("GET", "POST", "PUT", "DELETE"),
            allow_headers=("*",), expose_headers=EXPOSED, max_age=MAX_AGE,
        ) if origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.cors is not None and scope["type"] == "http"
                and scope["path"].startswith(PREFIXES)):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
