"""The per-process state of the realtime transports, shared by their routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.abc
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette

from api import realtime_auth, tickets
from api.coalesce import Coalescer
from api.realtime_auth import Principal
from api.realtime_hub import RealtimeHub
from api.realtime_limits import RealtimeLimits
from api.session_access import session_access
from api.token_touch import TokenTouches
from bridge import Bridge, BridgeUnavailable


@dataclass(frozen=True)
class RealtimeConfig:
    limits: RealtimeLimits = field(default_factory=RealtimeLimits)
    ticket_ttl: int = 60  # seconds a ticket stays valid
    setup_timeout: float = 10.0  # subscribe + presence join, before the client is told
    send_timeout: float = 30.0  # a WebSocket send blocked this long drops the peer
    token_expiration_minutes: int | None = None  # Sanctum's global `expiration`

    @classmethod
    def from_env(cls, token_expiration_minutes: int | None = None) -> RealtimeConfig:
        return cls(limits=RealtimeLimits.from_env(),
                   token_expiration_minutes=token_expiration_minutes)


class PresenceLists:
    """``presence.list(topic)`` shared by the subscribers that ask for it at the same time.

    A thousand clients subscribing to one session at once would each run the same query
    right after their own join. Here each topic has its own coalescer (api/coalesce.py): a
    caller gets the result of a query that *started after it asked* (so it includes the
    caller's own join, which precedes the call), and every caller waiting while one query
    runs shares the next one: at most one in flight and one waiting per topic.
    """

    def __init__(self, fetch: Callable[[str], Awaitable[list[dict[str, Any]]]]) -> None:
        self._fetch = fetch
        self._topics: dict[str, Coalescer[str, list[dict[str, Any]]]] = {}

    async def get(self, topic: str) -> list[dict[str, Any]]:
        lists = self._topics.get(topic)
        if lists is None:
            lists = self._topics[topic] = Coalescer(
                partial(self._fetch_one, topic),
                lambda exc: BridgeUnavailable(f"presence list failed: {exc!r}"))
        try:
            result = await lists.get(topic)
        finally:
            if lists.idle and self._topics.get(topic) is lists:
                del self._topics[topic]
        assert result is not None, "_fetch_one answers its topic"
        return result

    async def _fetch_one(self, topic: str, _keys: list[str]) -> dict[str, list[dict[str, Any]]]:
        return {topic: await self._fetch(topic)}


class Realtime:
    """Per-process state of the transports: the bridge, the hub, the pool for queries."""

    def __init__(self, bridge: Bridge, pool: AsyncConnectionPool[Any],
                 config: RealtimeConfig, touches: TokenTouches) -> None:
        self.bridge = bridge
        self.pool = pool
        self.touches = touches
        self.config = config
        self.hub = RealtimeHub(pool, config.limits.connections_per_user,
                               config.token_expiration_minutes)
        self.presence_lists = PresenceLists(bridge.presence.list)
        self.session_access = session_access(partial(realtime_auth.session_access_rows, pool))
        self.ticket_releases = tickets.Releases(pool, config.ticket_ttl)

    async def authenticate(self, authorization: str | None, ticket: str | None, *,
                           hold: tickets.Hold | None = None) -> Principal:
        return await realtime_auth.authenticate(
            self.pool, authorization, ticket, touches=self.touches,
            expiration_minutes=self.config.token_expiration_minutes, hold=hold)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        unregister = self.bridge.on_control(self.hub.on_control)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.ticket_releases.run)
                await self.hub.run(task_status=task_status)
                tg.cancel_scope.cancel()  # the hub was shut down: the releases' last write
        finally:
            unregister()


def realtime_of(app: Starlette) -> Realtime:
    rt: Realtime | None = getattr(app.state, "realtime", None)
    if rt is None:
        raise RuntimeError("the realtime lifespan is not running")
    return rt
