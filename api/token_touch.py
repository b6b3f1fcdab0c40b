"""Sanctum's ``last_used_at``, written off the request path.

Sanctum records when a token was last used. Written where the request is authenticated, it
cost a stale token's request one more round trip and one durable commit, and held that
request up behind anything holding the token's row. It cost most when it mattered most: a
reconnect storm after a deploy, where every idle client's token is stale at once (measured,
3,000 distinct clients: +350-400 µs of server CPU per accepted connection, and the whole
storm ~20 % longer).

So a request only notes that its token is stale; `TokenTouches` writes the noted tokens
together, at most once per `interval`, in one statement and one transaction that does not
wait for its commit to be flushed (the value is a timestamp: losing the last second of them
in a crash costs nothing). What is noted is written at the latest when the app stops. A write
that fails is logged and not tried again: the token's next request notes it anew.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
import psycopg
from psycopg_pool import AsyncConnectionPool

from bridge import sqlfile
from bridge.finish import query_connection

log = logging.getLogger("courtside.api")

_SQL = sqlfile.load("api.sql", "auth.sql")

# A token's last_used_at is written at most once per this many seconds, whatever its rate.
TOUCH_EVERY_SECONDS = 60
# Noted tokens beyond this many wait for a later write (their next stale request notes them).
MAX_PENDING = 100_000
FINAL_TIMEOUT = 2.0


class TokenTouches:
    """The tokens whose ``last_used_at`` is to be written, and the task that writes them."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, interval: float = 1.0,
                 timeout: float = 10.0) -> None:
        self._pool = pool
        self._interval = interval
        self._timeout = timeout
        self._pending: set[int] = set()
        self.written = 0  # rows updated so far

    @property
    def pending(self) -> int:
        return len(self._pending)

    def touch(self, token_id: int) -> None:
        """Note that a token was used; written by the next `flush`."""
        if len(self._pending) < MAX_PENDING:
            self._pending.add(token_id)

    async def flush(self, *, final: bool = False) -> int:
        """Write every noted token (those still stale); the number of rows updated. Within
        the constructor's timeout, or FINAL_TIMEOUT for the `final` one."""
        if not self._pending:
            return 0
        # Sorted: two workers updating overlapping sets take the row locks in one order.
        ids = sorted(self._pending)
        self._pending.clear()
        try:
            # Shielded once it holds a connection: a stop that lands mid-write does not make
            # psycopg close the connection (bridge/finish.py); the write finishes first.
            async with query_connection(self._pool, FINAL_TIMEOUT if final else self._timeout
                                        ) as conn, conn.transaction():
                await conn.execute(_SQL.commit_without_waiting)
                cur = await conn.execute(_SQL.touch_tokens,
                                         {"ids": ids, "touch_every": TOUCH_EVERY_SECONDS})
                written: int = cur.rowcount
        except (psycopg.Error, TimeoutError) as exc:  # PoolTimeout, PoolClosed among them
            log.warning("recording last_used_at of %d tokens failed: %r", len(ids), exc)
            return 0
        except BaseException:
            # Stopped while waiting for a connection: the last flush writes them. (Stopped
            # after writing them: that flush finds them recent and leaves them.)
            self._pending.update(ids)
            raise
        self.written += written
        return written

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Write what is noted every `interval` seconds, and once more when cancelled
        (within `FINAL_TIMEOUT`: a database that is away must not hold the app's stop up)."""
        task_status.started()
        try:
            while True:
                await anyio.sleep(self._interval)
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush(final=True)
