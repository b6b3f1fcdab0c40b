"""A browser's SSE stream opened with a ticket (api/tickets.py): its EventSource reconnects
by itself to the same URL with Last-Event-ID, so the ticket must open that stream again —
after the client dropped, after a restart, on another node — and nothing else: not another
session's stream, not a WebSocket, not once expired or revoked, and one connection at a
time. (tests/test_browser.py runs the same with a real browser's EventSource.)"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api import tickets
from api.realtime_auth import Principal
from api.realtime_hub import RealtimeHub
from api.realtime_protocol import ErrorCode
from api.tickets import ticket_hash
from bridge import Control
from tests import factories
from tests.bridge_helpers import wait_for
from tests.test_realtime_access import handshake_status
from tests.test_realtime_support import (
    build_app,
    running,
    sql,
    sql_comment,
    sse_client,
    ws_url,
)


async def new_ticket(base: str, token: str) -> str:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/api/realtime/tickets",
                            headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    ticket: str = r.json()["data"]["ticket"]
    return ticket


async def ticket_of_a_participant(db: str, base: str) -> tuple[factories.World, str, str]:
    """A session with one participant, a token of theirs, and a ticket of that token."""
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    return world, token, await new_ticket(base, token)


def ticket_row(db: str, ticket: str) -> tuple[str | None, str | None] | None:
    """(stream, held_by) of the ticket's row, None when it is gone."""
    digest = ticket_hash(ticket)
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT stream, held_by FROM realtime.tickets"
                           " WHERE ticket_hash = %s", (digest,)).fetchone()
    return None if row is None else (row[0], row[1])


async def released(db: str, ticket: str) -> None:
    """Wait until no connection holds the ticket (the server saw its stream end)."""
    def free() -> bool:
        row = ticket_row(db, ticket)
        return row is None or row[1] is None

    await wait_for(free, 5, "the ticket released")


