"""Single-use realtime tickets: `POST /api/realtime/tickets`.

Browsers cannot put an Authorization header on `EventSource` or `WebSocket`. Rather than a
long-lived bearer token in a URL (and in every proxy log), they trade the token for a ticket:
random, valid 60 seconds, good for one connection, stored only as its sha256. The connection
it opens then behaves as if it had presented the token itself (revocation included).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bridge import sqlfile

SQL = sqlfile.load("api.sql", "realtime.sql")
TICKET_TTL_SECONDS = 60
_PREFIX = "rt_"
_MAX_LENGTH = 128


@dataclass(frozen=True)
class Issued:
    ticket: str
    expires_at: str  # 2025-01-20T10:30:00.000000Z
    expires_in: int


@dataclass(frozen=True)
class Redeemed:
    token_id: int
    user_id: uuid.UUID
    token_expires_at: datetime | None


def new_ticket() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


def ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def plausible(ticket: str) -> bool:
    """Cheap shape check, so garbage never costs a query."""
    return (ticket.startswith(_PREFIX) and len(ticket) <= _MAX_LENGTH and ticket.isascii()
            and ticket.isprintable())


async def issue(pool: AsyncConnectionPool[Any], *, token_id: int, user_id: uuid.UUID,
                limit: int, ttl: int = TICKET_TTL_SECONDS) -> Issued | None:
    """A new ticket for this token; None when the token already holds `limit` live ones."""
    ticket = new_ticket()
    async with pool.connection() as conn:
        await conn.execute(SQL.prune_tickets)
        cur = await conn.execute(SQL.issue_ticket, {
            "hash": ticket_hash(ticket), "token_id": token_id, "user_id": user_id,
            "ttl": ttl, "limit": limit})
        row = await cur.fetchone()
    if row is None:
        return None
    return Issued(ticket, str(row[0]), ttl)


async def redeem(pool: AsyncConnectionPool[Any], ticket: str, *,
                 expiration_minutes: int | None = None) -> Redeemed | None:
    """Use a ticket up. None when unknown, used, expired, or its token is gone or expired.

    `expiration_minutes` is Sanctum's global ``expiration``: a token also expires that long
    after its creation, whatever its own expires_at says."""
    if not plausible(ticket):
        return None
    async with pool.connection() as conn:
        cur = await conn.execute(SQL.consume_ticket, {
            "hash": ticket_hash(ticket), "expiration_minutes": expiration_minutes})
        row = await cur.fetchone()
    if row is None:
        return None
    token_id, user_id, expires_at = row
    return Redeemed(int(token_id), uuid.UUID(str(user_id)), expires_at)
