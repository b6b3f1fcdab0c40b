"""Every write path reaches a WebSocket subscriber and an SSE subscriber of the session, with
``data.comment`` byte for byte what the REST API returns for that comment."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests import factories
from tests.test_realtime_support import (
    rest,
    same_bytes,
    sql_comment,
    sse_client,
    ws_client,
)


@pytest.mark.anyio
async def test_every_write_path_reaches_ws_and_sse(db: str, server: str) -> None:
    world = factories.world(db, participants=3)
    author, reader, mentioned = world.participants
    author_token = factories.token(db, author)
    reader_token = factories.token(db, reader)

    async with ws_client(server, reader_token) as ws, \
            sse_client(server, world.session_id, reader_token) as sse, \
            rest(server, author_token) as api:
        subscribed = await ws.subscribe(world.topic)
        assert subscribed["type"] == "subscribed"
        assert subscribed["seq"] == 0
        assert subscribed["socketId"] == ws.socket_id
        assert [p["id"] for p in subscribed["presence"]] == [str(reader)]
        assert sse.response.headers["content-type"].startswith("text/event-stream")

        # 1. plain SQL, as psql or a cron job would
        sql_id = sql_comment(db, world.session_id, author, "from psql")
        # 2. REST create with a mention
        created = await api.create(world.session_id, "via REST", mentions=[mentioned])
        # 3. edit (content)
        edited = await api.update(world.session_id, created["id"], "edited via REST",
                                  mentions=[mentioned])
        # 4. mention change only
        remention = await api.update(world.session_id, created["id"], "edited via REST",
                                     mentions=[reader])
        # 5. delete
        await api.delete(world.session_id, created["id"])
        listing = {c["id"]: c for c in await api.listing(world.session_id)}

        expected: list[tuple[str, Any]] = [
            ("comment.created", listing[sql_id]),
            ("comment.created", created),
            ("comment.updated", edited),
            ("comment.updated", remention),
            ("comment.deleted", created["id"]),
        ]
        frames = await ws.events(world.topic, 5)
        sse_events = await sse.durable(5)

    assert [f["seq"] for f in frames] == [1, 2, 3, 4, 5]
    assert [f["event"] for f in frames] == [e[0] for e in expected]
    assert [int(e.id) for e in sse_events] == [1, 2, 3, 4, 5]
    assert [e.event for e in sse_events] == [e[0] for e in expected]
    for frame, event, (_, want) in zip(frames, sse_events, expected, strict=True):
        sse_data = orjson.loads(event.data)
        assert same_bytes(frame["data"], sse_data)
        if frame["event"] == "comment.deleted":
            assert frame["data"]["commentId"] == want
            assert frame["data"]["deletedAt"].endswith("Z")
        else:
            assert same_bytes(frame["data"]["comment"], want), (frame, want)
    # The mention change is visible in the event itself.
    assert [m["id"] for m in frames[3]["data"]["comment"]["mentions"]] == [str(reader)]


@pytest.mark.anyio
async def test_sender_exclusion_and_user_topic(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    author, other = world.participants
    author_token = factories.token(db, author)
    other_token = factories.token(db, other)
    async with ws_client(server, author_token) as mine, \
            ws_client(server, other_token) as theirs, rest(server, author_token) as api:
        assert (await mine.subscribe(world.topic))["type"] == "subscribed"
        assert (await theirs.subscribe(world.topic))["type"] == "subscribed"
        assert (await theirs.subscribe(f"user:{other}"))["type"] == "subscribed"
        # Written "from" my socket: everyone but me gets it.
        excluded = await api.create(world.session_id, "not echoed", mentions=[other],
                                    socket_id=mine.socket_id)
        echoed = await api.create(world.session_id, "echoed")
        got_theirs = await theirs.events(world.topic, 2)
        mention = await theirs.events(f"user:{other}", 1)
        got_mine = await mine.events(world.topic, 1)
    assert [f["data"]["comment"]["id"] for f in got_theirs] == [excluded["id"], echoed["id"]]
    assert [f["data"]["comment"]["id"] for f in got_mine] == [echoed["id"]]
    assert mention[0]["event"] == "mention.created"
    assert mention[0]["data"]["sessionId"] == str(world.session_id)
    assert same_bytes(mention[0]["data"]["comment"], excluded)

