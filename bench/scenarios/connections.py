"""Scenario `connections`: N idle WebSocket subscribers on one server process.

Resident memory per connection (the server's RSS after the connections, less its RSS with a
handful of warm connections, over N), the time to accept and subscribe them all, and the
spread of a broadcast to all of them (commit → receipt over every connection). Then every
client closes at once: for a system that keeps presence (courtside's /ws joins the
session's), how long until the session shows nobody, and how many rows are left after
`_PRESENCE_WAIT` seconds — users shown online for good.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench import profiling
from bench.database import SessionFx, make_sessions
from bench.dialects import SYSTEMS
from bench.harness import BenchError, Run, subscriber_specs
from bench.servers import Server
from bench.stats import latency_summary

_WARM = 10
_CLOSE_WINDOW = 2.0  # seconds: the close storm's CPU is counted over at least this
_DISTINCT_USERS = 10
_PRESENCE_WAIT = 30.0


def run(r: Run) -> dict[str, Any]:
    p = r.profile
    session = make_sessions(r.db, 1, _DISTINCT_USERS)[0]
    out: dict[str, Any] = {"workload": {"connections": p.connections,
                                        "broadcasts": p.connection_broadcasts},
                           "systems": {}}
    for system in SYSTEMS:
        if not r.runnable(system):
            if system in r.systems:
                out["systems"][system] = {"skipped": r.unavailable[system]}
            continue
        with r.leg(out["systems"], system) as entry:
            r.need(8 + p.connections / 300, f"connections/{system}")
            with r.server(system, traced=True) as server:
                _system(r, system, server, session, entry)
    return out


def _system(r: Run, system: str, server: Server, session: SessionFx,
            entry: dict[str, Any]) -> None:
    p = r.profile
    n = p.connections
    targets = [[session.id, session.users[0]]]
    try:
        warm = r.connect(system, server, subscriber_specs(session, _WARM, _DISTINCT_USERS),
                         timeout=30.0)
        if warm["failed"]:
            raise BenchError(f"warm-up connections failed: {warm['errors']}")
        r.reset()
        r.insert(targets, 1)
        r.wait_received(_WARM, timeout=20)
        time.sleep(0.5)
        snap0 = server.snapshot() if server.traced_dir else None
        rss0 = server.rss()
        cpu0 = server.cpu()
        with r.profiled(server, f"connections-accept-{system}-n{n}"):
            connected = r.connect(system, server,
                                  subscriber_specs(session, n, _DISTINCT_USERS),
                                  timeout=60.0 + n / 50, concurrency=50, retries=3)
        accept_cpu = server.cpu() - cpu0
        if connected["failed"]:
            raise BenchError(f"{connected['failed']} of {n} connections failed: "
                             f"{connected['errors']}")
        time.sleep(1.0 + n / 5000)  # presence traffic and allocator settle
        rss1 = server.rss()
        if snap0 is not None:
            r.profiles[f"memory-{system}-n{n}"] = profiling.memory_diff(
                snap0, server.snapshot(), per=n)
        total = n + _WARM
        broadcasts: list[dict[str, Any]] = []
        all_latencies: list[int] = []
        for _ in range(p.connection_broadcasts):
            r.reset()
            first, _stamps = r.insert(targets, 1)
            r.wait_received(total, timeout=30 + n / 500, quiet=3.0)
            got = r.received()
            _, latencies = got.for_range(first, first)
            all_latencies.extend(latencies)
            broadcasts.append({"received": len(latencies), "expected": total,
                               **latency_summary(latencies)})
        end = r.received(samples=False)
        still_open = end.open
        present = _presence_rows(r.db.dsn, session.topic)
    except BaseException:
        r.close_all()
        raise
    # Every client closes at once (a network blip, the clients' side redeployed): what the
    # server spends on the storm, until the session's presence is empty.
    cpu_close = server.cpu()
    closed_at = time.monotonic()
    with r.profiled(server, f"connections-close-{system}-n{n}"):
        r.close_all()
        rows_left, gone_s = _presence_after_close(r.db.dsn, session.topic, closed_at)
        # A system without presence rows is done at once by that measure: give every system
        # the same window at least.
        time.sleep(max(0.0, _CLOSE_WINDOW - (time.monotonic() - closed_at)))
    close_cpu = server.cpu() - cpu_close
    entry.update({
        "connections": n,
        "accept_all_s": connected["seconds"],
        "retried_handshakes": connected["retries"],
        "accepts_per_s": n / connected["seconds"] if connected["seconds"] > 0 else None,
        "server_cpu_per_accept_us": accept_cpu / n * 1e6,
        "server_cpu_per_close_us": close_cpu / total * 1e6,
        "rss_before_bytes": rss0, "rss_after_bytes": rss1,
        "rss_per_connection_kb": (rss1 - rss0) / n / 1024,
        "broadcasts": broadcasts,
        "broadcast": latency_summary(all_latencies),
        "lost": p.connection_broadcasts * total - len(all_latencies),
        "open_at_end": still_open,
        "close_codes": end.close_codes, "notices": end.notices,
        # None: a system that keeps no presence rows
        "presence_rows_open": present or None,
        "presence_rows_left": rows_left if present else None,
        "presence_gone_s": gone_s if present else None,
    })


def _presence_rows(dsn: str, topic: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM realtime.presence WHERE topic = %s",
                           (topic,)).fetchone()
    return int(row[0]) if row else 0


def _presence_after_close(dsn: str, topic: str, closed_at: float) -> tuple[int, float | None]:
    """Rows of `topic` left once they stop going (or after _PRESENCE_WAIT s), and how long
    after the close they were all gone (None if they were not)."""
    while True:
        rows = _presence_rows(dsn, topic)
        waited = time.monotonic() - closed_at
        if rows == 0:
            return 0, waited
        if waited > _PRESENCE_WAIT:
            return rows, None
        time.sleep(0.05)
