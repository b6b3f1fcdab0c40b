"""`Flag`: asyncio.Event's set / clear / is_set / wait, sized for one per connection.

An idle WebSocket connection parks on a few events (its subscription's wake-up, its
transport's "writable"), and an asyncio.Event carries a deque of waiters from birth: about
700 bytes each, most of an idle connection's budget. A Flag holds its waiters only while
someone waits. Like the rest of the bridge it runs on asyncio (uvicorn's loop, psycopg's
async connections); anyio cancellation reaches a waiter as it would an asyncio.Event's.
"""

from __future__ import annotations

import asyncio
from typing import Literal


class Flag:
    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> Literal[True]:
        """Return at once if set, else once `set` is called (True, as asyncio.Event does)."""
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        finally:
            waiters = self._waiters
            if waiters is not None and waiter in waiters:  # cancelled before set
                waiters.remove(waiter)
                if not waiters:
                    self._waiters = None
        return True
