"""Faults injected for real during a steady stream of SQL writes across several topics: the
LISTEN backend terminated, the server restarted, the TCP connection stalled. Afterwards every
subscriber has every committed event exactly once, in order — counted against the log.

The LISTEN connection goes through a loopback TCP proxy (the pool does not). Besides stalling
(the third fault), the proxy can refuse new connections: each scenario holds the bridge off
while it commits events to a *quiet* topic that gets no write afterwards, so those events
can only arrive through the catch-up that follows the reconnect — live gap repair, which
needs a later notification on the same topic, cannot hide a missing catch-up.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import psycopg
import pytest
from anyio.abc import TaskStatus
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bridge import Bridge, Control, CutOff, Event, Reset
from courtside.pgcluster import Cluster
from tests import factories
from tests.bridge_helpers import (
    Collector,
    Writer,
    assert_exactly_once,
    collect,
    log_rows,
    running,
    settle,
    topics_of,
    wait_for,
    write_comment,
    writing,
)
from tests.tcpproxy import TcpProxy, proxy

pytestmark = pytest.mark.anyio

N_TOPICS = 3
QUIET_WRITES = 5


class Resumer(Collector):
    """A client that, when cut off, subscribes again from the cut-off's last_seq."""

    cutoffs: int = 0

    async def run(self, bridge: Bridge, *,
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        since = self.since
        started = False
        while True:
            async with bridge.subscribe(self.topic, since=since) as sub:
                if not started:
                    self.start_seq = sub.start_seq
                    task_status.started()
                    started = True
                async for item in sub:
                    if isinstance(item, CutOff):
                        if item.reason == "shutdown":
                            self.done = True
                            return
                        self.cutoffs += 1
                        since = item.last_seq
                    else:
                        assert not isinstance(item, Reset)
                        self.items.append(item)


async def write_quiet(dsn: str, session: tuple[str, uuid.UUID, uuid.UUID]) -> None:
    """Commit a few events to the quiet topic, retrying while the server comes back."""
    _, sid, uid = session
    done = 0
    with anyio.fail_after(15):
        while done < QUIET_WRITES:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    while done < QUIET_WRITES:
                        await write_comment(conn, sid, uid, f"quiet {done}")
                        done += 1
            except psycopg.OperationalError:
                await anyio.sleep(0.1)


def through(dsn: str, p: TcpProxy) -> str:
    return make_conninfo(dsn, host="127.0.0.1", port=str(p.port))


def target(dsn: str) -> tuple[str, int]:
    params = conninfo_to_dict(dsn)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)


async def fault_scenario(dsn: str, p: TcpProxy,
                         fault: Callable[[Bridge], Awaitable[None]]) -> Bridge:
    sessions = topics_of(dsn, N_TOPICS)
    [quiet] = topics_of(dsn, 1)
    controls: list[Control] = []
    async with anyio.create_task_group() as tg, \
            running(dsn, listen_dsn=through(dsn, p)) as bridge:
        bridge.on_control(controls.append)
        collectors: list[Collector] = []
        for topic, _, _ in [*sessions, quiet]:
            collectors.append(await collect(tg, bridge, topic))  # from now
            collectors.append(await collect(tg, bridge, topic, since=0))
        async with writing(Writer(dsn, sessions, interval=0.01)) as writer:
            await wait_for(lambda: writer.committed >= 30, 10, "writes before the fault")
            # A client that joins mid-stream, from a seq in the past, and resumes if cut off.
            resumer = Resumer(sessions[0][0], since=5)
            await tg.start(resumer.run, bridge)
            collectors.append(resumer)
            reconnects = bridge.stats()["reconnects"]
            p.refusing = True
            await fault(bridge)
            await wait_for(lambda: not bridge.ready, 10, "the bridge to see the fault")
            await write_quiet(dsn, quiet)
            p.refusing = False
            await wait_for(lambda: bridge.stats()["reconnects"] > reconnects and bridge.ready,
                           20, "the bridge to reconnect and catch up")
            mark = writer.committed
            await wait_for(lambda: writer.committed >= mark + 30, 15, "writes after the fault")
        await settle(collectors, dsn, within=15)
        counts = [assert_exactly_once(c, dsn) for c in collectors]
        for c in collectors:
            assert not any(isinstance(i, Reset) for i in c.items)
        assert counts[-3] == QUIET_WRITES  # the quiet topic's from-now subscriber
        assert counts[-2] == QUIET_WRITES  # and its since=0 one
        assert sum(counts) >= 2 * 60
        # Commits whose reply was lost in the fault count as failed yet may be in the log.
        assert sum(len(log_rows(dsn, t)) for t, _, _ in sessions) >= writer.committed
        assert Control("bridge.resync", {}) in controls
        tg.cancel_scope.cancel()
    return bridge


