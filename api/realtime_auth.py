"""Who is on a realtime connection, and what they may subscribe to.

A connection authenticates once, at the handshake, with ``Authorization: Bearer <token>`` or
``?ticket=<t>`` (api/tickets.py). Either way it is bound to one Sanctum token: deleting or
expiring that token later closes the connection (api/realtime_hub.py).
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from api import tickets
from api.auth import QUERY_TIMEOUT
from api.auth import authenticate as authenticate_header
from api.errors import ApiError
from api.realtime_protocol import ErrorCode, Topic
from api.session_access import Key, Row, SessionAccess
from api.token_touch import TokenTouches
from bridge.finish import checked_connection

_SQL = tickets.SQL


def connection(pool: AsyncConnectionPool[Any]
               ) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
    """A pooled connection for a realtime check or ticket: its query finishes before a
    cancellation lands (a revocation, the client leaving: bridge/finish.py), and one that
    takes longer than QUERY_TIMEOUT fails as a driver error, which every caller already
    treats as "cannot tell"."""
    return checked_connection(pool, QUERY_TIMEOUT, "realtime query")


class AccessDenied(Exception):
    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.value)
        self.code = code


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    token_id: int
    expires_at: datetime | None  # aware, UTC; None: the token does not expire

    def expired(self, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at <= (now or datetime.now(UTC))


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


async def authenticate(pool: AsyncConnectionPool[Any], authorization: str | None,
                       ticket: str | None, *, touches: TokenTouches,
                       expiration_minutes: int | None = None,
                       hold: tickets.Hold | None = None) -> Principal:
    """The connection's principal, or AccessDenied(UNAUTHENTICATED).

    A header wins over a ticket; a bad header is refused even if a ticket is present, so a
    client is never silently authenticated as someone else than it asked to be. With `hold`
    (an SSE stream) a ticket is held rather than used up (api/tickets.py).
    """
    if authorization is not None:
        try:
            user = await authenticate_header(pool, authorization, touches=touches,
                                             expiration_minutes=expiration_minutes)
        except ApiError:
            raise AccessDenied(ErrorCode.UNAUTHENTICATED) from None
        # The header's token query already gives the deadline, Sanctum's global expiration
        # included (api/sql/auth.sql, token_by_id).
        principal = Principal(uuid.UUID(str(user.user_id)), int(user.token_id),
                              _aware(user.expires_at))
    elif ticket:
        async with connection(pool) as conn:
            redeemed = await tickets.redeem(conn, ticket, expiration_minutes=expiration_minutes,
                                            hold=hold)
        if redeemed is None:
            raise AccessDenied(ErrorCode.UNAUTHENTICATED)
        principal = Principal(redeemed.user_id, redeemed.token_id,
                              _aware(redeemed.token_expires_at))
    else:
        raise AccessDenied(ErrorCode.UNAUTHENTICATED)
    if principal.expired():
        raise AccessDenied(ErrorCode.UNAUTHENTICATED)
    return principal


async def check_topic(access: SessionAccess, principal: Principal, topic: Topic) -> None:
    """Raise AccessDenied unless `principal` may read `topic`.

    ``user:<id>`` is readable by that user only. A session is readable by its participants,
    and by every authenticated user while it is public; a deleted session by nobody.
    """
    if topic.kind == "user":
        if topic.id != principal.user_id:
            raise AccessDenied(ErrorCode.FORBIDDEN)
        return
    await check_session(access, principal.user_id, topic.id)


async def check_session(access: SessionAccess, user_id: uuid.UUID,
                        session_id: uuid.UUID) -> None:
    refused = _verdict(await access.get((session_id, user_id)), public_reads=True)
    if refused is not None:
        raise AccessDenied(refused)


async def check_participant(access: SessionAccess, user_id: uuid.UUID,
                            session_id: uuid.UUID) -> None:
    """As check_session, for participants only, even of a public session: Pusher's private
    and presence channels, and what /broadcasting/auth signs."""
    refused = _verdict(await access.get((session_id, user_id)), public_reads=False)
    if refused is not None:
        raise AccessDenied(refused)


def _verdict(row: Row | None, *, public_reads: bool) -> ErrorCode | None:
    """Why a session's row refuses its reader, or None when it may read."""
    if row is None:
        return ErrorCode.SESSION_NOT_FOUND
    visibility, deleted, participant = row
    if deleted:
        return ErrorCode.SESSION_NOT_FOUND
    if not participant and not (public_reads and visibility == "public"):
        return ErrorCode.NOT_PARTICIPANT
    return None


async def session_access_rows(pool: AsyncConnectionPool[Any], keys: list[Key]
                              ) -> dict[Key, Row]:
    """The sessions' rows for these (session, user) pairs, in one query (session_access)."""
    async with connection(pool) as conn:
        cur = await conn.execute(_SQL.session_access_many, {
            "session_ids": [k[0] for k in keys], "user_ids": [k[1] for k in keys]})
        rows = await cur.fetchall()
    return {(uuid.UUID(str(r[0])), uuid.UUID(str(r[1]))): (str(r[2]), bool(r[3]), bool(r[4]))
            for r in rows}


async def session_readers(pool: AsyncConnectionPool[Any], session_id: uuid.UUID,
                          user_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of `user_ids` may read the session now."""
    if not user_ids:
        return set()
    async with connection(pool) as conn:
        cur = await conn.execute(_SQL.session_readers,
                                 {"session_id": session_id, "user_ids": list(user_ids)})
        rows = await cur.fetchall()
    return {uuid.UUID(str(r[0])) for r in rows}


async def live_tokens(pool: AsyncConnectionPool[Any], token_ids: set[int],
                      expiration_minutes: int | None = None) -> dict[int, datetime | None]:
    """The tokens among `token_ids` that still exist, with their expiry."""
    if not token_ids:
        return {}
    async with connection(pool) as conn:
        cur = await conn.execute(_SQL.live_tokens, {"token_ids": list(token_ids),
                                                    "expiration_minutes": expiration_minutes})
        rows = await cur.fetchall()
    return {int(r[0]): _aware(r[1]) for r in rows}
