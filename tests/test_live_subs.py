"""`LiveSubscriptions` at a connection's end: each subscription released once, and a drain
that first runs after the end delivers nothing and raises nothing."""

from __future__ import annotations

import anyio
import pytest

from api.live_subs import Live, LiveSubscriptions
from bridge import CutOff, Event, Reset
from tests.bridge_helpers import running, topics_of, wait_for

pytestmark = pytest.mark.anyio


class Recorder:
    """The transport's side: what was delivered, and which subscriptions were released."""

    def __init__(self) -> None:
        self.delivered: list[Event | Reset | CutOff] = []
        self.released: list[str] = []

    async def deliver(self, live: Live, item: Event | Reset | CutOff) -> bool:
        self.delivered.append(item)
        return True

    async def release(self, live: Live) -> None:
        self.released.append(live.name)


def sink(event: Event) -> bool:
    return True


async def test_a_drain_that_first_runs_after_the_end_does_nothing(db: str) -> None:
    # A wake spawns a drain into the connection's task group; anyio 4.16 lets a group that
    # had no task left end without waiting for one spawned during its exit's last
    # checkpoint, so the drain's first step can come after release_all. Here the drain is
    # spawned, and release_all runs, before the drain's first step: it must find the
    # subscription stopped (it raised AssertionError, failing the whole group).
    [(topic, _sid, _uid)] = topics_of(db, 1)
    rec = Recorder()
    subs: LiveSubscriptions[Live] = LiveSubscriptions(rec.deliver, rec.release)
    async with running(db) as bridge:
        sub = await bridge.open_subscription(topic)
        live = Live(topic, sub)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                subs.tg = tg
                subs.start(live, sink)  # spawns the drain: it has not run yet
                assert live.draining
                subs.tg = None  # the connection ends (RealtimeSocket.run's finally)
                await subs.release_all()
                assert rec.released == [topic]  # released without waiting on the drain
        assert rec.delivered == []
        assert not live.draining
        assert bridge.stats()["subscribers"] == 0  # out of the hub


async def test_every_subscription_of_a_connection_is_released_once(db: str) -> None:
    topics = [t for t, _sid, _uid in topics_of(db, 3)]
    rec = Recorder()
    subs: LiveSubscriptions[Live] = LiveSubscriptions(rec.deliver, rec.release)
    async with running(db) as bridge:
        lives = [Live(t, await bridge.open_subscription(t)) for t in topics]
        assert bridge.stats()["subscribers"] == 3
        async with anyio.create_task_group() as tg:
            subs.tg = tg
            for live in lives:
                subs.start(live, sink)
            # The drains run, find nothing queued, and detach.
            await wait_for(lambda: not any(live.draining for live in lives), 10,
                           "the drains detach")
            subs.tg = None
        await subs.release_all()
        await subs.release_all()  # a second call finds nothing
        assert sorted(rec.released) == sorted(topics)
        assert all(live.stopped for live in lives)
        assert rec.delivered == []
        assert bridge.stats()["subscribers"] == 0
