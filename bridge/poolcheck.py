"""The pools' connection check: a round trip only when there is a reason for one.

psycopg_pool's `check_connection` sends an empty query on every checkout, so each of the
three or four queries a WebSocket subscribe makes costs two round trips. `RecentCheck` keeps
that round trip for a connection last checked more than `rested` seconds ago (a server that
went away without a word, a proxy's idle timeout) and for one whose socket has something to
read: an idle connection is sent nothing, except a backend's last words — the FATAL error of a
terminated backend or of a server shutting down, then the end of the stream. Otherwise it
costs one non-blocking poll. A connection that fails the check is discarded by the pool,
which hands out another: the caller never sees it.
"""

from __future__ import annotations

import select
import time
import weakref
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

# Checkouts under load come every few milliseconds; a second of rest is already unusual.
DEFAULT_RESTED = 1.0


class RecentCheck:
    """A `check` callable for `AsyncConnectionPool`."""

    def __init__(self, rested: float = DEFAULT_RESTED) -> None:
        self.rested = rested
        self.round_trips = 0  # checks that queried the server
        self._checked: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary())

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        now = time.monotonic()
        last = self._checked.get(conn)
        if last is None or now - last > self.rested or not _quiet(conn.pgconn):
            self.round_trips += 1
            await AsyncConnectionPool.check_connection(conn)
        self._checked[conn] = now


def _quiet(pgconn: pq.abc.PGconn) -> bool:
    """Idle, healthy, and nothing waiting on its socket."""
    if (pgconn.status != pq.ConnStatus.OK
            or pgconn.transaction_status != pq.TransactionStatus.IDLE):
        return False
    poller = select.poll()  # not select(): descriptors past 1024 are common here
    poller.register(pgconn.socket, select.POLLIN)
    return not poller.poll(0)
