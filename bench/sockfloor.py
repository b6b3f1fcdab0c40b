"""The plain-socket floor: `socket.send` of one pre-built WebSocket frame to N loopback sockets.

What delivering an event costs when nothing but the kernel is involved: the sender's CPU
time per send (its own thread's clock), with a drain process reading everything on the
other ends. courtside's CPU per delivered message is judged against this.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import selectors
import socket
import time
import uuid
from typing import Any

import orjson

from api.realtime_protocol import event_frame
from bench.agent import raise_nofile
from bench.dialects import marker_content
from bench.wsframes import OP_TEXT, encode_server_frame


def sample_frame() -> bytes:
    """A courtside `comment.created` frame as it goes on the wire, with a bench comment."""
    user = {"id": str(uuid.uuid4()), "firstname": "Bench1", "lastname": "User", "avatar": None}
    comment = {"id": str(uuid.uuid4()), "content": marker_content(123456, time.time_ns()),
               "user": user, "mentions": [], "created_at": "2025-01-20T10:30:00.000000Z",
               "updated_at": "2025-01-20T10:30:00.000000Z"}
    payload = event_frame(f"session:{uuid.uuid4()}", 42, "comment.created",
                          orjson.dumps({"comment": comment}))
    return encode_server_frame(OP_TEXT, payload)


def _drain(port: int, count: int) -> None:
    raise_nofile()
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    buf = bytearray(1 << 16)
    open_count = count
    while open_count:
        for key, _ in sel.select(timeout=30):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                continue
            if n == 0:
                sel.unregister(sock)
                sock.close()
                open_count -= 1


def measure(sockets: int, rounds: int, timeout: float = 60.0) -> dict[str, Any]:
    raise_nofile()
    frame = sample_frame()
    ctx = multiprocessing.get_context("spawn")
    with socket.create_server(("127.0.0.1", 0), backlog=min(sockets, 4096)) as server:
        server.settimeout(timeout)
        port = server.getsockname()[1]
        drain = ctx.Process(target=_drain, args=(port, sockets), daemon=True)
        drain.start()
        conns: list[socket.socket] = []
        try:
            for _ in range(sockets):
                conn, _ = server.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns.append(conn)
            for conn in conns:  # warm-up round
                conn.send(frame)
            time.sleep(0.2)
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            for _ in range(rounds):
                for conn in conns:
                    conn.send(frame)
            cpu = time.thread_time() - cpu0
            wall = time.perf_counter() - wall0
        finally:
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.close()
            drain.join(timeout)
            if drain.is_alive():
                drain.kill()
                drain.join(5)
    sends = rounds * sockets
    return {"sockets": sockets, "rounds": rounds, "frame_bytes": len(frame), "sends": sends,
            "cpu_per_send_us": cpu / sends * 1e6, "wall_per_send_us": wall / sends * 1e6}
