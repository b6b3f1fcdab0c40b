"""The per-process state of the realtime transports, shared by their routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette

from api import realtime_auth
from api.realtime_auth import Principal
from api.realtime_hub import RealtimeHub
from api.realtime_limits import RealtimeLimits
from bridge import Bridge


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


class Realtime:
    """Per-process state of the transports: the bridge, the hub, the pool for queries."""

    def __init__(self, bridge: Bridge, pool: AsyncConnectionPool[Any],
                 config: RealtimeConfig) -> None:
        self.bridge = bridge
        self.pool = pool
        self.config = config
        self.hub = RealtimeHub(pool, config.limits.connections_per_user,
                               config.token_expiration_minutes)

    async def authenticate(self, authorization: str | None, ticket: str | None) -> Principal:
        return await realtime_auth.authenticate(
            self.pool, authorization, ticket,
            expiration_minutes=self.config.token_expiration_minutes)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        unregister = self.bridge.on_control(self.hub.on_control)
        try:
            await self.hub.run(task_status=task_status)
        finally:
            unregister()


def realtime_of(app: Starlette) -> Realtime:
    rt: Realtime | None = getattr(app.state, "realtime", None)
    if rt is None:
        raise RuntimeError("the realtime lifespan is not running")
    return rt
