"""One subscriber of one topic: its backlog from the log, then its bounded live queue."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from bridge.direct import Direct
from bridge.errors import BridgeUnavailable
from bridge.events import OVERFLOW, UNAVAILABLE, CutOff, Event, Reset
from bridge.flag import Flag
from bridge.subqueue import BoundedQueue

log = logging.getLogger("courtside.bridge")

# Takes an item at once (True) or leaves it to the queue (False). Called in the fan-out.
Sink = Callable[[Event], bool]


class LogReader(Protocol):
    async def backlog(self, topic: str, after: int, upto: int, page: int) -> list[Event]: ...

    async def last_seq(self, topic: str) -> int: ...


class Subscription:
    """Async iterator of ``Event | Reset | CutOff``; a ``CutOff`` is always the last item.

    The backlog ``(since, start_seq]`` is read from the log lazily, by the consumer's own
    task, a page at a time: a slow reader slows only itself. Live events the hub pushes
    meanwhile wait in the bounded queue; they all have seq > start_seq, so the handover has
    neither gap nor overlap. Durable events at or below ``last_seq`` are dropped all the same.

    A consumer that can take an event without awaiting (a transport that writes pre-built
    bytes) may `set_sink`: while it is parked in ``__anext__`` (or `detach`-ed) with nothing
    left to read, the fan-out hands events to the sink directly — no queue, no task wake-up.
    An event the sink declines (returns False) goes to the queue as before and wakes the
    consumer (or calls its ``on_wake``); from then on everything is queued until the consumer
    has emptied the queue and parked again, so order is kept. Resets and cut-offs always go
    through the iterator.
    """

    # Slots: the fan-out reads a few of these per delivery, over thousands of subscriptions.
    __slots__ = ("__weakref__", "_backlog_upto", "_finished", "_on_cut", "_on_release",
                 "_on_wake", "_page", "_page_size", "_queue", "_reader", "_reason", "_since",
                 "_sink", "_verify_since", "_wakeup", "direct", "last_seq", "parked",
                 "start_seq", "topic")

    def __init__(self, topic: str, since: int | None, queue: BoundedQueue, reader: LogReader,
                 page: int) -> None:
        self.topic = topic
        self.start_seq = 0
        self.last_seq = 0
        self._since = since
        self._queue = queue
        self._reader = reader
        self._page_size = page
        self._page: deque[Event] | None = None  # made only while a backlog is being read
        self._backlog_upto: int | None = None  # None: no backlog left to read
        self._verify_since = False
        self._reason: str | None = None
        self._finished = False
        self._wakeup = Flag()  # set by the hub's side, cleared by the consumer before it parks
        self._on_cut: Callable[[Subscription], None] | None = None
        self._on_release: Callable[[Subscription], None] | None = None
        self._sink: Sink | None = None
        # Read by the fan-out (bridge/direct.py), which delivers to a parked subscription
        # itself when it has a `direct`; set only here.
        self.direct: Direct | None = None
        # The consumer awaits in __anext__, or has detached: backlog done, queue empty.
        self.parked = False
        self._on_wake: Callable[[], None] | None = None  # set while detached

    @property
    def has_sink(self) -> bool:
        return self._sink is not None

    def set_sink(self, sink: Sink | None, direct: Direct | None = None) -> None:
        """Let ``sink(event)`` take live events directly (see the class); None stops it.
        The sink runs inside the fan-out: it must not block, and should not raise.
        ``direct``: the fan-out writes what the sink would to the socket itself, while the
        direct's gate is open (bridge/direct.py); the sink takes the rest."""
        self._sink = sink
        self.direct = direct if sink is not None else None

    def detach(self, on_wake: Callable[[], None]) -> bool:
        """Stop consuming for now without a task parked in ``__anext__`` (a parked task and
        its frames are most of an idle subscriber's memory). True when there is nothing to
        read without waiting — backlog done, queue empty, not cut off: from then on the sink
        takes live events as it would for a parked consumer, and ``on_wake()`` is called once,
        inside the fan-out or `close`, when something is queued for the iterator; the
        consumer then iterates again. False, changing nothing, when there is something to read.
        """
        upto = self._backlog_upto
        if (self._reason is not None or self._page or self._verify_since or len(self._queue)
                or (upto is not None and self.last_seq < upto)):
            return False
        self._backlog_upto = None
        self.parked = True
        self._on_wake = on_wake
        return True

    def release(self) -> None:
        """Leave the hub (`Bridge.open_subscription`'s end); later calls do nothing. Nothing
        is handed to a released subscription: its sink and wake-up go (they usually refer
        back to whatever holds it)."""
        self._sink = self.direct = self._on_wake = None
        on_release, self._on_release = self._on_release, None
        if on_release is not None:
            on_release(self)

    def _wake(self) -> None:
        on_wake, self._on_wake = self._on_wake, None
        if on_wake is not None:
            on_wake()

    def start(self, head: int, on_cut: Callable[[Subscription], None],
              on_release: Callable[[Subscription], None]) -> None:
        """Called by the hub, in the same step that adds it to the topic: ``head`` is the
        last seq the topic handed out, so every later live event is > head."""
        self._on_cut = on_cut
        self._on_release = on_release
        self.start_seq = head
        since = self._since
        if since is None:
            self.last_seq = head
        elif since < head:
            self.last_seq = since
            self._backlog_upto = head
        else:
            # Ahead of this process's head: fine if the database agrees (this node may be
            # behind, catching up), a reset if the client's seq never existed.
            self.last_seq = since
            self._verify_since = True

    @property
    def cut_off(self) -> CutOff | None:
        if self._reason is None:
            return None
        return CutOff(self._reason, self.last_seq, self.topic)

    @property
    def closed(self) -> bool:
        return self._reason is not None

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- the hub's side: never awaits ------------------------------------------------------

    def push(self, item: Event | Reset) -> None:
        if self._reason is not None:
            return
        if self.parked and self._sink is not None and type(item) is Event:
            seq = item.seq
            if seq is not None and seq <= self.last_seq:
                return  # already delivered (what __anext__ would skip)
            try:
                taken = self._sink(item)
            except Exception:
                log.exception("subscription sink failed on %r; queued instead", item)
                taken = False
            if taken:
                if seq is not None:
                    self.last_seq = seq
                return
        if not self._queue.push(item):
            self.close(OVERFLOW)
            return
        self.parked = False
        self._wakeup.set()
        self._wake()

    def close(self, reason: str) -> None:
        if self._reason is not None:
            return
        self._reason = reason
        self.direct = None
        # Drop what it holds at once: memory must not wait for a consumer that may never come.
        self._queue.clear()
        self._page = None
        self._backlog_upto = None
        self._verify_since = False
        self._wakeup.set()
        if self._on_cut is not None:
            self._on_cut(self)
        self._wake()

    # --- the consumer's side -----------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Reset | CutOff:
        self._on_wake = None  # iterating again: no longer detached
        if self._finished:
            raise StopAsyncIteration
        backlog = await self._next_backlog()
        if backlog is not None:
            return backlog
        while True:
            if self._reason is not None:
                self._finished = True
                return CutOff(self._reason, self.last_seq, self.topic)
            item = self._queue.pop()
            if item is None:
                self._wakeup.clear()
                self.parked = True
                try:
                    await self._wakeup.wait()
                finally:
                    self.parked = False
                continue
            if isinstance(item, Reset):
                self.last_seq = item.seq
            elif item.seq is not None:
                if item.seq <= self.last_seq:
                    continue
                self.last_seq = item.seq
            return item

    async def _next_backlog(self) -> Event | Reset | None:
        while self._reason is None:
            page = self._page
            if page:
                event = page.popleft()
                if not page:
                    self._page = None
                assert event.seq is not None
                self.last_seq = event.seq
                return event
            if self._verify_since:
                self._verify_since = False
                try:
                    real = await self._reader.last_seq(self.topic)
                except BridgeUnavailable:
                    self.close(UNAVAILABLE)
                    return None
                if self._reason is None and self.last_seq > real:
                    self.last_seq = max(real, self.start_seq)
                    return Reset(self.topic, self.last_seq)
                return None
            upto = self._backlog_upto
            if upto is None:
                return None
            if self.last_seq >= upto:
                self._backlog_upto = None
                return None
            try:
                rows = await self._reader.backlog(self.topic, self.last_seq, upto,
                                                  self._page_size)
            except BridgeUnavailable:
                self.close(UNAVAILABLE)
                return None
            if self.closed:  # cut off while it waited for the page
                return None
            expected = self.last_seq + 1
            for event in rows:
                if event.seq != expected:
                    break
                if self._page is None:
                    self._page = deque()
                self._page.append(event)
                expected += 1
            if not self._page:
                # What follows last_seq was pruned: say so, then go on live after upto.
                self._backlog_upto = None
                self.last_seq = upto
                return Reset(self.topic, upto)
        return None
