"""Who may connect and subscribe: bearer tokens, single-use tickets, participants, public
sessions — on the WebSocket, on SSE and for tickets."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests import factories
from tests.test_realtime_support import (
    build_app,
    rest,
    running,
    sql,
    sql_comment,
    sse_client,
    ws_client,
    ws_url,
)


async def handshake_status(url: str, headers: dict[str, str] | None = None
                           ) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=headers, open_timeout=5):
            pass
    response = info.value.response
    return response.status_code, orjson.loads(response.body or b"{}")


@pytest.mark.anyio
async def test_handshake_needs_a_valid_token(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    for headers in [None, {"Authorization": "Bearer nope"},
                    {"Authorization": "Bearer 999999|abcdef"}, {"Authorization": "Basic x"}]:
        status, body = await handshake_status(ws_url(server), headers)
        assert status == 401
        assert body["error"]["code"] == "UNAUTHENTICATED"
    expired = factories.token(db, world.owner, expires_in_seconds=-5)
    status, _ = await handshake_status(ws_url(server), {"Authorization": f"Bearer {expired}"})
    assert status == 401
    status, _ = await handshake_status(ws_url(server, ticket="rt_forged"))
    assert status == 401
    async with sse_client(server, world.session_id) as sse:
        assert sse.response.status_code == 401
        await sse.response.aread()
        assert sse.response.json()["error"]["code"] == "UNAUTHENTICATED"


@pytest.mark.anyio
async def test_non_participant_refused_everywhere(db: str, server: str) -> None:
    world = factories.world(db, participants=2, outsiders=1)
    (outsider,) = world.outsiders
    outsider_token = factories.token(db, outsider)
    member_token = factories.token(db, world.participants[1])

    async with sse_client(server, world.session_id, outsider_token) as sse:
        assert sse.response.status_code == 403
        await sse.response.aread()
        assert sse.response.json()["error"]["code"] == "NOT_PARTICIPANT"

    async with rest(server, outsider_token) as api:
        r = await api.http.post("/api/realtime/tickets", headers=api.headers)
        assert r.status_code == 201
        ticket = r.json()["data"]["ticket"]
    async with sse_client(server, world.session_id, ticket=ticket) as sse:
        assert sse.response.status_code == 403

    async with ws_client(server, outsider_token) as spy, ws_client(server, member_token) as ws:
        refused = await spy.subscribe(world.topic)
        assert refused["type"] == "error"
        assert refused["code"] == "NOT_PARTICIPANT"
        assert refused["message"] == "Vous devez être participant de cette session"
        # Other people's user topics are not subscribable either.
        forbidden = await spy.subscribe(f"user:{world.owner}")
        assert forbidden["code"] == "FORBIDDEN"
        assert (await ws.subscribe(world.topic))["type"] == "subscribed"
        sql_comment(db, world.session_id, world.owner, "members only")
        await ws.events(world.topic, 1)  # delivered: the event did go out
        await spy.send({"type": "ping"})
        await spy.expect(lambda f: f["type"] == "pong")
        assert [f for f in spy.pending if f["type"] == "event"] == []
        # Retrying does not help, and the failed attempt left no subscription behind.
        assert (await spy.subscribe(world.topic))["code"] == "NOT_PARTICIPANT"
        unknown = await spy.subscribe(f"session:{world.outsiders[0]}")
        assert unknown["code"] == "SESSION_NOT_FOUND"


@pytest.mark.anyio
async def test_public_sessions_are_readable_by_any_user(db: str, server: str) -> None:
    world = factories.world(db, participants=1, outsiders=1, visibility="public")
    token = factories.token(db, world.outsiders[0])
    async with ws_client(server, token) as ws, \
            sse_client(server, world.session_id, token) as sse:
        assert (await ws.subscribe(world.topic))["type"] == "subscribed"
        sql_comment(db, world.session_id, world.owner, "for everyone")
        (frame,) = await ws.events(world.topic, 1)
        (event,) = await sse.durable(1)
    assert frame["data"]["comment"]["content"] == "for everyone"
    assert event.json() == frame["data"]


@pytest.mark.anyio
async def test_deleted_session_is_not_found(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    sql(db, "UPDATE sport_sessions SET deleted_at = now() WHERE id = %s", (world.session_id,))
    async with ws_client(server, token) as ws:
        assert (await ws.subscribe(world.topic))["code"] == "SESSION_NOT_FOUND"
    async with sse_client(server, world.session_id, token) as sse:
        assert sse.response.status_code == 404


@pytest.mark.anyio
async def test_tickets_are_single_use_and_short_lived(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    async with httpx.AsyncClient(base_url=server) as http:
        assert (await http.post("/api/realtime/tickets")).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        issued = []
        for _ in range(3):
            r = await http.post("/api/realtime/tickets", headers=auth)
            assert r.status_code == 201, r.text
            assert r.headers["cache-control"] == "no-store"
            data = r.json()["data"]
            assert data["expiresIn"] == 60
            assert data["expiresAt"].endswith("Z")
            issued.append(data["ticket"])
        # A ticket cannot buy a ticket.
        r = await http.post(f"/api/realtime/tickets?ticket={issued[0]}")
        assert r.status_code == 401

    ws_ticket, sse_ticket, stale_ticket = issued
    async with ws_client(server, ticket=ws_ticket) as ws:
        assert (await ws.subscribe(world.topic))["type"] == "subscribed"
    status, _ = await handshake_status(ws_url(server, ticket=ws_ticket))
    assert status == 401  # used up

    async with sse_client(server, world.session_id, ticket=sse_ticket) as sse:
        assert sse.response.status_code == 200
        # Held by its stream (tests/test_sse_tickets.py), and never good for a WebSocket.
        status, _ = await handshake_status(ws_url(server, ticket=sse_ticket))
        assert status == 401

    sql(db, "UPDATE realtime.tickets SET expires_at = now() - interval '1 second'")
    status, _ = await handshake_status(ws_url(server, ticket=stale_ticket))
    assert status == 401


@pytest.mark.anyio
async def test_ticket_dies_with_its_token(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    async with httpx.AsyncClient(base_url=server) as http:
        r = await http.post("/api/realtime/tickets",
                            headers={"Authorization": f"Bearer {token}"})
        ticket = r.json()["data"]["ticket"]
    sql(db, "DELETE FROM personal_access_tokens WHERE id = %s", (int(token.split("|")[0]),))
    status, _ = await handshake_status(ws_url(server, ticket=ticket))
    assert status == 401


@pytest.mark.anyio
async def test_outstanding_tickets_are_limited(db: str) -> None:
    from api.realtime_limits import RealtimeLimits

    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    with running(build_app(db, RealtimeLimits(tickets_per_token=2))) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            auth = {"Authorization": f"Bearer {token}"}
            codes = [(await http.post("/api/realtime/tickets", headers=auth)).status_code
                     for _ in range(3)]
            assert codes == [201, 201, 429]


@pytest.mark.anyio
async def test_mentioning_an_outsider_by_sql_leaks_nothing(db: str, server: str) -> None:
    world = factories.world(db, participants=2, outsiders=1)
    (outsider,) = world.outsiders
    member = world.participants[1]
    async with ws_client(server, factories.token(db, outsider)) as spy, \
            ws_client(server, factories.token(db, member)) as ws:
        assert (await spy.subscribe(f"user:{outsider}"))["type"] == "subscribed"
        assert (await ws.subscribe(f"user:{member}"))["type"] == "subscribed"
        # The REST API refuses such a mention; a plain SQL writer does not ask.
        comment_id = sql_comment(db, world.session_id, world.owner, "secret plans")
        sql(db, "INSERT INTO sport_session_comment_mentions (comment_id, mentioned_user_id)"
                " VALUES (%s, %s), (%s, %s)", (comment_id, outsider, comment_id, member))
        (mention,) = await ws.events(f"user:{member}", 1)
        assert mention["data"]["comment"]["content"] == "secret plans"
        await spy.send({"type": "ping"})
        await spy.expect(lambda f: f["type"] == "pong")
        assert [f for f in spy.pending if f["type"] == "event"] == []
        # A resume replays the log: still nothing.
        await spy.send({"type": "unsubscribe", "topic": f"user:{outsider}"})
        await spy.expect(lambda f: f["type"] == "unsubscribed")
        assert (await spy.subscribe(f"user:{outsider}", since=0))["type"] == "subscribed"
        await spy.send({"type": "ping"})
        await spy.expect(lambda f: f["type"] == "pong")
        assert [f for f in spy.pending if f["type"] == "event"] == []
