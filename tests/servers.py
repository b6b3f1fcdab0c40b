"""Real uvicorn servers for tests: any ASGI app, on a free loopback port, in a thread.

    with serve(app) as base_url:          # "http://127.0.0.1:<port>"
        httpx.get(f"{base_url}/openapi.json")

The listening socket is bound before the server starts (port 0, so no two tests race for a
port) and handed to uvicorn. The server runs its own event loop in a background thread; the
context manager returns once the lifespan has completed startup and the socket accepts, and
on exit asks for a graceful shutdown (open WebSockets are closed by uvicorn with 1012),
then forces it if it takes longer than `shutdown_timeout`. A startup failure (say the
lifespan raised) is raised here, not left to hang the test.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp


class ServerError(RuntimeError):
    pass


class _Thread(threading.Thread):
    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:
        super().__init__(name=f"uvicorn-{sock.getsockname()[1]}", daemon=True)
        self.server = server
        self.sock = sock
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # reported to the test thread, never lost
            self.error = exc


def port_of(base: str) -> int:
    """The port of a server's base URL (``http://127.0.0.1:PORT``)."""
    port = urlsplit(base).port
    assert port is not None, base
    return port


def _bind(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.set_inheritable(True)
    return sock


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def serve(app: ASGIApp, *, host: str = "127.0.0.1", startup_timeout: float = 30.0,
          shutdown_timeout: float = 10.0, **uvicorn_options: Any) -> Iterator[str]:
    """Run `app` under uvicorn until the block ends; yields the base URL (no trailing /).

    `uvicorn_options` go to uvicorn.Config (ws=..., ws_ping_interval=..., ...). Logging is
    left to pytest (no dictConfig), and the lifespan must succeed.
    """
    sock = _bind(host)
    port = sock.getsockname()[1]
    options: dict[str, Any] = {
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": max(1, int(shutdown_timeout / 2)),
        **uvicorn_options,
    }
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = _Thread(server, sock)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise ServerError("uvicorn exited during startup (see the log)") from thread.error
            if time.monotonic() > deadline:
                raise ServerError(f"uvicorn did not start within {startup_timeout} s")
            time.sleep(0.01)
        if not _accepts(host, port):
            raise ServerError(f"uvicorn started but {host}:{port} does not accept")
        yield f"http://{host}:{port}"
    finally:
        _stop(server, thread, shutdown_timeout)
        sock.close()
    if thread.error is not None and not isinstance(thread.error, (KeyboardInterrupt,
                                                                  SystemExit)):
        raise ServerError("uvicorn failed while serving") from thread.error


def _stop(server: uvicorn.Server, thread: _Thread, timeout: float) -> None:
    server.should_exit = True
    thread.join(timeout)
    if thread.is_alive():
        server.force_exit = True
        thread.join(timeout)
    if thread.is_alive():
        raise ServerError(f"uvicorn did not stop within {2 * timeout} s")
