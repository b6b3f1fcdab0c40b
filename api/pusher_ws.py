"""The Pusher protocol endpoint, ``/app/{key}``: api/pusher_protocol.py's decisions, carried
out with the bridge, courtside presence and the realtime hub.

One connection is one task group around its reader (client messages in order; a subscribe
is set up and answered in the reader's task before the next message is read). Channels are
api/live_subs.py's: no task while idle, the bridge's fan-out writes their events' pre-built
frames directly (a member change and Echo's typing whisper included), and a drain task runs
only for what must await (a mention's access check, a full socket buffer, the cut-off).
Handshake problems (unknown key, protocol version, over capacity, a bad token) are told the
Pusher way: the socket is accepted, a ``pusher:error`` is sent, then a close with that code.

Authentication is optional at the handshake (``Authorization: Bearer`` or ``?ticket=``);
a connection opened without it is bound, at its first private subscription, to the token
that ``/broadcasting/auth`` signed for (api/pusher_auth.py). The hub (api/realtime_hub.py)
then treats it like a ``/ws`` connection of that token: revoking or expiring the token ends
its private and presence subscriptions (``pusher:error`` 4009 with the channel; the socket
stays open for public channels) — or closes the socket with 4009 when the token was given at
the handshake. A removed participant loses the session's channels the same way. Public
channels are re-checked as an anonymous reader: a session made private ends them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from datetime import datetime
from typing import Any, get_args

import anyio
import anyio.abc
import psycopg
from starlette.websockets import WebSocket

from api import realtime_auth
from api.frame_sender import Gone
from api.live_subs import Live, LiveSubscriptions
from api.pusher_protocol import (
    TYPING_EVENT,
    Action,
    Binding,
    Channel,
    ChannelKind,
    Close,
    PusherCode,
    PusherConfig,
    PusherCore,
    Reply,
    Start,
    Stop,
    connection_established,
    error_frame,
    event_frame,
    member_added,
    member_of,
    member_removed,
    protocol_problem,
    subscription_succeeded,
)
from api.realtime_auth import AccessDenied, Principal
from api.realtime_protocol import ErrorCode, message_for, new_socket_id
from api.realtime_socket import RealtimeSocket
from api.realtime_state import Realtime, realtime_of
from api.typing_state import PublishTyping
from api.ws_protocol import text_frame
from bridge import (
    Bridge,
    BridgeError,
    Control,
    CutOff,
    Direct,
    Event,
    Reset,
    Subscription,
)

log = logging.getLogger("courtside.pusher")

ANONYMOUS = Principal(uuid.UUID(int=0), -1, None)  # no user: reads public sessions only

_CLOSE_FOR: dict[ErrorCode, PusherCode] = {
    ErrorCode.TOKEN_REVOKED: PusherCode.UNAUTHORIZED,
    ErrorCode.TOKEN_EXPIRED: PusherCode.UNAUTHORIZED,
    ErrorCode.SERVICE_RESTART: PusherCode.RECONNECT,
    ErrorCode.SLOW_CONSUMER: PusherCode.OVER_CAPACITY,
    ErrorCode.NOT_READY: PusherCode.OVER_CAPACITY,
    ErrorCode.TOO_MANY_CONNECTIONS: PusherCode.OVER_CAPACITY,
}


def _describe(code: ErrorCode) -> str:
    return f"{code.value}: {message_for(code, 'en')}"


class PusherRegistry:
    """The Pusher connections of one process: their number (the over-capacity limit), and
    who holds a participants-only channel of which session.

    The hub re-checks a removed participant with the realtime rule, "public or participant";
    private and presence channels are for participants only, so a removal from a *public*
    session is re-checked here as well (the hub alone would let it pass).
    """

    def __init__(self, config: PusherConfig) -> None:
        self.config = config
        self.count = 0
        self._members: dict[tuple[str, uuid.UUID], set[PusherConnection]] = {}
        self._bridge: Bridge | None = None

    def listen(self, bridge: Bridge) -> None:
        """Hear this bridge's control notifications (once; the bridge lives as the app does)."""
        if self._bridge is not bridge:
            self._bridge = bridge
            bridge.on_control(self.on_control)

    def add(self, topic: str, user_id: uuid.UUID, conn: PusherConnection) -> None:
        self._members.setdefault((topic, user_id), set()).add(conn)

    def discard(self, topic: str, user_id: uuid.UUID, conn: PusherConnection) -> None:
        conns = self._members.get((topic, user_id))
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._members[(topic, user_id)]

    def on_control(self, control: Control) -> None:
        if control.type != "participant.removed":
            return
        try:
            key = (f"session:{uuid.UUID(str(control.data['sessionId']))}",
                   uuid.UUID(str(control.data["userId"])))
        except (KeyError, TypeError, ValueError):
            return
        for conn in list(self._members.get(key, ())):
            conn.recheck_participant(key[0])


