"""Helpers for the realtime tests (no tests in here): a real uvicorn server in a thread,
`courtside serve` subprocesses, and thin WebSocket / SSE / REST clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import orjson
import psycopg
from httpx_sse import ServerSentEvent, aconnect_sse
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from api.app import ApiConfig, create_app
from api.realtime import RealtimeConfig, realtime_lifespan, realtime_routes
from api.realtime_limits import RealtimeLimits
from bridge import BridgeConfig
from tests.servers import serve

ROOT = Path(__file__).resolve().parent.parent
FAST_BRIDGE = BridgeConfig(heartbeat_interval=0.5, reap_interval=0.5, node_ttl=5.0,
                           health_interval=0.5, health_timeout=1.0, connect_timeout=1.0,
                           backoff_max=0.5)


def build_app(dsn: str, limits: RealtimeLimits | None = None, *,
              listen_dsn: str | None = None, **rt: Any) -> Starlette:
    return create_app(
        ApiConfig(database_url=dsn, pool_max_size=5, comments_per_minute=1000),
        extra_routes=realtime_routes(),
        extra_lifespan=realtime_lifespan(
            dsn, listen_dsn, config=RealtimeConfig(limits=limits or RealtimeLimits(), **rt),
            bridge_config=FAST_BRIDGE),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running(app: Starlette, **config: Any) -> Iterator[str]:
    """`app` under a real uvicorn on a free port (tests/servers.py), as `courtside serve`
    configures it."""
    settings: dict[str, Any] = {"http": "api.http_protocol:CourtsideHttpProtocol",
                                "ws": "api.ws_protocol:CourtsideWebSocketProtocol",
                                "ws_per_message_deflate": False,
                                "shutdown_timeout": 6.0}
    settings.update(config)
    with serve(app, **settings) as base:
        yield base


def wait_ready(base: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{base} never became ready")


@dataclass
class Process:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve_process(dsn: str | None, tmp: Path, *, workers: int = 1,
                  env: dict[str, str] | None = None) -> Iterator[Process]:
    """`courtside serve` as a subprocess; stopped with SIGTERM (then SIGKILL) afterwards."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update({"COURTSIDE_DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1",
                     "COURTSIDE_LOG_LEVEL": "warning"})
    if dsn is not None:
        full_env["DATABASE_URL"] = dsn
    full_env.update(env or {})
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "courtside.cli", "serve", "--port", str(port),
             "--workers", str(workers)],
            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    process = Process(f"http://127.0.0.1:{port}", proc, log)
    try:
        try:
            wait_ready(process.base, timeout=60)
        except RuntimeError:
            raise RuntimeError(process.output()) from None
        yield process
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


class Proxy:
    """A TCP proxy that can go silent: while stalled it moves no bytes either way (no FIN, no
    RST), like a dead peer or a stalled network path; `resume` lets traffic flow again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._flowing = anyio.Event()
        self._flowing.set()

    def stall(self) -> None:
        if self._flowing.is_set():
            self._flowing = anyio.Event()

    def resume(self) -> None:
        self._flowing.set()

    async def _pipe(self, src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError,
                                 anyio.ClosedResourceError):
            while True:
                data = await src.receive()
                await self._flowing.wait()
                await dst.send(data)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        async with (client,
                    await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream,
                    anyio.create_task_group() as tg):
            tg.start_soon(self._pipe, client, upstream)
            tg.start_soon(self._pipe, upstream, client)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, target_port: int) -> AsyncIterator[Proxy]:
        proxy = cls(target_port)
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, proxy._handle)
            yield proxy
            tg.cancel_scope.cancel()


# -- clients -------------------------------------------------------------------------------


def ws_url(base: str, **params: str) -> str:
    url = base.replace("http://", "ws://") + "/ws"
    if params:
        url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return url


class JsonFrames:
    """JSON text frames over a real `websockets` connection, received in order; `expect`
    keeps the frames it skips for later. Base of the native and Pusher test clients."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.socket_id = ""
        self.pending: list[dict[str, Any]] = []  # received, not yet asked for

    async def recv(self, wait: float = 5.0) -> dict[str, Any]:
        with anyio.fail_after(wait):
            raw = await self.conn.recv()
        frame: dict[str, Any] = orjson.loads(raw)
        return frame

    async def expect(self, pred: Callable[[dict[str, Any]], bool],
                     wait: float = 5.0) -> dict[str, Any]:
        """The first frame matching `pred`; frames that do not match are kept for later."""
        for i, frame in enumerate(self.pending):
            if pred(frame):
                return self.pending.pop(i)
        with anyio.fail_after(wait):
            while True:
                frame = await self.recv(wait)
                if pred(frame):
                    return frame
                self.pending.append(frame)


