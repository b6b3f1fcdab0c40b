"""Helpers for the bridge tests: a running bridge, SQL writers, collectors, log checks."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
import orjson
import psycopg
from anyio.abc import TaskGroup, TaskStatus

from bridge import Bridge, BridgeConfig, CutOff, Event, Reset
from tests import factories

# Short timings so fault tests finish quickly; production defaults are in BridgeConfig.
FAST = BridgeConfig(
    health_interval=0.3, health_timeout=0.7, connect_timeout=2.0, backoff_initial=0.05,
    backoff_max=0.5, query_timeout=3.0, heartbeat_interval=0.3, node_ttl=1.5,
    reap_interval=0.3, pool_timeout=3.0,
)


@contextlib.asynccontextmanager
async def running(dsn: str, *, listen_dsn: str | None = None, node_id: str | None = None,
                  config: BridgeConfig = FAST) -> AsyncIterator[Bridge]:
    bridge = Bridge(dsn, listen_dsn=listen_dsn, node_id=node_id, config=config)
    async with anyio.create_task_group() as tg:
        await tg.start(bridge.run)
        await bridge.wait_ready()
        try:
            yield bridge
        finally:
            tg.cancel_scope.cancel()


async def wait_for(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = anyio.current_time() + within
    while not cond():
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await anyio.sleep(0.01)


@dataclass
class Collector:
    """Reads a subscription in its own task and keeps everything it yields."""

    topic: str
    since: int | None = None
    max_queue: int | None = None
    items: list[Event | Reset | CutOff] = field(default_factory=list)
    arrivals: dict[int, float] = field(default_factory=dict)  # seq -> monotonic receipt
    start_seq: int | None = None
    done: bool = False

    @property
    def seqs(self) -> list[int]:
        return [i.seq for i in self.items if isinstance(i, Event) and i.seq is not None]

    @property
    def position(self) -> int | None:
        """The last durable seq received, else where the subscription started."""
        if self.seqs:
            return self.seqs[-1]
        return self.since if self.since is not None else self.start_seq

    @property
    def durable(self) -> list[Event]:
        return [i for i in self.items if isinstance(i, Event) and i.seq is not None]

    @property
    def ephemeral(self) -> list[Event]:
        return [i for i in self.items if isinstance(i, Event) and i.seq is None]

    async def run(self, bridge: Bridge, *,
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with bridge.subscribe(self.topic, since=self.since,
                                    max_queue=self.max_queue) as sub:
            self.start_seq = sub.start_seq
            task_status.started()
            async for item in sub:
                if isinstance(item, Event) and item.seq is not None:
                    self.arrivals[item.seq] = time.monotonic()
                self.items.append(item)
        self.done = True


async def collect(tg: TaskGroup, bridge: Bridge, topic: str, since: int | None = None,
                  max_queue: int | None = None) -> Collector:
    c = Collector(topic, since, max_queue)
    await tg.start(c.run, bridge)
    return c


def topics_of(dsn: str, n: int) -> list[tuple[str, uuid.UUID, uuid.UUID]]:
    """n sessions: (topic, session id, author id)."""
    out = []
    for _ in range(n):
        w = factories.world(dsn, participants=2, outsiders=0)
        out.append((w.topic, w.session_id, w.owner))
    return out


async def write_comment(conn: psycopg.AsyncConnection[tuple[object, ...]],
                        session_id: uuid.UUID, user_id: uuid.UUID, content: str) -> None:
    await conn.execute(
        "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
        " VALUES (%s, %s, %s)", (session_id, user_id, content))


@dataclass
class Writer:
    """A steady stream of comments into some sessions, by plain SQL, surviving outages.

    Each write is its own transaction; a failed one is simply retried later — what counts
    is what realtime.events holds at the end, not what the writer attempted.
    """

    dsn: str
    sessions: list[tuple[str, uuid.UUID, uuid.UUID]]
    interval: float = 0.01
    attempted: int = 0
    committed: int = 0
    failed: int = 0
    committed_at: dict[str, float] = field(default_factory=dict)  # content -> monotonic

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        task_status.started()
        i = 0
        try:
            while True:
                _topic, sid, uid = self.sessions[i % len(self.sessions)]
                i += 1
                self.attempted += 1
                try:
                    if conn is None or conn.closed:
                        with anyio.fail_after(2):
                            conn = await psycopg.AsyncConnection.connect(
                                self.dsn, autocommit=True, connect_timeout=2)
                    content = f"comment {i}"
                    with anyio.fail_after(2):
                        await write_comment(conn, sid, uid, content)
                    self.committed_at[content] = time.monotonic()
                    self.committed += 1
                except (psycopg.Error, OSError, TimeoutError):
                    self.failed += 1
                    if conn is not None:
                        await conn.close()
                    conn = None
                    await anyio.sleep(0.05)
                await anyio.sleep(self.interval)
        finally:
            if conn is not None:
                await conn.close()


@contextlib.asynccontextmanager
async def writing(writer: Writer) -> AsyncIterator[Writer]:
    """Run the writer for the duration of the block; it has stopped when the block exits."""
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        try:
            yield writer
        finally:
            tg.cancel_scope.cancel()


async def settle(collectors: list[Collector], dsn: str, within: float = 10) -> None:
    """Wait until each collector has the last seq of its topic (writes have stopped)."""
    finals = {c.topic: last_seq(dsn, c.topic) for c in collectors}
    await wait_for(lambda: all(c.position == finals[c.topic] for c in collectors), within,
                   "every subscriber to reach the last seq")


def log_rows(dsn: str, topic: str, after: int = 0) -> list[tuple[int, str, bytes]]:
    """(seq, type, data bytes) of the topic's log after `after`, as the bridge would encode."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT seq, type, payload::text FROM realtime.events WHERE topic = %s AND seq > %s"
            " ORDER BY seq", (topic, after)).fetchall()
    return [(int(s), str(t), orjson.dumps(orjson.loads(str(p)))) for s, t, p in rows]


def last_seq(dsn: str, topic: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce((SELECT last_seq FROM realtime.streams"
                           " WHERE topic = %s), 0)", (topic,)).fetchone()
    return int(row[0]) if row else 0


def assert_exactly_once(collector: Collector, dsn: str) -> int:
    """Everything committed after the collector's start, exactly once, in order, same bytes.
    Returns how many events that was."""
    start = collector.since if collector.since is not None else collector.start_seq
    assert start is not None
    expected = log_rows(dsn, collector.topic, start)
    got = [(e.seq or 0, e.type, e.data) for e in collector.durable]
    assert [g[0] for g in got] == [x[0] for x in expected], (
        f"{collector.topic}: got {len(got)} events, log has {len(expected)}; "
        f"missing {sorted({x[0] for x in expected} - {g[0] for g in got})[:10]}, "
        f"extra {sorted({g[0] for g in got} - {x[0] for x in expected})[:10]}")
    assert got == expected
    return len(expected)