async def listen_pid(dsn: str, bridge: Bridge) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (f"courtside-listen:{bridge.node_id}",))
        rows = await cur.fetchall()
    assert len(rows) == 1
    return int(rows[0][0])


@pytest.fixture
async def db_proxy(db: str) -> AsyncIterator[TcpProxy]:
    async with proxy(*target(db)) as p:
        yield p


async def test_terminate_listen_backend(db: str, db_proxy: TcpProxy) -> None:
    async def terminate(bridge: Bridge) -> None:
        pid = await listen_pid(db, bridge)
        assert pid == bridge.listen_backend_pid
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            await conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))

    await fault_scenario(db, db_proxy, terminate)


async def test_restart_cluster(own_cluster: Cluster) -> None:
    dsn = own_cluster.dsn("courtside")

    async def restart(bridge: Bridge) -> None:
        await anyio.to_thread.run_sync(own_cluster.restart)

    async with proxy(*target(dsn)) as p:
        await fault_scenario(dsn, p, restart)


async def test_stalled_connection_is_detected_by_the_health_check(
        db: str, db_proxy: TcpProxy) -> None:
    async def stall(bridge: Bridge) -> None:
        assert db_proxy.stall() == 1  # the LISTEN connection: only it goes through the proxy
        # No error, no closed socket: only the health check's deadline can notice.

    await fault_scenario(db, db_proxy, stall)
    assert db_proxy.accepted >= 2


async def test_subscribing_during_an_outage_waits_then_catches_up(own_cluster: Cluster) -> None:
    dsn = own_cluster.dsn("courtside")
    [(topic, sid, uid)] = topics_of(dsn, 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(3):
            conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id,"
                         " content) VALUES (%s, %s, %s)", (sid, uid, f"before {i}"))
    async with anyio.create_task_group() as tg, running(dsn) as bridge:
        await anyio.to_thread.run_sync(own_cluster.stop)
        await wait_for(lambda: not bridge.ready, 10, "not ready")
        c = Collector(topic, since=1)
        # The topic is new to this process: its position needs the database.
        tg.start_soon(c.run, bridge)
        await anyio.sleep(0.5)
        assert c.start_seq is None
        await anyio.to_thread.run_sync(own_cluster.start)
        await wait_for(lambda: c.seqs == [2, 3], 15, "the backlog after the outage")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id,"
                         " content) VALUES (%s, %s, 'after')", (sid, uid))
        await wait_for(lambda: c.seqs == [2, 3, 4], 10, "live after the outage")
        assert isinstance(c.items[-1], Event)
        assert c.items[-1].payload["comment"]["content"] == "after"
        tg.cancel_scope.cancel()


async def test_presence_comes_back_after_a_server_crash(own_cluster: Cluster) -> None:
    dsn = own_cluster.dsn("courtside")
    w = factories.world(dsn)

    async def online() -> list[str]:
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT p->>'id' FROM realtime.presence_list_v1(%s) p", (w.topic,))
                return [str(r[0]) for r in await cur.fetchall()]
        except psycopg.OperationalError:
            return []

    async with running(dsn) as bridge:
        assert await bridge.presence.join(w.topic, w.owner, "c1") is True
        assert await online() == [str(w.owner)]
        # Test clusters run without fsync or synchronous commit: make what is logged durable
        # first, so that only what is meant to vanish vanishes.
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CHECKPOINT")
        # Crash recovery empties unlogged tables: the node row and its presence rows vanish.
        await anyio.to_thread.run_sync(own_cluster.kill)
        await anyio.to_thread.run_sync(own_cluster.start)
        # The node's next heartbeat finds itself unknown and joins its connections again.
        for _ in range(150):
            if await online() == [str(w.owner)]:
                break
            await anyio.sleep(0.1)
        else:
            pytest.fail("the node did not join its connections again")
        await bridge.wait_ready()
