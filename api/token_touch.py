"""Sanctum's ``last_used_at``, written off the request path.

Sanctum records when a token was last used. Written where the request is authenticated, it
cost a stale token's request one more round trip and one durable commit, and held that
request up behind anything holding the token's row. It cost most when it mattered most: a
reconnect storm after a deploy, where every idle client's token is stale at once (measured,
3,000 distinct clients: +350-400 µs of server CPU per accepted connection, and the whole
storm ~20 % longer).

So a request only notes that its token is stale; `TokenTouches` writes the noted tokens
together, at most once per `interval`, in one statement and one transaction that does not
wait for its commit to be flushed (api/deferred_writes.py; the value is a timestamp: losing
the last second of them in a crash costs nothing). What is noted is written at the latest
when the app stops. A write that fails for want of the database is tried again with the
next; tokens noted beyond MAX_PENDING are dropped: the token's next request notes it anew.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from api.deferred_writes import FINAL_TIMEOUT, MAX_PENDING, DeferredWrites
from bridge import sqlfile

__all__ = ["FINAL_TIMEOUT", "MAX_PENDING", "TOUCH_EVERY_SECONDS", "TokenTouches"]

_SQL = sqlfile.load("api.sql", "auth.sql")

# A token's last_used_at is written at most once per this many seconds, whatever its rate.
TOUCH_EVERY_SECONDS = 60


def _params(noted: dict[int, None]) -> dict[str, Any]:
    # Sorted: two workers updating overlapping sets take the row locks in one order.
    return {"ids": sorted(noted), "touch_every": TOUCH_EVERY_SECONDS}


class TokenTouches(DeferredWrites[int, None]):
    """The tokens whose ``last_used_at`` is to be written, and the task that writes them."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, interval: float = 1.0,
                 timeout: float = 10.0) -> None:
        super().__init__(pool, _SQL.touch_tokens, _params, "last_used_at of %d tokens",
                         interval=interval, timeout=timeout)

    def touch(self, token_id: int) -> None:
        """Note that a token was used (those still stale get written)."""
        self.note(token_id, None)
