"""`Subscription.set_sink`: an idle consumer's events are handed over by the fan-out itself;
whatever the sink declines, and everything after it until the consumer is idle again, goes
through the queue — so each event arrives once, in order, either way."""

from __future__ import annotations

import anyio
import psycopg
import pytest

from bridge import CutOff, Event, Reset, Subscription
from tests.bridge_helpers import running, topics_of, wait_for

pytestmark = pytest.mark.anyio


def comment(dsn: str, session_id: object, user_id: object, n: int = 1) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(n):
            conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id,"
                         " content) VALUES (%s, %s, %s)", (session_id, user_id, f"s{i}"))


class Sink:
    """Takes every event (recording its seq), or, while `decline`, none."""

    def __init__(self) -> None:
        self.taken: list[int] = []
        self.decline = False

    def __call__(self, event: Event) -> bool:
        if self.decline:
            return False
        assert event.seq is not None
        self.taken.append(event.seq)
        return True


async def test_sink_takes_events_while_idle_and_the_queue_keeps_order(db: str) -> None:
    [(topic, sid, uid)] = topics_of(db, 1)
    sink = Sink()
    taken = sink.taken
    got: list[int] = []
    hold = anyio.Event()

    async with running(db) as bridge, anyio.create_task_group() as tg, \
            bridge.subscribe(topic) as sub:
        sub.set_sink(sink)

        async def consume() -> None:
            async for item in sub:
                assert isinstance(item, Event)
                assert item.seq is not None
                got.append(item.seq)
                if item.seq == 4:
                    await hold.wait()  # busy with 4: not idle, so 5 and 6 must queue

        tg.start_soon(consume)
        await anyio.to_thread.run_sync(comment, db, sid, uid, 3)
        await wait_for(lambda: taken == [1, 2, 3], 5, "1-3 through the sink")
        assert got == []
        assert sub.last_seq == 3

        sink.decline = True
        await anyio.to_thread.run_sync(comment, db, sid, uid)
        await wait_for(lambda: got == [4], 5, "4 through the queue")
        sink.decline = False
        await anyio.to_thread.run_sync(comment, db, sid, uid, 2)
        await wait_for(lambda: sub.queued == 2, 5, "5 and 6 queued behind 4")
        assert taken == [1, 2, 3]
        hold.set()
        await wait_for(lambda: got == [4, 5, 6], 5, "5 and 6 after 4")

        await wait_for(lambda: sub.queued == 0, 5, "an idle consumer")
        await anyio.to_thread.run_sync(comment, db, sid, uid)
        await wait_for(lambda: taken == [1, 2, 3, 7], 5, "7 through the sink again")
        assert got == [4, 5, 6]
        assert sub.last_seq == 7
        tg.cancel_scope.cancel()


async def test_resets_and_cutoffs_still_come_through_the_iterator(db: str) -> None:
    [(topic, sid, uid)] = topics_of(db, 1)
    await anyio.to_thread.run_sync(comment, db, sid, uid, 2)
    items: list[Event | Reset | CutOff] = []
    async with running(db) as bridge:
        # since beyond the topic's last seq: a Reset, though a sink is set.
        async with bridge.subscribe(topic, since=50) as sub:
            sub.set_sink(lambda event: True)
            with anyio.fail_after(5):
                items.append(await sub.__anext__())
        assert items == [Reset(topic, 2)]


async def next_seqs(sub: Subscription, n: int) -> list[int | None]:
    seqs = []
    with anyio.fail_after(5):
        for _ in range(n):
            item = await sub.__anext__()
            assert isinstance(item, Event)
            seqs.append(item.seq)
    return seqs


async def test_a_detached_consumer_is_woken_once_for_what_the_sink_declines(db: str) -> None:
    """`detach`: no task parked, the sink takes events; a declined event queues and calls
    on_wake once; iterating again delivers it, and the consumer can detach again."""
    [(topic, sid, uid)] = topics_of(db, 1)
    await anyio.to_thread.run_sync(comment, db, sid, uid, 2)
    sink = Sink()
    taken = sink.taken
    wakes = 0

    def on_wake() -> None:
        nonlocal wakes
        wakes += 1

    async with running(db) as bridge, bridge.subscribe(topic, since=0) as sub:
        sub.set_sink(sink)
        assert sub.detach(on_wake) is False  # a backlog to read first
        assert await next_seqs(sub, 2) == [1, 2]
        assert sub.detach(on_wake) is True
        await anyio.to_thread.run_sync(comment, db, sid, uid)
        await wait_for(lambda: taken == [3], 5, "3 through the sink, detached")
        assert wakes == 0

        sink.decline = True
        await anyio.to_thread.run_sync(comment, db, sid, uid, 2)
        await wait_for(lambda: sub.queued == 2, 5, "4 declined, 5 queued behind it")
        assert wakes == 1  # once, not once per event
        assert sub.detach(on_wake) is False  # something to read
        sink.decline = False
        assert await next_seqs(sub, 2) == [4, 5]
        assert sub.detach(on_wake) is True
        await anyio.to_thread.run_sync(comment, db, sid, uid)
        await wait_for(lambda: taken == [3, 6], 5, "6 through the sink again")

        sub.close("overflow")  # a cut-off wakes a detached consumer too
        assert wakes == 2
        with anyio.fail_after(5):
            assert await sub.__anext__() == CutOff("overflow", 6, topic)
