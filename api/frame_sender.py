"""How a realtime connection (/ws, Pusher) sends its text frames.

Under `courtside serve` the frame is written straight to the transport (api/ws_protocol.py's
`FrameWriter`): writes are synchronous, so no lock; while the transport is above its
high-water mark the sender waits for it to drain. Without a writer (another ws
implementation, or permessage-deflate) frames go through ASGI, one at a time behind a lock.
Either way a peer whose buffers stay full past `send_timeout` is dropped: the subclass says
how (`_slow_consumer`), and the send raises `Gone`, as for a socket that is gone.
"""

from __future__ import annotations

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.ws_protocol import FrameWriter, frame_writer, text_frame


class Gone(Exception):
    """The socket cannot be written to any more."""


class FrameSender:
    __slots__ = ("_dead", "_send_lock", "_send_timeout", "_writer", "ws")

    def __init__(self, websocket: WebSocket, send_timeout: float) -> None:
        self.ws = websocket
        self._send_timeout = send_timeout
        self._writer: FrameWriter | None = frame_writer(websocket.scope)
        self._send_lock = anyio.Lock() if self._writer is None else None
        self._dead = False  # the socket is gone or unusable: send nothing more

    def _slow_consumer(self) -> None:
        """The peer stopped reading past send_timeout: close the connection (the subclass's
        close code). Called once, before `Gone` is raised."""
        raise NotImplementedError

    async def send(self, payload: bytes) -> None:
        """Send one text frame carrying ``payload``; `Gone` if the socket is unusable."""
        if self._writer is not None:
            await self._send_frame(text_frame(payload))
        else:
            await self._send_asgi(payload)

    async def _send_frame(self, frame: bytes) -> None:
        writer = self._writer
        assert writer is not None
        if self._dead:
            raise Gone
        if writer.write_paused:
            with anyio.move_on_after(self._send_timeout) as scope:
                await writer.drained()
            if scope.cancelled_caught:
                self._dead = True
                self._slow_consumer()
                raise Gone
            if self._dead:
                raise Gone
        if not writer.write_frame(frame):
            self._dead = True
            raise Gone

    async def _send_asgi(self, payload: bytes) -> None:
        if self._dead:
            raise Gone
        assert self._send_lock is not None
        async with self._send_lock:
            with anyio.move_on_after(self._send_timeout) as scope:
                try:
                    await self.ws.send_text(payload.decode())
                except (WebSocketDisconnect, RuntimeError, OSError):
                    self._dead = True
                    raise Gone from None
            if scope.cancelled_caught:
                self._dead = True
                self._slow_consumer()
                raise Gone
