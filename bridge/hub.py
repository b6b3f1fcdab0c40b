"""Topic → subscribers, and the per-topic state they share. Every method here is synchronous:
the notification task and the catch-up worker each run a step without awaiting, so a step is
atomic with respect to the other and to subscribers coming and going."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import anyio

from bridge.events import SHUTDOWN, Event, Reset
from bridge.sequencer import LogRead, TopicSequencer
from bridge.subscription import Subscription

log = logging.getLogger("courtside.bridge")


class Topic:
    __slots__ = ("initialized", "name", "refs", "seq", "subs")

    def __init__(self, name: str, buffer_limit: int) -> None:
        self.name = name
        self.seq = TopicSequencer(name, buffer_limit)
        # Insertion-ordered set: fan-out order is subscription order.
        self.subs: dict[Subscription, None] = {}
        self.refs = 0  # subscriptions being made or alive; the topic goes when it drops to 0
        self.initialized = anyio.Event()

    def fan_out(self, items: Iterable[Event | Reset]) -> int:
        """Hand each item to every subscriber; returns how many hand-overs that made."""
        pushes = 0
        for item in items:
            # A copy: a subscriber that overflows removes itself while we iterate.
            subs = tuple(self.subs)
            pushes += len(subs)
            if type(item) is Event:
                deliver(item, subs)
            else:
                for sub in subs:
                    sub.push(item)
        return pushes


def deliver_py(event: Event, subs: tuple[Subscription, ...]) -> None:
    """One event to every subscriber: written to the socket here for a parked subscription
    whose gate is open (bridge/direct.py), handed to `Subscription.push` otherwise. The
    checks are push's and the sink's, inlined: this loop runs once per subscriber.

    `deliver` is this loop compiled (bridge/_fanout.c) where the extension was built: the
    same steps, with the next subscribers' objects prefetched while a write runs."""
    seq = event.seq
    origin = event.origin
    for sub in subs:
        direct = sub.direct
        if direct is None or not sub.parked or not direct.gate.open:
            sub.push(event)
            continue
        if seq is not None and seq <= sub.last_seq:
            continue  # already delivered (what push would skip)
        if origin is None or origin != direct.socket_id:  # else its own write (X-Socket-ID)
            try:
                direct.gate.write(event.encoded(direct.key, direct.encode))
            except Exception:
                # The socket closed under us (or the frame could not be built): the slow
                # path finds out which, and acts on it.
                sub.push(event)
                continue
        if seq is not None:
            sub.last_seq = seq


deliver: Callable[[Event, tuple[Subscription, ...]], None]
try:
    from bridge._fanout import deliver
except ImportError:  # built without a C compiler: the same loop, in Python
    deliver = deliver_py

COMPILED_FANOUT = deliver is not deliver_py


class Hub:
    def __init__(self, topic_buffer: int) -> None:
        self._topic_buffer = topic_buffer
        self.topics: dict[str, Topic] = {}
        self._dirty: dict[str, Topic] = {}
        self._dirty_event = anyio.Event()
        self._progress = anyio.Event()
        self._kick = anyio.Event()
        self.closed = False
        self.cutoffs = 0
        self.notifications = 0
        self.repairs = 0
        self.pushes = 0  # events handed to subscriptions (sent at once or queued)

    # --- subscriptions -----------------------------------------------------------------------

    def acquire(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = Topic(name, self._topic_buffer)
            self._mark_dirty(topic)  # its head is unknown until the first log read
        topic.refs += 1
        return topic

    def attach(self, topic: Topic, sub: Subscription) -> None:
        assert topic.seq.head is not None
        sub.start(topic.seq.head, on_cut=lambda s: self._on_cut(topic, s),
                  on_release=lambda s: self.release(topic, s))
        topic.subs[sub] = None

    def release(self, topic: Topic, sub: Subscription | None) -> None:
        if sub is not None:
            topic.subs.pop(sub, None)
        topic.refs -= 1
        if topic.refs == 0 and self.topics.get(topic.name) is topic:
            del self.topics[topic.name]
            self._dirty.pop(topic.name, None)

    def _on_cut(self, topic: Topic, sub: Subscription) -> None:
        topic.subs.pop(sub, None)
        self.cutoffs += 1

    def close(self) -> None:
        """The bridge is stopping: end every subscription and wake everyone waiting."""
        self.closed = True
        for topic in self.topics.values():
            for sub in tuple(topic.subs):
                sub.close(SHUTDOWN)
            topic.initialized.set()
        self._dirty_event.set()
        self._progress.set()
        self._kick.set()

    # --- live notifications ------------------------------------------------------------------

    def on_durable(self, name: str, seq: int, event: Event | None) -> None:
        self.notifications += 1
        topic = self.topics.get(name)
        if topic is None:
            return
        deliver, repair = topic.seq.on_notice(seq, event)
        if deliver is not None:
            self.pushes += topic.fan_out((deliver,))
        elif repair:
            self._mark_dirty(topic)

    def on_ephemeral(self, event: Event) -> None:
        self.notifications += 1
        topic = self.topics.get(event.topic)
        if topic is not None:
            self.pushes += topic.fan_out((event,))

    # --- catch-up ----------------------------------------------------------------------------

    def _mark_dirty(self, topic: Topic) -> None:
        self._dirty[topic.name] = topic
        self._dirty_event.set()

    def request_repair_all(self) -> list[tuple[Topic, int]]:
        """After a (re)connect: every topic reads the log again. Returns what to wait for."""
        marks = []
        self._kick.set()
        self._kick = anyio.Event()
        for topic in self.topics.values():
            # A topic already in repair, its read in flight, is re-read anyway: its epoch moved.
            if topic.seq.request_repair():
                self._mark_dirty(topic)
            marks.append((topic, topic.seq.epoch))
        return marks

    def caught_up(self, marks: list[tuple[Topic, int]]) -> bool:
        return all(
            self.topics.get(t.name) is not t or t.seq.completed_epoch >= epoch
            for t, epoch in marks
        )

    async def wait_progress(self) -> None:
        await self._progress.wait()

    async def wait_kick(self) -> None:
        await self._kick.wait()

    async def wait_dirty(self) -> None:
        while not self._dirty and not self.closed:
            self._dirty_event = anyio.Event()
            await self._dirty_event.wait()

    def take_dirty(self, limit: int) -> list[Topic]:
        batch = []
        for name in list(self._dirty)[:limit]:
            batch.append(self._dirty.pop(name))
        return batch

    def give_back(self, topics: Iterable[Topic]) -> None:
        """A catch-up read failed: these topics stay in repair and are retried."""
        for topic in topics:
            if self.topics.get(topic.name) is topic:
                self._mark_dirty(topic)

    def apply(self, topic: Topic, read: LogRead) -> None:
        if self.topics.get(topic.name) is not topic:
            return  # every subscriber left while the read was in flight
        self.repairs += 1
        items, done = topic.seq.on_log(read)
        if topic.seq.initialized:
            topic.initialized.set()
        self.pushes += topic.fan_out(items)
        if not done:
            self._mark_dirty(topic)

    def progressed(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    # --- introspection -----------------------------------------------------------------------

    def queued(self) -> int:
        return sum(sub.queued for t in self.topics.values() for sub in t.subs)

    def subscriber_count(self) -> int:
        return sum(len(t.subs) for t in self.topics.values())
