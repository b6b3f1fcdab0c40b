"""``GET /metrics`` on a real server: the numbers follow what real WebSocket, SSE and Pusher
clients do, counted exactly, and the exposition parses as Prometheus reads it."""

from __future__ import annotations

import anyio
import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.test_pusher_support import authorized, build_pusher_app, pusher_client
from tests.test_realtime_support import sql_comment, sse_client, ws_client

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


SERVER_APP = build_pusher_app  # the `server` fixture (conftest.py) runs this app


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def node_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT node_id FROM realtime.nodes")}


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def settled(base: str) -> Samples:
    """A scrape of a ready server after which nothing moved for a moment (presence chatter
    delivered)."""
    last = await scrape(base)
    with anyio.fail_after(10):
        while True:
            await anyio.sleep(0.3)
            now = await scrape(base)
            keys = ("courtside_notifications_total", "courtside_subscriber_pushes_total")
            if one(now, "courtside_ready") == 1 and all(one(now, k) == one(last, k)
                                                        for k in keys):
                return now
            last = now


@pytest.mark.anyio
async def test_metrics_follow_real_clients(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, reader)
    channel = f"private-sport-session.{world.session_id}"

    idle = await settled(server)
    assert one(idle, "courtside_ready") == 1
    nodes = [dict(k[1])["node"] for k in idle if k[0] == "courtside_info"]
    assert len(nodes) == 1
    assert nodes[0] in node_ids(db)
    for transport in ("ws", "sse", "pusher"):
        assert one(idle, "courtside_connections", transport=transport) == 0
    assert one(idle, "courtside_subscriptions") == 0
    assert one(idle, "process_resident_memory_bytes") > 0
    assert any(k[0] == "courtside_db_pool_connections" for k in idle)

    async with ws_client(server, token) as ws, \
            sse_client(server, world.session_id, token) as sse, \
            pusher_client(server, token) as pusher:
        assert (await ws.subscribe(world.topic))["type"] == "subscribed"
        await authorized(server, token, pusher, channel)
        before = await settled(server)
        for transport in ("ws", "sse", "pusher"):
            assert one(before, "courtside_connections", transport=transport) == 1
        assert one(before, "courtside_subscriptions") == 3
        assert one(before, "courtside_topics") == 1

        sql_comment(db, world.session_id, author, "counted")
        await ws.events(world.topic, 1)
        await sse.durable(1)
        await pusher.event(channel, "comment.created")
        after = await settled(server)

    # One notification, handed to each of the three subscriptions: no more, no less.
    assert one(after, "courtside_notifications_total") - \
        one(before, "courtside_notifications_total") == 1
    assert one(after, "courtside_subscriber_pushes_total") - \
        one(before, "courtside_subscriber_pushes_total") == 3
    assert one(after, "courtside_subscriptions_cut_total") == 0

    with anyio.fail_after(10):
        while True:
            gone = await scrape(server)
            if all(one(gone, "courtside_connections", transport=t) == 0
                   for t in ("ws", "sse", "pusher")) \
                    and one(gone, "courtside_subscriptions") == 0:
                break
            await anyio.sleep(0.1)


@pytest.mark.anyio
async def test_openmetrics_when_asked(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        r = await http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    lines = r.text.splitlines()
    assert "# TYPE courtside_notifications counter" in lines
    for transport in ("ws", "sse", "pusher"):
        assert f'courtside_connections{{transport="{transport}"}} 0.0' in lines
