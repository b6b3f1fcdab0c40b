"""The plain-socket floor: `socket.send` of one pre-built WebSocket frame to N loopback sockets.

What delivering an event costs when nothing but the kernel is involved: the sender's CPU
time per send (its own thread's clock), with a drain process reading everything on the
other ends. courtside's CPU per delivered message is judged against this.

Measured the way the systems' fan-out is (bench/scenarios/fanout.py): closed loop, one round
of sends (one event to every socket) and then a wait until the drain has read all of it, so
each round starts with the receiver idle, as each event does for a system. A send that finds
its reader asleep also wakes it, and that costs the sender: sent back to back, rounds are
cheaper per send (at 5,000 sockets, three runs: 2.5–3.2 µs against 3.2–3.6 µs closed loop),
so the back-to-back figure is measured too, on the same sockets, and reported beside it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import selectors
import socket
import time
import uuid
from ctypes import c_longlong
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


def _drain(port: int, count: int, received: c_longlong) -> None:
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
            else:
                received.value += n  # only this process writes it


def measure(sockets: int, rounds: int, timeout: float = 60.0) -> dict[str, Any]:
    raise_nofile()
    frame = sample_frame()
    ctx = multiprocessing.get_context("spawn")
    received = ctx.Value("q", 0, lock=False)
    with socket.create_server(("127.0.0.1", 0), backlog=min(sockets, 4096)) as server:
        server.settimeout(timeout)
        port = server.getsockname()[1]
        drain = ctx.Process(target=_drain, args=(port, sockets, received), daemon=True)
        drain.start()
        conns: list[socket.socket] = []
        try:
            for _ in range(sockets):
                conn, _ = server.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns.append(conn)
            sent = 0

            def round_read() -> None:
                # Polled as Run.wait_received polls the agents in a system's leg, so the
                # receiver rests between rounds about as long as between a system's events.
                deadline = time.monotonic() + timeout
                while received.value < sent:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the drain read {received.value} of {sent} bytes")
                    time.sleep(0.05)

            for conn in conns:  # warm-up round
                conn.send(frame)
            sent += sockets * len(frame)
            round_read()
            cpu = wall = 0.0
            unread = 0  # the most the drain had left to read as a closed-loop round began
            for _ in range(rounds):
                unread = max(unread, sent - received.value)
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                for conn in conns:
                    conn.send(frame)
                cpu += time.thread_time() - cpu0
                wall += time.perf_counter() - wall0
                sent += sockets * len(frame)
                round_read()
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            for _ in range(rounds):
                for conn in conns:
                    conn.send(frame)
            cpu_b2b = time.thread_time() - cpu0
            wall_b2b = time.perf_counter() - wall0
            sent += rounds * sockets * len(frame)
            round_read()
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
            "bytes_read": received.value, "closed_loop_unread_bytes": unread,
            "cpu_per_send_us": cpu / sends * 1e6, "wall_per_send_us": wall / sends * 1e6,
            "back_to_back_cpu_per_send_us": cpu_b2b / sends * 1e6,
            "back_to_back_wall_per_send_us": wall_b2b / sends * 1e6}
