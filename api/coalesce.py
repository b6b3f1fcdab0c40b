"""Concurrent reads of the same kind, coalesced into shared queries.

``Coalescer.get(key)`` answers from a `fetch(keys)` that started after the key was asked,
shared with every key asked while the previous fetch ran: at most one fetch in flight and
one gathering, however many callers. So a caller never gets an answer older than its
request (a presence list that includes its own join, an access check that sees a removal
committed before it), and a burst of callers costs two queries, not one each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K")
V = TypeVar("V")


class _Batch(Generic[K, V]):
    __slots__ = ("done", "error", "keys", "moved", "ok", "rows")

    def __init__(self) -> None:
        self.keys: set[K] = set()
        self.done = anyio.Event()
        self.ok = False
        self.rows: dict[K, V] = {}
        self.error: Exception | None = None
        self.moved: _Batch[K, V] | None = None  # where its keys went when it ended unanswered


class Coalescer(Generic[K, V]):
    """`fetch` answers a list of keys (a key it leaves out: ``get`` returns None). A failed
    fetch fails each of its callers: the one that ran it with the fetch's own exception,
    the others each with a new one from `failed` (one instance raised in many tasks would
    collect all their tracebacks). A caller cancelled while it ran the fetch hands all its
    batch's keys to the next one at once."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]],
                 failed: Callable[[Exception], Exception]) -> None:
        self._fetch = fetch
        self._failed = failed
        self._gathering: _Batch[K, V] | None = None  # waits for the running fetch to end
        self._running: _Batch[K, V] | None = None

    @property
    def idle(self) -> bool:
        return self._gathering is None and self._running is None

    async def get(self, key: K) -> V | None:
        mine = self._next()
        mine.keys.add(key)
        while True:
            if mine.done.is_set():
                if mine.ok:
                    return mine.rows.get(key)
                if mine.error is not None:
                    raise self._failed(mine.error) from mine.error
                assert mine.moved is not None
                mine = mine.moved
                continue
            running = self._running
            if running is None:
                return await self._lead(mine, key)
            await running.done.wait()

    def _next(self) -> _Batch[K, V]:
        """The batch gathering for the next fetch."""
        batch = self._gathering
        if batch is None:
            batch = self._gathering = _Batch()
        return batch

    async def _lead(self, mine: _Batch[K, V], key: K) -> V | None:
        if self._gathering is mine:
            self._gathering = None
        self._running = mine
        try:
            mine.rows = await self._fetch(list(mine.keys))
            mine.ok = True
        except Exception as exc:
            mine.error = exc
            raise
        finally:
            self._running = None
            if not mine.ok and mine.error is None:
                mine.moved = self._next()
                mine.moved.keys |= mine.keys
            mine.done.set()
        return mine.rows.get(key)