_KEYS = {kind: (f"pusher:{kind}", f"pusher:{kind}:frame") for kind in get_args(ChannelKind)}


class _Channel(Live):
    """A running channel of a connection. Its events are encoded once for every channel of
    the same kind on the topic (the channel name is the kind's and the topic's)."""

    __slots__ = ("channel", "joined", "presence", "stay", "user_id", "watched", "watcher")

    def __init__(self, channel: Channel, sub: Subscription, user_id: uuid.UUID, stay: str, *,
                 joined: bool, watched: bool, watcher: _PublicWatch | None) -> None:
        super().__init__(channel.name, sub)
        self.channel = channel
        self.presence = channel.kind == "presence"
        self.user_id = user_id
        self.stay = stay  # its presence row's connection id
        self.joined = joined
        self.watched = watched
        self.watcher = watcher

    def encode(self, event: Event) -> bytes:
        return event_frame(self.channel.name, event.type, event.data)

    def encode_frame(self, event: Event) -> bytes:
        return text_frame(self.encode(event))

    def encode_whisper(self, event: Event) -> bytes:
        return event_frame(self.channel.name, TYPING_EVENT, event.data)

    def encode_whisper_frame(self, event: Event) -> bytes:
        return text_frame(self.encode_whisper(event))


class _Refuse(Exception):
    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _PublicWatch:
    """A public channel, as the hub sees it: an anonymous reader of the session, so that the
    hub's re-check ends it when the session stops being public (whoever holds it)."""

    transport = "pusher"

    def __init__(self, conn: PusherConnection, channel: Channel) -> None:
        self._conn = conn
        self._channel = channel

    @property
    def conn_id(self) -> str:
        return f"{self._conn.socket_id}|{self._channel.name}"

    @property
    def principal(self) -> Principal:
        return ANONYMOUS

    def close_soon(self, code: ErrorCode) -> None:
        self._conn.close_soon(code)

    def set_expiry(self, expires_at: datetime | None) -> None:
        return None

    def revoke_topic(self, topic: str, code: ErrorCode) -> None:
        self._conn.revoke_channel(self._channel, code)