@pytest.mark.anyio
async def test_a_tickets_stream_reopens_where_it_left_off(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    other = factories.world(db, participants=1)
    sql(db, "INSERT INTO sport_session_participants (sport_session_id, user_id)"
            " VALUES (%s, %s)", (other.session_id, world.owner))
    token = factories.token(db, world.owner)
    ticket = await new_ticket(server, token)

    async with sse_client(server, world.session_id, ticket=ticket) as sse:
        assert sse.response.status_code == 200
        row = ticket_row(db, ticket)
        assert row is not None
        assert row[0] == world.topic
        assert str(row[1]).startswith("sse:")
        sql_comment(db, world.session_id, world.owner, "first")
        (first,) = await sse.durable(1)
    await released(db, ticket)
    assert ticket_row(db, ticket) == (world.topic, None)
    sql_comment(db, world.session_id, world.owner, "while away")

    # Bound to its stream: another session's stream, or a WebSocket, is refused, and the
    # ticket stays good for its own.
    async with sse_client(server, other.session_id, ticket=ticket) as sse:
        assert sse.response.status_code == 401
    status, _ = await handshake_status(ws_url(server, ticket=ticket))
    assert status == 401

    # What an EventSource does: the same URL, with the last id it saw.
    async with sse_client(server, world.session_id, ticket=ticket,
                          last_event_id=first.id) as sse:
        assert sse.response.status_code == 200
        (missed,) = await sse.durable(1)
    assert int(missed.id) == int(first.id) + 1
    assert missed.json()["comment"]["content"] == "while away"

    # Good for TICKET_TTL_SECONDS after its stream ends, and no longer.
    await released(db, ticket)
    sql(db, "UPDATE realtime.tickets SET expires_at = now() - interval '1 second'")
    async with sse_client(server, world.session_id, ticket=ticket) as sse:
        assert sse.response.status_code == 401


@pytest.mark.anyio
async def test_a_newer_connection_takes_the_ticket_over_on_any_node(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="courtside.realtime")
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    with running(build_app(db)) as node_a, running(build_app(db)) as node_b:
        ticket = await new_ticket(node_a, token)
        async with sse_client(node_a, world.session_id, ticket=ticket) as old:
            held_by_old = ticket_row(db, ticket)
            assert held_by_old is not None
            # The old connection is gone as far as the client knows (its network changed,
            # say) but its node has not noticed: the reconnection, on another node, wins.
            async with sse_client(node_b, world.session_id, ticket=ticket) as new:
                assert new.response.status_code == 200
                retries = []
                while (last := await old.next()).event != "closed":
                    retries.append(last.retry)
                assert last.json()["code"] == "STREAM_REPLACED"
                assert retries[-1] == 600_000  # told to wait, not to take it back at once
                assert any(str(held_by_old[1]) in r.getMessage()
                           and "took its ticket over" in r.getMessage()
                           for r in caplog.records)
                held_by_new = ticket_row(db, ticket)
                assert held_by_new is not None
                assert held_by_new[1] not in (None, held_by_old[1])
                sql_comment(db, world.session_id, world.owner, "to the new one")
                (event,) = await new.durable(1)
                assert event.json()["comment"]["content"] == "to the new one"
        await released(db, ticket)


@pytest.mark.anyio
async def test_of_connections_arriving_together_one_holds_the_ticket(db: str,
                                                                      server: str) -> None:
    world, _token, ticket = await ticket_of_a_participant(db, server)
    n = 8
    replaced = 0
    survivors: list[int] = []

    async def open_stream(i: int, gate: anyio.Event) -> None:
        nonlocal replaced
        async with sse_client(server, world.session_id, ticket=ticket) as sse:
            assert sse.response.status_code == 200
            await gate.wait()
            with anyio.move_on_after(3):
                closed = await sse.expect("closed", wait=3)
                assert closed.json()["code"] == "STREAM_REPLACED"
                replaced += 1
                return
            survivors.append(i)

    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(open_stream, i, gate)
        await anyio.sleep(1.0)
        gate.set()
    assert (replaced, len(survivors)) == (n - 1, 1)
    await released(db, ticket)


@pytest.mark.anyio
async def test_a_restart_reconnects_the_stream_on_the_next_server(db: str) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    with running(build_app(db)) as node:
        ticket = await new_ticket(node, token)
        async with sse_client(node, world.session_id, ticket=ticket) as sse:
            sql_comment(db, world.session_id, world.owner, "before")
            (seen,) = await sse.durable(1)
    # Gone with the server, whose last words released the ticket.
    assert ticket_row(db, ticket) == (world.topic, None)
    sql_comment(db, world.session_id, world.owner, "during the restart")
    with running(build_app(db)) as node:
        async with sse_client(node, world.session_id, ticket=ticket,
                              last_event_id=seen.id) as sse:
            assert sse.response.status_code == 200
            (missed,) = await sse.durable(1)
    assert missed.json()["comment"]["content"] == "during the restart"


@pytest.mark.anyio
async def test_a_revoked_or_expired_token_ends_the_ticket_too(db: str, server: str) -> None:
    world, token, ticket = await ticket_of_a_participant(db, server)
    async with sse_client(server, world.session_id, ticket=ticket) as sse:
        sql(db, "DELETE FROM personal_access_tokens WHERE id = %s",
            (factories.token_id(token),))
        assert (await sse.expect("closed")).json()["code"] == "TOKEN_REVOKED"
    assert ticket_row(db, ticket) is None
    async with sse_client(server, world.session_id, ticket=ticket) as sse:
        assert sse.response.status_code == 401

    token = factories.token(db, world.owner)
    ticket = await new_ticket(server, token)
    async with sse_client(server, world.session_id, ticket=ticket) as sse:
        assert sse.response.status_code == 200
    await released(db, ticket)
    sql(db, "UPDATE personal_access_tokens SET expires_at = now() AT TIME ZONE 'UTC'"
            " - interval '1 second' WHERE id = %s", (factories.token_id(token),))
    async with sse_client(server, world.session_id, ticket=ticket) as sse:
        assert sse.response.status_code == 401


@pytest.mark.anyio
async def test_pruning_keeps_a_held_ticket_until_its_node_is_gone(db: str,
                                                                  server: str) -> None:
    world, token, ticket = await ticket_of_a_participant(db, server)
    async with sse_client(server, world.session_id, ticket=ticket) as sse:
        assert sse.response.status_code == 200
        sql(db, "UPDATE realtime.tickets SET expires_at = now() - interval '1 hour'")
        await new_ticket(server, token)  # issuing prunes
        assert ticket_row(db, ticket) is not None
        sql(db, "UPDATE realtime.tickets SET held_on = %s WHERE held_by IS NOT NULL",
            (f"gone-{uuid.uuid4()}",))
        await new_ticket(server, token)
        assert ticket_row(db, ticket) is None


class _Conn:
    """A registered connection as the hub sees it (api/realtime_hub.RealtimeConnection)."""

    transport = "sse"

    def __init__(self, conn_id: str, token_id: int) -> None:
        self.conn_id = conn_id
        self.principal = Principal(uuid.uuid4(), token_id, None)
        self.closed: list[ErrorCode] = []

    def close_soon(self, code: ErrorCode) -> None:
        self.closed.append(code)

    def set_expiry(self, expires_at: datetime | None) -> None:
        pass

    def revoke_topic(self, topic: str, code: ErrorCode) -> None:
        pass


@pytest.mark.anyio
async def test_a_takeover_heard_before_its_connection_registered_still_closes_it() -> None:
    """The takeover's notification can beat the connection it replaces to the hub: that one
    committed its hold, and the newer one its takeover, while the first had yet to register.
    (Seen in the together test above, 2 runs in 6, before the hub remembered.)"""
    hub = RealtimeHub(AsyncConnectionPool("postgresql://", open=False), 10)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        hub.on_control(Control("ticket.moved", {"tokenId": 7, "connId": "sse:early"}))
        early, other = _Conn("sse:early", 7), _Conn("sse:other", 7)
        hub.attach(early)
        hub.attach(other)
        assert (early.closed, other.closed) == ([ErrorCode.STREAM_REPLACED], [])
        hub.on_control(Control("ticket.moved", {"tokenId": 7, "connId": "sse:other"}))
        assert other.closed == [ErrorCode.STREAM_REPLACED]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_released_ticket_lasts_the_configured_ticket_ttl(db: str) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    with running(build_app(db, ticket_ttl=7)) as base:
        ticket = await new_ticket(base, token)
        async with sse_client(base, world.session_id, ticket=ticket) as sse:
            assert sse.response.status_code == 200
        await released(db, ticket)
    digest = ticket_hash(ticket)
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT extract(epoch FROM expires_at - now())::float8"
                           " FROM realtime.tickets WHERE ticket_hash = %s", (digest,)).fetchone()
    assert row is not None
    assert 4.0 < row[0] <= 7.0


