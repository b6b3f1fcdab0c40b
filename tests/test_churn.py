"""Churn: clients of all three transports come and go — cleanly, by a TCP reset, before or
after their subscription is answered — while comments are written. Afterwards nothing is
left behind: no presence row, no connection or subscription counted, no pooled database
connection lost, nothing logged above INFO."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct

import anyio
import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.test_pusher_support import authorized, build_pusher_app, pusher_client
from tests.test_realtime_support import sse_client, ws_client

CHURN_SECONDS = 6.0
CLIENTS = 12


SERVER_APP = build_pusher_app  # the `server` fixture (conftest.py) runs this app


def reset(transport: asyncio.Transport) -> None:
    """Drop the connection with a TCP reset, as a phone that loses its network does (the
    transport owns the socket: it closes it, reset_socket must not)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient(base_url=base) as http:
        text = (await http.get("/metrics")).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def residue(samples: Samples, dsn: str) -> dict[str, float]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM realtime.presence").fetchone()
    assert row is not None
    return {"connections": sum(v for (name, _), v in samples.items()
                               if name == "courtside_connections"),
            "subscriptions": samples[("courtside_subscriptions", ())],
            "queued": samples[("courtside_queued_events", ())],
            "presence joins": samples[("courtside_presence_joins_queued", ())],
            "presence leaves": samples[("courtside_presence_leaves_queued", ())],
            "presence rows": row[0]}


@pytest.mark.anyio
async def test_churn_leaves_nothing_behind(db: str, server: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    world = factories.world(db, participants=4)
    tokens = [factories.token(db, u) for u in world.participants]
    channel = f"private-sport-session.{world.session_id}"
    rng = random.Random(7)
    done = {"ws": 0, "sse": 0, "pusher": 0}

    async def ws_once() -> None:
        async with ws_client(server, rng.choice(tokens)) as ws:
            await ws.send({"type": "subscribe", "topic": world.topic,
                           "since": rng.choice([None, 0, 5])})
            if rng.random() < 0.5:
                await ws.recv()
            await anyio.sleep(rng.random() * 0.2)
            if rng.random() < 0.5:
                reset(ws.conn.transport)
        done["ws"] += 1

    async def sse_once() -> None:
        async with sse_client(server, world.session_id, rng.choice(tokens)):
            await anyio.sleep(rng.random() * 0.2)
        done["sse"] += 1

    async def pusher_once() -> None:
        token = rng.choice(tokens)
        async with pusher_client(server, token) as client:
            await authorized(server, token, client, channel)
            await anyio.sleep(rng.random() * 0.2)
            if rng.random() < 0.5:
                reset(client.conn.transport)
        done["pusher"] += 1

    # Loops end at a flag, not by cancellation: a client cancelled mid-call would leave
    # its own sockets unclosed and its own queries interrupted, which is not what is tested.
    stop = anyio.Event()

    async def client_loop() -> None:
        while not stop.is_set():
            with anyio.fail_after(10), contextlib.suppress(OSError, ConnectionError):
                # OSError, ConnectionError: our own reset, seen by the client on its way out.
                await rng.choice([ws_once, sse_once, pusher_once])()

    async def writer() -> None:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                await conn.execute(
                    "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                    " VALUES (%s, %s, %s)", (world.session_id, world.participants[0],
                                             f"churn {i}"))
                i += 1
                await anyio.sleep(0.01)

    with caplog.at_level(logging.INFO):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            for _ in range(CLIENTS):
                tg.start_soon(client_loop)
            await anyio.sleep(CHURN_SECONDS)
            stop.set()

        # Connections wind down asynchronously: give them a few seconds, then judge.
        with anyio.move_on_after(10):
            while True:
                samples = await scrape(server)
                left = residue(samples, db)
                if not any(left.values()):
                    break
                await anyio.sleep(0.2)

    assert residue(samples, db) == {"connections": 0, "subscriptions": 0, "queued": 0,
                                    "presence joins": 0, "presence leaves": 0,
                                    "presence rows": 0}
    assert min(done.values()) >= 3, done  # every transport was exercised, several times
    assert samples[("courtside_subscriber_pushes_total", ())] > 0
    assert samples[("courtside_presence_join_batches_total", ())] > 0  # /ws and SSE joined
    lost = sum(v for (name, _), v in samples.items()
               if name == "courtside_db_pool_connections_lost_total")
    assert lost == 0
    noisy = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno > logging.INFO]
    assert noisy == []
