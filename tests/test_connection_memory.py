"""A closed realtime connection is freed by reference counting, at once.

`courtside serve` makes full collections rare (courtside/serve.py): what only the cyclic
collector can free stays in memory until one runs, which under steady connect churn can
be a long while. So a closed /ws or Pusher connection, or an SSE stream under courtside's
HTTP protocol (api/http_protocol.py), ended by its client or by the server, must leave no
reference cycle behind its connection object and its subscriptions. Checked with the
collector off: nothing may need it. (Through ASGI, sse-starlette's cancelled tasks do leave
cycles; `courtside serve` does not stream that way.)
"""

from __future__ import annotations

import gc

import anyio
import pytest

from api.http_protocol import ChunkWriter
from api.pusher_ws import PusherConnection
from api.sse import SseConnection
from api.ws import WsConnection
from bridge import Subscription
from tests import factories
from tests.test_pusher_support import authorized, build_pusher_app, pusher_client
from tests.test_realtime_support import sql, sql_comment, sse_client, ws_client

KINDS = (WsConnection, PusherConnection, SseConnection, ChunkWriter, Subscription)


SERVER_APP = build_pusher_app  # the `server` fixture (conftest.py) runs this app


def alive() -> dict[str, int]:
    counts = dict.fromkeys((k.__name__ for k in KINDS), 0)
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: a dead weak proxy raises on that
        if kind in KINDS:
            counts[kind.__name__] += 1
    return counts


@pytest.mark.anyio
async def test_closed_connections_leave_no_cycles(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, author)
    channel = f"private-sport-session.{world.session_id}"
    # What earlier tests left for the collector goes first.
    gc.collect()
    before = alive()
    gc.disable()
    try:
        for _ in range(3):
            async with ws_client(server, token) as ws:
                await ws.subscribe(world.topic)
                await ws.subscribe(f"user:{world.participants[0]}")
            async with pusher_client(server, token) as pusher:
                await authorized(server, token, pusher, channel)
            async with sse_client(server, world.session_id, token) as sse:  # the client leaves
                sql_comment(db, world.session_id, reader, "seen")
                await sse.expect("comment.created")
            doomed = factories.token(db, reader)
            async with sse_client(server, world.session_id, doomed) as sse:  # the server ends it
                sql(db, "DELETE FROM personal_access_tokens WHERE id = %s",
                    (factories.token_id(doomed),))
                await sse.expect("closed")
        # The server finishes each connection's release a moment after its client left.
        for _ in range(100):
            if alive() == before:
                break
            await anyio.sleep(0.1)
        assert alive() == before
    finally:
        gc.enable()
