"""Many browser SSE streams ending at once, on one checkout or two.

    python -m bench.stream_ends [--old /path/to/checkout] [--streams 2000] [--case stop]
                                [--dsn ...] [--out F]

Each checkout in turn runs `courtside serve` (one worker) on a fresh database, opens
`--streams` SSE streams with tickets (20 per user, the per-process connection limit; each
stream holds its ticket, api/tickets.py), then ends them all: `drop` closes every client
socket at once (a network outage), `stop` sends the server SIGTERM (a deploy). It reports
how long until every ticket was released (or how long the stop took), how many tickets were
left held, how many commits the database made meanwhile, and the server's warnings by
logger. The clients are raw sockets that never read after the stream's first frame.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.checkouts import ROOT, Served, measure_sides, migrate_checkout, serve_checkout
from bench.database import SessionFx, make_sessions, open_db

STREAMS_PER_USER = 20
TIMEOUT = 120.0


def _one(dsn: str, query: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _held(dsn: str) -> int:
    return _one(dsn, "SELECT count(*) FROM realtime.tickets WHERE held_by IS NOT NULL")


def _commits(dsn: str) -> int:
    return _one(dsn, "SELECT xact_commit FROM pg_stat_database"
                     " WHERE datname = current_database()")


async def _open(base: str, session: SessionFx, n: int
                ) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = base.removeprefix("http://").split(":")
    gate = asyncio.Semaphore(50)

    async def one(i: int, http: httpx.AsyncClient
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        token = session.tokens[i // STREAMS_PER_USER]
        async with gate:
            r = await http.post("/api/realtime/tickets",
                                headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
            ticket = r.json()["data"]["ticket"]
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /api/sessions/{session.id}/events?ticket={ticket} HTTP/1.1\r\n"
                         f"Host: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"stream {i} refused: {head[:80]!r}")
            await reader.readuntil(b"\n\n")  # `retry:`: the stream is live
            return reader, writer

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        return await asyncio.gather(*(one(i, http) for i in range(n)))


async def _end(case: str, dsn: str, served: Served,
               streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
               ) -> dict[str, Any]:
    commits = _commits(dsn)
    start = time.monotonic()
    if case == "drop":
        for _, writer in streams:
            writer.transport.abort()
        for _ in range(int(TIMEOUT / 0.05)):
            if not _held(dsn):
                break
            await asyncio.sleep(0.05)
        result = {"released_s": round(time.monotonic() - start, 2)}
    else:
        served.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(served.proc.wait, TIMEOUT)
        result = {"stopped_s": round(time.monotonic() - start, 2)}
        for _, writer in streams:
            writer.transport.abort()
    return {**result, "left_held": _held(dsn), "commits": _commits(dsn) - commits}


async def _open_and_end(case: str, dsn: str, served: Served, session: SessionFx, n: int
                        ) -> dict[str, Any]:
    start = time.monotonic()
    streams = await _open(served.base, session, n)
    return {"open_s": round(time.monotonic() - start, 1),
            **await _end(case, dsn, served, streams)}


def measure(code: Path, dsn: str | None, streams: int, case: str, log: Path) -> dict[str, Any]:
    with open_db(dsn) as db:
        migrate_checkout(code, db.dsn)
        session = make_sessions(db, 1, -(-streams // STREAMS_PER_USER))[0]
        with serve_checkout(code, db.dsn, log) as served:
            ended = asyncio.run(_open_and_end(case, db.dsn, served, session, streams))
        return {"checkout": str(code), "streams": streams, "case": case, **ended,
                "warnings": _warnings(log)}


def _warnings(log: Path) -> dict[str, int]:
    """The server's warnings, by logger (`courtside.loop`: the event loop stalled)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        _, sep, rest = line.partition(" WARNING ")
        if sep:
            counts[rest.split(" ", 1)[0]] += 1
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stream_ends", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=Path, help="another checkout, measured first")
    p.add_argument("--new", type=Path, default=ROOT)
    p.add_argument("--streams", type=int, default=2000)
    p.add_argument("--case", choices=("drop", "stop"), default="stop")
    p.add_argument("--dsn", help="a PostgreSQL server to create the databases on")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream-ends.json")
    args = p.parse_args(argv)
    if args.streams < 1:
        p.error("--streams: at least 1")
    measure_sides(args.old, args.new, args.out, f"stream-ends-{args.case}",
                  lambda code, log: measure(code, args.dsn, args.streams, args.case, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
