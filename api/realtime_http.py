"""The plain HTTP routes of the realtime side: tickets, liveness, readiness."""

from __future__ import annotations

import anyio
import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from api import realtime_auth, tickets
from api.errors import error_response as envelope
from api.jsonio import JSONResponse
from api.realtime_auth import AccessDenied
from api.realtime_protocol import ErrorCode, Language, message_for, pick_language
from api.realtime_state import realtime_of

_READY_TIMEOUT = 2.0

_STATUS = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_PARTICIPANT: 403,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.INVALID_TOPIC: 404,
    ErrorCode.INVALID_FRAME: 422,
    ErrorCode.TOKEN_REVOKED: 401,
    ErrorCode.TOO_MANY_CONNECTIONS: 429,
    ErrorCode.SERVICE_RESTART: 503,
    ErrorCode.NOT_READY: 503,
}


def error_response(code: ErrorCode, lang: Language, detail: str = "") -> Response:
    message = message_for(code, lang)
    if detail:
        message = f"{message} ({detail})"
    headers = {"WWW-Authenticate": "Bearer"} if code == ErrorCode.UNAUTHENTICATED else None
    if code in (ErrorCode.NOT_READY, ErrorCode.SERVICE_RESTART):
        headers = {"Retry-After": "1"}
    return envelope(code.value, _STATUS.get(code, 400), message, headers)


async def deny_websocket(websocket: WebSocket, code: ErrorCode, lang: Language) -> None:
    """Refuse a handshake: an HTTP error with the JSON envelope where the server supports
    it (ASGI websocket.http.response), else a plain 403."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(code, lang))
    else:
        await websocket.close(code=1008, reason=code.value)


async def create_ticket(request: Request) -> Response:
    """``POST /api/realtime/tickets`` with a bearer token → a ticket good for `ticket_ttl`
    seconds (api/tickets.py: a WebSocket uses it up, an SSE stream holds it)."""
    rt = realtime_of(request.app)
    lang = pick_language(request.headers.get("accept-language"))
    authorization = request.headers.get("authorization")
    try:
        # A ticket never buys another ticket: only the header is accepted here.
        if not authorization:
            raise AccessDenied(ErrorCode.UNAUTHENTICATED)
        principal = await rt.authenticate(authorization, None)
    except AccessDenied as denied:
        return error_response(denied.code, lang)
    except psycopg.Error:
        return error_response(ErrorCode.NOT_READY, lang)
    try:
        async with realtime_auth.connection(rt.pool) as conn:
            issued = await tickets.issue(conn, token_id=principal.token_id,
                                         user_id=principal.user_id,
                                         limit=rt.config.limits.tickets_per_token,
                                         ttl=rt.config.ticket_ttl)
    except psycopg.Error:
        return error_response(ErrorCode.NOT_READY, lang)
    if issued is None:
        return envelope("RATE_LIMITED", 429, "Trop de tickets en attente" if lang == "fr"
                        else "Too many outstanding tickets", {"Retry-After": "60"})
    return JSONResponse({"success": True, "data": {
        "ticket": issued.ticket, "expiresAt": issued.expires_at,
        "expiresIn": issued.expires_in}}, status_code=201,
        headers={"Cache-Control": "no-store"})


async def healthz(request: Request) -> Response:
    """200 while the process lives."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 only while the database answers and the LISTEN connection is up and caught up."""
    rt = getattr(request.app.state, "realtime", None)
    checks = {"database": False, "listen": False}
    if rt is not None:
        checks["listen"] = bool(rt.bridge.ready)
        with anyio.move_on_after(_READY_TIMEOUT):
            try:
                async with rt.pool.connection(timeout=_READY_TIMEOUT) as conn:
                    await conn.execute(tickets.SQL.ping)
                checks["database"] = True
            except (psycopg.Error, OSError):
                pass
        if rt.hub.shutting_down:
            checks["listen"] = False
    ready = all(checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)
