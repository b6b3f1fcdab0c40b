"""Resume: a client that was away gets exactly what it missed, in order — or an explicit
reset when what it missed is no longer kept."""

from __future__ import annotations

import psycopg
import pytest

from tests import factories
from tests.test_realtime_support import sql, sse_client, ws_client

MISSED = 50


def write_comments(dsn: str, session_id: object, user_id: object, n: int, tag: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = []
        for i in range(n):
            row = conn.execute(
                "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                " VALUES (%s, %s, %s) RETURNING id", (session_id, user_id, f"{tag} {i}"),
            ).fetchone()
            assert row is not None
            ids.append(str(row[0]))
    return ids


@pytest.mark.anyio
async def test_ws_resume_with_since(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, reader)
    write_comments(db, world.session_id, author, 3, "before")

    async with ws_client(server, token) as ws:
        sub = await ws.subscribe(world.topic)
        assert sub["seq"] == 3
        write_comments(db, world.session_id, author, 2, "seen")
        seen = await ws.events(world.topic, 2)
    last = seen[-1]["seq"]
    assert last == 5

    missed = write_comments(db, world.session_id, author, MISSED, "missed")

    async with ws_client(server, token) as ws:
        sub = await ws.subscribe(world.topic, since=last)
        assert sub["type"] == "subscribed"
        assert sub["seq"] == last + MISSED  # where the topic stands now
        replay = await ws.events(world.topic, MISSED)
        # Live delivery continues right after the replay, with no gap and no duplicate.
        (live_id,) = write_comments(db, world.session_id, author, 1, "live")
        (live,) = await ws.events(world.topic, 1)
        # Nothing else was queued: the next frame answers our ping.
        await ws.send({"type": "ping"})
        durable_or_pong = await ws.expect(
            lambda f: f["type"] == "pong" or (f["type"] == "event" and f["seq"] is not None))
        assert durable_or_pong["type"] == "pong"

    assert [f["seq"] for f in replay] == list(range(last + 1, last + MISSED + 1))
    assert [f["data"]["comment"]["id"] for f in replay] == missed
    assert [f["event"] for f in replay] == ["comment.created"] * MISSED
    assert live["seq"] == last + MISSED + 1
    assert live["data"]["comment"]["id"] == live_id


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["last-event-id", "since"])
async def test_sse_resume(db: str, server: str, how: str) -> None:
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, reader)

    async with sse_client(server, world.session_id, token) as sse:
        write_comments(db, world.session_id, author, 2, "seen")
        seen = await sse.durable(2)
    last = seen[-1].id
    assert last == "2"

    missed = write_comments(db, world.session_id, author, MISSED, "missed")
    params = {"since": last} if how == "since" else {}
    last_event_id = last if how == "last-event-id" else None
    async with sse_client(server, world.session_id, token, last_event_id=last_event_id,
                          **params) as sse:
        replay = await sse.durable(MISSED)
        (live_id,) = write_comments(db, world.session_id, author, 1, "live")
        (live,) = await sse.durable(1)

    assert [int(e.id) for e in replay] == list(range(3, 3 + MISSED))
    assert [e.json()["comment"]["id"] for e in replay] == missed
    assert live.id == str(3 + MISSED)
    assert live.json()["comment"]["id"] == live_id


@pytest.mark.anyio
async def test_last_event_id_wins_over_since(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, reader)
    write_comments(db, world.session_id, author, 5, "x")
    # An EventSource reconnecting keeps its URL (since=1) but sends Last-Event-ID: 4.
    async with sse_client(server, world.session_id, token, last_event_id="4",
                          since="1") as sse:
        (first,) = await sse.durable(1)
    assert first.id == "5"


@pytest.mark.anyio
async def test_reset_when_beyond_retention(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, reader)
    write_comments(db, world.session_id, author, 10, "old")
    # Retention drops seq 1..10; the counter keeps going.
    sql(db, "SELECT realtime.prune_events_v1(interval '0 seconds')")
    write_comments(db, world.session_id, author, 2, "new")

    async with ws_client(server, token) as ws:
        sub = await ws.subscribe(world.topic, since=3)
        assert sub["type"] == "subscribed"
        reset = await ws.expect(
            lambda f: f["type"] == "reset" or (f["type"] == "event" and f["seq"] is not None))
        assert reset == {"type": "reset", "topic": world.topic, "seq": 12}
        (live_id,) = write_comments(db, world.session_id, author, 1, "live")
        (live,) = await ws.events(world.topic, 1)
        assert live["seq"] == 13
        assert live["data"]["comment"]["id"] == live_id

    async with sse_client(server, world.session_id, token, last_event_id="3") as sse:
        event = await sse.next()
        assert event.event == "reset"
        assert event.id == "13"  # the live comment above came after the WS reset
        assert event.json() == {"topic": world.topic, "seq": 13}


@pytest.mark.anyio
async def test_bad_resume_points(db: str, server: str) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    async with sse_client(server, world.session_id, token, since="abc") as sse:
        assert sse.response.status_code == 422
    async with ws_client(server, token) as ws:
        await ws.send({"type": "subscribe", "topic": world.topic, "since": -4})
        error = await ws.expect(lambda f: f["type"] == "error")
        assert error["code"] == "INVALID_FRAME"
        assert error["topic"] == world.topic
