"""Who may read a session, asked of PostgreSQL for many subscriptions at once.

A reconnect storm (a deploy, a network blip) brings thousands of subscriptions to the same
few sessions within seconds, and each used to cost its own query, whose Python side (a pool
checkout, psycopg's execute path) is paid again each time (the check was 15 % of the
server's CPU per accepted `/ws` connection in one profile). Here the checks asked while one
query runs share the next one: at most one query in flight and one gathering per process,
however many subscribe. A check's answer always comes from a query that started after it
was asked, never from an older state: a participant removed a moment before is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import anyio
import psycopg

# (session id, user id) → (visibility, deleted, participant); no row: no such session.
Key = tuple[uuid.UUID, uuid.UUID]
Row = tuple[str, bool, bool]
Fetch = Callable[[list[Key]], Awaitable[dict[Key, Row]]]


class _Batch:
    __slots__ = ("done", "error", "keys", "moved", "ok", "rows")

    def __init__(self) -> None:
        self.keys: set[Key] = set()
        self.done = anyio.Event()
        self.ok = False
        self.rows: dict[Key, Row] = {}
        self.error: psycopg.Error | None = None
        self.moved: _Batch | None = None  # where its keys went when it ended without answer


class SessionAccess:
    """``row(key)``: the session's row for that user, from a query shared with every check
    asked meanwhile. `fetch` answers a list of keys (api/realtime_auth.session_access_rows)."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._gathering: _Batch | None = None  # waits for the running query to finish
        self._running: _Batch | None = None

    async def row(self, key: Key) -> Row | None:
        mine = self._join(key)
        while True:
            if mine.done.is_set():
                if mine.ok:
                    return mine.rows.get(key)
                if mine.error is not None:
                    # Each waiter raises its own exception: one instance raised in many
                    # tasks would collect all their tracebacks.
                    raise psycopg.OperationalError(
                        f"session access check failed: {mine.error}") from mine.error
                # Its leader was cancelled before it had an answer: its keys, all at once,
                # went to the next query.
                assert mine.moved is not None
                mine = mine.moved
                continue
            running = self._running
            if running is None:
                return await self._lead(mine, key)
            await running.done.wait()

    def _join(self, key: Key) -> _Batch:
        batch = self._gathering
        if batch is None:
            batch = self._gathering = _Batch()
        batch.keys.add(key)
        return batch

    async def _lead(self, mine: _Batch, key: Key) -> Row | None:
        if self._gathering is mine:
            self._gathering = None
        self._running = mine
        try:
            mine.rows = await self._fetch(sorted(mine.keys))
            mine.ok = True
        except psycopg.Error as exc:
            mine.error = exc
            raise
        finally:
            self._running = None
            if not mine.ok and mine.error is None:
                mine.moved = self._gathering or _Batch()
                self._gathering = mine.moved
                mine.moved.keys |= mine.keys
            mine.done.set()
        return mine.rows.get(key)
