"""A subscription check cancelled mid-query — here by the token's revocation while the check
waits on a lock — does not cost the pool its connection: the check finishes, then the
connection closes (api/realtime_auth.connection, bridge/finish.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from tests import factories
from tests.test_realtime_support import build_app, running, ws_client


@pytest.fixture
def server(db: str) -> Iterator[str]:
    with running(build_app(db)) as base:
        yield base


@pytest.mark.anyio
async def test_revocation_during_a_subscription_check_keeps_the_pool_whole(
        db: str, server: str, caplog: pytest.LogCaptureFixture) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.participants[0])
    token_id = int(token.split("|", 1)[0])
    with caplog.at_level(logging.INFO):
        async with ws_client(server, token) as ws:
            with psycopg.connect(db) as holder:
                # The participant check of the subscription below waits on this lock.
                holder.execute("LOCK TABLE sport_session_participants IN ACCESS EXCLUSIVE MODE")
                await ws.send({"type": "subscribe", "topic": world.topic, "since": None})
                await anyio.sleep(0.5)
                with psycopg.connect(db, autocommit=True) as admin:
                    admin.execute("DELETE FROM personal_access_tokens WHERE id = %s",
                                  (token_id,))
                await anyio.sleep(0.5)  # the revocation has cancelled the connection's work
                holder.rollback()
            with anyio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await ws.drain()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4001  # token revoked
    lost = [r.getMessage() for r in caplog.records
            if r.name.startswith("psycopg") and r.levelno >= logging.WARNING]
    assert lost == []
