"""Fan-out over SSE beside the same fan-out over WebSocket, on one checkout or two.

    python -m bench.sse_fanout [--old /path/to/checkout] [--streams 1000] [--events 50]
                               [--dsn ...] [--out F]

Each checkout in turn runs `courtside serve` (one worker) on a fresh database with one
session. `--streams` subscribers follow it over WebSocket (courtside's protocol), then as
many over SSE (bearer tokens, 20 per user, the per-process connection limit; other users for
each transport); for each, `--events` comments are committed one at a time, each once every
subscriber has the previous one (closed loop, as bench's fanout scenario). Reported: the
server's CPU per delivery (its idle rate over a quiet second subtracted), deliveries counted
by the clients, and the SSE/WebSocket ratio of the two, measured on the same server seconds
apart. Before both, on the fresh server, `--streams` idle SSE streams are opened to weigh
them: the growth of the server's RSS per stream. The clients are raw sockets in this
process (another process than the server's), counting the events' markers in what they
read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

from bench import procstat, wsframes
from bench.checkouts import ROOT, measure_sides, migrate_checkout, serve_checkout
from bench.database import SessionFx, make_sessions, open_db
from bench.writers import INSERT

STREAMS_PER_USER = 20
MARKER = b"fanout-bench:"

Counter = list[int]  # one cell, shared by the clients: markers seen so far
# Opens one subscriber (host, port, session, token), returns it once subscribed.
Opener = Callable[[str, int, SessionFx, str],
                  Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _sse(host: str, port: int, session: SessionFx, token: str
               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /api/sessions/{session.id}/events HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
                     .encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream refused: {head[:80]!r}")
        await reader.readuntil(b"\n\n")  # `retry:`: the stream is live
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _ws(host: str, port: int, session: SessionFx, token: str
              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request, key = wsframes.handshake_request(host, port, "/ws",
                                                  {"Authorization": f"Bearer {token}"})
        writer.write(request)
        wsframes.parse_handshake(await reader.readuntil(b"\r\n\r\n"), key)  # or raises
        writer.write(wsframes.encode_frame(wsframes.OP_TEXT, json.dumps(
            {"type": "subscribe", "topic": session.topic}).encode()))
        # Frames are not parsed: the subscription's answer and the events are found by
        # their bytes (a server's frames are not masked).
        buf = b""
        while b'"type":"subscribed"' not in buf:
            data = await reader.read(65536)
            if not data:
                raise RuntimeError("closed before subscribed")
            buf += data
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _count(reader: asyncio.StreamReader, seen: Counter) -> None:
    tail = b""
    while data := await reader.read(65536):
        # A marker split across reads is counted once: look at the seam too.
        window = tail + data
        seen[0] += window.count(MARKER) - tail.count(MARKER)
        tail = window[-len(MARKER):]


async def _open_all(opener: Opener, base: str, session: SessionFx, tokens: list[str],
                    n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`n` subscribers, `STREAMS_PER_USER` per token, at most 50 being opened at once."""
    host, port = base.removeprefix("http://").split(":")
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await opener(host, int(port), session, tokens[i // STREAMS_PER_USER])

    return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 300)


async def _idle_rss(base: str, pid: int, session: SessionFx, tokens: list[str],
                    streams: int) -> float:
    """KB of the server's RSS per idle SSE stream: `streams` opened after 10 warm ones, on
    a server that has held no other subscriber yet (it would reuse what those freed)."""
    warm = await _open_all(_sse, base, session, tokens[:1], 10)
    await asyncio.sleep(1.0)
    rss0 = procstat.tree_rss(pid)
    idle = await _open_all(_sse, base, session, tokens[1:], streams)
    await asyncio.sleep(2.0 + streams / 1000)  # presence traffic settles
    rss = procstat.tree_rss(pid)
    for _, writer in warm + idle:
        writer.close()
    return round((rss - rss0) / streams / 1024, 1)


async def _leg(opener: Opener, base: str, pid: int, dsn: str, session: SessionFx,
               tokens: list[str], streams: int, events: int) -> dict[str, Any]:
    seen: Counter = [0]

    async def wait_seen(n: int) -> None:
        deadline = time.monotonic() + 60
        while seen[0] < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{seen[0]} of {n} deliveries after 60 s")
            await asyncio.sleep(0.001)

    opened = await _open_all(opener, base, session, tokens, streams)
    async with asyncio.TaskGroup() as tg:
        clients = [tg.create_task(_count(reader, seen)) for reader, _ in opened]
        await asyncio.sleep(1.0 + streams / 2000)  # presence traffic settles
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            author = session.users[0]
            await conn.execute(INSERT, (session.id, author, MARKER.decode() + "warm-up"))
            await wait_seen(streams)
            seen[0] = 0
            idle0, t0 = procstat.tree_cpu(pid), time.monotonic()
            await asyncio.sleep(1.0)
            idle_rate = (procstat.tree_cpu(pid) - idle0) / (time.monotonic() - t0)
            cpu0, t0 = procstat.tree_cpu(pid), time.monotonic()
            for n in range(1, events + 1):
                await conn.execute(INSERT, (session.id, author, f"{MARKER.decode()}{n}"))
                await wait_seen(n * streams)
            wall = time.monotonic() - t0
            cpu = procstat.tree_cpu(pid) - cpu0 - idle_rate * wall
            received = seen[0]
        for task in clients:
            task.cancel()
    for _, writer in opened:
        writer.close()
    deliveries = events * streams
    return {"deliveries": deliveries, "received": received, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 4), "idle_cpu_per_s": round(idle_rate, 4),
            "cpu_per_delivery_us": round(cpu / deliveries * 1e6, 2)}


def measure(code: Path, dsn: str | None, streams: int, events: int, log: Path
            ) -> dict[str, Any]:
    with open_db(dsn) as db:
        migrate_checkout(code, db.dsn)
        users = -(-streams // STREAMS_PER_USER)
        # Users of their own for each leg: the server may still be closing one leg's
        # connections, which count towards their users' limit, when the next opens.
        session = make_sessions(db, 1, 1 + 3 * users)[0]
        tokens = session.tokens
        with serve_checkout(code, db.dsn, log) as served:
            idle_rss = asyncio.run(_idle_rss(served.base, served.pid, session,
                                             tokens[:1 + users], streams))
            ws = asyncio.run(_leg(_ws, served.base, served.pid, db.dsn, session,
                                  tokens[1 + users:1 + 2 * users], streams, events))
            sse = asyncio.run(_leg(_sse, served.base, served.pid, db.dsn, session,
                                   tokens[1 + 2 * users:], streams, events))
    return {"checkout": str(code), "streams": streams, "events": events, "ws": ws, "sse": sse,
            "sse_to_ws": round(sse["cpu_per_delivery_us"] / ws["cpu_per_delivery_us"], 2)
            if ws["cpu_per_delivery_us"] > 0 else None,
            "sse_idle_rss_kb": idle_rss}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sse_fanout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=Path, help="another checkout, measured first")
    p.add_argument("--new", type=Path, default=ROOT)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--events", type=int, default=50)
    p.add_argument("--dsn", help="a PostgreSQL server to create the databases on")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sse-fanout.json")
    args = p.parse_args(argv)
    if args.streams < 1 or args.events < 1:
        p.error("--streams and --events: at least 1")
    if not procstat.available():
        p.error("needs /proc to read the server's CPU time")
    measure_sides(args.old, args.new, args.out, "sse-fanout",
                  lambda code, log: measure(code, args.dsn, args.streams, args.events, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
