"""Presence on the bridge's pool: join/leave/typing/list, node heartbeat, reaper.

The registry lives in PostgreSQL (db/functions/presence.sql) so that every node sees every
user. A realtime connection's row stays alive while its node heartbeats; the node remembers
its own rows so that, if it was ever reaped (its heartbeat lost longer than the TTL — a long
database outage), it joins them again instead of leaving its users offline for good. Leaves
go through a queue the bridge runs (bridge/leaves.py), so that none is lost when its
connection stops waiting.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, LiteralString

import anyio
import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from bridge import sqlfile
from bridge.config import BridgeConfig
from bridge.errors import BridgeError, BridgeUnavailable
from bridge.finish import query_connection
from bridge.joins import JoinQueue
from bridge.leaves import Key, Leave, LeaveQueue

log = logging.getLogger("courtside.bridge")

_SQL = sqlfile.load("bridge.sql", "presence.sql")

# Any fixed 64-bit number: the advisory lock that lets one node at a time reap.
REAP_LOCK = 0x6373_7265_6170_6572  # "csreaper"

UserId = uuid.UUID | str


class Presence:
    def __init__(self, pool: AsyncConnectionPool, node_id: str, config: BridgeConfig) -> None:
        self._pool = pool
        self.node_id = node_id
        self._config = config
        self._local: dict[Key, None] = {}
        self._beating = False
        self._rejoin_wanted = anyio.Event()  # set: this node's connections to join again
        self.leaves = LeaveQueue(self._leave_batch, backoff_initial=config.backoff_initial,
                                 backoff_max=config.backoff_max)
        # A batch waits for a pooled connection, then queries, each within query_timeout
        # (bridge/finish.py): a caller cancelled meanwhile waits that long for its row.
        self.joins = JoinQueue(self._join_batch, finish_timeout=2 * config.query_timeout)

    @contextlib.asynccontextmanager
    async def _conn(self, seconds: float | None = None
                    ) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
        try:
            async with query_connection(self._pool, seconds or self._config.query_timeout
                                        ) as conn:
                yield conn
        except (psycopg.Error, TimeoutError) as exc:
            raise BridgeUnavailable(f"presence query failed: {exc!r}") from exc

    async def _one(self, query: LiteralString, params: dict[str, Any],
                   seconds: float | None = None) -> Any:
        async with self._conn(seconds) as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        return row[0] if row else None

    # --- the public calls --------------------------------------------------------------------

    async def join(self, topic: str, user_id: UserId, conn_id: str, *,
                   ttl: float | None = None) -> bool:
        """Join; True if the user just came online. ``ttl`` None: a connection of this node,
        joined in a batch with the others that join meanwhile (bridge/joins.py)."""
        key = (topic, str(user_id), conn_id)
        leaving = self.leaves.pending(key)
        if leaving is not None:
            with anyio.move_on_after(self._config.query_timeout):
                await leaving.done.wait()
        if ttl is not None:
            return bool(await self._one(_SQL.join, {"topic": topic, "user_id": key[1],
                                                    "conn_id": conn_id, "node_id": None,
                                                    "ttl": ttl}))
        became = await self.joins.join(key)
        self._local[key] = None
        return became

    async def leave(self, topic: str, user_id: UserId, conn_id: str) -> bool:
        """Leave; True if the user just went offline. The leave is made even if the caller
        stops waiting for it (BridgeUnavailable after query_timeout: it is still queued)."""
        return await self.left(self.leaving(topic, user_id, conn_id))

    def leaving(self, topic: str, user_id: UserId, conn_id: str) -> Leave:
        """Queue a leave, without waiting for it: from here on it is made whatever the
        caller does next (`left` waits for it)."""
        key = (topic, str(user_id), conn_id)
        self._local.pop(key, None)
        return self.leaves.submit(key)

    async def left(self, leave: Leave) -> bool:
        with anyio.move_on_after(self._config.query_timeout):
            await leave.done.wait()
        if not leave.done.is_set():
            raise BridgeUnavailable(f"presence leave queued for {self._config.query_timeout} s")
        if leave.went_offline is None:
            raise BridgeUnavailable("presence leave not made: the node stopped, or its batch "
                                    "failed on an error logged with it")
        return leave.went_offline

    async def _join_batch(self, keys: list[Key]) -> list[bool]:
        return await self._batch(_SQL.join_many, keys, "joins", node_id=self.node_id)

    async def _leave_batch(self, keys: list[Key]) -> list[bool]:
        return await self._batch(_SQL.leave_many, keys, "leaves")

    async def _batch(self, query: LiteralString, keys: list[Key], what: str,
                     **params: Any) -> list[bool]:
        """One batch of joins or leaves (bridge/joins.py, bridge/leaves.py), answered position
        by position. Only an outage is `BridgeUnavailable` (a leave's is tried again); any
        other error is a bug, raised as it is (and logged by the queue)."""
        params.update(topics=[k[0] for k in keys], user_ids=[k[1] for k in keys],
                      conn_ids=[k[2] for k in keys])
        try:
            async with query_connection(self._pool, self._config.query_timeout) as conn:
                cur = await conn.execute(query, params)
                rows = await cur.fetchall()
        except (psycopg.OperationalError, TimeoutError) as exc:
            raise BridgeUnavailable(f"presence {what} failed: {exc!r}") from exc
        answered = dict(rows)
        return [bool(answered.get(i + 1)) for i in range(len(keys))]

    async def typing(self, topic: str, user_id: UserId, is_typing: bool, *,
                     duration: float = 5.0, origin: str | None = None) -> datetime:
        at = await self._one(_SQL.typing, {"topic": topic, "user_id": str(user_id),
                                           "is_typing": is_typing, "duration": duration,
                                           "origin": origin})
        assert isinstance(at, datetime)
        return at

    async def list(self, topic: str) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            cur = await conn.execute(_SQL.list, {"topic": topic})
            rows = await cur.fetchall()
        return [orjson.loads(r[0]) for r in rows]

    # --- the node's own life -----------------------------------------------------------------

    async def heartbeat(self) -> bool:
        """Say this node is alive. True if the node had been reaped; its connections are then
        joined again (`run_rejoin`)."""
        params = {"node_id": self.node_id}
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(_SQL.node_known, params)
            row = await cur.fetchone()
            await conn.execute(_SQL.heartbeat, params)
        known = bool(row and row[0])
        reaped = self._beating and not known
        self._beating = True
        if reaped and self._local:
            log.warning("node %s was reaped; joining its %d connections again",
                        self.node_id, len(self._local))
            self._rejoin_wanted.set()
        return reaped

    async def run_rejoin(self) -> None:
        """Join this node's connections again each time a heartbeat finds it was reaped, and
        until every one is. Apart from the heartbeat: a re-join held up (a lock, a slow
        database) must not stop the heartbeats, or the node is reaped again meanwhile."""
        while True:
            await self._rejoin_wanted.wait()
            self._rejoin_wanted = anyio.Event()
            if not await self._join_again():
                await anyio.sleep(self._config.heartbeat_interval)
                self._rejoin_wanted.set()

    async def _join_again(self) -> bool:
        """Join every connection of this node again, all at once (in the joins' batches).
        False if some could not be."""
        failed: list[BridgeError] = []

        async def again(key: Key) -> None:
            if key not in self._local:
                return  # gone since: its leave has nothing to remove
            try:
                await self.joins.join(key)
                if key not in self._local:
                    # Its connection left while this join waited: that leave may have run
                    # first, and this join then wrote a row nobody would remove.
                    self.leaves.submit(key)
            except BridgeError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            for key in list(self._local):
                tg.start_soon(again, key)
        if failed:
            log.warning("node %s: %d connections not joined again (%s); trying again",
                        self.node_id, len(failed), failed[0])
        return not failed

    async def reap(self) -> int:
        gone = await self._one(_SQL.reap, {"lock": REAP_LOCK, "ttl": self._config.node_ttl})
        return int(gone or 0)

    async def leave_node(self, seconds: float | None = None) -> int:
        """Within `seconds` (default query_timeout): a caller's own deadline does not reach
        into the shielded query (bridge/finish.py)."""
        self._local.clear()
        self._beating = False
        gone = await self._one(_SQL.node_leave, {"node_id": self.node_id}, seconds)
        return int(gone or 0)

    async def run_heartbeat(self) -> None:
        while True:
            await anyio.sleep(self._config.heartbeat_interval)
            try:
                await self.heartbeat()
            except BridgeUnavailable as exc:
                log.warning("node heartbeat failed: %s", exc)

    async def run_reaper(self) -> None:
        while True:
            await anyio.sleep(self._config.reap_interval)
            try:
                gone = await self.reap()
            except BridgeUnavailable as exc:
                log.warning("presence reaper failed: %s", exc)
            else:
                if gone:
                    log.info("reaper: %d users went offline", gone)
