"""Presence joins of a node's connections go through the bridge's queue (bridge/joins.py): a
crowd's joins share a few transactions and still bring each user online exactly once; a
join whose caller gives up while it is queued is not made, one whose batch is running is
written before its caller goes on; a failed batch fails each of its callers; and batches of
joins and of leaves on two nodes do not deadlock each other."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import anyio
import psycopg
import pytest

from bridge import BridgeClosed, BridgeUnavailable
from bridge.joins import JoinQueue
from bridge.leaves import Key
from tests import factories
from tests.bridge_helpers import FAST, Collector, collect, running, wait_for
from tests.test_presence_leaves import lock_waits, presence_rows

pytestmark = pytest.mark.anyio


def online_events(c: Collector) -> list[str]:
    return [e.payload["userId"] for e in c.ephemeral if e.type == "user.online"]


@contextlib.asynccontextmanager
async def user_locked(dsn: str, topic: str, user: uuid.UUID) -> AsyncIterator[None]:
    """Hold the (topic, user) lock every presence change takes
    (db/functions/presence.sql presence_lock_v1): a batch joining that user waits, in its
    transaction, until the block ends."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(realtime.presence_lock_key_v1(%s, %s))",
                           (topic, user))
        try:
            yield
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(realtime.presence_lock_key_v1(%s, %s))", (topic, user))


async def until_a_lock_wait(dsn: str, what: str) -> None:
    """Until some backend waits on a lock (a batch on the lock this test holds)."""
    deadline = anyio.current_time() + 5
    while await lock_waits(dsn) == 0:
        assert anyio.current_time() < deadline, what
        await anyio.sleep(0.02)


