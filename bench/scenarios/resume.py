"""Scenario `resume`: clients reconnect at once, each N events behind; time until every one
has caught up, and the database's load meanwhile.

courtside only: none of the peers can resume (broadcaster and the floor have no log;
Socket.IO's Postgres adapter does not support connection state recovery), so a client of
theirs that was away has lost those events. Every client must get exactly the events it
missed — counted, per connection.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench.database import SessionFx, make_sessions
from bench.dialects import marker_content
from bench.harness import BenchError, Run, subscriber_specs
from bench.servers import Server
from bench.writers import INSERT

_DISTINCT_USERS = 10


def run(r: Run) -> dict[str, Any]:
    p = r.profile
    out: dict[str, Any] = {"workload": {"clients": p.resume_clients,
                                        "sessions": p.resume_sessions,
                                        "behind": p.resume_behind}, "systems": {}}
    for system in r.systems:
        if system == "pusher":
            out["systems"][system] = {"skipped": "Pusher's protocol has no resume (clients "
                                                 "reload by REST)"}
        elif system != "courtside":
            out["systems"][system] = {"skipped": "no resume: events missed while away are "
                                                 "lost"}
    if not r.runnable("courtside"):
        return out
    sessions = make_sessions(r.db, p.resume_sessions, _DISTINCT_USERS)
    per_session = max(1, p.resume_clients // p.resume_sessions)
    with r.leg(out["systems"], "courtside") as entry:
        r.need(15 + p.resume_clients / 100, "resume/courtside")
        with r.server("courtside") as server:
            _measure(r, server, sessions, per_session, entry)
    return out


def _measure(r: Run, server: Server, sessions: list[SessionFx], per_session: int,
             entry: dict[str, Any]) -> None:
    p = r.profile
    specs = [spec for s in sessions for spec in subscriber_specs(s, per_session,
                                                                 _DISTINCT_USERS)]
    try:
        connected = r.connect("courtside", server, specs, timeout=60.0)
        if connected["failed"]:
            raise BenchError(f"{connected['failed']} connections failed: "
                             f"{connected['errors']}")
        positions = r.received(samples=False).seqs
    finally:
        r.close_all()
    time.sleep(0.5)
    # While they are away, every session gets `behind` comments.
    first = r.next_events(p.resume_behind * len(sessions))
    n = first
    with psycopg.connect(r.db.dsn, autocommit=True) as conn:
        for _ in range(p.resume_behind):
            for s in sessions:
                conn.execute(INSERT, (s.id, s.users[0], marker_content(n, time.time_ns())))
                n += 1
    time.sleep(0.5)
    back = [{"topic": topic, "token": token, "since": seq} for topic, token, seq in positions]
    stats0, pg0, cpu0 = r.db.stats(), r.db.postgres_cpu(), server.cpu()
    try:
        r.reset(target=p.resume_behind)
        started = time.time_ns()
        reconnected = r.connect("courtside", server, back, timeout=60.0,
                                concurrency=len(back), retries=3)
        caught_up = r.wait_target(timeout=60.0)
        stats1, pg1, cpu1 = r.db.stats(), r.db.postgres_cpu(), server.cpu()
        got = r.received()
    finally:
        r.close_all()
    events, _ = got.for_range(first, n - 1)
    last = caught_up["last_reached_ns"]
    entry.update({
        "clients": len(back), "behind": p.resume_behind,
        "reconnected": reconnected["ok"], "reconnect_failed": reconnected["failed"],
        "reconnect_errors": reconnected["errors"],
        "retried_handshakes": reconnected["retries"],
        "close_codes": got.close_codes, "notices": got.notices,
        "subscribed_all_s": reconnected["seconds"],
        "caught_up": caught_up["reached"],
        "caught_up_all_s": (last - started) / 1e9 if last is not None else None,
        "min_events_per_client": caught_up["min_count"],
        "max_events_per_client": caught_up["max_count"],
        "events_replayed": len(events), "expected": len(back) * p.resume_behind,
        "server_cpu_s": cpu1 - cpu0,
        "db": {k: stats1[k] - stats0[k] for k in stats0},
    })
    if pg0 is not None and pg1 is not None:
        entry["db"]["postgres_cpu_s"] = pg1 - pg0
