"""Queries that finish: a pooled query is not interrupted by its caller's cancellation.

psycopg answers a cancellation in the middle of a query by asking the server to cancel it;
under anyio the cancellation is delivered again at psycopg's next await, which interrupts
that too, and psycopg then closes the connection rather than return it to the pool ("query
cancellation interrupted (CancelledError): closing connection"). Clients that leave while
their backlog is being read, or while an SSE stream is being set up, cancel exactly such
queries: measured, 23 of 40 WebSocket clients that left that way each cost a pooled
connection, and a new one for the next query. So the bridge's queries, once they hold a
connection, run shielded from the caller's cancellation, within their own timeout: they
finish, or time out, and then the caller's cancellation lands. (Waiting for a connection
stays cancellable.)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool


@contextlib.asynccontextmanager
async def query_connection(pool: AsyncConnectionPool[Any], seconds: float
                           ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection for queries that finish. The whole is bounded by `seconds`
    (TimeoutError); the wait for a connection stays cancellable (a caller gone by then costs
    no query), what runs on the connection is shielded."""
    with anyio.fail_after(seconds):
        async with pool.connection() as conn:
            with anyio.CancelScope(shield=True), anyio.fail_after(seconds):
                yield conn
