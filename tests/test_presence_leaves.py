"""Presence leaves go through the bridge's queue (bridge/leaves.py): a leave whose connection
stopped waiting still happens, a storm of them takes each user offline exactly once, in
batches, a join never overtakes a leave of the same connection still queued, and a closing
connection queues its leave before anything else it does on the way out."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import anyio
import psycopg
import pytest

from bridge import Bridge, BridgeClosed, BridgeUnavailable
from bridge.leaves import Key, LeaveQueue
from tests import factories
from tests.bridge_helpers import FAST, Collector, collect, running, wait_for
from tests.test_pusher_support import authorized, build_pusher_app, pusher_client
from tests.test_realtime_support import ws_client

SERVER_APP = build_pusher_app  # the `server` fixture (conftest.py) runs this app

pytestmark = pytest.mark.anyio


def presence_rows(dsn: str, topic: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT user_id::text, conn_id FROM realtime.presence"
                            " WHERE topic = %s ORDER BY conn_id", (topic,)).fetchall()
    return [(r[0], r[1]) for r in rows]


def typing_rows(dsn: str, topic: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM realtime.presence"
                           " WHERE topic = %s AND typing_until > now()", (topic,)).fetchone()
    assert row is not None
    return int(row[0])


def offline(c: Collector) -> list[str]:
    return [e.payload["userId"] for e in c.ephemeral if e.type == "user.offline"]


@contextlib.asynccontextmanager
async def row_locked(dsn: str, conn_id: str) -> AsyncIterator[None]:
    """Hold the lock of one presence row: a leave of it waits, inside its batch, until the
    block ends."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT 1 FROM realtime.presence WHERE conn_id = %s FOR UPDATE",
                                 (conn_id,))
        assert await cur.fetchone() is not None
        yield
        await conn.rollback()


@contextlib.asynccontextmanager
async def row_locked_later(dsn: str, conn_id: str
                           ) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """`row_locked`, once the row exists: the block is given the call that locks it."""
    async with contextlib.AsyncExitStack() as stack:
        async def lock() -> None:
            await stack.enter_async_context(row_locked(dsn, conn_id))

        yield lock


async def leave_giving_up(bridge: Bridge, topic: str, user: uuid.UUID, conn_id: str,
                          outcomes: list[object], after: float) -> None:
    """A closing connection's leave: it waits `after` seconds at most."""
    with anyio.move_on_after(after):
        outcomes.append(await bridge.presence.leave(topic, user, conn_id))
        return
    outcomes.append("gave up")


async def test_a_leave_its_connection_stopped_waiting_for_still_happens(db: str) -> None:
    # One pooled connection, held by a leave that waits on a row lock: the other leaves
    # queue behind it while their callers give up, as closing connections do after
    # api/live_subs.RELEASE_TIMEOUT. Each leave must still be made, and each user told of.
    w = factories.world(db, participants=3)
    users = w.participants
    config = replace(FAST, pool_min_size=1, pool_max_size=1)
    async with running(db, node_id="watcher") as watcher, anyio.create_task_group() as tg:
        c = await collect(tg, watcher, w.topic)
        async with running(db, node_id="node-a", config=config) as a:
            for i, user in enumerate(users):
                assert await a.presence.join(w.topic, user, f"c{i}") is True
            outcomes: list[object] = []
            async with row_locked(db, "c0"):
                async with anyio.create_task_group() as leaving:
                    for i, user in enumerate(users):
                        leaving.start_soon(leave_giving_up, a, w.topic, user, f"c{i}",
                                           outcomes, 0.5)
                assert outcomes == ["gave up"] * 3
                await anyio.sleep(0.5)
                assert len(presence_rows(db, w.topic)) == 3  # nothing made while locked
            await wait_for(lambda: len(offline(c)) == 3, 10, "every user offline")
            assert presence_rows(db, w.topic) == []
            assert sorted(offline(c)) == sorted(str(u) for u in users)
        tg.cancel_scope.cancel()


