"""Bearer authentication against Laravel Sanctum's personal_access_tokens, as Sanctum does it.

``Authorization: Bearer <id>|<plaintext>``: the row `id` must exist, belong to an existing
user, hold ``sha256(plaintext)`` (compared in constant time) and not be expired
(``expires_at``, and Sanctum's global ``expiration`` in minutes when configured). A bare
plaintext is looked up by its hash, as Sanctum does for tokens without an id.

``last_used_at`` is written at most once per ``TOUCH_EVERY_SECONDS`` per token, not on every
request: the read says whether the stored value is stale, and only then is the token noted
for `TokenTouches` to write, after the request (api/token_touch.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api import errors, tokens
from api.config import ApiConfig
from api.token_touch import TOUCH_EVERY_SECONDS, TokenTouches
from bridge import sqlfile
from bridge.finish import checked_connection

# REST's default bound, for what has no ApiConfig at hand: the realtime side's checks
# (api/realtime_auth.py), which are as short as the bridge's reads.
QUERY_TIMEOUT: float = ApiConfig.query_timeout

_SQL = sqlfile.load("api.sql", "auth.sql")


@dataclass(frozen=True)
class AuthUser:
    user_id: uuid.UUID
    token_id: int
    # When the token stops working (aware): its expires_at, or created_at + Sanctum's global
    # expiration when that comes first; None: never.
    expires_at: datetime | None


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header, or UNAUTHENTICATED."""
    if not authorization:
        raise errors.unauthenticated()
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise errors.unauthenticated()
    return value.strip()


async def authenticate(pool: AsyncConnectionPool[Any], authorization: str | None, *,
                       touches: TokenTouches, expiration_minutes: int | None = None
                       ) -> AuthUser:
    """The user behind an Authorization header value; raises ApiError(UNAUTHENTICATED), or
    psycopg.OperationalError when the database does not answer within QUERY_TIMEOUT
    (bridge/finish.py, `checked_connection`)."""
    token = bearer(authorization)  # no connection taken for a request without a token
    async with checked_connection(pool, QUERY_TIMEOUT, "authentication") as conn:
        return await authenticate_conn(conn, token, touches=touches,
                                       expiration_minutes=expiration_minutes)


async def authenticate_conn(conn: psycopg.AsyncConnection[Any], token: str, *,
                            touches: TokenTouches, expiration_minutes: int | None = None
                            ) -> AuthUser:
    """As `authenticate`, on a connection the caller holds (autocommit), for a bare token."""
    parsed = tokens.parse(token)
    if parsed is None:
        raise errors.unauthenticated("error.token_invalid")
    params: dict[str, Any] = {"expiration_minutes": expiration_minutes,
                              "touch_every": TOUCH_EVERY_SECONDS}
    token_id = parsed.token_id
    async with conn.cursor(row_factory=dict_row) as cur:
        if token_id is None:
            await cur.execute(_SQL.token_id_by_hash,
                              {"hash": tokens.hash_plaintext(parsed.plaintext)})
            found = await cur.fetchone()
            token_id = int(found["token_id"]) if found is not None else 0  # 0: no such id
        await cur.execute(_SQL.token_by_id, {**params, "token_id": token_id})
        row = await cur.fetchone()
    # Compare even when no row matched, so both paths hash the same plaintext.
    stored = row["hash"] if row is not None else "0" * 64
    if not tokens.matches(stored, parsed.plaintext) or row is None:
        raise errors.unauthenticated("error.token_invalid")
    if row["expired"]:
        raise errors.unauthenticated("error.token_expired")
    if row["stale"]:
        touches.touch(token_id)
    return AuthUser(uuid.UUID(str(row["user_id"])), token_id, row["expires_at"])
