"""Helpers for the Pusher protocol tests (no tests in here): the app with the Pusher routes,
and a thin Pusher protocol v7 client over a real `websockets` connection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
from starlette.applications import Starlette
from websockets.asyncio.client import connect

from api.app import ApiConfig, create_app
from api.pusher import pusher_routes
from api.pusher_protocol import PusherConfig
from api.realtime import RealtimeConfig, realtime_lifespan, realtime_routes
from tests.test_realtime_support import FAST_BRIDGE, JsonFrames

PUSHER = PusherConfig(key="courtside-test-key", secret="courtside-test-secret", app_id="4242")


def build_pusher_app(dsn: str, config: PusherConfig = PUSHER, **rt: Any) -> Starlette:
    return create_app(
        ApiConfig(database_url=dsn, pool_max_size=5, comments_per_minute=1000),
        extra_routes=realtime_routes() + pusher_routes(config),
        extra_lifespan=realtime_lifespan(dsn, None, config=RealtimeConfig(**rt),
                                         bridge_config=FAST_BRIDGE),
    )


def app_url(base: str, key: str = PUSHER.key, query: str = "protocol=7&client=js&version=8.6.0"
            ) -> str:
    return f"{base.replace('http://', 'ws://')}/app/{key}?{query}"


class PusherClient(JsonFrames):
    async def send(self, event: str, data: Any, channel: str | None = None) -> None:
        message: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            message["channel"] = channel
        await self.conn.send(orjson.dumps(message).decode())

    async def event(self, channel: str, name: str, wait: float = 5.0) -> dict[str, Any]:
        return await self.expect(lambda f: f.get("channel") == channel and f["event"] == name,
                                 wait)

    async def subscribe(self, channel: str, auth: dict[str, Any] | None = None
                        ) -> dict[str, Any]:
        """`pusher:subscribe`; the answer: subscription_succeeded or a pusher:error."""
        data: dict[str, Any] = {"channel": channel}
        if auth is not None:
            data.update(auth)
        await self.send("pusher:subscribe", data)
        return await self.expect(lambda f: f.get("channel") == channel and f["event"] in (
            "pusher_internal:subscription_succeeded", "pusher:error"))

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Everything received during `seconds` (the server must stay silent in some tests)."""
        got: list[dict[str, Any]] = list(self.pending)
        self.pending.clear()
        with anyio.move_on_after(seconds):
            while True:
                got.append(orjson.loads(await self.conn.recv()))
        return got


@contextlib.asynccontextmanager
async def pusher_client(base: str, token: str | None = None, key: str = PUSHER.key
                        ) -> AsyncIterator[PusherClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(app_url(base, key), additional_headers=headers, open_timeout=10,
                       close_timeout=2) as conn:
        client = PusherClient(conn)
        first = await client.recv()
        assert first["event"] == "pusher:connection_established", first
        assert isinstance(first["data"], str)
        client.socket_id = orjson.loads(first["data"])["socket_id"]
        yield client


async def broadcasting_auth(base: str, token: str | None, socket_id: str, channel: str,
                            *, json_body: bool = False, client_timeout: float = 10
                            ) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"socket_id": socket_id, "channel_name": channel}
    async with httpx.AsyncClient(base_url=base, timeout=client_timeout) as http:
        if json_body:
            return await http.post("/broadcasting/auth", json=body, headers=headers)
        return await http.post("/broadcasting/auth", data=body, headers=headers)


async def authorized(base: str, token: str, client: PusherClient, channel: str
                     ) -> dict[str, Any]:
    """Sign at /broadcasting/auth as Laravel Echo does, then subscribe."""
    r = await broadcasting_auth(base, token, client.socket_id, channel)
    assert r.status_code == 200, r.text
    return await client.subscribe(channel, r.json())
