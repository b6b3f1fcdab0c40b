"""The native WebSocket protocol over a real socket: presence, typing, ping, and every limit
a client controls, each with its own error or close code."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api.realtime_limits import RealtimeLimits
from tests import factories
from tests.test_realtime_support import Ws, build_app, running, sse_client, ws_client, ws_url

LIMITS = RealtimeLimits(max_frame_bytes=512, max_subscriptions=3, messages_per_second=5,
                        message_burst=10, close_after_rejected=5, typing_per_second=1,
                        typing_burst=2, typing_ttl=0.6, typing_refresh=0.3,
                        connections_per_user=2)


@pytest.fixture
def server(db: str) -> Iterator[str]:
    with running(build_app(db, LIMITS)) as base:
        yield base


async def close_code(ws: Ws) -> tuple[int, str]:
    with anyio.fail_after(5), pytest.raises(ConnectionClosed) as info:
        await ws.drain()
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


@pytest.mark.anyio
async def test_presence_online_offline_and_list(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    a, b = world.participants
    async with ws_client(server, factories.token(db, a)) as wa:
        first = await wa.subscribe(world.topic)
        assert [p["id"] for p in first["presence"]] == [str(a)]
        assert set(first["presence"][0]) >= {"id", "firstname", "lastname", "avatar",
                                             "isTyping", "lastSeen"}
        async with ws_client(server, factories.token(db, b)) as wb:
            second = await wb.subscribe(world.topic)
            assert [p["id"] for p in second["presence"]] == [str(a), str(b)]
            online = await wa.expect(lambda f: f.get("event") == "user.online"
                                     and f["data"]["userId"] == str(b))
            assert online["seq"] is None
            assert online["data"]["user"]["id"] == str(b)
            # REST sees the same list.
            async with httpx.AsyncClient(base_url=server) as http:
                r = await http.get(f"/api/sessions/{world.session_id}/presence/users",
                                   headers={"Authorization": f"Bearer {factories.token(db, a)}"})
                assert [u["id"] for u in r.json()["data"]] == [str(a), str(b)]
            await wb.send({"type": "unsubscribe", "topic": world.topic})
            assert (await wb.expect(lambda f: f["type"] == "unsubscribed"))["topic"] == world.topic
            offline = await wa.expect(lambda f: f.get("event") == "user.offline")
            assert offline["data"]["userId"] == str(b)
            assert (await wb.subscribe(world.topic))["type"] == "subscribed"
            await wa.expect(lambda f: f.get("event") == "user.online")
        # Closing the socket leaves too.
        offline = await wa.expect(lambda f: f.get("event") == "user.offline")
        assert offline["data"]["userId"] == str(b)


@pytest.mark.anyio
async def test_sse_subscriber_is_present(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    a, b = world.participants
    async with ws_client(server, factories.token(db, a)) as wa:
        await wa.subscribe(world.topic)
        async with sse_client(server, world.session_id, factories.token(db, b)):
            await wa.expect(lambda f: f.get("event") == "user.online"
                            and f["data"]["userId"] == str(b))
        await wa.expect(lambda f: f.get("event") == "user.offline"
                        and f["data"]["userId"] == str(b))


@pytest.mark.anyio
async def test_typing_is_relayed_limited_and_expires(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    a, b = world.participants
    async with ws_client(server, factories.token(db, a)) as wa, \
            ws_client(server, factories.token(db, b)) as wb:
        await wa.subscribe(world.topic)
        await wb.subscribe(world.topic)
        # Not subscribed → refused.
        await wa.send({"type": "typing", "topic": f"session:{world.outsiders[0]}",
                       "isTyping": True})
        assert (await wa.expect(lambda f: f["type"] == "error"))["code"] == "NOT_SUBSCRIBED"

        await wa.send({"type": "typing", "topic": world.topic, "isTyping": True})
        typing = await wb.expect(lambda f: f.get("event") == "user.typing")
        assert typing["seq"] is None
        assert typing["data"]["userId"] == str(a)
        assert typing["data"]["isTyping"] is True
        # Nobody types to themselves (sender exclusion applies to ephemeral events too),
        # and without a renewal the indicator expires on its own (typing_ttl 0.6 s).
        expired = await wb.expect(lambda f: f.get("event") == "user.typing", wait=3)
        assert expired["data"]["isTyping"] is False
        await wa.send({"type": "ping"})
        await wa.expect(lambda f: f["type"] == "pong")
        assert [f for f in wa.pending if f.get("event") == "user.typing"] == []

        # Flapping faster than 1/s (burst 2) is refused with its own code.
        for value in (True, False, True, False):
            await wa.send({"type": "typing", "topic": world.topic, "isTyping": value})
        await wa.send({"type": "ping"})
        await wa.expect(lambda f: f["type"] == "pong")
        codes = [f["code"] for f in wa.pending if f["type"] == "error"]
        assert "TYPING_RATE_LIMITED" in codes


@pytest.mark.anyio
async def test_ping_pong_and_bad_frames(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    async with ws_client(server, factories.token(db, world.owner)) as ws:
        await ws.send({"type": "ping"})
        assert await ws.recv() == {"type": "pong"}
        await ws.conn.send("{not json")
        error = await ws.recv()
        assert error["code"] == "INVALID_FRAME"
        await ws.send({"type": "subscribe", "topic": "lobby"})
        assert (await ws.recv())["code"] == "INVALID_TOPIC"
        await ws.send({"type": "unsubscribe", "topic": world.topic})
        assert (await ws.recv())["code"] == "NOT_SUBSCRIBED"
        assert (await ws.subscribe(world.topic))["type"] == "subscribed"
        again = await ws.subscribe(world.topic)
        assert again["code"] == "ALREADY_SUBSCRIBED"


@pytest.mark.anyio
async def test_subscription_limit(db: str, server: str) -> None:
    sessions = [factories.world(db, participants=1) for _ in range(4)]
    user = sessions[0].owner
    with psycopg.connect(db, autocommit=True) as conn:
        for w in sessions[1:]:
            factories.join(conn, w.session_id, user)
    async with ws_client(server, factories.token(db, user)) as ws:
        for w in sessions[:3]:
            assert (await ws.subscribe(w.topic))["type"] == "subscribed"
        over = await ws.subscribe(sessions[3].topic)
        assert over["code"] == "TOO_MANY_SUBSCRIPTIONS"
        await ws.send({"type": "unsubscribe", "topic": sessions[0].topic})
        await ws.expect(lambda f: f["type"] == "unsubscribed")
        assert (await ws.subscribe(sessions[3].topic))["type"] == "subscribed"


@pytest.mark.anyio
async def test_oversized_frame_closes_1009(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    async with ws_client(server, factories.token(db, world.owner)) as ws:
        await ws.send({"type": "ping", "pad": "x" * 600})
        assert await close_code(ws) == (1009, "frames are limited to 512 bytes")


@pytest.mark.anyio
async def test_binary_frame_closes_1003(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    async with ws_client(server, factories.token(db, world.owner)) as ws:
        await ws.conn.send(b"\x00\x01")
        code, _ = await close_code(ws)
        assert code == 1003


@pytest.mark.anyio
async def test_flooding_is_warned_then_closed(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    async with ws_client(server, factories.token(db, world.owner)) as ws:
        for _ in range(40):
            try:
                await ws.send({"type": "ping"})
            except ConnectionClosed:
                break
        code, reason = await close_code(ws)
        assert (code, reason) == (4008, "message rate exceeded")
        # Told once, then cut: 10 pongs (the burst), one RATE_LIMITED, nothing else.
        assert ws.pending[:10] == [{"type": "pong"}] * 10
        assert [f.get("code") for f in ws.pending[10:]] == ["RATE_LIMITED"]
    async with ws_client(server, factories.token(db, world.owner)) as ws:
        for _ in range(12):
            await ws.send({"type": "ping"})
        replies = [await ws.recv() for _ in range(11)]
        assert replies[:10] == [{"type": "pong"}] * 10
        assert replies[10]["code"] == "RATE_LIMITED"


@pytest.mark.anyio
async def test_connections_per_user(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    async with ws_client(server, token), sse_client(server, world.session_id, token):
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(server),
                               additional_headers={"Authorization": f"Bearer {token}"}):
                pass
        assert info.value.response.status_code == 429
        assert b"TOO_MANY_CONNECTIONS" in info.value.response.body
        async with sse_client(server, world.session_id, token) as sse:
            assert sse.response.status_code == 429
    # Slots are given back when connections end.
    async with ws_client(server, token) as ws:
        assert (await ws.subscribe(world.topic))["type"] == "subscribed"
