"""Pusher Channels protocol v7, without any I/O: configuration, frames, signatures, channel
names and the per-connection decisions (`PusherCore`). api/pusher_ws.py carries them out.

Configuration (environment; the transport is off unless both key and secret are set)::

    COURTSIDE_PUSHER_APP_ID      default "courtside"; only the HTTP events API path uses it
    COURTSIDE_PUSHER_APP_KEY     public; the client's `key`, the `/app/{key}` path
    COURTSIDE_PUSHER_APP_SECRET  signs /broadcasting/auth answers (and events API requests)
    COURTSIDE_PUSHER_MAX_CONNECTIONS  default 10000 Pusher connections per process (4100 past it)

Channels (a Laravel app's names; ids are canonical lowercase uuids):

- ``sport-session.{id}``: public sessions only, no authorization; topic ``session:{id}``.
- ``private-sport-session.{id}`` / ``presence-sport-session.{id}``: participants only.
- ``private-user.{id}``: that user only (``mention.created``); topic ``user:{id}``.

Every event of the topic is sent as ``{"event": <courtside name>, "channel", "data": <the
payload as a JSON string>}``; presence channels also get ``pusher_internal:member_added`` /
``member_removed`` from courtside presence (``user.online`` / ``user.offline``).

Authorization. ``POST /broadcasting/auth`` signs ``socket_id:channel[:channel_data]`` with
HMAC-SHA256 as Pusher does. Its ``channel_data`` (sent for private channels too; pusher-js
passes it back verbatim) carries ``courtside_token``, the id of the Sanctum token that asked:
it is covered by the signature, so a connection opened without a token is bound to that one
(its revocation and expiry end the private subscriptions, as on ``/ws``). A signature without
it is only accepted on a connection that authenticated itself at the handshake.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

import orjson

from api.realtime_limits import RealtimeLimits, TokenBucket
from api.realtime_protocol import Topic
from api.typing_state import PublishTyping, TypingOutcome, TypingState

PROTOCOL_VERSION = 7
MIN_PROTOCOL_VERSION = 5
ACTIVITY_TIMEOUT = 120
TYPING_EVENT = "client-typing"
SIGNED_REQUEST_MAX_AGE = 600  # seconds either side of auth_timestamp, as Pusher's API


class PusherCode(IntEnum):
    """``pusher:error`` codes and close codes (Pusher protocol: 4000-4099 do not reconnect,
    4100-4199 reconnect with backoff, 4200-4299 reconnect at once, 4300+ other)."""

    SSL_ONLY = 4000
    APP_DOES_NOT_EXIST = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_NOT_RECEIVED = 4201
    INACTIVITY = 4202
    CLIENT_EVENT_RATE_LIMIT = 4301


@dataclass(frozen=True)
class PusherConfig:
    key: str
    secret: str
    app_id: str = "courtside"
    activity_timeout: int = ACTIVITY_TIMEOUT
    max_connections: int = 10_000

    def __post_init__(self) -> None:
        if not self.key or not self.secret:
            raise ValueError("a Pusher app needs a key and a secret")
        if ":" in self.key:
            raise ValueError("COURTSIDE_PUSHER_APP_KEY may not contain ':'")
        if self.max_connections <= 0 or self.activity_timeout <= 0:
            raise ValueError("Pusher limits must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PusherConfig | None:
        """None (transport off) unless COURTSIDE_PUSHER_APP_KEY and _SECRET are both set."""
        env = os.environ if environ is None else environ
        key = env.get("COURTSIDE_PUSHER_APP_KEY", "")
        secret = env.get("COURTSIDE_PUSHER_APP_SECRET", "")
        if not key or not secret:
            return None
        raw = env.get("COURTSIDE_PUSHER_MAX_CONNECTIONS", "10000")
        try:
            max_connections = int(raw)
        except ValueError:
            raise ValueError(f"COURTSIDE_PUSHER_MAX_CONNECTIONS={raw!r}: an integer") from None
        return cls(key=key, secret=secret,
                   app_id=env.get("COURTSIDE_PUSHER_APP_ID", "") or "courtside",
                   max_connections=max_connections)


def protocol_problem(protocol: str | None) -> PusherCode | None:
    """The handshake's ``protocol`` query parameter: None when acceptable."""
    if protocol is None or protocol == "":
        return PusherCode.NO_PROTOCOL
    if not protocol.isdigit():
        return PusherCode.INVALID_VERSION
    if not MIN_PROTOCOL_VERSION <= int(protocol) <= PROTOCOL_VERSION:
        return PusherCode.UNSUPPORTED_PROTOCOL
    return None


