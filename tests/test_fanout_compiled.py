"""The compiled fan-out loop (bridge/_fanout.c) does what the Python one does
(bridge.hub.deliver_py): the same frames to the same sockets, the same events to the same
sinks and queues, the same seqs, the same exceptions — over random subscriber states, both
kinds of write callable, a subscriber of another class — and keeps no references."""

from __future__ import annotations

import random
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge import Direct, Event, Gate, Subscription, hub
from tests.test_bridge_direct import TOPIC, Socket, subscription

compiled = pytest.mark.skipif(not hub.COMPILED_FANOUT, reason="bridge._fanout not built")


def test_the_compiled_loop_is_built_where_a_compiler_is() -> None:
    # An install that had a compiler and still fell back to Python is a broken build, not
    # a slower one.
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler})")
    assert hub.COMPILED_FANOUT, "bridge/_fanout.c was not built: pip install -e . again"


class Closed(Exception):
    pass


class Stop(BaseException):
    """Not an Exception: neither loop may swallow it."""


class OtherSubscription(Subscription):
    """A subclass: the compiled loop prefetches only for the exact classes it saw first,
    and must deliver to any other just the same."""

    __slots__ = ()


@dataclass
class World:
    subs: list[Subscription]
    sockets: list[Socket | list[bytes]]
    sunk: list[list[tuple[int | None, str | None]]]
    encodings: list[int] = field(default_factory=lambda: [0])


def build(seed: int) -> tuple[World, list[Event]]:
    """Subscribers in random states and a few events, the same for a given seed."""
    rng = random.Random(seed)
    world = World([], [], [])
    fails: dict[tuple[str, int | None], bool] = {}  # (key, seq): its encoder raises
    encoders = {}
    for key in ("a", "b"):
        def encode(event: Event, key: str = key) -> bytes:
            world.encodings[0] += 1
            if fails.get((key, event.seq)):
                raise ValueError("cannot encode")
            return f"{key}:{event.seq}".encode()
        encoders[key] = encode
    for i in range(rng.randint(1, 12)):
        cls = OtherSubscription if rng.random() < 0.15 else Subscription
        start = rng.choice([0, 0, 1, 2])
        sunk: list[tuple[int | None, str | None]] = []
        world.sunk.append(sunk)

        def sink(event: Event, sunk: list[tuple[int | None, str | None]] = sunk) -> bool:
            sunk.append((event.seq, event.origin))
            return True

        gate = Gate()
        gate.open = rng.random() < 0.8
        kind = rng.choice(["method", "builtin", "failing", "failing"])
        if kind == "builtin":  # a C callable, as uvloop's transport.write is
            frames: list[bytes] = []
            gate.write = frames.append
            world.sockets.append(frames)
        else:
            socket = Socket(Closed if kind == "failing" and rng.random() < 0.5 else None)
            gate.write = socket.write
            world.sockets.append(socket)
        key = rng.choice("ab")
        direct = (Direct(gate, key, encoders[key], rng.choice(["s1", "s2", f"c{i}"]))
                  if rng.random() < 0.85 else None)
        world.subs.append(subscription(sink, direct, parked=rng.random() < 0.8, start=start,
                                       cls=cls))
    events = []
    for _ in range(rng.randint(1, 5)):
        seq = rng.choice([None, 1, 2, 3, 4])
        events.append(Event(TOPIC, seq, "comment.created", rng.choice([None, "s1", "s2"]),
                            b"{}"))
        for key in "ab":
            fails[(key, seq)] = rng.random() < 0.1
    return world, events


def observe(world: World) -> list[Any]:
    out: list[Any] = [world.encodings[0]]
    for sub, socket, sunk in zip(world.subs, world.sockets, world.sunk, strict=True):
        frames = socket if isinstance(socket, list) else socket.frames
        out.append((list(frames), list(sunk), sub.last_seq, sub.queued, sub.direct is None))
    return out


@compiled
def test_the_compiled_loop_does_what_the_python_loop_does() -> None:
    for seed in range(2000):
        outcomes = []
        for deliver in (hub.deliver_py, hub.deliver):
            world, events = build(seed)
            for event in events:
                deliver(event, tuple(world.subs))
            outcomes.append(observe(world))
        assert outcomes[0] == outcomes[1], f"seed {seed}"


@compiled
def test_what_is_not_an_exception_goes_through_both() -> None:
    for deliver in (hub.deliver_py, hub.deliver):
        gate = Gate()
        gate.open = True
        gate.write = Socket(Stop).write
        sub = subscription(lambda e: True, Direct(gate, "k", lambda e: b"x", None))
        with pytest.raises(Stop):
            deliver(Event(TOPIC, 1, "comment.created", None, b"{}"), (sub,))
        assert sub.last_seq == 0


@compiled
def test_the_compiled_loop_keeps_no_references() -> None:
    frames: list[bytes] = []
    gates = [Gate(), Gate()]
    gates[0].write = frames.append
    gates[1].write = Socket(Closed).write  # the push path, through the exception
    key, encode = "k", (lambda e: b"frame")
    subs = []
    for gate in gates:
        gate.open = True
        subs.append(subscription(lambda e: True, Direct(gate, key, encode, "me")))
    held = tuple(subs)
    event = Event(TOPIC, None, "comment.created", "other", b"{}")
    watched = [event, held, *subs, *gates, key, encode, *(s.direct for s in subs)]
    hub.deliver(event, held)  # the event's frame is cached on the first call
    frame = frames[0]
    before = [sys.getrefcount(o) for o in watched]
    framed = sys.getrefcount(frame)
    for _ in range(1000):
        hub.deliver(event, held)
    assert sys.getrefcount(frame) == framed + 1000  # the 1000 in `frames`, no more
    assert [sys.getrefcount(o) for o in watched] == before
    assert subs[1].queued == 0  # the failing socket's events went to its sink
