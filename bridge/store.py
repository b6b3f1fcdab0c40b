"""The bridge's reads of the event log, on the pool; driver errors become BridgeUnavailable."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from bridge import sqlfile
from bridge.errors import BridgeUnavailable
from bridge.events import Event
from bridge.finish import query_connection
from bridge.sequencer import LogRead

_SQL = sqlfile.load("bridge.sql", "events.sql")

# Any fixed 64-bit number: the advisory lock that lets one node at a time prune.
PRUNE_LOCK = 0x6373_7072_756E_6531  # "csprune1"


def row_event(topic: str, seq: int, type_: str, origin: str | None, payload: str) -> Event:
    # jsonb's text form has spaces after ':' and ','; re-dumping gives the same bytes that the
    # NOTIFY path gives for the same event.
    parsed = orjson.loads(payload)
    return Event(topic, seq, type_, origin, orjson.dumps(parsed), parsed)


class Store:
    def __init__(self, pool: AsyncConnectionPool, query_timeout: float) -> None:
        self._pool = pool
        self._timeout = query_timeout

    @contextlib.asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[tuple[Any, ...]]]:
        try:
            async with query_connection(self._pool, self._timeout) as conn, \
                    conn.cursor() as cur:
                yield cur
        except (psycopg.Error, TimeoutError) as exc:
            raise BridgeUnavailable(f"event log read failed: {exc!r}") from exc

    async def catch_up(self, heads: Sequence[tuple[str, int | None]], page: int,
                       epochs: Sequence[int]) -> dict[str, LogRead]:
        """For each (topic, head): a page of events after head, and the topic's counter."""
        topics = [t for t, _ in heads]
        async with self._cursor() as cur:
            await cur.execute(_SQL.catch_up, {
                "topics": topics, "heads": [h for _, h in heads], "page": page})
            rows = await cur.fetchall()
        found: dict[str, tuple[int, list[Event]]] = {}
        for topic, last_seq, seq, type_, origin, payload in rows:
            entry = found.setdefault(topic, (int(last_seq), []))
            if seq is not None:
                entry[1].append(row_event(topic, int(seq), type_, origin, payload))
        out: dict[str, LogRead] = {}
        for (topic, _), epoch in zip(heads, epochs, strict=True):
            last_seq, events = found.get(topic, (0, []))
            out[topic] = LogRead(events, last_seq, len(events) >= page, epoch)
        return out

    async def backlog(self, topic: str, after: int, upto: int, page: int) -> list[Event]:
        async with self._cursor() as cur:
            await cur.execute(_SQL.backlog,
                              {"topic": topic, "after": after, "upto": upto, "page": page})
            rows = await cur.fetchall()
        return [row_event(topic, int(seq), type_, origin, payload)
                for seq, type_, origin, payload in rows]

    async def last_seq(self, topic: str) -> int:
        async with self._cursor() as cur:
            await cur.execute(_SQL.last_seq, {"topic": topic})
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def prune(self, keep_seconds: float) -> int:
        async with self._cursor() as cur:
            await cur.execute(_SQL.prune, {"lock": PRUNE_LOCK, "keep": keep_seconds})
            row = await cur.fetchone()
        return int(row[0]) if row else 0
