"""courtside's WebSocket protocol for uvicorn: websockets-sansio, plus pre-built frames.

A server's WebSocket frames are not masked (RFC 6455 §5.1), so without an extension that
rewrites payloads (permessage-deflate) a text frame is the same bytes for every connection.
The realtime transports therefore build an event's frame once (`text_frame`) and write those
bytes straight to each subscriber's transport, instead of handing uvicorn a `str` that it
encodes and frames again per subscriber behind an ASGI `send` that awaits.

`courtside serve` runs uvicorn with ``ws="api.ws_protocol:CourtsideWebSocketProtocol"``.
On a connection whose handshake negotiated no extension, the protocol puts a `FrameWriter`
in the ASGI scope, ``scope["extensions"][FRAMES_EXTENSION]["writer"]``; `frame_writer(scope)`
finds it. Everything else (the handshake, accept, close, pings, reads) is uvicorn's own.
Without the writer (another ws implementation, or deflate on) the app sends through ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from asyncio import BaseTransport, Transport
from collections.abc import Mapping
from typing import Any, Protocol, cast

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request

from bridge import Gate
from bridge.flag import Flag

FRAMES_EXTENSION = "courtside.prebuilt_frames"

# How much a peer that does not read may hold in this server before its events queue in the
# bridge (and past the subscription's `outbound_queue`, it is cut off with 4009): the kernel's
# send buffer (fixed, so Linux's autotuning cannot grow it to megabytes per connection; the
# kernel doubles the value for its bookkeeping) plus the transport's own buffer, past whose
# high-water mark nothing more is written directly.
SEND_BUFFER = 64 * 1024
WRITE_HIGH_WATER = 64 * 1024

_FIN_TEXT = 0x81  # FIN + opcode 1 (text); RSV bits clear: no extension in use
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def bound_send_buffers(transport: Transport) -> None:
    """`SEND_BUFFER` in the kernel, `WRITE_HIGH_WATER` in the transport: what a peer that
    does not read may hold here before the fan-out stops writing to it."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame carrying ``payload`` (UTF-8 JSON)."""
    n = len(payload)
    if n < 126:
        return _SHORT.pack(_FIN_TEXT, n) + payload
    if n < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, n) + payload
    return _LONG.pack(_FIN_TEXT, 127, n) + payload


class FrameWriter(Protocol):
    """What a connection offers for pre-built frames. Never blocks, never awaits."""

    def write_frame(self, frame: bytes) -> bool:
        """Write ``frame`` now; False when the connection takes no more frames (closing,
        closed, or lost)."""

    @property
    def gate(self) -> Gate:
        """The connection as the bridge's fan-out sees it (bridge/direct.py): open exactly
        while `write_frame` would write and the buffer is under its high-water mark."""

    @property
    def write_paused(self) -> bool:
        """The transport's buffer is above its high-water mark: the peer is not reading.
        Writing more only grows it; wait for `drained` first."""

    async def drained(self) -> None:
        """Returns once the buffer is back under the low-water mark (or the peer is gone)."""


class _ReceiveQueue:
    """What uvicorn uses of its per-connection `asyncio.Queue` (put_nowait, get, empty), at a
    fraction of its memory: a Queue is three deques and an Event (~2.6 KB), and the only
    consumer is the app's one reader."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _GateFlag:
    """A flag of the protocol that its gate follows (uvicorn's own are set by uvicorn):
    stored as ``_<name>``; setting it recomputes ``gate.open``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    def __get__(self, obj: CourtsideWebSocketProtocol, objtype: type | None = None) -> bool:
        return cast(bool, getattr(obj, self._slot))

    def __set__(self, obj: CourtsideWebSocketProtocol, value: bool) -> None:
        setattr(obj, self._slot, value)
        obj._regate()


class CourtsideWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with a `FrameWriter` for the app, and less
    per-connection memory: a lighter receive queue and writable flag, and the handshake's
    request and response (their headers held in two forms) dropped once the handshake is
    over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before uvicorn's __init__: it sets the flags that the gate follows.
        self._gate = Gate()
        self._handshake_complete = self._close_sent = self._disconnected = False
        self._paused = self._closing = False
        super().__init__(*args, **kwargs)
        self.queue = _ReceiveQueue()  # type: ignore[assignment]
        # uvicorn's asyncio.Event, used the same way (set / clear / is_set / wait), lighter.
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if self.handshake_complete and "response" in self.__dict__:
            # Read only to answer the handshake; the app has its own copy in the scope.
            # The request object itself stays referenced by websockets' suspended parser
            # (a local of ServerProtocol.parse): empty its headers rather than just drop it.
            self.request.headers.clear()
            del self.request, self.response

    # -- the gate: uvicorn's flags, and what closes a connection without them --------------

    handshake_complete = _GateFlag()
    close_sent = _GateFlag()
    disconnected = _GateFlag()
    paused = _GateFlag()
    closing = _GateFlag()  # a close frame was received, or the server is shutting down

    @property
    def gate(self) -> Gate:
        return self._gate

    def _regate(self) -> None:
        self._gate.open = (self._handshake_complete and not self._close_sent
                           and not self._disconnected and not self._closing and not self._paused)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self.paused = False

    def handle_close(self, event: Frame) -> None:
        # uvicorn answers the peer's close frame and closes the transport, flags unchanged.
        self.closing = True
        super().handle_close(event)

    def shutdown(self) -> None:
        # The server stops: uvicorn writes close 1012 itself, flags unchanged.
        self.closing = True
        super().shutdown()

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: BaseTransport) -> None:
        self._gate.write = cast(Transport, transport).write
        super().connection_made(transport)
        bound_send_buffers(cast(Transport, transport))

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # `scope` exists only when the handshake goes on to the app (status 101), and the
        # app's task has been created but has not run yet: it sees the writer from the start.
        scope = self.__dict__.get("scope")
        if scope is not None and not self.conn.extensions:
            scope["extensions"][FRAMES_EXTENSION] = {"writer": self}

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # The scope refers to this protocol through the writer: break that cycle, so a closed
        # connection is freed by reference counting, not left to a (rare) full collection.
        scope = self.__dict__.get("scope")
        if scope is not None:
            scope["extensions"].pop(FRAMES_EXTENSION, None)

    def write_frame(self, frame: bytes) -> bool:
        # After a close frame went out (ours, a keepalive failure, the peer's echoed) nothing
        # else may; the sansio state machine is bypassed here, so check uvicorn's own flags.
        if (self.close_sent or self.disconnected or not self.handshake_complete
                or self.transport.is_closing()):
            return False
        self.transport.write(frame)
        return True

    @property
    def write_paused(self) -> bool:
        return not self.writable.is_set()

    async def drained(self) -> None:
        await self.writable.wait()


def frame_writer(scope: Mapping[str, Any]) -> FrameWriter | None:
    ext = scope.get("extensions") or {}
    entry = ext.get(FRAMES_EXTENSION)
    if entry is None:
        return None
    writer: FrameWriter = entry["writer"]
    return writer


__all__ = ["FRAMES_EXTENSION", "CourtsideWebSocketProtocol", "FrameWriter", "bound_send_buffers",
           "frame_writer", "text_frame"]
