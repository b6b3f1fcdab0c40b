"""tests/servers.py: a real uvicorn on a free port, for HTTP and WebSockets, started and
stopped cleanly, with startup failures reported."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.servers import ServerError, serve


async def hello(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except WebSocketDisconnect:
        pass


def _app(**kwargs: object) -> Starlette:
    return Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", echo)], **kwargs)  # type: ignore[arg-type]


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_serves_http_and_websocket_then_frees_the_port() -> None:
    with serve(_app()) as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/").text == "hello"
        with connect(url.replace("http", "ws", 1) + "/ws") as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "ping"
        port = _port(url)
    assert not _accepts(port)


def test_two_servers_at_once_get_distinct_ports() -> None:
    with serve(_app()) as a, serve(_app()) as b:
        assert a != b
        assert httpx.get(a + "/").text == httpx.get(b + "/").text == "hello"


def test_shutdown_closes_open_websockets() -> None:
    running = serve(_app(), shutdown_timeout=6)
    url = running.__enter__()
    stopped = False
    try:
        with connect(url.replace("http", "ws", 1) + "/ws") as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
            running.__exit__(None, None, None)
            stopped = True
            # uvicorn told the client it is going away (1012), not left it hanging.
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1012
    finally:
        if not stopped:
            running.__exit__(None, None, None)


def _no_database() -> None:
    raise RuntimeError("no database")


def test_startup_failure_is_raised_not_hung() -> None:
    @contextlib.asynccontextmanager
    async def failing(_app: Starlette) -> AsyncIterator[None]:
        _no_database()
        yield

    with pytest.raises(ServerError, match="startup"), serve(_app(lifespan=failing),
                                                            startup_timeout=10):
        pytest.fail("the body must not run")


def test_lifespan_runs_before_the_url_is_given_and_after_exit() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        events.append("up")
        yield
        events.append("down")

    with serve(_app(lifespan=lifespan)) as url:
        assert events == ["up"]
        httpx.get(url + "/")
    assert events == ["up", "down"]
