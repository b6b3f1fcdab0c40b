"""Scenario `latency`: sessions × subscribers, comments at a steady rate, commit → receipt.

Every system gets the same subscribers and the same open-loop SQL writers; courtside is
also written to through its REST API, where commit → receipt uses the commit time
PostgreSQL recorded (track_commit_timestamp) and request → receipt is reported beside it.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from bench.database import SessionFx, commit_times, make_sessions
from bench.dialects import SYSTEMS
from bench.harness import BenchError, Run, subscriber_specs
from bench.servers import Server
from bench.stats import cdf_points, latency_summary, percentile

# REST comments are rate limited per user (api.config.ApiConfig.comments_per_minute, 10 by
# default): writers rotate over this many users per session, at most 5 comments each a leg.
_REST_PER_USER = 5


def run(r: Run) -> dict[str, Any]:
    p = r.profile
    most_per_session = max(p.latency_rates) * p.latency_duration / p.latency_sessions
    users = max(p.latency_subscribers, math.ceil(most_per_session / _REST_PER_USER) + 1)
    sessions = make_sessions(r.db, p.latency_sessions, users)
    # Event i goes to session i % S, as user (i // S) % users.
    targets = [[s.id, s.users[u], s.tokens[u]] for u in range(users) for s in sessions]
    out: dict[str, Any] = {
        "workload": {"sessions": p.latency_sessions, "subscribers_per_session":
                     p.latency_subscribers, "rates": list(p.latency_rates),
                     "duration_s": p.latency_duration},
        "systems": {},
    }
    for system in SYSTEMS:
        if not r.runnable(system):
            if system in r.systems:
                out["systems"][system] = {"skipped": r.unavailable[system]}
            continue
        with r.leg(out["systems"], system) as entry:
            legs = len(p.latency_rates) * (2 if system == "courtside" and p.latency_rest else 1)
            r.need(8 + legs * (p.latency_duration + 4), f"latency/{system}")
            with r.server(system) as server:
                _system(r, system, server, sessions, targets, r.warm_target(), entry)
    return out


def _system(r: Run, system: str, server: Server, sessions: list[SessionFx],
            targets: list[list[str]], warm_target: list[str], entry: dict[str, Any]) -> None:
    p = r.profile
    subs = p.latency_subscribers
    specs = [spec for s in sessions for spec in subscriber_specs(s, subs, subs)]
    try:
        connected = r.connect(system, server, specs, timeout=60.0)
        if connected["failed"]:
            raise BenchError(f"{connected['failed']} of {len(specs)} connections failed: "
                             f"{connected['errors']}")
        entry["connect_s"] = connected["seconds"]
        time.sleep(0.5)  # presence and join traffic settles
        # Warm-up: every code path runs once before anything is measured.
        _measure(r, server, targets, warm_target, rate=50, duration=len(sessions) * 2 / 50,
                 mode="sql", subs=subs, profile=False)
        for rate in p.latency_rates:
            modes = ["sql", "rest"] if system == "courtside" and p.latency_rest else ["sql"]
            for mode in modes:
                with r.leg(entry, f"{mode}@{rate}") as leg:
                    r.need(p.latency_duration + 4, f"latency/{system}/{mode}@{rate}")
                    leg.update(_measure(r, server, targets, warm_target, rate,
                                        p.latency_duration, mode, subs))
                if "error" in entry[f"{mode}@{rate}"]:
                    return  # the agents were restarted: these connections are gone
        got = r.received(samples=False)
        entry["clients_at_end"] = {"unexpected_closes": got.unexpected_closes,
                                   "close_codes": got.close_codes, "notices": got.notices}
    finally:
        r.close_all()


def _measure(r: Run, server: Server, targets: list[list[str]], warm_target: list[str],
             rate: float, duration: float, mode: str, subs: int,
             profile: bool = True) -> dict[str, Any]:
    count = max(1, round(rate * duration))
    first = r.next_events(count)
    lanes = max(2, math.ceil(rate / 100))
    r.reset()
    with r.profiled(server, f"latency-{server.system}-{mode}@{rate:g}") if profile \
            else contextlib.nullcontext():
        cpu0 = server.cpu()
        pg0 = r.db.postgres_cpu()
        written = r.write({"mode": mode, "rate": rate, "count": count, "start_n": first,
                           "lanes": lanes, "targets": targets, "warm_target": warm_target,
                           "dsn": r.db.dsn,
                           "base_url": server.base_url, "give_up": duration * 2 + 5},
                      timeout=duration * 2 + 90)
        expected = written["sent"] * subs
        r.wait_received(expected, timeout=duration * 3 + 10)
        cpu1 = server.cpu()
        pg1 = r.db.postgres_cpu()
    got = r.received()
    events, raw = got.for_range(first, first + count - 1)
    latencies = raw
    stamps = dict(written["stamps"])
    result: dict[str, Any] = {
        "rate": rate, "offered": count, "written": written["sent"],
        "write_errors": written["errors"], "write_error_samples": written["error_samples"],
        "not_sent": written["not_sent"],
        "achieved_rate": written["sent"] / written["elapsed"] if written["elapsed"] else None,
        "expected": expected, "received": len(latencies),
        # Not received by the end of the wait (3 × the leg + 10 s, or 2 s without progress):
        # lost, or still queued in a saturated server.
        "lost": expected - len(latencies),
        # How long the writer waited for its INSERT (or POST) to return: the part of every
        # system's latency spent in PostgreSQL (or the REST handler) before the NOTIFY.
        "write_round_trip": latency_summary(written["round_trips"]),
    }
    if mode == "rest":
        # The writer's stamp precedes the HTTP request; PostgreSQL knows the commit time.
        result["request_to_receipt"] = latency_summary(latencies)
        commits = commit_times(r.db, first, first + count - 1)
        if commits:
            latencies = [stamps[n] + lat - commits[n] for n, lat in zip(events, latencies,
                                                                         strict=True)
                         if n in commits and n in stamps]
            result["latency_from"] = "commit (track_commit_timestamp)"
        else:
            result["latency_from"] = "request (no commit timestamps on this server)"
    else:
        result["latency_from"] = "stamp before the committing INSERT"
    result.update(latency_summary(latencies))
    result["cdf"] = cdf_points(latencies)
    if stamps:
        # p99 of each second of the leg (by commit stamp): a stall shows where it happened.
        t0 = min(stamps.values())
        buckets: dict[int, list[int]] = {}
        for n, lat in zip(events, raw, strict=True):
            if n in stamps:
                buckets.setdefault((stamps[n] - t0) // 1_000_000_000, []).append(lat)
        result["p99_ms_by_second"] = [round(percentile(sorted(buckets[k]), 99) * 1e-6, 2)
                                      for k in sorted(buckets)]
    receipts = [stamps[n] + lat for n, lat in zip(events, raw, strict=True) if n in stamps]
    if receipts:
        window = (max(receipts) - min(stamps.values())) / 1e9
        result["deliveries_per_s"] = len(receipts) / window if window > 0 else None
    cpu = cpu1 - cpu0
    result["server_cpu_s"] = cpu
    result["server_cpu_per_delivery_us"] = cpu / len(latencies) * 1e6 if latencies else None
    if pg0 is not None and pg1 is not None:
        result["postgres_cpu_s"] = pg1 - pg0
    return result
