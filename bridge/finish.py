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

Their own timeout cancels them once, as asyncio does (`query_deadline`), not as anyio does.
anyio's cancellation is level-triggered: delivered again at every await until its scope
exits, psycopg's own request to the server to cancel the statement included. psycopg then
gives up, closes the connection, and the server, never told, runs the statement to its end:
measured, REST comment inserts waiting on a lock, bounded by `anyio.fail_after`, answered
503 and were committed once the lock went (each request also cost its pooled connection).
Cancelled once, psycopg has the server cancel the statement and waits for that (psycopg
bounds both steps, 5 s each); the statement is rolled back and the connection is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool


@contextlib.asynccontextmanager
async def query_connection(pool: AsyncConnectionPool[Any], seconds: float,
                           wait: float | None = None
                           ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection for queries that finish. The wait for it is bounded by `wait`
    (default: `seconds`; psycopg_pool.PoolTimeout) and stays cancellable: a caller gone by
    then costs no query. What runs on it is shielded, and bounded by `seconds`
    (TimeoutError), from when it has the connection."""
    async with pool.connection(timeout=seconds if wait is None else wait) as conn:
        with anyio.CancelScope(shield=True):
            async with query_deadline(seconds):
                yield conn


@contextlib.asynccontextmanager
async def checked_connection(pool: AsyncConnectionPool[Any], seconds: float, what: str,
                             wait: float | None = None
                             ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """`query_connection` for callers that treat every database failure alike: running past
    `seconds` raises psycopg.OperationalError ("<what> did not finish within <seconds> s"),
    which the API answers 503 and the realtime checks take as "cannot tell"."""
    try:
        async with query_connection(pool, seconds, wait) as conn:
            yield conn
    except TimeoutError:
        raise psycopg.OperationalError(f"{what} did not finish within {seconds:g} s") from None


def query_deadline(seconds: float) -> asyncio.Timeout:
    """Bounds queries on a connection: past `seconds`, the task is cancelled once (module
    docstring) and the block raises TimeoutError. The server has cancelled the statement
    then, unless it finished first: a write may have committed just before (the usual
    ambiguity of a timeout, which an Idempotency-Key resolves)."""
    return asyncio.timeout(seconds)