# -- channels -------------------------------------------------------------------------------

ChannelKind = Literal["public", "private", "presence", "user"]
_PREFIXES: tuple[tuple[str, ChannelKind], ...] = (
    ("private-sport-session.", "private"),
    ("presence-sport-session.", "presence"),
    ("private-user.", "user"),
    ("sport-session.", "public"),
)

# The channels /broadcasting/auth signs, as a JSON Schema (ECMA) pattern for /openapi.json.
AUTH_CHANNEL_PATTERN = "^(?:{})[0-9a-f]{{8}}(?:-[0-9a-f]{{4}}){{3}}-[0-9a-f]{{12}}$".format(
    "|".join(prefix.replace(".", r"\.") for prefix, kind in _PREFIXES if kind != "public"))


@dataclass(frozen=True)
class Channel:
    name: str
    kind: ChannelKind
    topic: Topic

    @property
    def needs_auth(self) -> bool:
        return self.kind != "public"


def parse_channel(name: object) -> Channel | None:
    if not isinstance(name, str) or len(name) > 64:
        return None
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            try:
                parsed = uuid.UUID(rest)
            except ValueError:
                return None
            if str(parsed) != rest:
                return None
            return Channel(name, kind, Topic("user" if kind == "user" else "session", parsed))
    return None


# -- signatures -----------------------------------------------------------------------------

# ASCII digits only (Python's \d would take any script's), as ours are; for /openapi.json too.
_SOCKET_ID = r"[0-9]{1,20}\.[0-9]{1,20}"
SOCKET_ID_PATTERN = f"^{_SOCKET_ID}$"
_SOCKET_ID_RE = re.compile(_SOCKET_ID)


def valid_socket_id(value: object) -> bool:
    return isinstance(value, str) and _SOCKET_ID_RE.fullmatch(value) is not None


