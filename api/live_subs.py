"""A connection's running subscriptions, with no task while they are idle (/ws and Pusher).

A subscription that has been set up and answered becomes a `Live` record. While nothing is
queued for it, the bridge's fan-out hands its events to the transport's sink
(`Subscription.set_sink`) and no task exists for it (`Subscription.detach`): a parked task,
its cancel scope and frames were most of an idle connection's memory. When something is
queued for the iterator — the backlog, an event the sink declined, a reset, the cut-off —
`on_wake` starts a drain task in the connection's task group; it delivers in order and ends
once the subscription is idle again. Without a sink (no frame writer) a drain never detaches.

Stopping is synchronous, so no event follows an unsubscribe or a revocation; the release
(out of the hub, out of presence) awaits in a task of its own, or at the connection's end.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

import anyio
import anyio.abc

from bridge import CutOff, Direct, Event, Reset, Subscription
from bridge.subscription import Sink

# How long a closing connection waits for its subscriptions' releases (presence leaves).
RELEASE_TIMEOUT = 2.0


class Live:
    """One running subscription of a connection; transports subclass it for their state."""

    __slots__ = ("draining", "name", "on_wake", "scope", "stopped", "sub")

    def __init__(self, name: str, sub: Subscription) -> None:
        self.name = name
        self.sub = sub
        self.draining = False  # a drain task runs (or is about to)
        self.stopped = False
        self.scope: anyio.CancelScope | None = None  # the running drain's
        self.on_wake: Callable[[], None] | None = None


LiveT = TypeVar("LiveT", bound=Live)
Item = Event | Reset | CutOff


async def _ended_deliver(live: Live, item: Item) -> bool:
    return False


async def _ended_release(live: Live) -> None:
    pass


class LiveSubscriptions(Generic[LiveT]):
    """`deliver(live, item)` sends one item and returns False once the subscription (or the
    socket) has ended; `release(live)` is the transport's part of a subscription's end,
    after it has left the hub."""

    def __init__(self, deliver: Callable[[LiveT, Item], Awaitable[bool]],
                 release: Callable[[LiveT], Awaitable[None]]) -> None:
        self._deliver = deliver
        self._release = release
        self._live: dict[str, LiveT] = {}
        self._setups: dict[str, anyio.CancelScope] = {}  # being set up, not yet started
        self._ending: list[LiveT] = []  # stopped once the task group had ended
        self.tg: anyio.abc.TaskGroup | None = None  # the connection's, while it runs

    def __iter__(self) -> Iterator[LiveT]:
        return iter(self._live.values())

    def get(self, name: str) -> LiveT | None:
        return self._live.get(name)

    @contextlib.contextmanager
    def setting_up(self, name: str) -> Iterator[None]:
        """Around a subscription's set-up (in the reader's task): `stop(name)` meanwhile
        cancels it, and the block ends quietly."""
        scope = self._setups[name] = anyio.CancelScope()
        try:
            with scope:
                yield
        finally:
            if self._setups.get(name) is scope:
                del self._setups[name]

    def start(self, live: LiveT, sink: Sink | None, direct: Direct | None = None) -> None:
        """The subscription is answered: from now on its events are written, in order.
        ``direct``: what the fan-out may write itself instead of calling the sink
        (bridge/direct.py)."""
        self._live[live.name] = live
        live.on_wake = functools.partial(self._wake, live)
        if sink is not None:
            live.sub.set_sink(sink, direct)
        self._wake(live)  # its backlog, if any; else the drain detaches at once

    def stop(self, name: str) -> None:
        """End it now (or its set-up), not when a task next runs: nothing more is written,
        so no event follows an unsubscribe or a revocation."""
        setup = self._setups.pop(name, None)
        if setup is not None:
            setup.cancel()
        live = self._live.pop(name, None)
        if live is None:
            return
        live.stopped = True
        live.sub.set_sink(None)
        if live.scope is not None:
            live.scope.cancel()
        if self.tg is not None:
            self.tg.start_soon(self._end, live)
        else:
            self._ending.append(live)

    async def release_all(self) -> None:
        """At the connection's end (its task group is over): release every subscription,
        concurrently, within RELEASE_TIMEOUT, whatever cancellation is going on."""
        ending = [*self._live.values(), *self._ending]
        self._live.clear()
        self._ending.clear()
        for live in ending:
            live.stopped = True
            live.sub.set_sink(None)
        if ending:
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
                if len(ending) == 1:
                    # Nearly every connection has one subscription, and a task group with
                    # a task for it costs ~36 µs: with the scopes around the goodbye, a
                    # quarter of a close's CPU (bench connections; 5000 closing at once).
                    await self._end_now(ending[0])
                else:
                    async with anyio.create_task_group() as tg:
                        for live in ending:
                            tg.start_soon(self._end_now, live)
        # The connection holds this object, and this object held the connection's methods:
        # without the cycle, a closed connection is freed by reference counting at once,
        # instead of waiting for a collection (courtside/gctune.py).
        self._deliver = _ended_deliver
        self._release = _ended_release

    async def _end(self, live: LiveT) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
            await self._end_now(live)

    async def _end_now(self, live: LiveT) -> None:
        """`_end` within the caller's shield and deadline."""
        live.on_wake = None  # it refers to `live` itself
        live.sub.release()
        await self._release(live)

    def _wake(self, live: LiveT) -> None:
        # Called inside the bridge's fan-out (or `close`): must not await.
        if live.draining or live.stopped or self.tg is None:
            return
        live.draining = True
        self.tg.start_soon(self._drain, live)

    async def _drain(self, live: LiveT) -> None:
        sub = live.sub
        detachable = sub.has_sink
        try:
            if live.stopped:
                # Stopped between the wake that spawned this and its first step. (A wake can
                # even spawn into the connection's task group during its exit's last
                # checkpoint, and the group then ends without waiting for it: anyio 4.16.)
                return
            with anyio.CancelScope() as scope:
                live.scope = scope
                assert live.on_wake is not None  # cleared only once stopped (`_end_now`)
                while not (detachable and sub.detach(live.on_wake)):
                    if not await self._deliver(live, await sub.__anext__()):
                        return
        finally:
            live.scope = None
            live.draining = False
