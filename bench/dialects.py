"""How a load-generator connection talks to each system under test, without I/O.

Every system delivers the same events (the comments the bench writes); they differ in how a
client subscribes. A dialect is one connection's side of that conversation: the path and
headers of the upgrade, the text frames to send once open, and what each server frame means
(ready, an error, a reply to send). Events are recognised by the marker the writers put in
the comment content, `bench:<n>:<stamp_ns>`, whatever frame carries it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote

import orjson

SYSTEMS = ("courtside", "pusher", "floor", "naive", "socketio")
# The `pusher` system is courtside serving the Pusher protocol (COURTSIDE_PUSHER_APP_*).
PUSHER_KEY = "bench-key"
PUSHER_SECRET = "bench-secret"  # noqa: S105 - a throwaway server's, on loopback

_MARKER = re.compile(rb"bench:(\d+):(\d+)")


def marker_content(n: int, stamp_ns: int) -> str:
    """The comment content the writers commit: event number and the pre-commit stamp."""
    return f"bench:{n}:{stamp_ns}"


def find_marker(payload: bytes) -> tuple[int, int] | None:
    """(event number, stamp) of the bench comment this frame carries, if it carries one."""
    if b"bench:" not in payload:
        return None
    m = _MARKER.search(payload)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2))


@dataclass
class ConnSpec:
    """One connection to open: the topic it follows, from where, as whom."""

    topic: str
    token: str | None = None
    since: int | None = None


class Dialect:
    path = "/"

    def __init__(self, spec: ConnSpec) -> None:
        self.spec = spec
        self.ready = False
        self.error: str | None = None  # a refusal before `ready`
        self.notices: list[str] = []  # what the server said after `ready` (reset, error, ...)
        self.seq: int | None = None  # the topic's last seq when subscribed (courtside)

    def headers(self) -> dict[str, str]:
        return {}

    def opened(self) -> list[bytes]:
        """Text frames to send as soon as the upgrade completes."""
        return []

    def on_text(self, payload: bytes) -> list[bytes]:
        """Digest one server text frame; return text frames to send back."""
        return []


class Courtside(Dialect):
    path = "/ws"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.spec.token}"} if self.spec.token else {}

    def opened(self) -> list[bytes]:
        return [orjson.dumps({"type": "subscribe", "topic": self.spec.topic,
                              "since": self.spec.since})]

    def on_text(self, payload: bytes) -> list[bytes]:
        if payload.startswith(b'{"type":"event"'):
            return []
        if payload.startswith(b'{"type":"subscribed"'):
            frame = orjson.loads(payload)
            if frame.get("topic") == self.spec.topic:
                self.seq = int(frame["seq"])
                self.ready = True
        elif payload.startswith(b'{"type":"error"'):
            code = str(orjson.loads(payload).get("code"))
            if self.ready:
                self.notices.append(f"error:{code}")
            else:
                self.error = code
        elif not payload.startswith(b'{"type":"connected"'):
            kind = orjson.loads(payload).get("type")
            self.notices.append(str(kind))
        return []


class Pusher(Dialect):
    """courtside's Pusher endpoint as pusher-js + Laravel Echo use it: the session's private
    channel, the bearer token at the handshake, the subscription signed with the app secret
    (what /broadcasting/auth would answer)."""

    path = f"/app/{PUSHER_KEY}?protocol=7&client=js&version=8.4.0"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.spec.token}"} if self.spec.token else {}

    def on_text(self, payload: bytes) -> list[bytes]:
        if not payload.startswith(b'{"event":"pusher'):
            return []  # an event, or a channel's member change
        frame = orjson.loads(payload)
        event = frame.get("event")
        if event == "pusher:connection_established":
            socket_id = orjson.loads(frame["data"])["socket_id"]
            channel = "private-sport-session." + self.spec.topic.split(":", 1)[1]
            signature = hmac.new(PUSHER_SECRET.encode(), f"{socket_id}:{channel}".encode(),
                                 hashlib.sha256).hexdigest()
            return [orjson.dumps({"event": "pusher:subscribe", "data": {
                "channel": channel, "auth": f"{PUSHER_KEY}:{signature}"}})]
        if event == "pusher_internal:subscription_succeeded":
            self.ready = True
        elif event == "pusher:ping":
            return [b'{"event":"pusher:pong","data":{}}']
        elif event == "pusher:error":
            data = frame.get("data")
            code = str(data.get("code") if isinstance(data, dict) else data)
            if self.ready:
                self.notices.append(f"error:{code}")
            else:
                self.error = code
        return []


class Floor(Dialect):
    """The floor and the naive bridge: `/ws?topic=...`, the server says `ready` once the
    subscription is registered."""

    def __init__(self, spec: ConnSpec) -> None:
        super().__init__(spec)
        self.path = f"/ws?topic={quote(spec.topic)}"

    def on_text(self, payload: bytes) -> list[bytes]:
        if payload == b"ready":
            self.ready = True
        return []


class SocketIO(Dialect):
    """Engine.IO 4 over a WebSocket from the start (no polling), Socket.IO 5 packets."""

    path = "/socket.io/?EIO=4&transport=websocket"

    def on_text(self, payload: bytes) -> list[bytes]:
        if payload == b"2":  # engine.io ping: answer or be dropped
            return [b"3"]
        if payload.startswith(b"42"):
            if payload.startswith(b'42["subscribed"'):
                self.ready = True
            return []
        if payload.startswith(b"0{"):  # engine.io open → connect to the main namespace
            return [b"40"]
        if payload.startswith(b"40"):  # namespace joined → subscribe
            return [b"42" + orjson.dumps(["subscribe", self.spec.topic])]
        if payload.startswith(b"44"):
            self.error = payload[2:200].decode(errors="replace")
        return []


def make_dialect(system: str, spec: ConnSpec) -> Dialect:
    if system == "courtside":
        return Courtside(spec)
    if system == "pusher":
        return Pusher(spec)
    if system in ("floor", "naive"):
        return Floor(spec)
    if system == "socketio":
        return SocketIO(spec)
    raise ValueError(f"unknown system {system!r}")