class PusherConnection(RealtimeSocket[int, _Channel, Action]):
    transport = "pusher"

    def __init__(self, rt: Realtime, registry: PusherRegistry, websocket: WebSocket,
                 principal: Principal | None) -> None:
        socket_id = new_socket_id()
        super().__init__(rt, websocket, principal or ANONYMOUS, socket_id,
                         LiveSubscriptions[_Channel](self._deliver, self._release))
        self.registry = registry
        self.config = config = registry.config
        # The handshake's principal holds a hub slot taken by the endpoint; a bound one, its own.
        self._slot: Principal | None = principal
        self._bound_by_auth = False
        self.core = PusherCore(config, rt.config.limits, socket_id, anyio.current_time(),
                               authenticated=principal is not None)
        self._watching: dict[str, int] = {}  # topic → private/presence channels on it
        self._stays = 0  # presence rows this connection has made

    @property
    def typing_clock(self) -> PusherCore:
        return self.core

    # -- RealtimeConnection (called by the hub, synchronously) -------------------------------

    def close_soon(self, code: ErrorCode) -> None:
        if self._bound_by_auth and code in (ErrorCode.TOKEN_REVOKED, ErrorCode.TOKEN_EXPIRED):
            self._unbind(code)
            return
        self._finish(_CLOSE_FOR.get(code, PusherCode.RECONNECT), _describe(code))

    def set_expiry(self, expires_at: datetime | None) -> None:
        if self._principal is not ANONYMOUS:
            self._principal = Principal(self._principal.user_id, self._principal.token_id,
                                        expires_at)
        self._arm_expiry()

    def revoke_topic(self, topic: str, code: ErrorCode) -> None:
        for channel in self.core.channels(topic):
            if channel.needs_auth:
                self.revoke_channel(channel, code)

    def revoke_channel(self, channel: Channel, code: ErrorCode) -> None:
        rest: list[Action] = []
        for action in self.core.revoked(channel, _describe(code)):
            if isinstance(action, Stop):
                self._subs.stop(action.channel.name)
            else:
                rest.append(action)
        if rest and self._tg is not None:
            self._tg.start_soon(self._carry_out, rest)

    def _unbind(self, code: ErrorCode) -> None:
        """The token that /broadcasting/auth bound this connection to is gone: end what it
        authorized; the connection goes on as an anonymous one (public channels)."""
        for channel in self.core.channels():
            if channel.needs_auth:
                self.revoke_channel(channel, code)
        hub = self.rt.hub
        hub.detach(self)
        self.release_slot()
        self._principal = ANONYMOUS
        self._bound_by_auth = False
        hub.attach(self)
        self._arm_expiry()

    def release_slot(self) -> None:
        """Give back the hub's connection slot this connection holds, if any (idempotent)."""
        if self._slot is not None:
            self.rt.hub.release(self._slot)
            self._slot = None

    def _slow_consumer(self) -> None:
        self._finish(PusherCode.OVER_CAPACITY, _describe(ErrorCode.SLOW_CONSUMER))

    # -- lifetime (api/realtime_socket.py) ---------------------------------------------------

    def _hello(self) -> bytes:
        return connection_established(self.socket_id, self.config.activity_timeout)

    def _detached(self) -> None:
        self.release_slot()

    async def _goodbye(self) -> None:
        if self._close is None or self._dead:
            return
        code, reason = self._close
        with contextlib.suppress(Gone):
            await self.send(error_frame(code, reason))
        self._dead = True
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason[:120])

    # -- the reader --------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self._dead = True
                return
            text = message.get("text")
            if text is None:
                self._finish(PusherCode.CLIENT_EVENT_RATE_LIMIT, "binary frames are not Pusher")
                return
            for action in self.core.receive_text(text, anyio.current_time()):
                await self._act(action)

    async def _act(self, action: Action) -> None:
        if isinstance(action, Reply):
            await self.send(action.frame)
        elif isinstance(action, Start):
            await self._open(action.channel, action.binding)
        elif isinstance(action, Stop):
            self._subs.stop(action.channel.name)
        elif isinstance(action, PublishTyping):
            await self._publish_typing(action)
        elif isinstance(action, Close):
            self._finish(action.code, action.reason)

    async def _carry_out(self, actions: list[Action]) -> None:
        with contextlib.suppress(Gone):
            for action in actions:
                if isinstance(action, Reply):
                    await self.send(action.frame)
                elif isinstance(action, PublishTyping):
                    await self._publish_typing(action)

    async def _publish_typing(self, action: PublishTyping) -> None:
        if self._principal is ANONYMOUS:
            return
        try:
            await self.rt.bridge.presence.typing(
                action.topic.name, self._principal.user_id, action.is_typing,
                duration=self.rt.config.limits.typing_ttl, origin=self.socket_id)
        except BridgeError:
            log.warning("typing on %s failed", action.topic.name, exc_info=True)
        self._arm_typing()

    # -- channels ----------------------------------------------------------------------------

    async def _bind(self, binding: Binding | None) -> Principal:
        """The principal a private/presence subscription runs as (see the module docstring)."""
        current = self._principal
        if binding is None or binding.token_id is None:
            # Signed without courtside_token: only on a connection authenticated at the
            # handshake (PusherCore checked), and then for that user only.
            if current is ANONYMOUS or (binding is not None
                                        and binding.user_id != current.user_id):
                raise _Refuse(PusherCode.UNAUTHORIZED, "Signed for another user")
            return current
        if current is not ANONYMOUS:
            if binding.token_id != current.token_id or binding.user_id != current.user_id:
                raise _Refuse(PusherCode.UNAUTHORIZED, "Connection bound to another token")
            return current
        live = await realtime_auth.live_tokens(self.rt.pool, {binding.token_id},
                                               self.rt.config.token_expiration_minutes)
        if binding.token_id not in live:
            raise _Refuse(PusherCode.UNAUTHORIZED, _describe(ErrorCode.TOKEN_REVOKED))
        principal = Principal(binding.user_id, binding.token_id, live[binding.token_id])
        if principal.expired():
            raise _Refuse(PusherCode.UNAUTHORIZED, _describe(ErrorCode.TOKEN_EXPIRED))
        hub = self.rt.hub
        refused = hub.admit(principal)
        if refused is not None:
            raise _Refuse(_CLOSE_FOR.get(refused, PusherCode.UNAUTHORIZED), _describe(refused))
        hub.detach(self)
        self._principal = principal
        self._slot = principal
        self._bound_by_auth = True
        hub.attach(self)  # closes at once if the token was revoked a moment ago
        self._arm_expiry()
        if self._principal is not principal:
            raise _Refuse(PusherCode.UNAUTHORIZED, _describe(ErrorCode.TOKEN_REVOKED))
        return principal

    async def _check(self, channel: Channel, principal: Principal) -> None:
        if channel.kind == "user":
            if channel.topic.id != principal.user_id:
                raise _Refuse(PusherCode.UNAUTHORIZED, _describe(ErrorCode.FORBIDDEN))
            return
        await realtime_auth.check_participant(self.rt.session_access, principal.user_id,
                                              channel.topic.id)

    def _watch(self, topic: str, user_id: uuid.UUID) -> None:
        count = self._watching.get(topic, 0)
        self._watching[topic] = count + 1
        if count == 0:
            self.rt.hub.watch_topic(self, topic)
            self.registry.add(topic, user_id, self)

    def _unwatch(self, topic: str, user_id: uuid.UUID) -> None:
        count = self._watching.get(topic, 0) - 1
        if count > 0:
            self._watching[topic] = count
        else:
            self._watching.pop(topic, None)
            self.rt.hub.unwatch_topic(self, topic)
            self.registry.discard(topic, user_id, self)

    def recheck_participant(self, topic: str) -> None:
        """PusherRegistry: this user was removed from the session (maybe a public one)."""
        if self._tg is not None:
            self._tg.start_soon(self._recheck_participant, topic)

    async def _recheck_participant(self, topic: str) -> None:
        channels = [c for c in self.core.channels(topic) if c.kind in ("private", "presence")]
        if not channels:
            return
        try:
            await realtime_auth.check_participant(self.rt.session_access,
                                                  self._principal.user_id, channels[0].topic.id)
            return
        except AccessDenied:
            pass
        except psycopg.Error as exc:
            # Something was taken away and we cannot tell: fail closed, as the hub does.
            log.warning("re-check of %s failed (%s); ending its channels", topic, exc)
        for channel in channels:
            self.revoke_channel(channel, ErrorCode.PARTICIPANT_REMOVED)

    async def _open(self, channel: Channel, binding: Binding | None) -> None:
        """Set a channel up, in the reader's task: the next message is read once this one is
        answered. What stays is a `_Channel` record, and no task while it is idle."""
        name, topic = channel.name, channel.topic.name
        hub = self.rt.hub
        live: _Channel | None = None
        watcher: _PublicWatch | None = None
        watched = joined = False
        user_id = ANONYMOUS.user_id
        stay = self.socket_id
        try:
            with self._subs.setting_up(name):  # an unsubscribe or revocation cancels it
                try:
                    if channel.needs_auth:
                        principal = await self._bind(binding)
                        user_id = principal.user_id
                        self._watch(topic, user_id)  # before the check: api/realtime_hub.py
                        watched = True
                        await self._check(channel, principal)
                    else:
                        watcher = _PublicWatch(self, channel)
                        hub.watch_topic(watcher, topic)
                        await realtime_auth.check_session(self.rt.session_access, ANONYMOUS.user_id,
                                                          channel.topic.id)
                except AccessDenied as denied:
                    raise _Refuse(PusherCode.UNAUTHORIZED, _describe(denied.code)) from None
                setup = anyio.current_time() + self.rt.config.setup_timeout
                with anyio.fail_after(self.rt.config.setup_timeout):
                    sub = await self.rt.bridge.open_subscription(
                        topic, max_queue=self.rt.config.limits.outbound_queue)
                try:
                    with anyio.fail_after(max(0.0, setup - anyio.current_time())):
                        members: list[dict[str, Any]] | None = None
                        if channel.kind == "presence":
                            # One row per subscription: the leave of an unsubscribed one,
                            # still running, must not delete the row of its resubscription.
                            self._stays += 1
                            stay = f"{self.socket_id}#{self._stays}"
                            joined = True
                            await self.rt.bridge.presence.join(topic, user_id, stay)
                            members = [m for m in map(member_of, await
                                                      self.rt.presence_lists.get(topic))
                                       if m is not None]
                    await self.send(subscription_succeeded(name, members))
                    del members
                    live = _Channel(channel, sub, user_id, stay, joined=joined,
                                    watched=watched, watcher=watcher)
                finally:
                    if live is None:
                        sub.release()
        except _Refuse as refused:
            with contextlib.suppress(Gone):
                await self.send(error_frame(refused.code, refused.message, name))
        except (BridgeError, TimeoutError, psycopg.Error):
            log.warning("Pusher subscription to %s failed", name, exc_info=True)
            with contextlib.suppress(Gone):
                await self.send(error_frame(PusherCode.OVER_CAPACITY,
                                            _describe(ErrorCode.NOT_READY), name))
        finally:
            if live is None:
                self.core.refused(channel)
                if watcher is not None:
                    hub.unwatch_topic(watcher, topic)
                if watched:
                    self._unwatch(topic, user_id)
                if joined:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                        await self._leave(channel, user_id, stay)
        if live is not None:
            self.core.started(channel)
            writer = self._writer
            if writer is None:
                self._subs.start(live, None)
            else:
                # Presence channels send more than the event's frame, and a user channel
                # carries mention.created, which needs a query: those take the sink's path.
                direct = (None if live.presence or channel.kind == "user" else
                          Direct(writer.gate, _KEYS[channel.kind][1], live.encode_frame,
                                 self.socket_id))
                self._subs.start(live, functools.partial(self._sink, live), direct)

    async def _release(self, live: _Channel) -> None:
        """`LiveSubscriptions`: the end of a channel that has left the hub."""
        topic = live.channel.topic.name
        if live.watcher is not None:
            self.rt.hub.unwatch_topic(live.watcher, topic)
        if live.watched:
            self._unwatch(topic, live.user_id)
        if live.joined:
            await self._leave(live.channel, live.user_id, live.stay)

    async def _leave(self, channel: Channel, user_id: uuid.UUID, stay: str) -> None:
        # Queued before the typing stop, which may be cut short (RELEASE_TIMEOUT): the leave
        # is made regardless.
        presence = self.rt.bridge.presence
        with contextlib.suppress(BridgeError):
            leave = presence.leaving(channel.topic.name, user_id, stay)
            if self.core.typing_active(channel.name):  # the connection is going, typing
                await presence.typing(channel.topic.name, user_id, False,
                                      origin=self.socket_id)
            await presence.left(leave)

    def _wire(self, live: _Channel, event: Event, framed: bool) -> list[bytes]:
        """What one event becomes on this channel: payloads, or whole frames (``framed``);
        the event's own is built once for every subscriber of its kind of channel."""
        out: list[bytes] = []
        presence = live.presence
        if presence and event.type in ("user.online", "user.offline"):
            member = self._member_change(live, event)
            if member is not None:
                out.append(text_frame(member) if framed else member)
        key, frame_key = _KEYS[live.channel.kind]
        if framed:
            out.append(event.encoded(frame_key, live.encode_frame))
        else:
            out.append(event.encoded(key, live.encode))
        if presence and event.type == "user.typing":
            # Echo's `listenForWhisper('typing')` binds `client-typing`: typing from any
            # client (a whisper, /ws, REST) reaches it as one, like a whisper would.
            if framed:
                out.append(event.encoded("pusher:whisper:frame", live.encode_whisper_frame))
            else:
                out.append(event.encoded("pusher:whisper", live.encode_whisper))
        return out

    def _sink(self, live: _Channel, event: Event) -> bool:
        """`Subscription.set_sink` of an idle channel: runs in the bridge's fan-out."""
        if event.origin is not None and event.origin == self.socket_id:
            return True  # sender exclusion (X-Socket-ID, Laravel's toOthers())
        writer = self._writer
        if (writer is None or self._dead or writer.write_paused
                or event.type == "mention.created"):  # needs a query: the drain task's job
            return False
        if not live.presence:  # the common case, without a list
            return writer.write_frame(event.encoded(_KEYS[live.channel.kind][1],
                                                    live.encode_frame))
        first, *rest = self._wire(live, event, framed=True)
        if not writer.write_frame(first):
            return False
        for frame in rest:
            writer.write_frame(frame)  # False only once the socket is gone: the reader sees it
        return True

    async def _deliver(self, live: _Channel, item: Event | Reset | CutOff) -> bool:
        """`LiveSubscriptions`: send one item; False once the channel or the socket ended."""
        try:
            if isinstance(item, Event):
                if item.origin is not None and item.origin == self.socket_id:
                    return True
                if item.type == "mention.created" and not await self._may_see_mention(
                        item, live.user_id):
                    return True
                framed = self._writer is not None
                for data in self._wire(live, item, framed):
                    if framed:
                        await self._send_frame(data)
                    else:
                        await self._send_asgi(data)
            elif isinstance(item, CutOff):
                if item.reason == "shutdown":
                    self._finish(PusherCode.RECONNECT, _describe(ErrorCode.SERVICE_RESTART))
                elif item.reason == "overflow":
                    self._finish(PusherCode.OVER_CAPACITY, _describe(ErrorCode.SLOW_CONSUMER))
                else:
                    self._finish(PusherCode.OVER_CAPACITY, _describe(ErrorCode.NOT_READY))
                return False
            # A Reset cannot be told in Pusher's protocol: it has no history to resume.
        except Gone:
            return False
        return True

    @staticmethod
    def _member_change(live: _Channel, event: Event) -> bytes | None:
        payload = event.payload
        member = member_of(payload.get("user")) if isinstance(payload, dict) else None
        if member is None or member["user_id"] == str(live.user_id):
            return None  # Pusher does not tell a member about itself
        if event.type == "user.online":
            return member_added(live.channel.name, member["user_id"], member["user_info"])
        return member_removed(live.channel.name, member["user_id"])

    async def _may_see_mention(self, event: Event, user_id: uuid.UUID) -> bool:
        """As on /ws: a mention reaches its user only while they may read that session."""
        try:
            session_id = uuid.UUID(str(event.payload["sessionId"]))
            await realtime_auth.check_session(self.rt.session_access, user_id, session_id)
        except AccessDenied:
            return False
        except (KeyError, TypeError, ValueError, psycopg.Error):
            log.warning("could not check %r; not delivered", event, exc_info=True)
            return False
        return True

    # -- timers ------------------------------------------------------------------------------


