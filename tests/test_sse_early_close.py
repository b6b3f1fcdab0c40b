"""An SSE client that leaves while its stream is being set up costs no database connection:
its disconnect cancels the stream's task, and a query interrupted mid-flight makes psycopg
close the connection rather than return it to the pool."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator

import anyio
import psycopg
import pytest

from tests import factories
from tests.test_realtime_support import build_app, running, sse_client


@pytest.fixture
def server(db: str) -> Iterator[str]:
    with running(build_app(db)) as base:
        yield base


@pytest.mark.anyio
async def test_client_gone_during_presence_join_keeps_the_pool_whole(
        db: str, server: str, caplog: pytest.LogCaptureFixture) -> None:
    world = factories.world(db, participants=1)
    user = world.participants[0]
    token = factories.token(db, user)
    port = int(server.rsplit(":", 1)[1])
    request = (f"GET /api/sessions/{world.session_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode()
    with caplog.at_level(logging.INFO):
        # Hold the presence lock of (topic, user): the stream's presence join waits on it
        # while the client resets the connection.
        with psycopg.connect(db) as holder:
            holder.execute("SELECT realtime.presence_lock_v1(%s, %s)", (world.topic, user))
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(request)
                await anyio.sleep(0.5)  # authenticated, subscribed, waiting on the lock
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await anyio.sleep(0.5)  # the server has seen the disconnect
            holder.rollback()
        # The stream it began is wound up: its presence row goes, the user is offline.
        with anyio.fail_after(10):
            while True:
                with psycopg.connect(db, autocommit=True) as conn:
                    rows = conn.execute("SELECT count(*) FROM realtime.presence"
                                        " WHERE topic = %s", (world.topic,)).fetchone()
                if rows == (0,):
                    break
                await anyio.sleep(0.1)
        async with sse_client(server, world.session_id, token) as sse:
            assert sse.response.status_code == 200
    lost = [r.getMessage() for r in caplog.records
            if r.name.startswith("psycopg") and r.levelno >= logging.WARNING]
    assert lost == []