async def test_a_storm_of_leaves_takes_each_user_offline_once_in_batches(db: str) -> None:
    users_n, tabs = 40, 3
    w = factories.world(db, participants=users_n)
    async with running(db, node_id="watcher") as watcher, anyio.create_task_group() as tg:
        c = await collect(tg, watcher, w.topic)
        async with running(db, node_id="node-a") as a:
            async with anyio.create_task_group() as joining:
                for user in w.participants:
                    for tab in range(tabs):
                        joining.start_soon(a.presence.join, w.topic, user, f"{user}/{tab}")
            await wait_for(lambda: sum(e.type == "user.online" for e in c.ephemeral) == users_n,
                           10, "every user online")
            went: dict[str, list[bool]] = {str(u): [] for u in w.participants}

            async def leave(user: uuid.UUID, tab: int) -> None:
                went[str(user)].append(await a.presence.leave(w.topic, user, f"{user}/{tab}"))

            batches = a.presence.leaves.batches
            async with anyio.create_task_group() as leaving:
                for tab in range(tabs):  # interleaved: a user's tabs in different places
                    for user in w.participants:
                        leaving.start_soon(leave, user, tab)
            # Exactly one leave per user was its last, and only that one said so.
            assert {u: sorted(v) for u, v in went.items()} == {
                str(u): [False] * (tabs - 1) + [True] for u in w.participants}
            assert a.presence.leaves.batches - batches <= users_n * tabs // 4
            assert presence_rows(db, w.topic) == []
            await wait_for(lambda: len(offline(c)) == users_n, 10, "every user offline")
            await anyio.sleep(0.3)
            assert sorted(offline(c)) == sorted(str(u) for u in w.participants)
        tg.cancel_scope.cancel()


BROKEN_TYPING = """
    CREATE OR REPLACE FUNCTION realtime.presence_typing_v1(
        p_topic text, p_user_id uuid, p_is_typing boolean, p_for interval,
        p_origin text DEFAULT NULL)
    RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'typing is broken'; END $$
"""


@pytest.mark.parametrize("transport", ["ws", "pusher"])
async def test_a_typing_connection_that_closes_leaves_even_when_its_typing_stop_fails(
        db: str, server: str, transport: str) -> None:
    # A connection closing while typing also tells the others that its user stopped. When
    # that query fails (here: a function that raises; in life a timeout, a lock, a dropped
    # connection), the leave must still be made: it is queued first.
    w = factories.world(db, participants=1)
    token = factories.token(db, w.owner)
    async with contextlib.AsyncExitStack() as stack:
        if transport == "ws":
            ws = await stack.enter_async_context(ws_client(server, token))
            assert (await ws.subscribe(w.topic))["type"] == "subscribed"
            await ws.send({"type": "typing", "topic": w.topic, "isTyping": True})
        else:
            channel = f"presence-sport-session.{w.session_id}"
            pusher = await stack.enter_async_context(pusher_client(server))
            ok = await authorized(server, token, pusher, channel)
            assert ok["event"] == "pusher_internal:subscription_succeeded", ok
            await pusher.send("client-typing", {"isTyping": True}, channel)
        await wait_for(lambda: typing_rows(db, w.topic) == 1, 5, "the typing indicator")
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(BROKEN_TYPING)
    await wait_for(lambda: presence_rows(db, w.topic) == [], 10, "the leave")


async def lock_waits(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_stat_activity"
                                 " WHERE wait_event_type = 'Lock'")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_join_waits_for_a_queued_leave_of_the_same_connection(db: str) -> None:
    w = factories.world(db, participants=2)
    alice, bob = w.participants
    async with running(db, node_id="watcher") as watcher, anyio.create_task_group() as tg:
        c = await collect(tg, watcher, w.topic)
        async with running(db, node_id="node-a") as a, anyio.create_task_group() as rejoin:
            assert await a.presence.join(w.topic, bob, "b") is True
            assert await a.presence.join(w.topic, alice, "k") is True
            outcomes: list[object] = []
            async with row_locked(db, "b"):
                # bob's batch runs and waits on the lock ...
                rejoin.start_soon(leave_giving_up, a, w.topic, bob, "b", outcomes, 0.2)
                deadline = anyio.current_time() + 5
                while await lock_waits(db) == 0:
                    assert anyio.current_time() < deadline, "bob's leave never ran"
                    await anyio.sleep(0.02)
                # ... alice's leave is queued behind it, and her connection gives up on it ...
                await leave_giving_up(a, w.topic, alice, "k", outcomes, 0.2)
                assert outcomes == ["gave up", "gave up"]
                # ... and the same connection joins again, while the pool has connections
                # to spare: the join must wait for the leave, or the leave would undo it.
                rejoin.start_soon(a.presence.join, w.topic, alice, "k")
                await anyio.sleep(0.3)
                assert a.presence.leaves.pending((w.topic, str(alice), "k")) is not None
        assert presence_rows(db, w.topic) == []  # node-a stopped: node_leave took all

        def alice_events_() -> list[str]:
            return [e.type for e in c.ephemeral if e.payload["userId"] == str(alice)]

        # node_leave's events were committed before node-a's stop returned, but reach the
        # watcher through its own LISTEN connection, a moment later.
        await wait_for(lambda: len(alice_events_()) >= 4, 10, "node_leave's events")
        alice_events = alice_events_()
        # online, offline (the leave), online (the join after it), offline (node-a stopped)
        assert alice_events == ["user.online", "user.offline", "user.online", "user.offline"]
        tg.cancel_scope.cancel()