def _hmac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign(secret: str, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """hex HMAC-SHA256 of ``socket_id:channel[:channel_data]``."""
    message = f"{socket_id}:{channel}"
    if channel_data is not None:
        message += f":{channel_data}"
    return _hmac(secret, message)


def auth_for(config: PusherConfig, socket_id: str, channel: str,
             channel_data: str | None = None) -> str:
    """The ``auth`` field of a /broadcasting/auth answer: ``<key>:<signature>``."""
    return f"{config.key}:{sign(config.secret, socket_id, channel, channel_data)}"


def verify_auth(config: PusherConfig, auth: object, socket_id: str, channel: str,
                channel_data: str | None) -> bool:
    if not isinstance(auth, str):
        return False
    expected = auth_for(config, socket_id, channel, channel_data)
    return hmac.compare_digest(auth.encode(), expected.encode())


@dataclass(frozen=True)
class Binding:
    """What signed ``channel_data`` says about the subscriber."""

    user_id: uuid.UUID
    token_id: int | None
    user_info: dict[str, Any] = field(default_factory=dict)


def channel_data_for(user_id: uuid.UUID, token_id: int, user_info: dict[str, Any] | None
                     ) -> str:
    """JSON text: ``{"user_id", ["user_info",] "courtside_token"}``."""
    data: dict[str, Any] = {"user_id": str(user_id)}
    if user_info is not None:
        data["user_info"] = user_info
    data["courtside_token"] = token_id
    return orjson.dumps(data).decode()


def parse_channel_data(text: str) -> Binding | None:
    try:
        data = orjson.loads(text)
        user_id = uuid.UUID(str(data["user_id"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    token = data.get("courtside_token")
    if token is not None and (isinstance(token, bool) or not isinstance(token, int)):
        return None
    info = data.get("user_info")
    return Binding(user_id, token, info if isinstance(info, dict) else {})


# -- signed HTTP API requests (POST /apps/{app_id}/events) ----------------------------------


def request_signature(secret: str, method: str, path: str, params: Mapping[str, str]) -> str:
    """Pusher's ``auth_signature``: HMAC of ``METHOD\\npath\\nk=v&...`` (keys lowercased and
    sorted, values as sent, ``auth_signature`` itself left out)."""
    query = "&".join(f"{k}={v}" for k, v in sorted(
        (k.lower(), v) for k, v in params.items() if k.lower() != "auth_signature"))
    return _hmac(secret, f"{method.upper()}\n{path}\n{query}")


def check_signed_request(config: PusherConfig, method: str, path: str,
                         params: Mapping[str, str], body: bytes, now: float) -> str | None:
    """None when the request is correctly signed by our app, else why not."""
    if params.get("auth_key") != config.key:
        return "unknown auth_key"
    if params.get("auth_version", "1.0") != "1.0":
        return "unsupported auth_version"
    try:
        stamp = int(params.get("auth_timestamp", ""))
    except ValueError:
        return "auth_timestamp missing"
    if abs(now - stamp) > SIGNED_REQUEST_MAX_AGE:
        return "auth_timestamp too far from the server's clock"
    if body and not hmac.compare_digest(params.get("body_md5", ""),
                                        hashlib.md5(body).hexdigest()):  # noqa: S324 - Pusher's
        return "body_md5 does not match the body"
    given = params.get("auth_signature", "")
    if not hmac.compare_digest(given.encode(),
                               request_signature(config.secret, method, path, params).encode()):
        return "invalid auth_signature"
    return None


# -- frames ---------------------------------------------------------------------------------


def _frame(event: str, data: Any, channel: str | None = None) -> bytes:
    out: dict[str, Any] = {"event": event}
    if channel is not None:
        out["channel"] = channel
    out["data"] = data
    return orjson.dumps(out)


def connection_established(socket_id: str, activity_timeout: int = ACTIVITY_TIMEOUT) -> bytes:
    # `data` is a JSON string inside the JSON frame, as Pusher sends it.
    return _frame("pusher:connection_established", orjson.dumps(
        {"socket_id": socket_id, "activity_timeout": activity_timeout}).decode())


PONG = _frame("pusher:pong", "{}")
PING = _frame("pusher:ping", "{}")


def error_frame(code: int | None, message: str, channel: str | None = None) -> bytes:
    return _frame("pusher:error", {"code": code, "message": message}, channel)


def presence_payload(members: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"presence": {"ids", "hash", "count"}}`` from ``[{"user_id", "user_info"}]``."""
    ids = [m["user_id"] for m in members]
    return {"presence": {"ids": ids, "hash": {m["user_id"]: m["user_info"] for m in members},
                         "count": len(ids)}}


def subscription_succeeded(channel: str, members: list[dict[str, Any]] | None = None) -> bytes:
    data = {} if members is None else presence_payload(members)
    return _frame("pusher_internal:subscription_succeeded", orjson.dumps(data).decode(),
                  channel)


def member_added(channel: str, user_id: str, user_info: dict[str, Any]) -> bytes:
    return _frame("pusher_internal:member_added",
                  orjson.dumps({"user_id": user_id, "user_info": user_info}).decode(), channel)


def member_removed(channel: str, user_id: str) -> bytes:
    return _frame("pusher_internal:member_removed",
                  orjson.dumps({"user_id": user_id}).decode(), channel)


def event_frame(channel: str, event: str, data: bytes) -> bytes:
    """`data` is the event's payload as JSON bytes; Pusher carries it as a JSON string."""
    return b"".join((b'{"event":', orjson.dumps(event), b',"channel":', orjson.dumps(channel),
                     b',"data":', orjson.dumps(data.decode()), b"}"))


def member_of(user: Any) -> dict[str, Any] | None:
    """A courtside presence user (``{id, firstname, lastname, ...}``) as a Pusher member."""
    if not isinstance(user, dict) or "id" not in user:
        return None
    info = {k: user[k] for k in ("id", "firstname", "lastname") if k in user}
    return {"user_id": str(user["id"]), "user_info": info}


# -- client messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscribe:
    channel: str
    auth: str | None
    channel_data: str | None


@dataclass(frozen=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class ClientEvent:
    event: str
    channel: str
    data: Any


ClientMessage = Subscribe | Unsubscribe | Ping | Pong | ClientEvent


class MessageError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _data_object(value: Any) -> dict[str, Any]:
    # pusher-js sends objects; some clients send the data as a JSON string, as the server does.
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise MessageError("data is not JSON") from None
    if not isinstance(value, dict):
        raise MessageError("data must be an object")
    return value


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageError(f"{key} must be a string")
    return value


def parse_message(text: str) -> ClientMessage:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise MessageError("Invalid JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise MessageError("a message is an object with an event")
    event: str = message["event"]
    if event == "pusher:ping":
        return Ping()
    if event == "pusher:pong":
        return Pong()
    if event in ("pusher:subscribe", "pusher:unsubscribe"):
        data = _data_object(message.get("data"))
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise MessageError("channel must be a string")
        if event == "pusher:unsubscribe":
            return Unsubscribe(channel)
        return Subscribe(channel, _opt_str(data, "auth"), _opt_str(data, "channel_data"))
    if event.startswith("client-"):
        channel = message.get("channel")
        if not isinstance(channel, str):
            raise MessageError("a client event needs a channel")
        return ClientEvent(event, channel, message.get("data"))
    raise MessageError(f"Unsupported event {event[:64]!r}")


# -- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    frame: bytes


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True)
class Start:
    """Check access (binding the connection to `binding`'s token if it has none), subscribe,
    join presence, then `PusherCore.started` (or `refused`)."""

    channel: Channel
    binding: Binding | None


@dataclass(frozen=True)
class Stop:
    channel: Channel


Action = Reply | Close | Start | Stop | PublishTyping


@dataclass
class _Sub:
    channel: Channel
    active: bool = False
    typing: TypingState | None = None


@dataclass
class PusherCore:
    """One connection's protocol state: what it is subscribed to, and its rate limits."""

    config: PusherConfig
    limits: RealtimeLimits
    socket_id: str
    now: float
    authenticated: bool = False  # a token was presented at the handshake
    _bucket: TokenBucket = field(init=False)
    _rejected_in_row: int = field(init=False, default=0)
    _subs: dict[str, _Sub] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.limits.messages_per_second, self.limits.message_burst,
                                   self.now)

    def receive_text(self, text: str, now: float) -> list[Action]:
        limit = self.limits.max_frame_bytes
        if len(text.encode()) > limit:
            return [Reply(error_frame(None, f"Messages are limited to {limit} bytes")),
                    Close(PusherCode.CLIENT_EVENT_RATE_LIMIT, "message too big")]
        if not self._bucket.allow(now):
            self._rejected_in_row += 1
            if self._rejected_in_row > self.limits.close_after_rejected:
                return [Close(PusherCode.CLIENT_EVENT_RATE_LIMIT, "message rate exceeded")]
            if self._rejected_in_row == 1:
                return [Reply(error_frame(PusherCode.CLIENT_EVENT_RATE_LIMIT,
                                          "Message rejected due to rate limit"))]
            return []
        self._rejected_in_row = 0
        try:
            message = parse_message(text)
        except MessageError as exc:
            return [Reply(error_frame(exc.code, exc.message))]
        if isinstance(message, Ping):
            return [Reply(PONG)]
        if isinstance(message, Pong):
            return []
        if isinstance(message, Subscribe):
            return self._subscribe(message)
        if isinstance(message, Unsubscribe):
            return self._unsubscribe(message.channel)
        return self._client_event(message, now)

    def _subscribe(self, msg: Subscribe) -> list[Action]:
        channel = parse_channel(msg.channel)
        if channel is None:
            return [Reply(error_frame(None, f"Invalid channel name {msg.channel[:64]!r}"))]
        if channel.name in self._subs:
            return [Reply(error_frame(None, f"Existing subscription to channel {channel.name}"))]
        if len(self._subs) >= self.limits.max_subscriptions:
            return [Reply(error_frame(PusherCode.OVER_CAPACITY, "Too many subscriptions",
                                      channel.name))]
        binding: Binding | None = None
        if channel.needs_auth:
            data = msg.channel_data
            if not verify_auth(self.config, msg.auth, self.socket_id, channel.name, data):
                return [Reply(error_frame(PusherCode.UNAUTHORIZED, "Invalid signature",
                                          channel.name))]
            if data is not None:
                binding = parse_channel_data(data)
                if binding is None:
                    return [Reply(error_frame(PusherCode.UNAUTHORIZED, "Invalid channel_data",
                                              channel.name))]
            if channel.kind == "presence" and binding is None:
                return [Reply(error_frame(PusherCode.UNAUTHORIZED,
                                          "Presence channels need channel_data", channel.name))]
            if (binding is None or binding.token_id is None) and not self.authenticated:
                return [Reply(error_frame(PusherCode.UNAUTHORIZED,
                                          "Not signed by /broadcasting/auth", channel.name))]
        self._subs[channel.name] = _Sub(channel)
        return [Start(channel, binding)]

    def _unsubscribe(self, name: str) -> list[Action]:
        sub = self._subs.pop(name, None)
        if sub is None:
            return []  # Pusher ignores it
        return self._ended(sub)

    def _ended(self, sub: _Sub) -> list[Action]:
        actions: list[Action] = [Stop(sub.channel)]
        if sub.typing is not None and sub.typing.active and not self._typing_elsewhere(sub):
            actions.append(PublishTyping(sub.channel.topic, False))
        return actions

    def _typing_elsewhere(self, sub: _Sub) -> bool:
        return any(s is not sub and s.channel.topic == sub.channel.topic
                   and s.typing is not None and s.typing.active for s in self._subs.values())

    def _client_event(self, msg: ClientEvent, now: float) -> list[Action]:
        sub = self._subs.get(msg.channel)
        if sub is None or not sub.active:
            return [Reply(error_frame(None, f"Not subscribed to channel {msg.channel[:64]}"))]
        if sub.channel.kind != "presence" or msg.event != TYPING_EVENT:
            return [Reply(error_frame(None, f"Client event {msg.event[:64]} rejected: only "
                                            f"{TYPING_EVENT} on presence channels",
                                      sub.channel.name))]
        is_typing = True
        if isinstance(msg.data, dict):
            flag = msg.data.get("isTyping", msg.data.get("typing", True))
            is_typing = flag if isinstance(flag, bool) else True
        if sub.typing is None:
            sub.typing = TypingState.new(self.limits, now)
        outcome = sub.typing.request(is_typing, now, self.limits)
        if outcome is TypingOutcome.RATE_LIMITED:
            return [Reply(error_frame(PusherCode.CLIENT_EVENT_RATE_LIMIT,
                                      "Client event rejected due to rate limit",
                                      sub.channel.name))]
        if outcome is TypingOutcome.QUIET:
            return []
        return [PublishTyping(sub.channel.topic, is_typing)]

    # -- outcomes reported by the I/O layer --------------------------------------------------

    def started(self, channel: Channel) -> None:
        sub = self._subs.get(channel.name)
        if sub is not None:
            sub.active = True

    def refused(self, channel: Channel) -> None:
        self._subs.pop(channel.name, None)

    def revoked(self, channel: Channel, message: str) -> list[Action]:
        """The server ends a subscription (token revoked, participant removed, ...)."""
        sub = self._subs.pop(channel.name, None)
        if sub is None:
            return []
        actions = self._ended(sub)
        actions.append(Reply(error_frame(PusherCode.UNAUTHORIZED, message, channel.name)))
        return actions

    def channels(self, topic: str | None = None) -> list[Channel]:
        return [s.channel for s in self._subs.values()
                if topic is None or s.channel.topic.name == topic]

    def typing_active(self, channel: str) -> bool:
        sub = self._subs.get(channel)
        return sub is not None and sub.typing is not None and sub.typing.active

    def next_typing_deadline(self) -> float | None:
        deadlines = [s.typing.deadline for s in self._subs.values()
                     if s.typing is not None and s.typing.deadline is not None]
        return min(deadlines, default=None)

    def typing_due(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for sub in self._subs.values():
            if sub.typing is not None and sub.typing.expire(now):
                actions.append(PublishTyping(sub.channel.topic, False))
        return actions
