"""Peers that stop keeping up: a slow reader is cut off (4009) and loses nothing when it
resumes; a dead peer (no TCP traffic at all) is dropped by ping/pong and goes offline."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import ClassVar

import anyio
import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.realtime_limits import RealtimeLimits
from api.ws_protocol import CourtsideWebSocketProtocol
from tests import factories
from tests.servers import port_of
from tests.test_realtime_support import Proxy, Ws, build_app, running, ws_client, ws_url

BURST = 400


@contextlib.asynccontextmanager
async def slow_reader(base: str, token: str) -> AsyncIterator[Ws]:
    """A connected client with a tiny receive buffer that reads only when the test does: the
    server's socket buffers fill as soon as it stops."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port_of(base)))
    async with connect(ws_url(base), sock=sock, max_queue=1,
                       additional_headers={"Authorization": f"Bearer {token}"}) as conn:
        ws = Ws(conn)
        assert (await ws.recv())["type"] == "connected"
        yield ws


def burst(dsn: str, session_id: object, user_id: object, n: int) -> None:
    """n large comments in one transaction: n events released at once at commit."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        for i in range(n):
            conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                         " VALUES (%s, %s, %s)", (session_id, user_id, f"{i:04d} " + "x" * 990))


@pytest.mark.anyio
@pytest.mark.parametrize("ws_impl", [
    "api.ws_protocol:CourtsideWebSocketProtocol",  # pre-built frames, direct writes
    "websockets-sansio",  # plain uvicorn: every send through ASGI
])
async def test_slow_reader_is_cut_off_and_resumes_without_loss(db: str, ws_impl: str) -> None:
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, reader)
    limits = RealtimeLimits(outbound_queue=5)
    with running(build_app(db, limits), ws=ws_impl) as base:
        # A client that does not read: the server's socket buffers fill, its sends block,
        # and the bridge queue (5 items) overflows.
        async with slow_reader(base, token) as ws:
            sub = await ws.subscribe(world.topic)
            assert sub["seq"] == 0
            await anyio.to_thread.run_sync(burst, db, world.session_id, author, BURST)
            await anyio.sleep(1.0)  # not reading
            with anyio.fail_after(20), pytest.raises(ConnectionClosed) as info:
                await ws.drain()
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 4009
        got = [f["seq"] for f in ws.pending if f["type"] == "event" and f["seq"] is not None]
        assert got == list(range(1, len(got) + 1))
        assert len(got) < BURST  # it really was cut off

        # It resumes from the last seq it saw, and gets exactly the rest.
        async with ws_client(base, token) as again:
            await again.subscribe(world.topic, since=got[-1] if got else 0)
            rest = await again.events(world.topic, BURST - len(got), wait=20)
        assert [f["seq"] for f in rest] == list(range(len(got) + 1, BURST + 1))


@pytest.mark.anyio
async def test_dead_peer_is_dropped_by_keepalive(db: str) -> None:
    world = factories.world(db, participants=2)
    ghost, witness_user = world.participants
    with running(build_app(db), ws_ping_interval=0.3, ws_ping_timeout=0.6) as base:
        port = port_of(base)
        async with Proxy.running(port) as proxy, \
                ws_client(base, factories.token(db, witness_user)) as witness:
            await witness.subscribe(world.topic)
            url = f"ws://127.0.0.1:{proxy.port}/ws"
            async with connect(url, ping_interval=None, close_timeout=0.5,
                               additional_headers={
                                   "Authorization": f"Bearer {factories.token(db, ghost)}"}
                               ) as conn:
                ws = Ws(conn)
                assert (await ws.recv())["type"] == "connected"
                await ws.subscribe(world.topic)
                await witness.expect(lambda f: f.get("event") == "user.online"
                                     and f["data"]["userId"] == str(ghost))
                proxy.stall()
                # The server hears no pong, drops the connection, and the ghost goes offline.
                offline = await witness.expect(
                    lambda f: f.get("event") == "user.offline"
                    and f["data"]["userId"] == str(ghost), wait=10)
                assert offline["seq"] is None


class GateWatch(CourtsideWebSocketProtocol):
    """The real protocol; it also records each connection's gate (bridge/direct.py) as it
    changes, for the test to read from its own thread."""

    changes: ClassVar[list[tuple[int, bool]]] = []

    def _regate(self) -> None:
        super()._regate()
        GateWatch.changes.append((id(self), self.gate.open))


async def gate_shut(wait: float) -> None:
    for _ in range(int(wait / 0.05)):
        if not GateWatch.changes[-1][1]:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"the gate stayed open for {wait}s")


@pytest.mark.anyio
async def test_the_fan_outs_gate_follows_the_connection(db: str) -> None:
    """Open once the handshake is done; shut while the peer is not reading, and open again
    once it reads; shut once the peer closes. Events meanwhile arrive once, in order."""
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, reader)
    n = 300
    GateWatch.changes.clear()
    with running(build_app(db), ws=GateWatch) as base:
        async with slow_reader(base, token) as ws:
            assert (await ws.subscribe(world.topic))["type"] == "subscribed"
            conns = {c for c, _ in GateWatch.changes}
            assert len(conns) == 1
            assert GateWatch.changes[-1][1] is True  # open after the handshake

            await anyio.to_thread.run_sync(burst, db, world.session_id, author, n)
            await gate_shut(10)  # not reading: the buffers fill, it shuts
            got = await ws.events(world.topic, n, wait=30)
            assert [f["seq"] for f in got] == list(range(1, n + 1))
            states = [state for _, state in GateWatch.changes]
            assert states[-1] is True  # drained: open again
            # Shut and opened again more than once is fine; what matters is it never wrote
            # while shut, which the seqs above show (no gap, no repeat, none after the queue).
            assert False in states
            await ws.conn.close()  # the peer's close frame
        await gate_shut(5)