class _Outage:
    """A batch runner whose database is away for its first `fails` calls."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls: list[list[Key]] = []
        self.gate = anyio.Event()  # the first call fails only once this is set

    async def __call__(self, keys: list[Key]) -> list[bool]:
        self.calls.append(list(keys))
        if len(self.calls) == 1:
            await self.gate.wait()
        if len(self.calls) <= self.fails:
            raise BridgeUnavailable("database away")
        return [key[2].endswith("!") for key in keys]


async def test_the_queue_tries_a_failed_batch_again_in_order_and_merges_repeats() -> None:
    run = _Outage(fails=2)
    queue = LeaveQueue(run, backoff_initial=0.01, backoff_max=0.02)
    with pytest.raises(BridgeClosed):
        queue.submit(("t", "u", "c"))  # not running
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        first = [queue.submit(("t", "u", f"c{i}")) for i in range(3)]
        await wait_for(lambda: len(run.calls) == 1, 5, "the first attempt")
        # Asked again while its batch was in flight, which then fails: one leave, made
        # once, and both waiters answered.
        again = queue.submit(("t", "u", "c1"))
        assert again is not first[1]
        last = queue.submit(("t", "u", "c3!"))
        run.gate.set()
        for leave in [*first, again, last]:
            with anyio.fail_after(5):
                await leave.done.wait()
        tg.cancel_scope.cancel()
    assert run.calls[0] == [("t", "u", "c0"), ("t", "u", "c1"), ("t", "u", "c2")]
    assert run.calls[-1] == [("t", "u", "c0"), ("t", "u", "c1"), ("t", "u", "c2"),
                             ("t", "u", "c3!")]
    assert queue.retries == 2
    assert [leave.went_offline for leave in [*first, again, last]] == [False] * 4 + [True]
    assert sum(call.count(("t", "u", "c1")) for call in run.calls) == 3  # once per attempt


async def test_leaves_still_queued_when_the_node_stops_are_released() -> None:
    run = _Outage(fails=1_000)
    queue = LeaveQueue(run, backoff_initial=5.0, backoff_max=5.0)
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        leave = queue.submit(("t", "u", "c"))
        run.gate.set()
        await wait_for(lambda: len(run.calls) == 1, 5, "a failed attempt")
        tg.cancel_scope.cancel()
    assert leave.done.is_set()
    assert leave.went_offline is None
    assert len(queue) == 0


async def test_a_nodes_stop_waits_for_its_leave_no_longer_than_three_seconds(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    """Its presence rows locked by another transaction, a stopping node gives up on leaving
    after min(query_timeout, 3 s) (its rows are then left to the other nodes' reaper). (The bound
    was a deadline around the leave, which its shielded query did not hear: the stop took
    the whole query_timeout.)"""
    w = factories.world(db, participants=1)
    slow = replace(FAST, query_timeout=20.0)
    async with row_locked_later(db, "k") as lock:
        async with running(db, node_id="node-a", config=slow) as a:
            assert await a.presence.join(w.topic, w.owner, "k") is True
            await lock()
            stopping = anyio.current_time()
        took = anyio.current_time() - stopping
    assert 2.5 < took < 10, took
    assert "could not leave cleanly" in caplog.text


async def test_a_node_that_goes_takes_each_user_offline_once(db: str) -> None:
    """Several connections of one user on a node that stops, or that dies and is reaped:
    one `user.offline` for that user, not one per connection."""
    w = factories.world(db, participants=2)
    alice, bob = w.participants
    async with running(db, node_id="watcher") as watcher, anyio.create_task_group() as tg:
        c = await collect(tg, watcher, w.topic)
        async with running(db, node_id="node-a") as a:
            for conn_id in ("k1", "k2", "k3"):
                assert await a.presence.join(w.topic, alice, conn_id) is (conn_id == "k1")
            assert await a.presence.join(w.topic, bob, "b") is True
        # node-a stopped: its rows went in one transaction, and so did its events.
        await wait_for(lambda: len(offline(c)) >= 2, 10, "node-a's users offline")
        # A node that dies: its rows outlive it until a live node's reaper takes them.
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SELECT realtime.node_heartbeat_v1('ghost')")
            for conn_id in ("g1", "g2", "g3"):
                conn.execute("SELECT realtime.presence_join_v1(%s, %s, %s, 'ghost', NULL)",
                             (w.topic, alice, conn_id))
            conn.execute("DELETE FROM realtime.nodes WHERE node_id = 'ghost'")
        await wait_for(lambda: len(offline(c)) >= 3, 10, "the ghost's user offline")
        await anyio.sleep(0.5)  # a duplicate, committed with the first, would be here too
        tg.cancel_scope.cancel()
    assert sorted(offline(c)) == sorted([str(alice), str(bob), str(alice)])
