"""`/api/sessions/{sessionId}/comments`: create, list, edit, soft-delete.

The handlers write plain rows; the triggers turn each committed change into its event. The
comment in a response is rendered by the SQL function the triggers use, in the same
transaction, so it is byte for byte the event's `data.comment`.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from api import cursor, endpoint, errors, idempotency, ratelimit
from api.access import can_read_session, can_write_session
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


async def _begin_write(conn: psycopg.AsyncConnection[Any], origin: str | None) -> None:
    if origin is not None:
        await conn.execute(_SQL.set_origin, {"origin": origin})


async def _check_mentions(conn: psycopg.AsyncConnection[Any], session_id: uuid.UUID,
                          mentions: list[uuid.UUID]) -> None:
    if not mentions:
        return
    cur = await conn.execute(_SQL.non_participants,
                             {"session_id": session_id, "user_ids": mentions})
    strangers = [str(row[0]) for row in await cur.fetchall()]
    if strangers:
        raise errors.validation(Message("validation.mentions_not_participants",
                                        {"ids": ", ".join(strangers)}))


async def _render(conn: psycopg.AsyncConnection[Any], comment_id: uuid.UUID) -> Any:
    cur = await conn.execute(_SQL.render_comment, {"comment_id": comment_id})
    row = await cur.fetchone()
    assert row is not None, "a comment just written in this transaction"
    return row[0]


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
        await can_write_session(conn, session_id, user.user_id)
        payload = endpoint.parse_json_body(request, body, CommentCreate)
        mentions = _unique(payload.mentions)
        bucket = ratelimit.comments_bucket(user.user_id)
        limit = endpoint.config(request).comments_per_minute
        if key is None and not mentions:
            data = await _create_alone(conn, session_id, user.user_id, payload.content, origin,
                                       bucket, limit)
            return _envelope(data, "comment.created", request, 201)
        async with conn.transaction():
            await _begin_write(conn, origin)
            if key is not None:
                asked = {"sessionId": str(session_id), "content": payload.content,
                         "mentions": sorted(str(m) for m in mentions)}
                stored = await idempotency.claim(conn, user.user_id, key,
                                                 idempotency.fingerprint(asked))
                if stored is not None:
                    return _envelope(stored.data, "comment.created", request, stored.status,
                                     {idempotency.REPLAYED_HEADER: "true"})
            await _check_mentions(conn, session_id, mentions)
            await ratelimit.hit(conn, bucket, limit)
            cur = await conn.execute(_SQL.insert_comment, {
                "session_id": session_id, "user_id": user.user_id, "content": payload.content})
            row = await cur.fetchone()
            assert row is not None
            comment_id: uuid.UUID = row[0]
            if mentions:
                await conn.execute(_SQL.add_mentions,
                                   {"comment_id": comment_id, "user_ids": mentions})
            data = await _render(conn, comment_id)
            if key is not None:
                await idempotency.store(conn, user.user_id, key, 201, data)
    return _envelope(data, "comment.created", request, 201)


async def _create_alone(conn: psycopg.AsyncConnection[Any], session_id: uuid.UUID,
                        user_id: uuid.UUID, content: str, origin: str | None, bucket: str,
                        limit: int) -> Any:
    """The common create (no mentions, no idempotency key) in one statement and one round
    trip, where the general path takes six: the same rows, event and response."""
    cur = await conn.execute(_SQL.create_alone, {
        "session_id": session_id, "user_id": user_id, "content": content, "origin": origin,
        "bucket": bucket, "limit": limit, "window": ratelimit.WINDOW_SECONDS})
    row = await cur.fetchone()
    assert row is not None
    ratelimit.refuse_if_waiting(float(row[0]))
    return row[1]


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
        await can_read_session(conn, session_id, user.user_id)
        params: dict[str, Any] = {"session_id": session_id, "limit": query.limit + 1,
                                  "offset": (query.page - 1) * query.limit}
        async with conn.transaction():
            # One snapshot: the total and the page agree even while comments arrive.
            await conn.execute(_SQL.read_snapshot)
            cur = await conn.execute(_SQL.count_comments, params)
            count_row = await cur.fetchone()
            total = int(count_row[0]) if count_row is not None else 0
            if position is None:
                cur = await conn.execute(_SQL.list_comments, params)
            else:
                params.update(before_at=position.created_at, before_id=position.id)
                cur = await conn.execute(_SQL.list_comments_before, params)
            rows = await cur.fetchall()
    page = rows[:query.limit]
    more = len(rows) > query.limit
    return JSONResponse({
        "success": True,
        "data": [r[0] for r in page],
        "pagination": {
            "page": query.page,
            "limit": query.limit,
            "total": total,
            "totalPages": max(1, math.ceil(total / query.limit)),  # as Laravel's lastPage
            "nextCursor": cursor.encode(page[-1][1], page[-1][2]) if more else None,
        },
    })


async def _lock_own_comment(conn: psycopg.AsyncConnection[Any], session_id: uuid.UUID,
                            comment_id: uuid.UUID, user_id: uuid.UUID,
                            forbidden_key: str) -> None:
    cur = await conn.execute(_SQL.lock_comment,
                             {"comment_id": comment_id, "session_id": session_id})
    row = await cur.fetchone()
    if row is None:
        raise errors.comment_not_found()
    if row[0] != user_id:
        raise errors.forbidden(forbidden_key)


async def update_comment(request: Request) -> Response:
    body = await endpoint.read_body(request)
    async with endpoint.authenticated(request) as (conn, user):
        session_id, comment_id = _ids(request, "sessionId", "commentId")
        origin = endpoint.socket_id(request)
        await can_write_session(conn, session_id, user.user_id)
        payload = endpoint.parse_json_body(request, body, CommentUpdate)
        async with conn.transaction():
            await _begin_write(conn, origin)
            await _lock_own_comment(conn, session_id, comment_id, user.user_id,
                                    "error.forbidden_update")
            if payload.mentions is not None:
                mentions = _unique(payload.mentions)
                await _check_mentions(conn, session_id, mentions)
                ids = {"comment_id": comment_id, "user_ids": mentions}
                await conn.execute(_SQL.drop_other_mentions, ids)
                await conn.execute(_SQL.add_mentions, ids)
            await conn.execute(_SQL.update_comment,
                               {"comment_id": comment_id, "content": payload.content})
            data = await _render(conn, comment_id)
    return _envelope(data, "comment.updated", request)


async def delete_comment(request: Request) -> Response:
    async with endpoint.authenticated(request) as (conn, user):
        session_id, comment_id = _ids(request, "sessionId", "commentId")
        origin = endpoint.socket_id(request)
        await can_write_session(conn, session_id, user.user_id)
        async with conn.transaction():
            await _begin_write(conn, origin)
            await _lock_own_comment(conn, session_id, comment_id, user.user_id,
                                    "error.forbidden_delete")
            await conn.execute(_SQL.soft_delete_comment, {"comment_id": comment_id})
    lang = negotiate(request.headers.get("accept-language"))
    return JSONResponse({"success": True, "message": render("comment.deleted", lang)})
