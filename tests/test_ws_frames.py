"""Pre-built frames (api/ws_protocol.py): an event's WebSocket frame is built once and the
same bytes are written to every subscriber; what goes on the wire is a valid frame.

The subscribers here are raw TCP clients, so the bytes compared are the bytes received."""

from __future__ import annotations

import base64
import os
import socket
import struct
from asyncio import BaseTransport
from typing import Any, ClassVar

import anyio
import orjson
import pytest

from api.ws_protocol import CourtsideWebSocketProtocol, _ReceiveQueue, text_frame
from tests import factories
from tests.servers import port_of
from tests.test_realtime_support import build_app, running, sql_comment, ws_client


class RecordingProtocol(CourtsideWebSocketProtocol):
    """The real protocol; it also remembers which frame object each connection was given."""

    written: ClassVar[list[tuple[int, bytes]]] = []

    def write_frame(self, frame: bytes) -> bool:
        RecordingProtocol.written.append((id(self), frame))
        return super().write_frame(frame)

    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(transport)
        write = self.gate.write  # what the fan-out calls itself (bridge/direct.py)

        def recording(frame: bytes) -> object:
            RecordingProtocol.written.append((id(self), frame))
            return write(frame)

        self.gate.write = recording


class RawWs:
    """A WebSocket client on a plain socket: the exact bytes of each server frame."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        return chunk

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            self.buf += self._recv()

    def frame(self) -> tuple[bytes, dict[str, Any]]:
        """(the frame's raw bytes, its JSON payload) of the next server frame."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert b0 == 0x81, hex(b0)  # FIN + text, no RSV bits
        assert b1 & 0x80 == 0  # a server never masks
        n, start = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            (n,), start = struct.unpack("!H", self.buf[2:4]), 4
        elif n == 127:
            self._need(10)
            (n,), start = struct.unpack("!Q", self.buf[2:10]), 10
        self._need(start + n)
        raw, self.buf = self.buf[:start + n], self.buf[start + n:]
        return raw, orjson.loads(raw[start:])

    def send(self, obj: dict[str, Any]) -> None:
        payload = orjson.dumps(obj)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.sock.sendall(bytes((0x81, 0x80 | len(payload))) + mask + masked)

    def until(self, pred: Any) -> tuple[bytes, dict[str, Any]]:
        while True:
            raw, obj = self.frame()
            if pred(obj):
                return raw, obj

    def close(self) -> None:
        self.sock.close()


def test_text_frame_lengths() -> None:
    assert text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame(b"x" * 65535)[:4] == b"\x81\x7e\xff\xff"
    assert text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + struct.pack("!Q", 65536)


@pytest.mark.anyio
async def test_two_subscribers_get_the_same_frame_object_and_bytes(db: str) -> None:
    world = factories.world(db, participants=3)
    author, a, b = world.participants
    RecordingProtocol.written.clear()
    with running(build_app(db), ws=RecordingProtocol) as base:
        port = port_of(base)
        clients = []
        for user in (a, b):
            raw = await anyio.to_thread.run_sync(RawWs, port, factories.token(db, user))
            clients.append(raw)
        try:
            for raw in clients:
                await anyio.to_thread.run_sync(raw.until, lambda f: f["type"] == "connected")
                raw.send({"type": "subscribe", "topic": world.topic})
                await anyio.to_thread.run_sync(
                    raw.until, lambda f: f["type"] == "subscribed")
            long = "é" * 400  # a two-byte length header, and UTF-8 carried as is
            for content in ("short", long):
                comment_id = sql_comment(db, world.session_id, author, content)

                def is_it(f: dict[str, Any], cid: str = comment_id) -> bool:
                    return (f.get("event") == "comment.created"
                            and f["data"]["comment"]["id"] == cid)

                got = [await anyio.to_thread.run_sync(raw.until, is_it) for raw in clients]
                (raw_a, obj_a), (raw_b, _) = got
                assert raw_a == raw_b  # byte for byte on the wire
                assert obj_a["data"]["comment"]["content"] == content
                # Built once: both connections were handed the very same bytes object.
                frames = [(conn, f) for conn, f in RecordingProtocol.written if f == raw_a]
                assert len({conn for conn, _ in frames}) == 2
                assert len({id(f) for _, f in frames}) == 1
        finally:
            for raw in clients:
                raw.close()


@pytest.mark.anyio
async def test_no_event_after_unsubscribed(db: str) -> None:
    """Events written directly by the fan-out stop at once when the client unsubscribes."""
    world = factories.world(db, participants=3)
    author, reader, other = world.participants
    n = 30
    with running(build_app(db)) as base:
        async with ws_client(base, factories.token(db, reader)) as ws, \
                ws_client(base, factories.token(db, other)) as witness:
            await ws.subscribe(world.topic)
            await witness.subscribe(world.topic)

            async def write() -> None:
                for i in range(n):
                    await anyio.to_thread.run_sync(
                        sql_comment, db, world.session_id, author, f"c{i}")

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                await ws.events(world.topic, 3)
                await ws.send({"type": "unsubscribe", "topic": world.topic})
                await ws.expect(lambda f: f["type"] == "unsubscribed")
                ws.pending.clear()  # what came before "unsubscribed"
            # The witness has all n: every fan-out that could have reached the reader is done.
            await witness.events(world.topic, n)
            await ws.send({"type": "ping"})
            after = []
            with anyio.fail_after(5):
                while (frame := await ws.recv())["type"] != "pong":
                    after.append(frame)
            assert [f for f in after if f.get("type") == "event"] == []


@pytest.mark.anyio
async def test_receive_queue_hands_messages_over_in_order() -> None:
    queue = _ReceiveQueue()
    got: list[Any] = []

    async def reader() -> None:
        for _ in range(3):
            got.append(await queue.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()  # parked on an empty queue
        assert queue.empty()
        queue.put_nowait({"type": "websocket.connect"})
        queue.put_nowait({"type": "websocket.receive", "text": "a"})
        await anyio.wait_all_tasks_blocked()
        queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert [m["type"] for m in got] == ["websocket.connect", "websocket.receive",
                                        "websocket.disconnect"]
    assert queue.empty()


@pytest.mark.anyio
async def test_with_permessage_deflate_frames_go_through_asgi(db: str) -> None:
    """A compressed connection cannot share frames: no writer, every send through uvicorn."""
    world = factories.world(db, participants=2)
    author, reader = world.participants
    RecordingProtocol.written.clear()
    with running(build_app(db), ws=RecordingProtocol, ws_per_message_deflate=True) as base:
        async with ws_client(base, factories.token(db, reader)) as ws:
            extensions = ws.conn.response.headers.get("Sec-WebSocket-Extensions", "") \
                if ws.conn.response is not None else ""
            assert "permessage-deflate" in extensions
            await ws.subscribe(world.topic)
            comment_id = sql_comment(db, world.session_id, author, "squeezed " * 50)
            [event] = await ws.events(world.topic, 1)
            assert event["data"]["comment"]["id"] == comment_id
    assert RecordingProtocol.written == []
