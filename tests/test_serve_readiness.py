"""/readyz follows the database and the LISTEN connection; after LISTEN comes back, missed
events are delivered and missed revocations are acted on (the bridge's resync)."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from courtside.pgcluster import Cluster
from tests import factories
from tests.test_realtime_support import (
    Proxy,
    build_app,
    running,
    sql,
    sql_comment,
    ws_client,
)


async def readiness(base: str) -> tuple[int, dict[str, bool]]:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        r = await http.get("/readyz")
    checks: dict[str, bool] = r.json()["checks"]
    return r.status_code, checks


async def wait_readiness(base: str, status: int, within: float = 15.0) -> dict[str, bool]:
    deadline = time.monotonic() + within
    while True:
        code, checks = await readiness(base)
        if code == status:
            return checks
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz stayed {code} {checks}, expected {status}")
        await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_listen_outage_then_resync(db: str) -> None:
    world = factories.world(db, participants=3)
    owner, staying, removed = world.participants
    port = int(conninfo_to_dict(db)["port"] or 5432)
    async with Proxy.running(port) as proxy:
        listen_dsn = make_conninfo(db, host="127.0.0.1", port=str(proxy.port))
        with running(build_app(db, listen_dsn=listen_dsn)) as base:
            await wait_readiness(base, 200)
            async with ws_client(base, factories.token(db, staying)) as ws_staying, \
                    ws_client(base, factories.token(db, removed)) as ws_removed:
                assert (await ws_staying.subscribe(world.topic))["type"] == "subscribed"
                assert (await ws_removed.subscribe(world.topic))["type"] == "subscribed"

                proxy.stall()  # the LISTEN connection goes silent; the pool is unaffected
                checks = await wait_readiness(base, 503)
                assert checks == {"database": True, "listen": False}
                # Meanwhile: a comment, and a removal whose notification nobody hears.
                during = sql_comment(db, world.session_id, owner, "during the outage")
                sql(db, "DELETE FROM sport_session_participants"
                        " WHERE sport_session_id = %s AND user_id = %s",
                    (world.session_id, removed))

                proxy.resume()
                await wait_readiness(base, 200)
                (frame,) = await ws_staying.events(world.topic, 1)
                assert frame["data"]["comment"]["id"] == during
                error = await ws_removed.expect(lambda f: f["type"] == "error", wait=10)
                assert error["code"] == "NOT_PARTICIPANT"
                assert error["topic"] == world.topic


@pytest.mark.anyio
async def test_readyz_follows_the_database(own_cluster: Cluster) -> None:
    dsn = own_cluster.dsn("courtside")
    world = factories.world(dsn, participants=1)
    token = factories.token(dsn, world.owner)
    with running(build_app(dsn)) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/healthz")).status_code == 200
        await wait_readiness(base, 200)
        async with ws_client(base, token) as ws:
            await ws.subscribe(world.topic)
            await anyio.to_thread.run_sync(own_cluster.stop)
            checks = await wait_readiness(base, 503)
            assert checks == {"database": False, "listen": False}
            async with httpx.AsyncClient(base_url=base) as http:
                assert (await http.get("/healthz")).status_code == 200  # alive all the same
            await anyio.to_thread.run_sync(own_cluster.start)
            await wait_readiness(base, 200, within=30)
            # The subscription survived the outage and is live again.
            comment_id = sql_comment(dsn, world.session_id, world.owner, "back")
            (frame,) = await ws.events(world.topic, 1, wait=15)
            assert frame["data"]["comment"]["id"] == comment_id
