"""Server-Sent Events: ``GET /api/sessions/{sessionId}/events``.

The request is refused with the API's JSON error envelope (401/403/404/422/429) until it is
known to be allowed; only then does the 200 stream start. Under courtside's HTTP protocol
(api/http_protocol.py) the bridge's fan-out writes each event's pre-built chunk to the
socket itself, and the stream's task writes only what the fan-out leaves to it
(`_ChunkedSseResponse`); otherwise the stream is sse-starlette's, fed by a producer task
through a small buffer (`_SseResponse`). Either way a client that stops reading fills the
bridge's bounded queue, or blocks a write for `send_timeout`, and is dropped, instead of
growing memory here. An SSE subscriber is present in the session while its stream is open,
like a WebSocket subscriber.

When the server ends a stream (token revoked or expired, participant removed, restart, the
client fell behind) it first sends ``event: closed`` with ``{"code", "message"}``: an
``EventSource`` reconnects on its own, with Last-Event-ID, and is then answered with the
error status that stops it (or resumes exactly where it was). A browser's stream opened with
a ``?ticket=`` holds that ticket (api/tickets.py), so the same URL reconnects it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self

import anyio
import anyio.lowlevel
import orjson
import psycopg
from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api import realtime_auth, sse_format, tickets
from api.http_protocol import ChunkWriter, chunk_writer, http_chunk
from api.realtime_auth import AccessDenied, Principal
from api.realtime_http import error_response
from api.realtime_protocol import ErrorCode, Language, Topic, message_for, pick_language
from api.realtime_state import Realtime, realtime_of
from bridge import BridgeError, CutOff, Direct, Event, Reset, Subscription

log = logging.getLogger("courtside.sse")
# How long a stream whose ticket another connection took over waits before reconnecting.
REPLACED_RETRY_MS = 600_000


def sse_event_chunk(event: Event) -> bytes:
    return sse_format.event(event.type, event.data, event.seq)


def sse_event_http_chunk(event: Event) -> bytes:
    """What the fan-out writes to a `ChunkWriter`'s socket: the event as one body chunk."""
    return http_chunk(event.encoded("sse", sse_event_chunk))


# `Event.encoded`'s cache key of `sse_event_http_chunk`, shared by every stream.
HTTP_CHUNK_KEY = "sse:chunk"


def _decline(event: Event) -> bool:
    """The stream's sink: what the fan-out cannot write itself is queued for its task."""
    return False


