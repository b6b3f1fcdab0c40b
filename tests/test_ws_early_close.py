"""A client that goes away while its /ws connection is being set up (a phone losing signal
mid-handshake) ends quietly: no "Exception in ASGI application", and the server serves the
next client as before."""

from __future__ import annotations

import base64
import logging
import os
import socket
import struct
from collections.abc import Iterator

import anyio
import psycopg
import pytest

from tests import factories
from tests.test_realtime_support import build_app, running, ws_client


@pytest.fixture
def server(db: str) -> Iterator[str]:
    with running(build_app(db)) as base:
        yield base


def handshake(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    return sock


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.anyio
async def test_client_gone_during_authentication_ends_quietly(
        db: str, server: str, caplog: pytest.LogCaptureFixture) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.participants[0])
    token_id = int(token.split("|", 1)[0])
    port = int(server.rsplit(":", 1)[1])
    with caplog.at_level(logging.INFO):
        # Hold the token row: authentication (which records last_used_at) waits on it, and
        # the client resets meanwhile; the server then goes on with a socket that is gone.
        with psycopg.connect(db) as holder:
            holder.execute("SELECT 1 FROM personal_access_tokens WHERE id = %s FOR UPDATE",
                           (token_id,))
            reset(handshake(port, token))
            await anyio.sleep(0.5)
            holder.rollback()
        await anyio.sleep(1.0)
        async with ws_client(server, token) as ws:
            assert (await ws.subscribe(world.topic))["type"] == "subscribed"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
