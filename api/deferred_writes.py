"""Writes that need not hold anything up, noted where they arise and written together.

`DeferredWrites` keeps what is noted (by key: noting a key again replaces its value) and a
task that writes it every `interval` seconds, in one statement and one transaction that
does not wait for its commit to be flushed, and once more when the task is cancelled. It
serves writes whose loss in a crash costs little and whose delay costs nothing: Sanctum's
``last_used_at`` (api/token_touch.py), the release of an ended SSE stream's ticket
(api/tickets.py). Noted keys beyond `max_pending` are dropped (each user says what that
costs): said when it starts, and how many in all once a write succeeds. A write that fails
for want of the database (no connection in time, the server gone or refusing, a lock or
statement timeout) keeps what it carried for the next one — what was noted since wins —
and says so once per outage; one that fails otherwise (a bug, which trying again would not
mend) is logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import psycopg
from psycopg_pool import AsyncConnectionPool

from bridge import sqlfile
from bridge.finish import query_connection

log = logging.getLogger("courtside.api")

_SQL = sqlfile.load("api.sql", "auth.sql")

K = TypeVar("K")
V = TypeVar("V")

MAX_PENDING = 100_000
FINAL_TIMEOUT = 2.0


class DeferredWrites(Generic[K, V]):
    """`statement` run with `params(noted)` writes what was noted; `what` names it in logs
    ("last_used_at of %d tokens")."""

    def __init__(self, pool: AsyncConnectionPool[Any], statement: str,
                 params: Callable[[dict[K, V]], Mapping[str, Any]], what: str, *,
                 interval: float = 1.0, timeout: float = 10.0,
                 max_pending: int = MAX_PENDING) -> None:
        self._pool = pool
        self._statement = statement
        self._params = params
        self._what = what
        self._interval = interval
        self._timeout = timeout
        self._max_pending = max_pending
        self._pending: dict[K, V] = {}
        self._failing = False  # the last write failed for want of the database
        self._dropped = 0  # keys dropped for want of room since the last successful write
        self._dropping_said = False
        self.written = 0  # rows updated so far

    @property
    def pending(self) -> int:
        return len(self._pending)

    def note(self, key: K, value: V) -> None:
        """Written by the next `flush`."""
        if key in self._pending or len(self._pending) < self._max_pending:
            self._pending[key] = value
        else:
            self._dropped += 1

    async def flush(self, *, final: bool = False) -> int:
        """Write everything noted; the number of rows updated. Within the constructor's
        timeout, or FINAL_TIMEOUT for the `final` one."""
        if self._dropped and not self._dropping_said:
            self._dropping_said = True
            log.warning("dropping %s: more than %d pending", self._what % self._dropped,
                        self._max_pending)
        if not self._pending:
            return 0
        noted, self._pending = self._pending, {}
        try:
            # Shielded once it holds a connection: a stop that lands mid-write does not make
            # psycopg close the connection (bridge/finish.py); the write finishes first.
            async with query_connection(self._pool, FINAL_TIMEOUT if final else self._timeout
                                        ) as conn, conn.transaction():
                await conn.execute(_SQL.commit_without_waiting)
                cur = await conn.execute(self._statement, self._params(noted))
                written: int = cur.rowcount
        except (psycopg.OperationalError, TimeoutError) as exc:
            # PoolTimeout, PoolClosed, a lost or refused connection, QueryCanceled and
            # LockNotAvailable are OperationalErrors: the next write tries again.
            self._keep(noted)
            if not self._failing:
                self._failing = True
                log.warning("recording %s failed, to be tried again: %r",
                            self._what % len(noted), exc)
            return 0
        except psycopg.Error as exc:
            log.warning("recording %s failed: %r", self._what % len(noted), exc)
            return 0
        except BaseException:
            # Stopped while waiting for a connection: the last flush writes them.
            self._keep(noted)
            raise
        if self._failing:
            self._failing = False
            log.info("recording %s succeeded again", self._what % len(noted))
        if self._dropped:
            log.warning("dropped %s in all, for want of room", self._what % self._dropped)
            self._dropped, self._dropping_said = 0, False
        self.written += written
        return written

    def _keep(self, noted: dict[K, V]) -> None:
        """Noted again, unless noted since (newer), within `max_pending`."""
        room = max(0, self._max_pending - len(self._pending))
        kept = {k: v for k, v in noted.items() if k not in self._pending}
        if len(kept) > room:
            self._dropped += len(kept) - room
            kept = dict(list(kept.items())[:room])
        self._pending = {**kept, **self._pending}

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