async def crash_node_and_wait_for_its_rejoin(dsn: str, node_id: str) -> None:
    """The node's rows vanish, as a crash recovery empties unlogged tables (the reaper
    would wait for the lock the test holds); its next heartbeat finds it unknown and joins
    its connections again, in a batch that waits on that lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM realtime.nodes WHERE node_id = %s", (node_id,))
        conn.execute("DELETE FROM realtime.presence WHERE node_id = %s", (node_id,))
    await until_a_lock_wait(dsn, "the node never joined again")


async def test_a_crowd_joins_in_a_few_batches_and_each_user_comes_online_once(db: str) -> None:
    users_n, tabs = 40, 3
    w = factories.world(db, participants=users_n)
    async with running(db, node_id="watcher") as watcher, anyio.create_task_group() as tg:
        c = await collect(tg, watcher, w.topic)
        async with running(db, node_id="node-a") as a:
            came: dict[str, list[bool]] = {str(u): [] for u in w.participants}

            async def join(user: uuid.UUID, tab: int) -> None:
                came[str(user)].append(await a.presence.join(w.topic, user, f"{user}/{tab}"))

            batches = a.presence.joins.batches
            async with anyio.create_task_group() as joining:
                for tab in range(tabs):  # a user's tabs in different places of the crowd
                    for user in w.participants:
                        joining.start_soon(join, user, tab)
            # Exactly one join per user was their first, and only that one said so.
            assert {u: sorted(v) for u, v in came.items()} == {
                str(u): [False] * (tabs - 1) + [True] for u in w.participants}
            assert a.presence.joins.batches - batches <= users_n * tabs // 4
            assert len(a.presence.joins) == 0
            assert len(presence_rows(db, w.topic)) == users_n * tabs
            await wait_for(lambda: len(online_events(c)) == users_n, 10, "every user online")
            await anyio.sleep(0.3)
            assert sorted(online_events(c)) == sorted(str(u) for u in w.participants)
        tg.cancel_scope.cancel()


async def test_a_join_given_up_while_queued_is_not_made_one_running_is_made_first(
        db: str) -> None:
    w = factories.world(db, participants=3)
    alice, bob, carol = w.participants
    async with running(db, node_id="node-a") as a:
        outcomes: list[object] = []

        async def join_giving_up(user: uuid.UUID, conn_id: str, after: float) -> None:
            with anyio.move_on_after(after):
                outcomes.append(await a.presence.join(w.topic, user, conn_id))
                return
            # Given up; the join's row is either written now, or never will be.
            outcomes.append(("gave up", [c for _, c in presence_rows(db, w.topic)]))

        async with anyio.create_task_group() as tg, user_locked(db, w.topic, alice):
            # alice's batch runs and waits on her lock ...
            tg.start_soon(join_giving_up, alice, "a", 0.5)
            await until_a_lock_wait(db, "alice's join never ran")
            # ... bob's join is queued behind it, and his caller gives up on it ...
            await join_giving_up(bob, "b", 0.2)
            assert outcomes == [("gave up", [])]
            assert len(a.presence.joins) == 1  # alice's, in flight; bob's is gone
            # ... while carol joins after him, and waits.
            tg.start_soon(join_giving_up, carol, "c", 10)
            await anyio.sleep(0.5)
            # alice's caller gave up at 0.5 s, but her batch still runs: it waits.
            assert len(outcomes) == 1
        # The lock is released: alice's caller saw her row written when it went on (and
        # maybe carol's, whose batch may commit before alice's caller reads).
        assert outcomes[1] in [("gave up", ["a"]), ("gave up", ["a", "c"])]
        assert outcomes[2] is True
        assert [c for _, c in presence_rows(db, w.topic)] == ["a", "c"]


async def test_a_join_given_up_while_its_batch_waits_for_a_connection_is_made_first(
        db: str) -> None:
    # The batch waits for the pool's one connection (up to query_timeout), then for a lock in
    # its query (up to query_timeout again): its caller, cancelled at once, must wait for all
    # of it, not one query_timeout, or its row comes after it has gone on.
    w = factories.world(db, participants=1)
    (alice,) = w.participants
    # (node_ttl: the heartbeats, held up too, must not get the node reaped meanwhile)
    config = replace(FAST, pool_min_size=1, pool_max_size=1, query_timeout=1.0, node_ttl=30.0)
    async with running(db, node_id="node-a", config=config) as a:
        seen: list[list[str]] = []

        async def join_giving_up() -> None:
            with anyio.move_on_after(0.2):
                await a.presence.join(w.topic, alice, "k")
            seen.append([c for _, c in presence_rows(db, w.topic)])

        async with anyio.create_task_group() as tg, user_locked(db, w.topic, alice):
            async with a.pool.connection():
                tg.start_soon(join_giving_up)
                await anyio.sleep(0.8)
            await anyio.sleep(0.8)  # the batch has the connection, and waits on the lock
            assert seen == []
        assert seen == [["k"]]


async def test_batches_of_joins_and_leaves_on_two_nodes_do_not_deadlock(db: str) -> None:
    # node-a joins a crowd in one order while node-b's connections of the same users leave
    # in the opposite one: both batches take the same users' locks, and hold them to commit.
    users_n, rounds = 60, 10
    w = factories.world(db, participants=users_n)
    users = list(w.participants)
    async with running(db, node_id="node-a") as a, running(db, node_id="node-b") as b:
        for r in range(rounds):
            async with anyio.create_task_group() as tg:
                for user in users:
                    tg.start_soon(b.presence.join, w.topic, user, f"b{r}/{user}")
            async with anyio.create_task_group() as tg:
                for user in users:
                    tg.start_soon(a.presence.join, w.topic, user, f"a{r}/{user}")
                for user in reversed(users):
                    tg.start_soon(b.presence.leave, w.topic, user, f"b{r}/{user}")
            assert sorted(c for _, c in presence_rows(db, w.topic)) == sorted(
                f"a{i}/{u}" for i in range(r + 1) for u in users)


class _Runner:
    """A batch runner for the queue alone: fails while `failing`, else says the key's
    connection id ends with '!' if its user came online."""

    def __init__(self) -> None:
        self.failing = False
        self.calls: list[list[Key]] = []
        self.gate = anyio.Event()

    async def __call__(self, keys: list[Key]) -> list[bool]:
        self.calls.append(list(keys))
        await self.gate.wait()
        if self.failing:
            raise BridgeUnavailable("database away")
        return [key[2].endswith("!") for key in keys]


async def test_a_failed_batch_fails_each_of_its_joins_and_the_next_one_runs() -> None:
    run = _Runner()
    queue = JoinQueue(run, finish_timeout=5.0)
    with pytest.raises(BridgeClosed):
        await queue.join(("t", "u", "c"))  # not running
    results: dict[str, object] = {}

    async def join(conn_id: str) -> None:
        try:
            results[conn_id] = await queue.join(("t", "u", conn_id))
        except BridgeUnavailable as exc:
            results[conn_id] = exc

    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        tg.start_soon(join, "first")
        await wait_for(lambda: len(run.calls) == 1, 5, "the first batch")
        for conn_id in ("x", "y!"):
            tg.start_soon(join, conn_id)
        await anyio.sleep(0.05)
        run.failing = True
        run.gate.set()
        await wait_for(lambda: len(results) == 3, 5, "the first two batches")
        run.failing = False
        tg.start_soon(join, "z!")
        await wait_for(lambda: len(results) == 4, 5, "the third batch")
        tg.cancel_scope.cancel()
    assert run.calls == [[("t", "u", "first")], [("t", "u", "x"), ("t", "u", "y!")],
                         [("t", "u", "z!")]]
    errors = [results[k] for k in ("first", "x", "y!")]
    assert all(isinstance(e, BridgeUnavailable) for e in errors)
    assert len({id(e) for e in errors}) == 3  # one exception per caller
    assert results["z!"] is True


async def test_joins_still_queued_when_the_node_stops_fail_as_closed() -> None:
    run = _Runner()  # never answers: its gate stays shut
    queue = JoinQueue(run, finish_timeout=5.0)
    results: list[object] = []

    async def join(conn_id: str) -> None:
        try:
            results.append(await queue.join(("t", "u", conn_id)))
        except BridgeClosed as exc:
            results.append(exc)

    async with anyio.create_task_group() as outer, anyio.create_task_group() as tg:
        await tg.start(queue.run)
        outer.start_soon(join, "running")
        await wait_for(lambda: len(run.calls) == 1, 5, "the first batch")
        outer.start_soon(join, "queued")
        await wait_for(lambda: len(queue) == 2, 5, "the second join queued")
        tg.cancel_scope.cancel()
    assert len(results) == 2
    assert all(isinstance(r, BridgeClosed) for r in results)
    assert len(queue) == 0


def in_lock_order(dsn: str, topic: str, users: list[uuid.UUID]) -> list[uuid.UUID]:
    """The users in the order a batch takes their (topic, user) locks."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT u FROM unnest(%s::uuid[]) AS u"
            " ORDER BY realtime.presence_lock_key_v1(%s, u)", (users, topic)).fetchall()
    return [r[0] for r in rows]


