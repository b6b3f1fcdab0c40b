"""The systems under test, each run as its own server process on a free loopback port.

- ``courtside``: ``courtside serve --workers 1`` (REST + /ws), configured by environment.
- ``pusher``: the same, clients on its Pusher protocol endpoint (``/app/{key}``).
- ``floor``: bench/floor_server.py — a bare psycopg LISTEN loop and a bare Starlette send loop.
- ``naive``: bench/naive_server.py — encode/broadcaster's Postgres backend + Starlette.
- ``socketio``: bench/peers/socketio_server.mjs — Socket.IO with @socket.io/postgres-adapter.

All Python servers run under the same uvicorn WebSocket implementation as courtside
(websockets-sansio, no compression), so the differences measured are the designs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench import procstat
from bench.database import BenchDB
from bench.dialects import PUSHER_KEY, PUSHER_SECRET
from bench.node import PEERS_DIR, node_binary
from courtside.pgcluster import free_port

ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    """A server under test did not start, or died."""


class Server:
    def __init__(self, system: str, proc: subprocess.Popen[bytes], port: int,
                 log_path: Path, traced_dir: Path | None = None) -> None:
        self.system = system
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.traced_dir = traced_dir  # tracemalloc snapshots land here (bench.traced_serve)
        self._snapshots = 0

    def snapshot(self, timeout: float = 120.0) -> Path:
        """Ask a traced server for a tracemalloc snapshot; the path once it is written."""
        if self.traced_dir is None:
            raise ServerError(f"{self.system} does not run under tracemalloc")
        path = self.traced_dir / f"{self._snapshots}.snap"
        self._snapshots += 1
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline or not self.alive():
                raise ServerError(f"no tracemalloc snapshot from {self.system}")
            time.sleep(0.05)
        return path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return procstat.tree_cpu(self.pid)

    def rss(self) -> int:
        return procstat.tree_rss(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _command(system: str, port: int, traced: bool) -> list[str]:
    if system in ("courtside", "pusher"):
        return [sys.executable, "-m", "bench.traced_serve" if traced else "courtside.cli",
                "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if system == "floor":
        return [sys.executable, "-m", "bench.floor_server", "--port", str(port)]
    if system == "naive":
        return [sys.executable, "-m", "bench.naive_server", "--port", str(port)]
    if system == "socketio":
        node = node_binary()
        if node is None:
            raise ServerError("node is not installed")
        return [node, str(PEERS_DIR / "socketio_server.mjs")]
    raise ServerError(f"unknown system {system!r}")


def _environment(system: str, db: BenchDB, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": db.dsn,
        "PORT": str(port),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    })
    if system in ("courtside", "pusher"):
        env.update({
            "COURTSIDE_PUSHER_APP_KEY": PUSHER_KEY,
            "COURTSIDE_PUSHER_APP_SECRET": PUSHER_SECRET,
            "COURTSIDE_LOG_LEVEL": "warning",
            # One bench user holds many of the connections (presence would otherwise send
            # every join to every subscriber: N² frames before the measurement starts).
            "COURTSIDE_RT_CONNECTIONS_PER_USER": "1000000",
            # The connections scenario holds its N plus a few warm ones: past the default
            # 10,000 Pusher connections of a process, the last would be refused (4100).
            "COURTSIDE_PUSHER_MAX_CONNECTIONS": "1000000",
        })
    return env


@contextlib.contextmanager
def running(system: str, db: BenchDB, log_dir: Path, timeout: float = 60.0,
            traced_dir: Path | None = None) -> Iterator[Server]:
    """Start `system`, wait until GET /readyz answers 200, stop it on exit. With
    `traced_dir` (courtside and pusher) it runs under tracemalloc (see bench/traced_serve.py)."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{system}-{port}.log"
    traced = traced_dir is not None and system in ("courtside", "pusher")
    env = _environment(system, db, port)
    if traced and traced_dir is not None:
        env["BENCH_TRACEMALLOC_DIR"] = str(traced_dir)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(_command(system, port, traced), env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    server = Server(system, proc, port, log_path, traced_dir if traced else None)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        server.stop()


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"{server.base_url}/readyz"
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(f"{server.system} exited ({server.proc.returncode}):\n"
                              f"{server.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise ServerError(f"{server.system} not ready after {timeout:.0f}s:\n{server.log_tail()}")
