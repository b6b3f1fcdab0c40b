"""`courtside serve` as real processes: several of them share one database as their bus;
health and readiness; graceful shutdown; the embedded PostgreSQL on a bare machine."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import orjson
import psycopg
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from courtside import embedded
from tests import factories
from tests.test_realtime_support import (
    rest,
    same_bytes,
    serve_process,
    sse_client,
    stop,
    ws_client,
)


def listeners(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'courtside-listen:%'").fetchone()
    assert row is not None
    return int(row[0])


def wait_for_listeners(dsn: str, n: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := listeners(dsn)) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


@pytest.mark.anyio
async def test_two_processes_share_events_and_presence(db: str, tmp_path: Path) -> None:
    world = factories.world(db, participants=3)
    author, on_a, on_b = world.participants
    token_a = factories.token(db, on_a)
    token_b = factories.token(db, on_b)
    with serve_process(db, tmp_path) as a, serve_process(db, tmp_path) as b:
        assert listeners(db) == 2
        async with ws_client(a.base, token_a) as ws_a, ws_client(b.base, token_b) as ws_b, \
                sse_client(a.base, world.session_id, token_a) as sse_a, \
                rest(b.base, factories.token(db, author)) as api_b:
            sub_a = await ws_a.subscribe(world.topic)
            sub_b = await ws_b.subscribe(world.topic)
            # B's subscriber sees A's (and A's SSE stream's) user in its first list.
            assert str(on_a) in [p["id"] for p in sub_b["presence"]]
            await ws_a.expect(lambda f: f.get("event") == "user.online"
                              and f["data"]["userId"] == str(on_b))

            # Written through B, seen on A by WebSocket and SSE, and on B.
            created = await api_b.create(world.session_id, "across processes")
            (frame_a,) = await ws_a.events(world.topic, 1)
            (frame_b,) = await ws_b.events(world.topic, 1)
            (event_a,) = await sse_a.durable(1)
            assert same_bytes(frame_a["data"]["comment"], created)
            assert same_bytes(frame_b["data"]["comment"], created)
            assert same_bytes(event_a.json()["comment"], created)
            assert frame_a["seq"] == frame_b["seq"] == sub_a["seq"] + 1

            # Both processes give the same presence list, REST and realtime alike.
            lists = []
            for base, token in ((a.base, token_a), (b.base, token_b)):
                async with rest(base, token) as api:
                    r = await api.http.get(f"/api/sessions/{world.session_id}/presence/users",
                                           headers=api.headers)
                    assert r.status_code == 200
                    lists.append(sorted(u["id"] for u in r.json()["data"]))
            assert lists[0] == lists[1] == sorted([str(on_a), str(on_b)])
            # A late subscriber on either node gets that same list.
            async with ws_client(a.base, factories.token(db, author)) as late:
                late_sub = await late.subscribe(world.topic)
                assert sorted(p["id"] for p in late_sub["presence"]) == sorted(
                    [str(on_a), str(on_b), str(author)])

            # Resume on the other node: no sticky sessions.
        async with ws_client(b.base, token_a) as moved:
            await moved.subscribe(world.topic, since=sub_a["seq"])
            (again,) = await moved.events(world.topic, 1)
            assert again["data"]["comment"]["id"] == created["id"]


@pytest.mark.anyio
async def test_health_shutdown_and_workers(db: str, tmp_path: Path) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    with serve_process(db, tmp_path, workers=2) as server:
        # Every worker has its own LISTEN connection.
        assert wait_for_listeners(db, 2) == 2
        async with httpx.AsyncClient(base_url=server.base) as http:
            health = await http.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"database": True, "listen": True}

        async with ws_client(server.base, token) as ws, \
                sse_client(server.base, world.session_id, token) as sse:
            await ws.subscribe(world.topic)
            started = time.monotonic()
            server.proc.terminate()  # SIGTERM: graceful
            with anyio.fail_after(10), pytest.raises(ConnectionClosed) as info:
                await ws.drain()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1012  # service restart: reconnect
            # The SSE stream says why and ends cleanly (a complete chunked body).
            closing = await sse.expect("closed", wait=10)
            assert closing.json()["code"] == "SERVICE_RESTART"
            with anyio.fail_after(10), pytest.raises(StopAsyncIteration):
                await sse.next()
        code = await anyio.to_thread.run_sync(lambda: stop(server.proc))
        assert code == 0, server.output()
        assert time.monotonic() - started < 15
        assert listeners(db) == 0
        # Their presence rows went with them.
        with psycopg.connect(db, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM realtime.presence").fetchone()
        assert row == (0,)


@pytest.mark.anyio
async def test_embedded_postgres_when_no_database_url(tmp_path: Path) -> None:
    with serve_process(None, tmp_path, env={"COURTSIDE_LOG_LEVEL": "info"}) as server:
        async with httpx.AsyncClient(base_url=server.base) as http:
            assert (await http.get("/readyz")).status_code == 200
            # Migrated: the realtime tables (ours included) are there.
            r = await http.post("/api/realtime/tickets")
            assert r.status_code == 401
        cluster = embedded.cluster_for(tmp_path / "data")
        assert cluster.running_port() is not None
    assert "DATABASE_URL" not in server.output()
    # SIGTERM ends serve cleanly, and the PostgreSQL it started goes with it.
    assert server.proc.returncode == 0, server.output()
    assert cluster.running_port() is None, server.output()
    assert "stopping embedded PostgreSQL" in server.output()


@pytest.mark.anyio
async def test_serve_reads_api_and_pusher_settings_from_the_environment(
        db: str, tmp_path: Path) -> None:
    world = factories.world(db, participants=2)
    token = factories.token(db, world.owner)
    env = {"COURTSIDE_API_COMMENTS_PER_MINUTE": "2",
           "COURTSIDE_PUSHER_APP_KEY": "app-key", "COURTSIDE_PUSHER_APP_SECRET": "s3cret"}
    with serve_process(db, tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=10,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            url = f"/api/sessions/{world.session_id}/comments"
            codes = [(await http.post(url, json={"content": f"n°{i}"})).status_code
                     for i in range(3)]
            paths = (await http.get("/openapi.json")).json()["paths"]
        assert codes == [201, 201, 429]
        assert "/broadcasting/auth" in paths
        ws_base = server.base.replace("http://", "ws://")
        async with websockets.connect(f"{ws_base}/app/app-key?protocol=7") as pusher:
            hello = orjson.loads(await pusher.recv())
        assert hello["event"] == "pusher:connection_established"
        assert "socket_id" in orjson.loads(hello["data"])
    # Without key and secret the transport is off: /app/... is not routed.
    with serve_process(db, tmp_path) as server:
        ws_base = server.base.replace("http://", "ws://")
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(f"{ws_base}/app/app-key?protocol=7"):
                pass
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
            paths = (await http.get("/openapi.json")).json()["paths"]
        assert "/broadcasting/auth" not in paths
        assert "/api/realtime/tickets" in paths
