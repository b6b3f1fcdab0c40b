"""What every REST handler does first: read the body within bounds, authenticate on the
connection it will use, and read the common headers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from starlette.requests import Request

from api import errors, validation
from api.access import can_write_session
from api.auth import AuthUser, authenticate_conn, bearer
from api.config import ApiConfig
from api.i18n import Message
from api.token_touch import TokenTouches
from bridge.finish import checked_connection

SOCKET_ID_HEADER = "X-Socket-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"

M = TypeVar("M", bound=BaseModel)


def config(request: Request) -> ApiConfig:
    cfg: ApiConfig = request.app.state.config
    return cfg


def pool(request: Request) -> AsyncConnectionPool[Any]:
    p: AsyncConnectionPool[Any] = request.app.state.pool
    return p


def touches(request: Request) -> TokenTouches:
    t: TokenTouches = request.app.state.touches
    return t


async def read_body(request: Request) -> bytes:
    """The whole body, refused past max_body_bytes without reading the rest."""
    limit = config(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> errors.ApiError:
    return errors.validation(Message("validation.body_too_large", {"max_bytes": limit}),
                             status=413)


def parse_json_body(request: Request, body: bytes, model: type[M]) -> M:
    """A JSON body as `model` (after authentication: a stranger learns nothing from 422s)."""
    if body.strip():
        validation.check_content_type(request.headers.get("content-type"))
    return validation.parse_body(body, model)


async def parse_body_after_access(request: Request, body: bytes, model: type[M],
                                  conn: psycopg.AsyncConnection[Any], session_id: uuid.UUID,
                                  user_id: uuid.UUID) -> M:
    """The body as `model`, for a handler whose statement checks the session's access along
    with its work. An invalid body never gets there: it is refused after the session's own
    refusals (404, 403), so a stranger to the session learns nothing from 422s either."""
    try:
        return parse_json_body(request, body, model)
    except errors.ApiError:
        await can_write_session(conn, session_id, user_id)
        raise


@contextlib.asynccontextmanager
async def authenticated(request: Request) -> AsyncIterator[
        tuple[psycopg.AsyncConnection[Any], AuthUser]]:
    """A pooled connection (autocommit) and the request's user, on that same connection.

    The wait for it is bounded by `pool_timeout`, what runs on it by `query_timeout`
    (bridge/finish.py): past that, the server cancels the statement (rolled back; the
    connection goes back to the pool) and the request fails as the database being
    unavailable (503). What runs on it is shielded, as the bridge's queries are: a server
    stop waits for it rather than interrupt psycopg's cancel."""
    token = bearer(request.headers.get("authorization"))
    cfg = config(request)
    async with checked_connection(pool(request), cfg.query_timeout, "the request's queries",
                                  cfg.pool_timeout) as conn:
        user = await authenticate_conn(conn, token, touches=touches(request),
                                       expiration_minutes=cfg.token_expiration_minutes)
        yield conn, user


def socket_id(request: Request) -> str | None:
    """X-Socket-ID (Laravel's toOthers()): recorded as the origin of the events we cause."""
    return validation.header_token(request.headers, SOCKET_ID_HEADER, validation.SOCKET_ID_MAX)


def idempotency_key(request: Request) -> str | None:
    return validation.header_token(request.headers, IDEMPOTENCY_HEADER,
                                   validation.IDEMPOTENCY_KEY_MAX)
