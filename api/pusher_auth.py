"""``POST /broadcasting/auth``: what Laravel Echo calls before subscribing to a private or
presence channel.

Request: ``Authorization: Bearer <Sanctum token>``, body ``socket_id`` and ``channel_name``
(form-encoded, as pusher-js sends it, or JSON). Answer, only when the token's user may
subscribe (the rule of api/access.py: participants; ``private-user.{id}``: that user)::

    {"auth": "<key>:<hex hmac-sha256(secret, socket_id:channel_name:channel_data)>",
     "channel_data": "{\\"user_id\\": ..., [\\"user_info\\": ...,] \\"courtside_token\\": <id>}"}

A missing, invalid or expired token is a 401 (what Laravel answers when Sanctum guards its
broadcasting routes), any other refusal a 403 (Laravel's `Broadcast::auth`), with the error
envelope; pusher-js only looks at the status. The database being unreachable is a 503.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import parse_qsl

import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import Response

from api import realtime_auth
from api.errors import error_response
from api.jsonio import JSONResponse
from api.pusher_protocol import (
    Channel,
    PusherConfig,
    auth_for,
    channel_data_for,
    parse_channel,
    valid_socket_id,
)
from api.realtime_auth import AccessDenied, Principal, check_participant
from api.realtime_state import Realtime, realtime_of
from bridge import sqlfile

log = logging.getLogger("courtside.pusher")

SQL = sqlfile.load("api.sql", "pusher.sql")
_MAX_BODY = 4096


class Refused(Exception):
    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


async def _fields(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise Refused("VALIDATION_ERROR", "body too large")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Refused("VALIDATION_ERROR", "body is not JSON") from None
        if not isinstance(data, dict):
            raise Refused("VALIDATION_ERROR", "body must be an object")
        return data
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def check_channel(rt: Realtime, principal: Principal, channel: Channel) -> None:
    """Raise Refused unless `principal` may subscribe to the private/presence `channel`."""
    if channel.kind == "public":
        raise Refused("FORBIDDEN", "public channels need no authorization")
    if channel.kind == "user":
        if channel.topic.id != principal.user_id:
            raise Refused("FORBIDDEN", "private-user channels are for that user only")
        return
    try:
        await check_participant(rt.session_access, principal.user_id, channel.topic.id)
    except AccessDenied as denied:
        raise Refused(denied.code.value, "participants only") from None


async def user_info(rt: Realtime, user_id: uuid.UUID) -> dict[str, Any]:
    async with realtime_auth.connection(rt.pool) as conn:
        cur = await conn.execute(SQL.user_info, {"user_id": user_id})
        row = await cur.fetchone()
    info = row[0] if row is not None else None
    return info if isinstance(info, dict) else {"id": str(user_id)}


async def broadcasting_auth(request: Request, config: PusherConfig) -> Response:
    rt = realtime_of(request.app)
    authorization = request.headers.get("authorization")
    try:
        if not authorization:
            raise Refused("UNAUTHENTICATED", "a bearer token is required", 401)
        try:
            principal = await rt.authenticate(authorization, None)
        except AccessDenied as denied:
            raise Refused(denied.code.value, "invalid token", 401) from None
        fields = await _fields(request)
        socket_id = fields.get("socket_id")
        if not valid_socket_id(socket_id):
            raise Refused("VALIDATION_ERROR", "socket_id: <digits>.<digits>")
        assert isinstance(socket_id, str)
        channel = parse_channel(fields.get("channel_name"))
        if channel is None:
            raise Refused("VALIDATION_ERROR", "unknown channel_name")
        await check_channel(rt, principal, channel)
        info = await user_info(rt, principal.user_id) if channel.kind == "presence" else None
    except Refused as refused:
        return error_response(refused.code, refused.status, refused.message,
                              {"Cache-Control": "no-store"})
    except psycopg.Error:
        log.warning("broadcasting auth failed", exc_info=True)
        return error_response("SERVICE_UNAVAILABLE", 503, "database unavailable",
                              {"Retry-After": "1"})
    channel_data = channel_data_for(principal.user_id, principal.token_id, info)
    return JSONResponse({"auth": auth_for(config, socket_id, channel.name, channel_data),
                         "channel_data": channel_data},
                        headers={"Cache-Control": "no-store"})