class Ws(JsonFrames):
    """A native-protocol client."""

    async def send(self, frame: dict[str, Any]) -> None:
        await self.conn.send(orjson.dumps(frame).decode())

    async def drain(self) -> None:
        """Read (into `pending`) until the connection closes: raises ConnectionClosed."""
        while True:
            self.pending.append(orjson.loads(await self.conn.recv()))

    async def recv_raw(self, wait: float = 5.0) -> str | bytes:
        with anyio.fail_after(wait):
            return await self.conn.recv()

    async def subscribe(self, topic: str, since: int | None = None) -> dict[str, Any]:
        await self.send({"type": "subscribe", "topic": topic, "since": since})
        frame = await self.expect(lambda f: f.get("topic") == topic
                                  and f["type"] in ("subscribed", "error"))
        return frame

    async def events(self, topic: str, n: int, types: tuple[str, ...] = (
            "comment.created", "comment.updated", "comment.deleted", "mention.created"),
            wait: float = 10.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with anyio.fail_after(wait):
            while len(out) < n:
                out.append(await self.expect(
                    lambda f: f["type"] == "event" and f["topic"] == topic
                    and f["event"] in types, wait))
        return out


@contextlib.asynccontextmanager
async def ws_client(base: str, token: str | None = None, **params: str) -> AsyncIterator[Ws]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(ws_url(base, **params), additional_headers=headers,
                       open_timeout=10, close_timeout=2) as conn:
        client = Ws(conn)
        first = await client.recv()
        assert first["type"] == "connected", first
        client.socket_id = first["socketId"]
        yield client


class Sse:
    def __init__(self, events: AsyncIterator[ServerSentEvent], response: httpx.Response) -> None:
        self._events = events
        self.response = response

    async def next(self, wait: float = 5.0) -> ServerSentEvent:
        with anyio.fail_after(wait):
            return await self._events.__anext__()

    async def expect(self, name: str, wait: float = 5.0) -> ServerSentEvent:
        """The next event called `name`, skipping others (presence chatter)."""
        with anyio.fail_after(wait):
            while True:
                event = await self.next(wait)
                if event.event == name:
                    return event

    async def durable(self, n: int, wait: float = 10.0) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        with anyio.fail_after(wait):
            while len(out) < n:
                event = await self.next(wait)
                if event.id and event.event.startswith("comment."):
                    out.append(event)
        return out


@contextlib.asynccontextmanager
async def sse_client(base: str, session_id: uuid.UUID, token: str | None = None, *,
                     last_event_id: str | None = None, **params: str) -> AsyncIterator[Sse]:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with (httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=30)) as http,
                aconnect_sse(http, "GET", f"/api/sessions/{session_id}/events",
                             headers=headers, params=params) as source):
        sse = Sse(source.aiter_sse(), source.response)
        if source.response.status_code == 200:
            # The server's first message is `retry:` alone, sent once it is subscribed.
            first = await sse.next()
            assert first.retry is not None, first
            assert not first.data, first
        yield sse


class Rest:
    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}

    async def create(self, session_id: uuid.UUID, content: str,
                     mentions: list[uuid.UUID] | None = None,
                     socket_id: str | None = None) -> dict[str, Any]:
        headers = dict(self.headers)
        if socket_id:
            headers["X-Socket-ID"] = socket_id
        body: dict[str, Any] = {"content": content}
        if mentions is not None:
            body["mentions"] = [str(m) for m in mentions]
        r = await self.http.post(f"/api/sessions/{session_id}/comments", json=body,
                                 headers=headers)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    async def update(self, session_id: uuid.UUID, comment_id: str, content: str,
                     mentions: list[uuid.UUID] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"content": content}
        if mentions is not None:
            body["mentions"] = [str(m) for m in mentions]
        r = await self.http.put(f"/api/sessions/{session_id}/comments/{comment_id}",
                                json=body, headers=self.headers)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    async def delete(self, session_id: uuid.UUID, comment_id: str) -> None:
        r = await self.http.delete(f"/api/sessions/{session_id}/comments/{comment_id}",
                                   headers=self.headers)
        assert r.status_code == 200, r.text

    async def listing(self, session_id: uuid.UUID) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/sessions/{session_id}/comments",
                                params={"limit": 100}, headers=self.headers)
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data


@contextlib.asynccontextmanager
async def rest(base: str, token: str) -> AsyncIterator[Rest]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        yield Rest(http, token)


def same_bytes(a: Any, b: Any) -> bool:
    """Equal as JSON *and* in key order: what orjson writes for each is the same bytes."""
    return orjson.dumps(a) == orjson.dumps(b)


def sql_comment(dsn: str, session_id: uuid.UUID, user_id: uuid.UUID, content: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
            " VALUES (%s, %s, %s) RETURNING id", (session_id, user_id, content)).fetchone()
    assert row is not None
    return str(row[0])


def reset_socket(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a phone that loses its network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def sql(dsn: str, query: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query.encode(), params)
