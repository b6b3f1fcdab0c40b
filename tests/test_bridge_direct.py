"""Direct delivery (bridge/direct.py): the fan-out writes an event's frame to a parked
subscriber's open gate itself, and hands everything else to `Subscription.push` — the sink
or the queue — so that each event still reaches each subscriber once, in order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge import Direct, Event, Gate, Subscription, hub
from bridge.hub import Topic
from bridge.subqueue import BoundedQueue

TOPIC = "session:00000000-0000-0000-0000-000000000001"

Deliver = Callable[[Event, tuple[Subscription, ...]], None]
# The loop in Python, and compiled where the extension was built (tests/test_fanout_compiled.py
# fails when a C compiler was at hand and it was not).
IMPLEMENTATIONS: dict[str, Deliver] = {"python": hub.deliver_py}
if hub.COMPILED_FANOUT:
    IMPLEMENTATIONS["compiled"] = hub.deliver


@pytest.fixture(autouse=True, params=sorted(IMPLEMENTATIONS))
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs `Topic.fan_out` over each implementation of its loop."""
    name: str = request.param
    monkeypatch.setattr(hub, "deliver", IMPLEMENTATIONS[name])
    return name


class NoLog:
    async def backlog(self, topic: str, after: int, upto: int, page: int) -> list[Event]:
        raise AssertionError("no backlog in these tests")

    async def last_seq(self, topic: str) -> int:
        raise AssertionError("no backlog in these tests")


class Socket:
    """A gate's write: the frames it was given, or `fail` raised once the socket is gone."""

    def __init__(self, fail: type[BaseException] | None = None) -> None:
        self.frames: list[bytes] = []
        self.fail = fail

    def write(self, frame: bytes) -> None:
        if self.fail is not None:
            raise self.fail("the handler is closed")
        self.frames.append(frame)


def subscription(sink: Callable[[Event], bool], direct: Direct | None, *, parked: bool = True,
                 start: int = 0, cls: type[Subscription] = Subscription) -> Subscription:
    """A started subscription with `sink` (and `direct`), parked unless asked otherwise."""
    sub = cls(TOPIC, None, BoundedQueue(100, 1 << 20), NoLog(), 10)
    sub.start(start, on_cut=lambda s: None, on_release=lambda s: None)
    sub.set_sink(sink, direct)
    if parked:
        assert sub.detach(lambda: None)
    return sub


class Subscriber:
    """A subscription with a sink (recording what it takes) and, if asked, a direct."""

    encodings = 0

    def __init__(self, *, parked: bool = True, open_gate: bool = True, direct: bool = True,
                 fail: bool = False, socket_id: str = "s1") -> None:
        self.socket = Socket(RuntimeError if fail else None)
        self.sunk: list[Event] = []
        gate = Gate()
        gate.write = self.socket.write
        gate.open = open_gate
        self.gate = gate
        self.sub = subscription(self.sink, Direct(gate, "test", self.encode, socket_id)
                                if direct else None, parked=parked)

    def sink(self, event: Event) -> bool:
        self.sunk.append(event)
        return True

    @classmethod
    def encode(cls, event: Event) -> bytes:
        cls.encodings += 1
        return b"frame:" + str(event.seq).encode()


def fan_out(subscribers: list[Subscriber], *events: Event) -> None:
    topic = Topic(TOPIC, 100)
    for s in subscribers:
        topic.subs[s.sub] = None
    assert topic.fan_out(events) == len(subscribers) * len(events)


def event(seq: int | None, origin: str | None = None) -> Event:
    return Event(TOPIC, seq, "comment.created", origin, b"{}")


def test_open_gates_get_one_frame_object_and_the_rest_goes_through_push() -> None:
    Subscriber.encodings = 0
    direct = [Subscriber(), Subscriber()]
    closed = Subscriber(open_gate=False)
    undirected = Subscriber(direct=False)
    busy = Subscriber(parked=False)
    fan_out([*direct, closed, undirected, busy], event(1), event(2))

    assert [s.socket.frames for s in direct] == [[b"frame:1", b"frame:2"]] * 2
    assert direct[0].socket.frames[0] is direct[1].socket.frames[0]  # built once
    assert Subscriber.encodings == 2
    assert all(not s.sunk and s.sub.last_seq == 2 for s in direct)
    # The same events by the sink's path, and not through the gate.
    for s in (closed, undirected):
        assert [e.seq for e in s.sunk] == [1, 2]
        assert not s.socket.frames
        assert s.sub.last_seq == 2
    # Not parked: the queue, for its consumer.
    assert busy.sub.queued == 2
    assert not busy.sunk
    assert not busy.socket.frames


def test_own_events_and_repeats_are_not_written() -> None:
    mine = Subscriber(socket_id="me")
    other = Subscriber(socket_id="other")
    fan_out([mine, other], event(1, origin="me"), event(2), event(2), event(1))
    assert mine.socket.frames == [b"frame:2"]  # its own write skipped, repeats dropped
    assert other.socket.frames == [b"frame:1", b"frame:2"]
    assert mine.sub.last_seq == other.sub.last_seq == 2


def test_ephemeral_events_are_written_without_moving_the_seq() -> None:
    s = Subscriber()
    fan_out([s], event(1), event(None), event(None, origin="s1"))
    assert s.socket.frames == [b"frame:1", b"frame:None"]
    assert s.sub.last_seq == 1


def test_a_socket_closed_under_the_fan_out_hands_the_event_to_push() -> None:
    broken = Subscriber(fail=True)
    fine = Subscriber()
    fan_out([broken, fine], event(1))
    assert [e.seq for e in broken.sunk] == [1]  # the sink decides what a dead socket means
    assert broken.sub.last_seq == 1
    assert fine.socket.frames == [b"frame:1"]


def test_a_gate_closed_between_events_stops_direct_writes_at_once() -> None:
    s = Subscriber()
    topic = Topic(TOPIC, 100)
    topic.subs[s.sub] = None
    topic.fan_out([event(1)])
    s.gate.open = False
    topic.fan_out([event(2)])
    s.gate.open = True
    topic.fan_out([event(3)])
    assert s.socket.frames == [b"frame:1", b"frame:3"]
    assert [e.seq for e in s.sunk] == [2]


def test_unsinking_or_closing_ends_the_direct() -> None:
    s = Subscriber()
    s.sub.set_sink(None)
    assert s.sub.direct is None
    fan_out([s], event(1))
    assert not s.socket.frames
    assert s.sub.queued == 1

    t = Subscriber()
    t.sub.close("overflow")
    assert t.sub.direct is None
    fan_out([t], event(1))
    assert not t.socket.frames
    assert not t.sunk
