"""The native WebSocket endpoint, ``/ws``: api/ws_core.py's decisions, carried out.

One connection is one task group around its reader (client frames, in order: a subscribe is
set up and answered in the reader's own task before the next frame is read). An idle
connection is that one parked task: a subscription has no task of its own while nothing is
queued for it (`Subscription.detach`), and token and typing expiry are event-loop timers.
A task starts only for what must await — a subscription's backlog, an event the sink
declined, a reset or cut-off (`_drain`, which ends once the subscription is idle again), a
subscription's release, a revocation's error frames. Whatever ends the connection, the task
group unwinds, every presence row is left and the close frame says why.

Sending. Under `courtside serve` (api/ws_protocol.py) every frame is built here and written
to the transport as bytes: an event's frame once per event for all its subscribers, and
while a subscription is idle the bridge's fan-out hands it events directly
(`Subscription.set_sink`; for a session topic the fan-out writes the frame itself through
the protocol's gate, bridge/direct.py), so a delivery is one `transport.write`, with no
task switch.
Backpressure is the transport's own: while its buffer is above the high-water mark (the peer
is not reading) nothing is written directly, the events queue in the bridge, the drain waits
for the buffer to empty, and a queue that overflows — or a wait longer than `send_timeout` —
drops the peer (4009), as before. Without the frame writer (another ws implementation, or
permessage-deflate) sends go through ASGI, one at a time behind a lock, with the same
timeout, and each subscription keeps a draining task.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime

import anyio
import anyio.abc
import psycopg
from starlette.websockets import WebSocket

from api import realtime_auth
from api.frame_sender import Gone
from api.live_subs import Live, LiveSubscriptions
from api.realtime_auth import AccessDenied, Principal
from api.realtime_http import deny_websocket
from api.realtime_protocol import (
    CloseCode,
    ErrorCode,
    Language,
    Topic,
    connected_frame,
    error_frame,
    event_frame,
    new_socket_id,
    parse_topic,
    pick_language,
    reset_frame,
    subscribed_frame,
)
from api.realtime_socket import RealtimeSocket
from api.realtime_state import Realtime, realtime_of
from api.typing_state import PublishTyping
from api.ws_core import (
    Action,
    Close,
    Reply,
    StartSubscription,
    StopSubscription,
    WsCore,
)
from api.ws_protocol import text_frame
from bridge import BridgeError, CutOff, Direct, Event, Reset, Subscription

log = logging.getLogger("courtside.ws")

_CLOSE_FOR: dict[ErrorCode, CloseCode] = {
    ErrorCode.TOKEN_REVOKED: CloseCode.TOKEN_REVOKED,
    ErrorCode.TOKEN_EXPIRED: CloseCode.TOKEN_EXPIRED,
    ErrorCode.SERVICE_RESTART: CloseCode.SERVICE_RESTART,
    ErrorCode.SLOW_CONSUMER: CloseCode.SLOW_CONSUMER,
    ErrorCode.NOT_READY: CloseCode.TRY_AGAIN_LATER,
    ErrorCode.INTERNAL_ERROR: CloseCode.INTERNAL_ERROR,
}


def ws_event_frame(event: Event) -> bytes:
    return event_frame(event.topic, event.seq, event.type, event.data)


def ws_event_wire_frame(event: Event) -> bytes:
    """The whole WebSocket frame of an event: the same bytes for every subscriber."""
    return text_frame(event.encoded("ws", ws_event_frame))


class _Live(Live):
    __slots__ = ("joined", "topic")

    def __init__(self, topic: Topic, sub: Subscription, joined: bool) -> None:
        super().__init__(topic.name, sub)
        self.topic = topic
        self.joined = joined  # holds a presence row to leave


class WsConnection(RealtimeSocket[CloseCode, _Live, Action]):
    transport = "ws"

    # Slots: the fan-out's sink reads a few of these per delivery, over thousands of them.
    __slots__ = ("__weakref__", "core", "lang")

    def __init__(self, rt: Realtime, websocket: WebSocket, principal: Principal,
                 lang: Language) -> None:
        super().__init__(rt, websocket, principal, new_socket_id(),
                         LiveSubscriptions[_Live](self._deliver, self._release))
        self.lang = lang
        self.core = WsCore(rt.config.limits, principal.user_id, lang, anyio.current_time())

    @property
    def typing_clock(self) -> WsCore:
        return self.core

    # -- RealtimeConnection (called by the hub, synchronously) -------------------------------

    def close_soon(self, code: ErrorCode) -> None:
        self._finish(_CLOSE_FOR.get(code, CloseCode.INTERNAL_ERROR), code.value)

    def set_expiry(self, expires_at: datetime | None) -> None:
        p = self._principal
        self._principal = Principal(p.user_id, p.token_id, expires_at)
        self._arm_expiry()

    def revoke_topic(self, topic: str, code: ErrorCode) -> None:
        parsed = parse_topic(topic)
        if parsed is None:
            return
        rest: list[Action] = []
        for action in self.core.subscription_revoked(parsed, code):
            if isinstance(action, StopSubscription):
                self._subs.stop(topic)
            else:
                rest.append(action)
        if rest:
            if self._tg is None:
                self.close_soon(ErrorCode.INTERNAL_ERROR)
            else:
                self._tg.start_soon(self._carry_out, rest)

    def _slow_consumer(self) -> None:
        self._finish(CloseCode.SLOW_CONSUMER, ErrorCode.SLOW_CONSUMER.value)

    # -- lifetime (api/realtime_socket.py) ---------------------------------------------------

    def _hello(self) -> bytes:
        return connected_frame(self.socket_id)

    async def _goodbye(self) -> None:
        if self._close is not None and not self._dead:
            code, reason = self._close
            self._dead = True
            with contextlib.suppress(Exception):
                await self.ws.close(int(code), reason)

    def _sink(self, event: Event) -> bool:
        """`Subscription.set_sink`: runs in the bridge's fan-out, for an idle subscription."""
        if event.origin is not None and event.origin == self.socket_id:
            return True  # sender exclusion (X-Socket-ID)
        writer = self._writer
        if (writer is None or self._dead or writer.write_paused
                or event.type == "mention.created"):  # needs a query: the drain task's job
            return False
        return writer.write_frame(event.encoded("wsf", ws_event_wire_frame))

    # -- tasks -------------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self._dead = True
                return
            now = anyio.current_time()
            if message.get("text") is not None:
                actions = self.core.receive_text(message["text"], now)
            else:
                actions = self.core.receive_bytes(now)
            try:
                for action in actions:
                    await self._act(action)
            except Gone:
                return

    async def _act(self, action: Action) -> None:
        if isinstance(action, Reply):
            await self.send(action.frame)
        elif isinstance(action, StartSubscription):
            await self._subscribe(action.topic, action.since)
        elif isinstance(action, StopSubscription):
            self._subs.stop(action.topic.name)
        elif isinstance(action, PublishTyping):
            await self._publish_typing(action)
        elif isinstance(action, Close):
            self._finish(action.code, action.reason)

    async def _publish_typing(self, action: PublishTyping) -> None:
        topic = action.topic
        try:
            await self.rt.bridge.presence.typing(
                topic.name, self.principal.user_id, action.is_typing,
                duration=self.rt.config.limits.typing_ttl, origin=self.socket_id)
        except BridgeError:
            log.warning("typing on %s failed", topic.name, exc_info=True)
            await self.send(error_frame(ErrorCode.NOT_READY, self.lang, topic.name))
        self._arm_typing()

    async def _subscribe(self, topic: Topic, since: int | None) -> None:
        """Set a subscription up, in the reader's task: the client's next frame is read once
        this one is answered. What stays is a `_Live` record, and no task while it is idle."""
        name = topic.name
        hub = self.rt.hub
        hub.watch_topic(self, name)  # before the check: see api/realtime_hub.py
        live: _Live | None = None
        joined = False
        try:
            with self._subs.setting_up(name):  # an unsubscribe or revocation cancels it
                try:
                    await realtime_auth.check_topic(self.rt.session_access, self.principal, topic)
                except AccessDenied as denied:
                    await self.send(error_frame(denied.code, self.lang, name))
                    return
                setup = anyio.current_time() + self.rt.config.setup_timeout
                with anyio.fail_after(self.rt.config.setup_timeout):
                    sub = await self.rt.bridge.open_subscription(
                        name, since=since, max_queue=self.rt.config.limits.outbound_queue)
                try:
                    with anyio.fail_after(max(0.0, setup - anyio.current_time())):
                        presence: list[object] = []
                        if topic.kind == "session":
                            joined = True
                            await self.rt.bridge.presence.join(
                                name, self.principal.user_id, self.socket_id)
                            presence = list(await self.rt.presence_lists.get(name))
                    frame = subscribed_frame(name, sub.start_seq, presence, self.socket_id)
                    # This frame would otherwise live as long as the subscription.
                    del presence
                    await self.send(frame)
                    del frame
                    live = _Live(topic, sub, joined)
                finally:
                    if live is None:
                        sub.release()
        except (BridgeError, TimeoutError, psycopg.Error):
            log.warning("subscription to %s failed", name, exc_info=True)
            with contextlib.suppress(Gone):
                await self.send(error_frame(ErrorCode.NOT_READY, self.lang, name))
        finally:
            if live is None:
                self.core.subscription_refused(topic)
                hub.unwatch_topic(self, name)
                if joined:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                        await self._leave(topic)
        if live is not None:
            self.core.subscription_started(topic)
            writer = self._writer
            if writer is None:
                self._subs.start(live, None)
            else:
                # A user topic carries mention.created, which needs a query: the sink's path.
                direct = (Direct(writer.gate, "wsf", ws_event_wire_frame, self.socket_id)
                          if topic.kind == "session" else None)
                self._subs.start(live, self._sink, direct)

    async def _deliver(self, live: _Live, item: Event | Reset | CutOff) -> bool:
        """`LiveSubscriptions`: send one item; False once the subscription or the socket
        has ended."""
        if isinstance(item, CutOff):
            if item.reason == "overflow":
                self._finish(CloseCode.SLOW_CONSUMER, ErrorCode.SLOW_CONSUMER.value)
            elif item.reason == "shutdown":
                self._finish(CloseCode.SERVICE_RESTART, ErrorCode.SERVICE_RESTART.value)
            else:
                self._finish(CloseCode.TRY_AGAIN_LATER, ErrorCode.NOT_READY.value)
            return False
        try:
            if isinstance(item, Reset):
                await self.send(reset_frame(item.topic, item.seq))
            elif item.origin is not None and item.origin == self.socket_id:
                pass  # sender exclusion (X-Socket-ID)
            elif item.type == "mention.created" and not await self._may_see_mention(item):
                pass
            elif self._writer is not None:
                await self._send_frame(item.encoded("wsf", ws_event_wire_frame))
            else:
                await self._send_asgi(item.encoded("ws", ws_event_frame))
        except Gone:
            return False
        return True

    async def _release(self, live: _Live) -> None:
        """`LiveSubscriptions`: the end of a subscription that has left the hub."""
        self.rt.hub.unwatch_topic(self, live.name)
        if live.joined:
            await self._leave(live.topic)

    async def _leave(self, topic: Topic) -> None:
        # The connection is going (or the topic is): leave, and say the user stopped typing
        # there, so their other connections' presence does not show a stale indicator. The
        # leave is queued first: this may be cut short (RELEASE_TIMEOUT), the leave may not.
        presence = self.rt.bridge.presence
        with contextlib.suppress(BridgeError):
            leave = presence.leaving(topic.name, self.principal.user_id, self.socket_id)
            if self.core.typing_active(topic.name):
                await presence.typing(topic.name, self.principal.user_id, False,
                                      origin=self.socket_id)
            await presence.left(leave)

    async def _may_see_mention(self, event: Event) -> bool:
        """A mention carries a session's comment to a user topic. The REST API only lets
        participants be mentioned, but any SQL writer can mention anyone: deliver it only to
        a reader of that session, so no outsider ever receives a byte of a private one.
        (Such a skipped event leaves a hole in the user topic's seq.)"""
        try:
            session_id = uuid.UUID(str(event.payload["sessionId"]))
            await realtime_auth.check_session(self.rt.session_access, self.principal.user_id,
                                              session_id)
        except AccessDenied:
            return False
        except (KeyError, TypeError, ValueError, psycopg.Error):
            log.warning("could not check %r; not delivered", event, exc_info=True)
            return False
        return True

    async def _carry_out(self, actions: list[Action]) -> None:
        """What a revocation or an expired typing indicator leaves to do that awaits."""
        with contextlib.suppress(Gone):
            for action in actions:
                if isinstance(action, PublishTyping):
                    await self._publish_typing(action)
                elif isinstance(action, Reply):
                    await self.send(action.frame)


async def ws_endpoint(websocket: WebSocket) -> None:
    rt = realtime_of(websocket.app)
    lang = pick_language(websocket.headers.get("accept-language"))
    try:
        principal = await rt.authenticate(websocket.headers.get("authorization"),
                                          websocket.query_params.get("ticket"))
    except AccessDenied as denied:
        await deny_websocket(websocket, denied.code, lang)
        return
    refused = rt.hub.admit(principal)
    if refused is not None:
        await deny_websocket(websocket, refused, lang)
        return
    try:
        conn = WsConnection(rt, websocket, principal, lang)
        # Every header this endpoint needs has been read; the list would otherwise live as
        # long as the connection (shared by the scope, Starlette's Headers and uvicorn).
        websocket.scope["headers"].clear()
        await websocket.accept()
        await conn.run()
    finally:
        rt.hub.release(principal)