async def _refuse(websocket: WebSocket, code: int, message: str) -> None:
    await websocket.accept()
    with contextlib.suppress(Exception):
        await websocket.send_text(error_frame(code, message).decode())
        await websocket.close(code, message[:120])


async def pusher_endpoint(websocket: WebSocket, registry: PusherRegistry) -> None:
    rt = realtime_of(websocket.app)
    config = registry.config
    key = websocket.path_params.get("key", "")
    if key != config.key:
        await _refuse(websocket, PusherCode.APP_DOES_NOT_EXIST,
                      f"App key {key[:64]} not in this cluster")
        return
    problem = protocol_problem(websocket.query_params.get("protocol"))
    if problem is not None:
        await _refuse(websocket, problem, f"Protocol version not supported ({problem.name})")
        return
    if rt.hub.shutting_down:
        await _refuse(websocket, PusherCode.RECONNECT, _describe(ErrorCode.SERVICE_RESTART))
        return
    if registry.count >= config.max_connections:
        await _refuse(websocket, PusherCode.OVER_CAPACITY, "Over capacity")
        return
    # Counted from here, before the first await: handshakes arriving together must not all
    # pass the limit while none of them is counted yet.
    registry.count += 1
    try:
        await _admit_and_run(websocket, rt, registry)
    finally:
        registry.count -= 1


async def _admit_and_run(websocket: WebSocket, rt: Realtime, registry: PusherRegistry) -> None:
    principal: Principal | None = None
    authorization = websocket.headers.get("authorization")
    ticket = websocket.query_params.get("ticket")
    if authorization or ticket:
        try:
            principal = await rt.authenticate(authorization, ticket)
        except AccessDenied as denied:
            await _refuse(websocket, PusherCode.UNAUTHORIZED, _describe(denied.code))
            return
        except psycopg.Error:
            await _refuse(websocket, PusherCode.OVER_CAPACITY, _describe(ErrorCode.NOT_READY))
            return
        refused = rt.hub.admit(principal)
        if refused is not None:
            await _refuse(websocket, _CLOSE_FOR.get(refused, PusherCode.UNAUTHORIZED),
                          _describe(refused))
            return
    registry.listen(rt.bridge)
    conn = PusherConnection(rt, registry, websocket, principal)
    # Every header this endpoint needs has been read; the list would otherwise live as long
    # as the connection (shared by the scope, Starlette's Headers and uvicorn).
    websocket.scope["headers"].clear()
    try:
        await websocket.accept()
        await conn.run()
    finally:
        conn.release_slot()