async def test_a_reaped_node_joins_again_but_not_a_connection_that_left_meanwhile(
        db: str) -> None:
    # A node reaped (its heartbeat lost for longer than the TTL) joins its connections again.
    # One of them closes while that join waits, and its leave runs first, finding nothing to
    # remove: the join must not leave its row behind, online for as long as the node lives.
    w = factories.world(db, participants=2)
    first, second = in_lock_order(db, w.topic, list(w.participants))
    async with running(db, node_id="node-a") as a:
        assert await a.presence.join(w.topic, first, "k1") is True
        assert await a.presence.join(w.topic, second, "k2") is True
        async with user_locked(db, w.topic, first):
            # Both are joined again, in one batch that waits on first's lock.
            await crash_node_and_wait_for_its_rejoin(db, "node-a")
            # second's connection closes now; its leave does not wait on first's lock.
            with anyio.fail_after(5):
                assert await a.presence.leave(w.topic, second, "k2") is False
        await wait_for(lambda: presence_rows(db, w.topic) == [(str(first), "k1")], 5,
                       "first joined again, and second's row gone")
        await anyio.sleep(1.0)  # three more heartbeats: nothing comes back
        assert presence_rows(db, w.topic) == [(str(first), "k1")]


def heartbeat_age(dsn: str, node_id: str) -> float | None:
    """Seconds since the node's last heartbeat; None once it is reaped."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT extract(epoch FROM now() - heartbeat_at)::float8"
                           " FROM realtime.nodes WHERE node_id = %s", (node_id,)).fetchone()
    return None if row is None else float(row[0])


async def test_a_reaped_node_keeps_its_heartbeat_while_its_rejoin_is_held_up(db: str) -> None:
    # The re-join waits on a lock for longer than the node TTL (FAST: 1.5 s; the batch's
    # query timeout is 3 s): the heartbeats must go on meanwhile, or the node is reaped again.
    w = factories.world(db, participants=1)
    (alice,) = w.participants
    async with running(db, node_id="node-a") as a:
        assert await a.presence.join(w.topic, alice, "k") is True
        ages: list[float | None] = []
        async with user_locked(db, w.topic, alice):
            await crash_node_and_wait_for_its_rejoin(db, "node-a")
            for _ in range(12):  # 2.4 s
                await anyio.sleep(0.2)
                ages.append(heartbeat_age(db, "node-a"))
        assert all(age is not None and age < 1.0 for age in ages), ages
        await wait_for(lambda: presence_rows(db, w.topic) == [(str(alice), "k")], 5,
                       "alice joined again")