async def _held_tickets(pool: AsyncConnectionPool[Any], db: str, n: int
                        ) -> tuple[str, list[str]]:
    """A session's topic, and n tickets of one token, each holding that topic's stream for
    a connection `sse:<i>` of node-a."""
    world = factories.world(db, participants=1)
    token_id = factories.token_id(factories.token(db, world.owner))
    topic = f"session:{world.session_id}"
    held = []
    for i in range(n):
        async with pool.connection() as conn:
            issued = await tickets.issue(conn, token_id=token_id, user_id=world.owner,
                                         limit=n)
            assert issued is not None
            hold = tickets.Hold(topic, f"sse:{i}", "node-a")
            assert await tickets.redeem(conn, issued.ticket, hold=hold) is not None
        held.append(issued.ticket)
    return topic, held


def _holders(db: str, held: list[str]) -> list[tuple[str | None, bool]]:
    """Each ticket's holder, and whether it lasts 20–30 s from now."""
    with psycopg.connect(db) as conn:
        rows = {digest: (holder, fresh) for digest, holder, fresh in conn.execute(
            "SELECT ticket_hash, held_by, expires_at - now() BETWEEN interval '20 s'"
            " AND interval '30 s' FROM realtime.tickets WHERE ticket_hash = ANY(%s)",
            ([ticket_hash(t) for t in held],))}
    return [rows[ticket_hash(t)] for t in held]


@pytest.mark.anyio
async def test_streams_ending_together_release_their_tickets_in_one_statement(
        db: str) -> None:
    """A restart or an outage ends every stream at once: their tickets are released by one
    statement, not one each. A ticket taken over since stays its new holder's, unless that
    one has ended too (and ended first: its release is not undone by the older one's)."""
    n = 40
    async with AsyncConnectionPool(db, min_size=1, max_size=4, open=False) as pool:
        topic, held = await _held_tickets(pool, db, n + 2)
        for i in (n, n + 1):
            async with pool.connection() as conn:
                assert await tickets.redeem(conn, held[i], hold=tickets.Hold(
                    topic, f"sse:newer{i}", "node-b")) is not None
        releases = tickets.Releases(pool, ttl=30)
        releases.release(held[n + 1], f"sse:newer{n + 1}")
        for i, ticket in enumerate(held):
            releases.release(ticket, f"sse:{i}")
        assert releases.pending == n + 3
        assert await releases.flush() == n + 1  # one statement: rows updated
        assert releases.pending == 0
    assert _holders(db, held) == [(None, True)] * n + [(f"sse:newer{n}", False), (None, True)]


@pytest.mark.anyio
async def test_releases_noted_are_written_when_the_app_stops(db: str) -> None:
    async with AsyncConnectionPool(db, min_size=1, max_size=2, open=False) as pool:
        _, held = await _held_tickets(pool, db, 2)
        releases = tickets.Releases(pool, ttl=30, interval=3600)  # its timer never fires
        async with anyio.create_task_group() as tg:
            await tg.start(releases.run)
            for i, ticket in enumerate(held):
                releases.release(ticket, f"sse:{i}")
            tg.cancel_scope.cancel()
    assert _holders(db, held) == [(None, True)] * 2
