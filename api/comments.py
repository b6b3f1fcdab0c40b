"""`/api/sessions/{sessionId}/comments`: create, list, edit, soft-delete.

Each write is one call of a PL/pgSQL function (db/functions/api.sql): its whole transaction,
checks first, in one round trip. It writes plain rows; the triggers turn each committed change
into its event. The comment in a response is rendered by the SQL function the triggers use, in
the same transaction, so it is byte for byte the event's `data.comment`.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from api import cursor, endpoint, errors, idempotency, ratelimit
from api.access import can_write_session, refusal, refuse
from api.i18n import Message, negotiate, render
from api.jsonio import JSONResponse
from api.models import CommentCreate, CommentUpdate
from api.validation import parse_list_query, path_uuid
from bridge import sqlfile

_SQL = sqlfile.load("api.sql", "comments.sql")


def _ids(request: Request, *names: str) -> list[uuid.UUID]:
    return [path_uuid(request.path_params[name], name) for name in names]


def _unique(mentions: list[str] | None) -> list[uuid.UUID]:
    return list(dict.fromkeys(uuid.UUID(m) for m in mentions or ()))


async def _write(conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any],
                 forbidden_key: str = "") -> Any:
    """Run one of the comment writes (db/functions/api.sql): its body, or its refusal raised."""
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None, "the write functions answer one row"
    outcome, body = row
    if outcome != "ok":
        raise refusal(outcome, body, forbidden_key)
    return body


def _envelope(data: Any, message_key: str, request: Request, status: int = 200,
              headers: dict[str, str] | None = None) -> Response:
    lang = negotiate(request.headers.get("accept-language"))
    return JSONResponse({"success": True, "data": data, "message": render(message_key, lang)},
                        status_code=status, headers=headers)


async def create_comment(request: Request) -> Response:
    body = await endpoint.read_body(request)
    async with endpoint.authenticated(request) as (conn, user):
        (session_id,) = _ids(request, "sessionId")
        key = endpoint.idempotency_key(request)
        origin = endpoint.socket_id(request)
        payload = await endpoint.parse_body_after_access(
            request, body, CommentCreate, conn, session_id, user.user_id)
        mentions = _unique(payload.mentions)
        params = {"session_id": session_id, "user_id": user.user_id,
                  "content": payload.content, "mentions": mentions,
                  "origin": origin,
                  "bucket": ratelimit.comments_bucket(user.user_id),
                  "limit": endpoint.config(request).comments_per_minute,
                  "window": ratelimit.WINDOW_SECONDS}
        if key is None:
            data = await _write(conn, _SQL.create_comment, params)
            return _envelope(data, "comment.created", request, 201)
        # A stored response is replayed only to who may still write the session.
        await can_write_session(conn, session_id, user.user_id)
        async with conn.transaction():
            asked = {"sessionId": str(session_id), "content": payload.content,
                     "mentions": sorted(str(m) for m in mentions)}
            stored = await idempotency.claim(conn, user.user_id, key,
                                             idempotency.fingerprint(asked))
            if stored is not None:
                return _envelope(stored.data, "comment.created", request, stored.status,
                                 {idempotency.REPLAYED_HEADER: "true"})
            data = await _write(conn, _SQL.create_comment, params)
            await idempotency.store(conn, user.user_id, key, 201, data)
    return _envelope(data, "comment.created", request, 201)


async def list_comments(request: Request) -> Response:
    async with endpoint.authenticated(request) as (conn, user):
        (session_id,) = _ids(request, "sessionId")
        query = parse_list_query(request.query_params.multi_items())
        position: cursor.Position | None = None
        if query.before is not None:
            try:
                position = cursor.decode(query.before)
            except cursor.InvalidCursor:
                raise errors.validation(
                    Message("validation.cursor", {"field": "before"})) from None
        cur = await conn.execute(_SQL.list_page, {
            "session_id": session_id, "user_id": user.user_id, "limit": query.limit + 1,
            "offset": (query.page - 1) * query.limit,
            "before_at": "infinity" if position is None else position.created_at,
            "before_id": uuid.UUID(int=0) if position is None else position.id})
        rows = await cur.fetchall()
    refuse(rows[0][0])
    total = int(rows[0][1])
    found = [(comment, at, cid) for _, _, comment, at, cid in rows if comment is not None]
    page = found[:query.limit]
    more = len(found) > query.limit
    return JSONResponse({
        "success": True,
        "data": [comment for comment, _, _ in page],
        "pagination": {
            "page": query.page,
            "limit": query.limit,
            "total": total,
            "totalPages": max(1, math.ceil(total / query.limit)),  # as Laravel's lastPage
            "nextCursor": cursor.encode(page[-1][1], page[-1][2]) if more else None,
        },
    })


async def update_comment(request: Request) -> Response:
    body = await endpoint.read_body(request)
    async with endpoint.authenticated(request) as (conn, user):
        session_id, comment_id = _ids(request, "sessionId", "commentId")
        origin = endpoint.socket_id(request)
        payload = await endpoint.parse_body_after_access(
            request, body, CommentUpdate, conn, session_id, user.user_id)
        mentions = None if payload.mentions is None else _unique(payload.mentions)
        data = await _write(conn, _SQL.edit_comment, {
            "session_id": session_id, "comment_id": comment_id, "user_id": user.user_id,
            "content": payload.content, "mentions": mentions, "origin": origin},
            "error.forbidden_update")
    return _envelope(data, "comment.updated", request)


async def delete_comment(request: Request) -> Response:
    async with endpoint.authenticated(request) as (conn, user):
        session_id, comment_id = _ids(request, "sessionId", "commentId")
        origin = endpoint.socket_id(request)
        await _write(conn, _SQL.delete_comment, {
            "session_id": session_id, "comment_id": comment_id, "user_id": user.user_id,
            "origin": origin}, "error.forbidden_delete")
    lang = negotiate(request.headers.get("accept-language"))
    return JSONResponse({"success": True, "message": render("comment.deleted", lang)})
