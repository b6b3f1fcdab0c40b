"""Pre-built SSE chunks (api/http_protocol.py): under courtside's HTTP protocol an event's
chunk is built once and the bridge's fan-out writes the same bytes to every stream; what goes
on the wire is a valid chunked body. Without the protocol (uvicorn's h11) streams go through
ASGI and sse-starlette, and behave the same.

The streams here are raw TCP clients, so the bytes compared are the bytes received."""

from __future__ import annotations

import gc
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import httpx
import orjson
import psycopg
import pytest

from api.http_protocol import ChunkWriter, CourtsideHttpProtocol, http_chunk
from api.realtime_limits import RealtimeLimits
from api.realtime_protocol import ErrorCode
from tests import factories
from tests.servers import port_of
from tests.test_churn import scrape
from tests.test_realtime_support import build_app, running, sql, sql_comment, sse_client


def test_http_chunk_framing() -> None:
    assert http_chunk(b"data: x\n\n") == b"9\r\ndata: x\n\n\r\n"
    assert http_chunk(b"y" * 300) == b"12c\r\n" + b"y" * 300 + b"\r\n"
    assert http_chunk(b"") == b""  # never the body's end (`0\r\n\r\n`), which is uvicorn's


class RecordingWriter(ChunkWriter):
    """The real writer; it also remembers the writers that started streaming, and what the
    fan-out handed each one's socket."""

    started: ClassVar[list[ChunkWriter]] = []
    written: ClassVar[list[tuple[int, bytes]]] = []

    def start(self, on_lost: Callable[[], object], on_stop: Callable[[], object]) -> bool:
        started = super().start(on_lost, on_stop)
        if started:
            RecordingWriter.started.append(self)
            write = self.gate.write  # what the fan-out calls itself (bridge/direct.py)

            def recording(chunk: bytes) -> object:
                RecordingWriter.written.append((id(self), chunk))
                return write(chunk)

            self.gate.write = recording
        return started


class RecordingProtocol(CourtsideHttpProtocol):
    writer_class = RecordingWriter


