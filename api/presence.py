"""`/api/sessions/{sessionId}/presence/*` through the presence registry in PostgreSQL.

A REST join is a presence row without a node that lives `presence_ttl` seconds unless
another join renews it; its connection id is `rest:<token id>`, so each token is one
presence and a user online through a socket as well stays online when the REST row ends.
The registry functions publish user.online / user.offline / user.typing themselves.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api import endpoint, errors
from api.access import refuse
from api.auth import AuthUser
from api.i18n import negotiate, render
from api.jsonio import JSONResponse
from api.models import TypingUpdate
from api.validation import path_uuid
from bridge import sqlfile

_SQL = sqlfile.load("api.sql", "presence.sql")


def _where(session_id: uuid.UUID, user: AuthUser) -> dict[str, Any]:
    return {"session_id": session_id, "topic": f"session:{session_id}",
            "user_id": user.user_id, "conn_id": f"rest:{user.token_id}"}


def _message(request: Request, key: str) -> str:
    return render(key, negotiate(request.headers.get("accept-language")))


async def join(request: Request) -> Response:
    async with endpoint.authenticated(request) as (conn, user):
        session_id = path_uuid(request.path_params["sessionId"], "sessionId")
        cur = await conn.execute(_SQL.join, {
            **_where(session_id, user), "ttl": endpoint.config(request).presence_ttl})
        row = await cur.fetchone()
    assert row is not None
    refuse(row[0])
    assert row[1] is not None, "the row presence_join_v1 just wrote"
    return JSONResponse({
        "success": True,
        "data": {"sessionId": str(session_id), "userId": str(user.user_id), "joinedAt": row[1]},
        "message": _message(request, "presence.joined"),
    })


async def leave(request: Request) -> Response:
    async with endpoint.authenticated(request) as (conn, user):
        session_id = path_uuid(request.path_params["sessionId"], "sessionId")
        cur = await conn.execute(_SQL.leave, _where(session_id, user))
        row = await cur.fetchone()
    assert row is not None
    refuse(row[0])
    return JSONResponse({
        "success": True,
        "data": {"sessionId": str(session_id), "userId": str(user.user_id), "leftAt": row[2]},
        "message": _message(request, "presence.left"),
    })


async def typing(request: Request) -> Response:
    body = await endpoint.read_body(request)
    async with endpoint.authenticated(request) as (conn, user):
        session_id = path_uuid(request.path_params["sessionId"], "sessionId")
        origin = endpoint.socket_id(request)
        payload = await endpoint.parse_body_after_access(
            request, body, TypingUpdate, conn, session_id, user.user_id)
        cfg = endpoint.config(request)
        cur = await conn.execute(_SQL.typing, {
            "session_id": session_id, "user_id": user.user_id, "is_typing": payload.isTyping,
            "for_seconds": cfg.typing_ttl, "origin": origin, "refresh": cfg.typing_refresh,
            "rate": cfg.typing_per_second, "burst": cfg.typing_burst})
        row = await cur.fetchone()
    assert row is not None
    outcome, at, wait = row
    if outcome == "rate_limited":
        raise errors.rate_limited(float(wait), "error.typing_rate_limited")
    if outcome not in ("publish", "quiet"):
        refuse(outcome)
    return JSONResponse({
        "success": True,
        "data": {"sessionId": str(session_id), "userId": str(user.user_id),
                 "isTyping": payload.isTyping, "timestamp": at},
    })


async def users(request: Request) -> Response:
    async with endpoint.authenticated(request) as (conn, user):
        session_id = path_uuid(request.path_params["sessionId"], "sessionId")
        cur = await conn.execute(_SQL.users, {
            "session_id": session_id, "user_id": user.user_id,
            "topic": f"session:{session_id}"})
        rows = await cur.fetchall()
    refuse(rows[0][0])
    online = [who for _, who in rows if who is not None]
    return JSONResponse({"success": True, "data": online, "total": len(online)})
