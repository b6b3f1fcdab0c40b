"""What subscribers and control callbacks receive. Plain data, shared, never mutated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson


class Event:
    """One event, shared by every subscriber of its topic in this process.

    ``seq`` is None for ephemeral events. ``data`` is the payload as JSON bytes. Wire formats
    encode through :meth:`encoded`, so N subscribers cost one encoding, not N.
    """

    __slots__ = ("_memo", "_payload", "data", "origin", "seq", "topic", "type")

    def __init__(self, topic: str, seq: int | None, type: str, origin: str | None,
                 data: bytes, payload: Any = None) -> None:
        self.topic = topic
        self.seq = seq
        self.type = type
        self.origin = origin
        self.data = data
        self._payload = payload
        self._memo: dict[str, bytes] | None = None

    def encoded(self, key: str, encode: Callable[[Event], bytes]) -> bytes:
        """``encode(self)``, computed on the first call for ``key`` and cached afterwards."""
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        try:
            return memo[key]
        except KeyError:
            value = memo[key] = encode(self)
            return value

    @property
    def payload(self) -> Any:
        """The parsed payload (read-only by convention: it is shared)."""
        if self._payload is None:
            self._payload = orjson.loads(self.data)
        return self._payload

    @property
    def durable(self) -> bool:
        return self.seq is not None

    def _key(self) -> tuple[str, int | None, str, str | None, bytes]:
        return (self.topic, self.seq, self.type, self.origin, self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Event(topic={self.topic!r}, seq={self.seq!r}, type={self.type!r}, "
                f"origin={self.origin!r}, data=<{len(self.data)} bytes>)")


@dataclass(frozen=True)
class Reset:
    """The subscriber missed events it cannot be given: reload, then continue after ``seq``."""

    topic: str
    seq: int


@dataclass(frozen=True)
class CutOff:
    """The last item of a subscription. Resume with ``subscribe(topic, since=last_seq)``.

    ``reason``: ``"overflow"`` (fell behind its queue bound), ``"shutdown"`` (the bridge is
    stopping), ``"unavailable"`` (the database failed while its backlog was being read).
    """

    reason: str
    last_seq: int
    topic: str = ""


@dataclass(frozen=True)
class Control:
    """A control notification (token.revoked, participant.removed, ..., bridge.resync)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


OVERFLOW = "overflow"
SHUTDOWN = "shutdown"
UNAVAILABLE = "unavailable"
RESYNC = "bridge.resync"

Item = Event | Reset | CutOff