class StreamOut(Protocol):
    """Where a stream's bytes go: sse-starlette's buffer, or a `ChunkWriter` (`_ChunkOut`)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> Any: ...

    async def send(self, item: bytes) -> None: ...


class Stopping(Protocol):
    async def wait(self) -> Any: ...


class SseConnection:
    transport = "sse"

    def __init__(self, rt: Realtime, principal: Principal, topic: Topic, since: int | None,
                 lang: Language, conn_id: str, ticket: str | None = None) -> None:
        self.rt = rt
        self._principal = principal
        self.topic = topic
        self.since = since
        self.lang = lang
        self._conn_id = conn_id
        self._ticket = ticket  # the ticket this connection holds, released at its end
        self._expires_at = principal.expires_at
        # Token expiry is an event-loop timer, armed while the stream runs (a parked task
        # would cost several KB per stream; api/realtime_socket.py does the same).
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._streaming = False
        self._scope = anyio.CancelScope()
        self._end: ErrorCode | None = None
        self._cleaned = False
        self._joined = False

    # -- RealtimeConnection ------------------------------------------------------------------

    @property
    def conn_id(self) -> str:
        return self._conn_id

    @property
    def principal(self) -> Principal:
        return self._principal

    def close_soon(self, code: ErrorCode) -> None:
        if self._end is None:
            self._end = code
        self._scope.cancel()

    def set_expiry(self, expires_at: datetime | None) -> None:
        self._expires_at = expires_at
        self._arm_expiry()

    def revoke_topic(self, topic: str, code: ErrorCode) -> None:
        if topic == self.topic.name:
            self.close_soon(code)

    # -- lifetime ----------------------------------------------------------------------------

    def register(self) -> None:
        self.rt.hub.attach(self)
        self.rt.hub.watch_topic(self, self.topic.name)

    async def cleanup(self) -> None:
        """Idempotent; runs whether or not the stream ever started."""
        if self._cleaned:
            return
        self._cleaned = True
        self._streaming = False
        self._arm_expiry()
        hub = self.rt.hub
        hub.unwatch_topic(self, self.topic.name)
        hub.detach(self)
        hub.release(self.principal)
        if self._ticket is not None:
            self.rt.ticket_releases.release(self._ticket, self.conn_id)
        if self._joined:
            self._joined = False
            with (anyio.CancelScope(shield=True), anyio.move_on_after(2.0),
                  contextlib.suppress(BridgeError)):
                await self.rt.bridge.presence.leave(self.topic.name, self.principal.user_id,
                                                    self.conn_id)

    async def produce(self, out: StreamOut, shutdown: Stopping | None = None,
                      direct: Direct | None = None) -> None:
        """The stream, until it ends. ``shutdown``: what to wait for to end it when the
        server stops (else `close_soon` is called); ``direct``: how the fan-out may write
        events to the socket itself while this task waits for the next one."""
        gone = False
        async with out:
            try:
                self._streaming = not self._cleaned
                self._arm_expiry()
                with self._scope:
                    if shutdown is None:
                        await self._stream(out, direct)
                    else:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._watch_shutdown, shutdown)
                            await self._stream(out, direct)
                            tg.cancel_scope.cancel()
            # A task group raises what `_stream` raised inside an exception group.
            except* (BridgeError, TimeoutError, psycopg.Error):
                log.warning("SSE stream of %s failed", self.topic.name, exc_info=True)
                self._end = self._end or ErrorCode.NOT_READY
            except* (anyio.BrokenResourceError, anyio.ClosedResourceError):
                gone = True  # the response is gone
            finally:
                await self.cleanup()
            if self._end is not None and not gone:
                body = orjson.dumps({"code": self._end.value,
                                     "message": message_for(self._end, self.lang)})
                with anyio.move_on_after(1.0), contextlib.suppress(anyio.BrokenResourceError):
                    if self._end is ErrorCode.STREAM_REPLACED:
                        # Another connection holds the ticket now. Were this EventSource
                        # still alive (two pages on one ticket), reconnecting at once would
                        # take it back, and so on: it is asked to wait.
                        await out.send(sse_format.retry(REPLACED_RETRY_MS))
                    await out.send(sse_format.event("closed", body))

    async def _stream(self, out: StreamOut, direct: Direct | None) -> None:
        bridge = self.rt.bridge
        name = self.topic.name
        # Not `bridge.subscribe`'s context manager: its suspended generator and an exit
        # stack would live as long as the stream (~1.5 KB of an idle stream's ~27).
        sub: Subscription | None = None
        try:
            # A client that leaves now cancels this task (the protocol's `on_lost`, or
            # sse-starlette listening for the disconnect): the bridge's queries finish first
            # (bridge/finish.py), then the cancellation lands and `cleanup` leaves presence.
            with anyio.fail_after(self.rt.config.setup_timeout):
                sub = await bridge.open_subscription(
                    name, since=self.since, max_queue=self.rt.config.limits.outbound_queue)
                self._joined = True
                await bridge.presence.join(name, self.principal.user_id, self.conn_id)
            # The first bytes of the stream: from here on nothing is missed, so a client
            # that needs to know when it is live waits for this.
            await out.send(sse_format.retry(self.rt.config.limits.sse_retry_ms))
            if direct is not None:
                sub.set_sink(_decline, direct)
            async for item in sub:
                if isinstance(item, Event):
                    await out.send(item.encoded("sse", sse_event_chunk))
                elif isinstance(item, Reset):
                    await out.send(sse_format.reset(item.topic, item.seq))
                elif isinstance(item, CutOff):
                    self._end = self._end or {
                        "overflow": ErrorCode.SLOW_CONSUMER,
                        "shutdown": ErrorCode.SERVICE_RESTART,
                    }.get(item.reason, ErrorCode.NOT_READY)
                    return
        finally:
            if sub is not None:
                sub.release()

    async def _watch_shutdown(self, shutdown: Stopping) -> None:
        await shutdown.wait()
        self.close_soon(ErrorCode.SERVICE_RESTART)

    def _arm_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        expires_at = self._expires_at
        if expires_at is None or not self._streaming:
            return
        delay = (expires_at - datetime.now(UTC)).total_seconds()
        self._expiry_timer = asyncio.get_running_loop().call_later(
            max(0.0, delay), self.close_soon, ErrorCode.TOKEN_EXPIRED)


class _SseResponse(EventSourceResponse):
    def __init__(self, conn: SseConnection, **kwargs: Any) -> None:
        send, receive = anyio.create_memory_object_stream[bytes](max_buffer_size=16)
        # On server shutdown sse-starlette sets `shutdown` and waits the grace period for
        # the stream to end by itself: the producer then says goodbye and closes cleanly,
        # instead of the response being cut mid-stream.
        shutdown = anyio.Event()
        super().__init__(receive, data_sender_callable=lambda: conn.produce(send, shutdown),
                         shutdown_event=shutdown, shutdown_grace_period=2.0, **kwargs)
        self._conn = conn
        self._streams = (send, receive)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("SSE client of %s stopped reading; dropped", self._conn.topic.name)
        finally:
            for stream in self._streams:
                stream.close()
            await self._conn.cleanup()


class _ChunkOut:
    """A stream's own writes through its `ChunkWriter`: the first line, resets, the goodbye,
    and the events the fan-out left to it. As sse-starlette does, a peer that has not read
    for `send_timeout` is dropped."""

    def __init__(self, writer: ChunkWriter, send_timeout: float, topic: str) -> None:
        self._writer = writer
        self._timeout = send_timeout
        self._topic = topic
        self.dropped = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    async def send(self, item: bytes) -> None:
        writer = self._writer
        if writer.write_paused:
            with anyio.move_on_after(self._timeout):
                await writer.drained()
            if writer.write_paused and writer.streaming:
                self.drop()
        if not writer.write(http_chunk(item)):
            raise anyio.BrokenResourceError

    def drop(self) -> None:
        """Its peer does not read: the connection goes, unsent bytes and all, and
        `on_lost` ends the stream if it is still running."""
        if not self.dropped:
            log.info("SSE client of %s stopped reading; dropped", self._topic)
            self.dropped = True
            self._writer.abort()


class _ChunkedSseResponse(Response):
    """The stream written through a `ChunkWriter` (api/http_protocol.py): events go from
    the fan-out to the socket without this task, and the connection's loss, the server's
    shutdown and the pings are callbacks and a timer, not tasks: an idle stream is one
    parked task. The same bytes as `_SseResponse` sends."""

    def __init__(self, conn: SseConnection, writer: ChunkWriter, *, ping: float,
                 send_timeout: float) -> None:
        self.status_code = 200
        self.background = None
        self._conn = conn
        self._writer = writer
        self._ping_interval = ping
        self._send_timeout = send_timeout
        self._out = _ChunkOut(writer, send_timeout, conn.topic.name)
        self._ping_timer: asyncio.TimerHandle | None = None
        self._paused_since: float | None = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                            (b"cache-control", b"no-cache, no-store"),
                            (b"connection", b"keep-alive"), (b"x-accel-buffering", b"no")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn, writer, out = self._conn, self._writer, self._out
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            with anyio.CancelScope() as lost:
                if writer.start(on_lost=lost.cancel, on_stop=functools.partial(
                        conn.close_soon, ErrorCode.SERVICE_RESTART)):
                    self._arm_ping()
                    direct = Direct(writer.gate, HTTP_CHUNK_KEY, sse_event_http_chunk, None)
                    await conn.produce(out, None, direct)
        finally:
            if self._ping_timer is not None:
                self._ping_timer.cancel()
                self._ping_timer = None
            writer.finish()
            await conn.cleanup()
        if writer.write_paused:
            # Ended while its peer does not read (cut off as a slow consumer): uvicorn's
            # send would wait for the buffer to drain before ending the body, for ever.
            out.drop()
        if out.dropped:
            # uvicorn learns of the abort on the loop's next turn; until it has, ending the
            # response would write to a closed transport.
            await anyio.lowlevel.checkpoint()
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _arm_ping(self) -> None:
        if self._ping_interval > 0:
            self._ping_timer = asyncio.get_running_loop().call_later(self._ping_interval,
                                                                     self._ping)

    def _ping(self) -> None:
        """A comment line now and then, so that proxies keep an idle stream open. A peer
        whose buffer stays full (it reads nothing, not even the pings) for `send_timeout` is
        dropped here: without events, nothing else would notice it."""
        self._ping_timer = None
        writer = self._writer
        if not writer.streaming:
            return
        if writer.write_paused:
            now = asyncio.get_running_loop().time()
            if self._paused_since is None:
                self._paused_since = now
            elif now - self._paused_since >= self._send_timeout:
                self._out.drop()
                return
        else:
            self._paused_since = None
            writer.write(_PING)
        self._arm_ping()


_PING = http_chunk(sse_format.comment("ping"))


async def sse_endpoint(request: Request) -> Response:
    rt = realtime_of(request.app)
    lang = pick_language(request.headers.get("accept-language"))
    try:
        session_id = uuid.UUID(request.path_params["sessionId"])
    except ValueError:
        return error_response(ErrorCode.SESSION_NOT_FOUND, lang)
    topic = Topic("session", session_id)
    try:
        since = sse_format.resume_point(request.headers.get("last-event-id"),
                                        request.query_params.get("since"))
    except sse_format.ResumeError:
        return error_response(ErrorCode.INVALID_FRAME, lang, "Last-Event-ID / since")
    conn_id = f"sse:{uuid.uuid4().hex}"
    authorization = request.headers.get("authorization")
    ticket = request.query_params.get("ticket") if authorization is None else None
    try:
        principal = await rt.authenticate(authorization, ticket, hold=tickets.Hold(
            topic.name, conn_id, rt.bridge.node_id))
    except AccessDenied as denied:
        return error_response(denied.code, lang)
    except psycopg.Error:
        return error_response(ErrorCode.NOT_READY, lang)
    refused = rt.hub.admit(principal)
    if refused is not None:
        if ticket:
            rt.ticket_releases.release(ticket, conn_id)
        return error_response(refused, lang)
    conn = SseConnection(rt, principal, topic, since, lang, conn_id, ticket or None)
    conn.register()
    try:
        await realtime_auth.check_topic(rt.session_access, principal, topic)
    except AccessDenied as denied:
        await conn.cleanup()
        return error_response(denied.code, lang)
    except psycopg.Error:
        await conn.cleanup()
        return error_response(ErrorCode.NOT_READY, lang)
    if request.method == "HEAD":
        await conn.cleanup()
        return Response(status_code=200, media_type="text/event-stream")
    writer = chunk_writer(request.scope)
    if writer is not None:
        return _ChunkedSseResponse(conn, writer, ping=rt.config.limits.sse_heartbeat,
                                   send_timeout=rt.config.send_timeout)
    return _SseResponse(conn, ping=rt.config.limits.sse_heartbeat,
                        send_timeout=rt.config.send_timeout,
                        headers={"Cache-Control": "no-cache, no-store"})
