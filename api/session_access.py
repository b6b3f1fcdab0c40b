"""Who may read a session, asked of PostgreSQL for many subscriptions at once.

A reconnect storm (a deploy, a network blip) brings thousands of subscriptions to the same
few sessions within seconds, and each used to cost its own query, whose Python side (a pool
checkout, psycopg's execute path) is paid again each time (the check was 15 % of the
server's CPU per accepted `/ws` connection in one profile). Here the checks asked while one
query runs share the next one: at most one query in flight and one gathering per process,
however many subscribe (api/coalesce.py). A check's answer always comes from a query that
started after it was asked, never from an older state: a participant removed a moment
before is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import psycopg

from api.coalesce import Coalescer

# (session id, user id) → (visibility, deleted, participant); no row: no such session.
Key = tuple[uuid.UUID, uuid.UUID]
Row = tuple[str, bool, bool]
SessionAccess = Coalescer[Key, Row]


def session_access(fetch: Callable[[list[Key]], Awaitable[dict[Key, Row]]]) -> SessionAccess:
    """`fetch`: api/realtime_auth.session_access_rows. A failed query fails every check that
    shared it as a driver error, which the transports treat as "cannot tell"."""
    return Coalescer(fetch, lambda exc: psycopg.OperationalError(
        f"session access check failed: {exc}"))