class RawSse:
    """An SSE client on a plain socket: the exact bytes of each chunk of the body."""

    def __init__(self, port: int, session_id: object, token: str,
                 rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall((f"GET /api/sessions/{session_id}/events HTTP/1.1\r\n"
                           f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
                           f"Authorization: Bearer {token}\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        self.head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert self.head.startswith(b"HTTP/1.1 200"), self.head
        assert b"transfer-encoding: chunked" in self.head.lower()

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        return data

    def chunk(self) -> tuple[bytes, bytes]:
        """(the chunk's raw bytes on the wire, its payload) of the next chunk."""
        while b"\r\n" not in self.buf:
            self.buf += self._recv()
        size_line, _ = self.buf.split(b"\r\n", 1)
        assert re.fullmatch(rb"[0-9a-f]+", size_line), size_line
        size = int(size_line, 16)
        end = len(size_line) + 2 + size + 2
        while len(self.buf) < end:
            self.buf += self._recv()
        raw, self.buf = self.buf[:end], self.buf[end:]
        assert raw.endswith(b"\r\n")
        return raw, raw[len(size_line) + 2:-2]

    def until(self, marker: bytes) -> tuple[bytes, bytes]:
        while True:
            raw, payload = self.chunk()
            if marker in payload:
                return raw, payload

    def close(self) -> None:
        self.sock.close()


def assert_dropped_once_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """One stream was dropped for not reading, said at INFO, and nothing was worse."""
    dropped = [r for r in caplog.records if "stopped reading; dropped" in r.getMessage()]
    assert len(dropped) == 1
    noisy = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno > logging.INFO]
    assert noisy == []


def parse_event(payload: bytes) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for line in payload.decode().split("\n"):
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
    return fields


@pytest.mark.anyio
async def test_two_streams_get_the_same_chunk_object_and_bytes(db: str) -> None:
    world = factories.world(db, participants=3)
    author, a, b = world.participants
    RecordingWriter.written.clear()
    with running(build_app(db), http=RecordingProtocol) as base:
        port = port_of(base)
        clients = [await anyio.to_thread.run_sync(RawSse, port, world.session_id,
                                                  factories.token(db, user)) for user in (a, b)]
        try:
            for raw in clients:  # `retry:` first: the stream is live
                _, first = await anyio.to_thread.run_sync(raw.chunk)
                assert first.startswith(b"retry: ")
            for content in ("short", "é" * 900):  # a chunk size of three hex digits
                comment_id = sql_comment(db, world.session_id, author, content)
                got = [await anyio.to_thread.run_sync(raw.until, comment_id.encode())
                       for raw in clients]
                (raw_a, payload), (raw_b, _) = got
                assert raw_a == raw_b  # byte for byte on the wire
                event = parse_event(payload)
                assert event["event"] == "comment.created"
                data = orjson.loads(event["data"])
                assert data["comment"]["content"] == content
                # Written by the fan-out, built once: both streams got the very same object.
                chunks = [(w, c) for w, c in RecordingWriter.written if c == raw_a]
                assert len({w for w, _ in chunks}) == 2
                assert len({id(c) for _, c in chunks}) == 1
        finally:
            for raw in clients:
                raw.close()


@pytest.mark.anyio
@pytest.mark.parametrize("http", ["courtside", "h11"])
async def test_events_pings_and_the_goodbye_on_either_path(db: str, http: str) -> None:
    """The same stream with pre-built chunks and through ASGI (h11): events in order, a ping
    comment when idle, and `closed` when the server ends it (here: the token revoked)."""
    world = factories.world(db, participants=2)
    author, reader = world.participants
    token = factories.token(db, reader)
    protocol = CourtsideHttpProtocol if http == "courtside" else "h11"
    app = build_app(db, RealtimeLimits(sse_heartbeat=0.3))
    with running(app, http=protocol) as base:
        async with sse_client(base, world.session_id, token) as sse:
            ids = [sql_comment(db, world.session_id, author, f"c{i}") for i in range(5)]
            events = await sse.durable(5)
            assert [orjson.loads(e.data)["comment"]["id"] for e in events] == ids
            assert [int(e.id) for e in events] == [1, 2, 3, 4, 5]
            sql(db, "DELETE FROM personal_access_tokens WHERE id = %s",
                (factories.token_id(token),))
            closed = await sse.expect("closed", wait=10)
            assert orjson.loads(closed.data)["code"] == ErrorCode.TOKEN_REVOKED.value
        # httpx-sse hands comment lines over as nothing: the ping is read off the wire.
        raw = await anyio.to_thread.run_sync(RawSse, port_of(base), world.session_id,
                                             factories.token(db, author))
        try:
            await anyio.to_thread.run_sync(raw.chunk)  # retry:
            _, ping = await anyio.to_thread.run_sync(raw.until, b": ping")
            assert ping.startswith(b": ping")  # sse-starlette's carries the time
        finally:
            raw.close()


def _one(row: tuple[Any, ...] | None) -> Any:
    assert row is not None
    return row[0]


@pytest.mark.anyio
async def test_a_stream_that_stops_reading_is_dropped_and_the_others_get_everything(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    world = factories.world(db, participants=3)
    author, reader, stalled = world.participants
    app = build_app(db, send_timeout=1.0)
    with caplog.at_level(logging.INFO), running(app) as base:
        port = port_of(base)
        stuck = await anyio.to_thread.run_sync(
            lambda: RawSse(port, world.session_id, factories.token(db, stalled), rcvbuf=4096))
        try:
            async with sse_client(base, world.session_id, factories.token(db, reader)) as sse:
                # ~1.2 KB each: 400 fill the kernel's buffers and the transport's 64 KiB;
                # those behind wait in the stalled stream's queue until it is dropped.
                with psycopg.connect(db, autocommit=True) as conn:
                    ids = [str(_one(conn.execute(
                        "INSERT INTO sport_session_comments (sport_session_id, user_id,"
                        " content) VALUES (%s, %s, %s) RETURNING id",
                        (world.session_id, author, f"{i} " + "x" * 990)).fetchone()))
                        for i in range(400)]
                events = await sse.durable(400, wait=60)
                assert [orjson.loads(e.data)["comment"]["id"] for e in events] == ids
                deadline = time.monotonic() + 15
                while True:
                    samples = await scrape(base)
                    streams = samples.get(("courtside_connections", (("transport", "sse"),)))
                    if streams == 1 or time.monotonic() > deadline:
                        break
                    await anyio.sleep(0.2)
                assert streams == 1  # the stalled one is gone, the reader stays
        finally:
            stuck.close()
    assert_dropped_once_quietly(caplog)


@pytest.mark.anyio
@pytest.mark.parametrize("http", ["courtside", "h11"])
async def test_a_stream_that_cannot_be_set_up_says_so(db: str, http: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Setting the stream up outlasts `setup_timeout`: the client is told (`closed`,
    NOT_READY, and reconnects), the server logs a warning, not an unhandled error."""
    world = factories.world(db, participants=2)
    _, reader = world.participants
    protocol = CourtsideHttpProtocol if http == "courtside" else "h11"
    app = build_app(db, setup_timeout=1e-9)
    with caplog.at_level(logging.INFO), running(app, http=protocol) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http_client:
            r = await http_client.get(
                f"/api/sessions/{world.session_id}/events",
                headers={"Authorization": f"Bearer {factories.token(db, reader)}"})
    assert r.status_code == 200
    assert b"event: closed" in r.content
    closed = [line for line in r.text.split("\n") if line.startswith("data: ")][-1]
    assert orjson.loads(closed.removeprefix("data: "))["code"] == ErrorCode.NOT_READY.value
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("SSE stream of" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_a_stopping_server_ends_its_streams_with_a_goodbye(db: str) -> None:
    """uvicorn would wait out its graceful-shutdown timeout for a stream, then cut it: the
    stream hears of the shutdown from the protocol and says `closed` / SERVICE_RESTART
    first (an EventSource then reconnects, to this server's successor).

    Only courtside's protocol here: through ASGI the stream learns of the shutdown from
    sse-starlette, which finds uvicorn through its signal handlers, and a server run in a
    thread (tests/servers.py) installs none."""
    world = factories.world(db, participants=2)
    _, reader = world.participants
    got: list[bytes] = []
    with running(build_app(db), shutdown_timeout=20.0) as base:
        raw = RawSse(port_of(base), world.session_id, factories.token(db, reader))
        raw.chunk()  # `retry:`: the stream is live
        listener = threading.Thread(target=lambda: got.append(raw.until(b"event: closed")[1]))
        listener.start()
    listener.join(10)
    raw.close()
    [closed] = got
    data = parse_event(closed)["data"]
    assert orjson.loads(data)["code"] == ErrorCode.SERVICE_RESTART.value


def _waiting_for(db: str, table: str, timeout: float = 10.0) -> bool:
    """Whether a backend came to wait for a lock on `table` within `timeout`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(db, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM pg_locks WHERE relation = %s::regclass"
                            " AND NOT granted", (table,)).fetchone():
                return True
            time.sleep(0.02)
    return False


class ShutdownSignallingProtocol(CourtsideHttpProtocol):
    shut_down: ClassVar[threading.Event] = threading.Event()

    def shutdown(self) -> None:
        super().shutdown()
        ShutdownSignallingProtocol.shut_down.set()


def test_a_stream_set_up_while_the_server_stops_says_goodbye_at_once(db: str) -> None:
    """A stream whose request arrived before the shutdown but starts after it (its
    authentication held up here by a lock on the tokens) would never hear of the shutdown
    from its protocol: `ChunkWriter.start` tells it at once, and it says `closed` /
    SERVICE_RESTART instead of holding the stop up for the graceful-shutdown timeout."""
    world = factories.world(db, participants=2)
    _, reader = world.participants
    token = factories.token(db, reader)
    ShutdownSignallingProtocol.shut_down.clear()
    locked = threading.Event()

    def hold_tokens_until_shutdown() -> None:
        with psycopg.connect(db) as conn:
            conn.execute("LOCK TABLE personal_access_tokens IN ACCESS EXCLUSIVE MODE")
            locked.set()
            ShutdownSignallingProtocol.shut_down.wait(15)  # set once `stopping` is

    got: list[tuple[bytes, float]] = []
    raw_box: list[RawSse] = []

    def client(port: int) -> None:
        raw = RawSse(port, world.session_id, token)  # returns once the 200 head is read
        raw_box.append(raw)
        got.append((raw.until(b"event: closed")[1], time.monotonic()))

    locker = threading.Thread(target=hold_tokens_until_shutdown)
    locker.start()
    assert locked.wait(10)
    started = 0.0
    with running(build_app(db), http=ShutdownSignallingProtocol,
                 shutdown_timeout=20.0) as base:
        listener = threading.Thread(target=client, args=(port_of(base),))
        listener.start()
        assert _waiting_for(db, "personal_access_tokens")  # the request is in, held up
        started = time.monotonic()
    locker.join(10)
    listener.join(10)
    for raw in raw_box:
        raw.close()
    assert ShutdownSignallingProtocol.shut_down.is_set()
    [(closed, at)] = got
    assert orjson.loads(parse_event(closed)["data"])["code"] == ErrorCode.SERVICE_RESTART.value
    assert at - started < 10.0  # not cut at the 20 s graceful timeout


@pytest.mark.anyio
async def test_requests_free_their_writer_without_the_collector(db: str) -> None:
    """Every request's scope holds a writer, which holds the request's cycle, which holds the
    scope: the protocol breaks that loop when the response ends, so REST requests leave no
    work for the cyclic collector (nor do SSE streams: tests/test_connection_memory.py)."""

    def writers() -> int:
        return sum(isinstance(o, ChunkWriter) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        with running(build_app(db)) as base:
            before = writers()
            async with httpx.AsyncClient(base_url=base) as http:  # one kept-alive connection
                for _ in range(30):
                    assert (await http.get("/openapi.json")).status_code == 200
                    r = await http.get(f"/api/sessions/{uuid.uuid4()}/comments")
                    assert r.status_code == 401
            assert writers() == before
    finally:
        gc.enable()


@pytest.mark.anyio
async def test_a_stalled_stream_with_nothing_more_to_send_is_dropped_at_a_ping(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    """Events fill a stream's buffers (its peer reads nothing) and then stop coming: no write
    waits, so only the pings can notice. Its buffer still full after `send_timeout`, the
    stream is dropped."""
    world = factories.world(db, participants=3)
    author, reader, stalled = world.participants
    RecordingWriter.started.clear()
    app = build_app(db, RealtimeLimits(sse_heartbeat=0.2), send_timeout=1.0)
    with caplog.at_level(logging.INFO), running(app, http=RecordingProtocol) as base:
        port = port_of(base)
        stuck = await anyio.to_thread.run_sync(
            lambda: RawSse(port, world.session_id, factories.token(db, stalled), rcvbuf=4096))
        try:
            [stuck_writer] = RecordingWriter.started
            async with sse_client(base, world.session_id, factories.token(db, reader)) as sse:
                with psycopg.connect(db, autocommit=True) as conn:
                    # One at a time, each seen by the reader (so fanned out) before the
                    # next: the first that leaves the stalled buffer full is the last sent.
                    for i in range(1000):
                        conn.execute(
                            "INSERT INTO sport_session_comments (sport_session_id, user_id,"
                            " content) VALUES (%s, %s, %s)",
                            (world.session_id, author, f"{i} " + "x" * 990))
                        await sse.durable(1)
                        if stuck_writer.write_paused:
                            break
                assert stuck_writer.write_paused
                for _ in range(100):  # 10 s at most
                    if not stuck_writer.streaming:
                        break
                    await anyio.sleep(0.1)
                assert not stuck_writer.streaming
                # The reader, idle meanwhile, is still there.
                sql_comment(db, world.session_id, author, "after")
                [event] = await sse.durable(1)
                assert orjson.loads(event.data)["comment"]["content"] == "after"
        finally:
            stuck.close()
    assert_dropped_once_quietly(caplog)
