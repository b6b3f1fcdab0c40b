"""Single-use realtime tickets: `POST /api/realtime/tickets`.

Browsers cannot put an Authorization header on `EventSource` or `WebSocket`. Rather than a
long-lived bearer token in a URL (and in every proxy log), they trade the token for a ticket:
random, valid 60 seconds, stored only as its sha256. The connection it opens then behaves
as if it had presented the token itself (revocation included).

A WebSocket uses its ticket up. An SSE stream holds its ticket instead, bound to the stream's
topic: a browser's EventSource reconnects by itself to the same URL, with Last-Event-ID, and
must find it good again. One connection holds it at a time: a newer one takes it over and the
holder is closed (a reconnection usually arrives before the server notices that the old
connection died, and a crashed node releases nothing). Once the holder's stream ends, the
ticket is good for 60 seconds more. So while a stream lives its URL opens that one session's
stream, nothing else, and no longer than the token behind it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from api.deferred_writes import DeferredWrites
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
class Hold:
    """Who holds an SSE stream's ticket: the stream's topic, its connection and node."""

    topic: str
    conn_id: str
    node_id: str


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


async def issue(conn: psycopg.AsyncConnection[Any], *, token_id: int, user_id: uuid.UUID,
                limit: int, ttl: int = TICKET_TTL_SECONDS) -> Issued | None:
    """A new ticket for this token; None when the token already holds `limit` live ones.
    `conn`: autocommit (api/realtime_auth.connection bounds it)."""
    ticket = new_ticket()
    await conn.execute(SQL.prune_tickets)
    cur = await conn.execute(SQL.issue_ticket, {
        "hash": ticket_hash(ticket), "token_id": token_id, "user_id": user_id,
        "ttl": ttl, "limit": limit})
    row = await cur.fetchone()
    if row is None:
        return None
    return Issued(ticket, str(row[0]), ttl)


async def redeem(conn: psycopg.AsyncConnection[Any], ticket: str, *,
                 expiration_minutes: int | None = None, hold: Hold | None = None
                 ) -> Redeemed | None:
    """Use a ticket up, or with `hold` (an SSE stream) hold it until `release`. None when
    unknown, used up, bound to another topic, expired, or its token is gone or expired.

    `expiration_minutes` is Sanctum's global ``expiration``: a token also expires that long
    after its creation, whatever its own expires_at says."""
    if not plausible(ticket):
        return None
    params: dict[str, Any] = {"hash": ticket_hash(ticket),
                              "expiration_minutes": expiration_minutes}
    if hold is not None:
        params.update(topic=hold.topic, conn_id=hold.conn_id, node_id=hold.node_id)
    cur = await conn.execute(SQL.consume_ticket if hold is None else SQL.hold_ticket, params)
    row = await cur.fetchone()
    if row is None:
        return None
    token_id, user_id, expires_at = row[:3]  # hold_ticket's 4th: whether it took one over
    return Redeemed(int(token_id), uuid.UUID(str(user_id)), expires_at)


def _release_params(noted: dict[tuple[str, str], None], *, ttl: int) -> dict[str, Any]:
    # By (ticket, connection): the connection a ticket was taken over from and the one that
    # took it may both end before a write; only the holder's release matches. Sorted: row
    # locks in one order, as any other batch of them takes them.
    keys = sorted(noted)
    return {"hashes": [h for h, _ in keys], "conn_ids": [c for _, c in keys], "ttl": ttl}


class Releases(DeferredWrites[tuple[str, str], None]):
    """The tickets of SSE streams that have ended, released together off the streams' path
    (api/deferred_writes.py): the streams that end at once (a restart, an outage) cost a
    statement per `interval`, not one each, and none waits for its own. A release the
    database could not take is tried again with the next write (the stream's reconnection
    may take the ticket over meanwhile, as from a live holder). A ticket never released
    (past MAX_PENDING, a write that failed otherwise, a stop with the database away) stays
    held by a connection that is gone, and lasts as long as its node, not `ttl` more
    seconds."""

    def __init__(self, pool: AsyncConnectionPool[Any], ttl: int = TICKET_TTL_SECONDS, *,
                 interval: float = 0.5) -> None:
        super().__init__(pool, SQL.release_tickets, partial(_release_params, ttl=ttl),
                         "the release of %d SSE tickets", interval=interval)

    def release(self, ticket: str, conn_id: str) -> None:
        """The stream `conn_id` held `ticket` for has ended: once written, the ticket may
        reopen it for `ttl` seconds (unless another connection has taken it over since)."""
        self.note((ticket_hash(ticket), conn_id), None)
