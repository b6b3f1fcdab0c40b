"""Direct delivery: the fan-out writes an event's bytes to an idle subscriber's socket itself.

Fanning one event out to thousands of subscribers, what costs is what is done per
subscriber. Through a sink (`Subscription.set_sink`) a delivery is four Python calls deep
(the subscription's push, the transport's sink, its frame writer, the socket's write), each
reading the state of objects that are cold in the CPU cache at this scale. With a `Direct`
the fan-out loop itself (`bridge.hub.Topic.fan_out`) checks the few things that decide
a delivery and calls the socket's write: at 5000 subscribers, CPU per delivery went from
1.72–1.77 × a bare `socket.send` to 1.34–1.50 × (bench/results/README.md).

The transport keeps its connection's `Gate` current: ``open`` only while frames may be
written now and synchronously (handshake done, no close frame sent or received, socket not
lost, write buffer under its high-water mark). Everything a `Direct` does not cover (a
closed gate, a subscriber that is not parked, an event it must not see) goes through
`Subscription.push` and the sink or the queue, as before, so order is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.events import Event


class Gate:
    """One connection's socket, as the fan-out sees it."""

    __slots__ = ("open", "write")

    def __init__(self) -> None:
        self.open = False
        # The socket's write (a transport's), set once connected. It must not block, and may
        # raise only once the socket is closed (uvloop's RuntimeError): the fan-out then hands
        # the event to the subscription's slower path, which finds the socket gone.
        self.write: Callable[[bytes], object] = _unconnected


def _unconnected(frame: bytes) -> None:
    raise RuntimeError("no socket yet")


class Direct:
    """One subscription's direct delivery: its connection's gate, the frame it takes (an
    `Event.encoded` cache key and encoder, shared by every subscriber of that format), and
    the connection's socket id, whose own events it is not sent (X-Socket-ID)."""

    __slots__ = ("encode", "gate", "key", "socket_id")

    def __init__(self, gate: Gate, key: str, encode: Callable[[Event], bytes],
                 socket_id: str | None) -> None:
        self.gate = gate
        self.key = key
        self.encode = encode
        self.socket_id = socket_id
