"""A consumer cancelled in the middle of a query (a client that leaves while its backlog is
read) does not cost the pool its connection: the query finishes, then the cancellation
lands. Unshielded, psycopg closes a connection whose query it could not cancel cleanly."""

from __future__ import annotations

import logging
import random

import anyio
import psycopg
import pytest

from bridge import BridgeConfig, CutOff
from bridge.listener import Listener
from tests.bridge_helpers import running, topics_of
from tests.test_bridge_live import sql


@pytest.mark.anyio
async def test_cancelled_backlog_read_keeps_its_connection(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    topic, session_id, user_id = topics_of(db, 1)[0]
    sql(db, "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
        " SELECT %s, %s, 'c' || g FROM generate_series(1, 50) g", session_id, user_id)
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        async with running(db) as bridge, bridge.subscribe(topic):
            # That subscription keeps the topic known (its head read) while the log is
            # locked: the one below then needs nothing but its own backlog read.
            got: list[object] = []
            with psycopg.connect(db) as holder:
                holder.execute("LOCK TABLE realtime.events IN ACCESS EXCLUSIVE MODE")
                client = anyio.CancelScope()

                async def consume() -> None:
                    with client:
                        async with bridge.subscribe(topic, since=0) as sub:
                            async for item in sub:  # the backlog read waits on the lock
                                got.append(item)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(consume)
                    await anyio.sleep(0.5)
                    assert bridge.stats()["subscribers"] == 2  # reading its backlog
                    client.cancel()  # the client is gone
                    await anyio.sleep(0.3)
                    holder.rollback()
            stats = bridge.pool.get_stats()
            # The pool still works, with the connection it had.
            async with bridge.subscribe(topic, since=45) as sub:
                with anyio.fail_after(5):
                    tail = [await sub.__anext__() for _ in range(5)]
    assert not any(isinstance(item, CutOff) for item in got)  # ended by its own leaving
    assert [getattr(e, "seq", None) for e in tail] == [46, 47, 48, 49, 50]
    assert stats.get("connections_lost", 0) == 0
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []


@pytest.mark.anyio
async def test_a_listener_stopped_mid_health_check_closes_quietly(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    """With a 1 ms slice between health checks the LISTEN connection spends much of its time
    in `SELECT 1`; stopping it at random moments lands in that query again and again, and
    psycopg must not have to give up cancelling it."""
    config = BridgeConfig(health_interval=0.001, health_timeout=2.0)
    rng = random.Random(7)

    async def nothing(first: bool) -> None:
        return None

    with caplog.at_level(logging.WARNING, logger="psycopg"):
        for _ in range(40):
            listener = Listener(db, config, "courtside-test", on_notify=lambda _: None,
                                on_up=nothing, on_down=lambda: None)
            async with anyio.create_task_group() as tg:
                await tg.start(listener.run)
                await anyio.sleep(rng.uniform(0.005, 0.03))
                tg.cancel_scope.cancel()
    assert [r.getMessage() for r in caplog.records if r.name == "psycopg"] == []
