"""Scenario `fanout`: one session with N subscribers; commit → last receipt, and the server's
CPU time per delivered message, beside the plain-socket floor measured at the same N.

The floor is measured once per N for its own rows, and again inside each system's leg at
that N (`fanout_own_floor`: every system in full mode, courtside in quick), with the
subscribers connected: the leg's events run in `fanout_blocks` blocks, a floor before the
first and after each. A 2-core machine shared with other work drifts by a third within
seconds (five floors in one minute: 8.4–12.6 µs per send), so each block is judged against
the mean of the two floors around it, and the leg's ratio is the median of its blocks'
(their range is kept beside it).

Closed loop: one comment is committed, every subscriber receives it, then the next one — so
each event's fan-out is measured alone; the floor's rounds are sent the same way
(bench/sockfloor.py). The server's idle CPU (timers, heartbeats), taken
over a quiet second before, is subtracted from its CPU during the events.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

from bench import sockfloor
from bench.database import SessionFx, make_sessions
from bench.dialects import SYSTEMS
from bench.harness import BenchError, Run, subscriber_specs
from bench.servers import Server
from bench.stats import latency_summary, percentile, ratio

_DISTINCT_USERS_SMALL = 100  # up to 1000 subscribers: 100 distinct users
_DISTINCT_USERS_LARGE = 10  # beyond: 10 (presence sends each user's arrival to everyone)


def run(r: Run) -> dict[str, Any]:
    p = r.profile
    session = make_sessions(r.db, 1, _DISTINCT_USERS_SMALL)[0]
    out: dict[str, Any] = {"workload": {"sizes": list(p.fanout_sizes),
                                        "events": p.fanout_events,
                                        "blocks": p.fanout_blocks},
                           "socket_floor": {}, "systems": {}}
    for size in p.fanout_sizes:
        with r.leg(out["socket_floor"], f"n={size}") as entry:
            r.need(5, f"fanout/socket-floor n={size}")
            entry.update(sockfloor.measure(size, p.socket_floor_rounds))
    for system in SYSTEMS:
        if not r.runnable(system):
            if system in r.systems:
                out["systems"][system] = {"skipped": r.unavailable[system]}
            continue
        with r.leg(out["systems"], system) as per_size:
            r.need(10, f"fanout/{system}")
            with r.server(system) as server:
                for size in p.fanout_sizes:
                    with r.leg(per_size, f"n={size}") as entry:
                        own_floor = system in p.fanout_own_floor
                        floors = p.fanout_blocks + 1 if own_floor else 0
                        r.need(4 + size / 500
                               + floors * (1 + p.socket_floor_rounds * 0.05 + size / 1500)
                               + p.fanout_events * (0.1 + size / 5000),
                               f"fanout/{system} n={size}")
                        _size(r, system, server, session, size, own_floor, entry)
    return out


def _floor_us(size: int, rounds: int) -> float:
    us: float = sockfloor.measure(size, rounds)["cpu_per_send_us"]
    return us


def _blocks(events: int, blocks: int) -> list[int]:
    """`events` split into `blocks` near-equal counts, none empty."""
    blocks = max(1, min(blocks, events))
    return [events // blocks + (1 if k < events % blocks else 0) for k in range(blocks)]


def _size(r: Run, system: str, server: Server, session: SessionFx, size: int,
          own_floor: bool, entry: dict[str, Any]) -> None:
    p = r.profile
    distinct = _DISTINCT_USERS_SMALL if size <= 1000 else _DISTINCT_USERS_LARGE
    specs = subscriber_specs(session, size, distinct)
    targets = [[session.id, session.users[0]]]
    try:
        connected = r.connect(system, server, specs, timeout=60.0 + size / 50, retries=3)
        if connected["failed"]:
            raise BenchError(f"{connected['failed']} of {size} connections failed: "
                             f"{connected['errors']}")
        entry["connect_s"] = connected["seconds"]
        entry["retried_handshakes"] = connected["retries"]
        time.sleep(0.5 + size / 5000)  # presence traffic settles
        # Warm-up event, then the server's idle CPU rate over a quiet second.
        r.reset()
        r.insert(targets, 1)
        r.wait_received(size, timeout=30, quiet=2.0)
        idle0, t0 = server.cpu(), time.monotonic()
        time.sleep(1.0)
        idle_rate = (server.cpu() - idle0) / (time.monotonic() - t0)
        r.reset()
        first = None
        floors: list[float] = []
        blocks: list[dict[str, Any]] = []
        cpu = 0.0
        received = 0
        with r.profiled(server, f"fanout-{system}-n{size}"):
            if own_floor:
                floors.append(_floor_us(size, p.socket_floor_rounds))
            for count in _blocks(p.fanout_events, p.fanout_blocks):
                cpu0, t0 = server.cpu(), time.monotonic()
                done = received
                for _ in range(count):
                    n, _ = r.insert(targets, 1)
                    first = n if first is None else first
                    done += size
                    got_now = r.wait_received(done, timeout=30, quiet=3.0)
                block_cpu = server.cpu() - cpu0 - idle_rate * (time.monotonic() - t0)
                block = {"events": count, "deliveries": got_now - received, "cpu_s": block_cpu,
                         "cpu_per_delivery_us": (block_cpu / (got_now - received) * 1e6
                                                 if got_now > received else None)}
                cpu += block_cpu
                received = got_now
                if own_floor:
                    floors.append(_floor_us(size, p.socket_floor_rounds))
                    block["socket_floor_us"] = (floors[-2] + floors[-1]) / 2
                    block["ratio"] = ratio(block["cpu_per_delivery_us"],
                                           block["socket_floor_us"])
                blocks.append(block)
        got = r.received()
    finally:
        r.close_all()
    assert first is not None
    events, latencies = got.for_range(first, first + p.fanout_events - 1)
    per_event: dict[int, list[int]] = defaultdict(list)
    for n, lat in zip(events, latencies, strict=True):
        per_event[n].append(lat)
    last = sorted(max(v) for v in per_event.values())
    first_receipt = sorted(min(v) for v in per_event.values())
    # End-to-end delivery rate of one event: subscribers reached per second of fan-out.
    rates = sorted(len(v) / (max(v) * 1e-9) for v in per_event.values() if max(v) > 0)
    expected = size * p.fanout_events
    entry.update({
        "subscribers": size, "events": p.fanout_events, "expected": expected,
        "received": len(latencies), "lost": expected - len(latencies),
        "commit_to_last_ms": {"p50": percentile(last, 50) * 1e-6,
                              "max": (last[-1] * 1e-6) if last else None},
        "commit_to_first_ms": {"p50": percentile(first_receipt, 50) * 1e-6},
        "all_receipts": latency_summary(latencies),
        "deliveries_per_s": percentile(rates, 50) if rates else None,
        "server_cpu_s": cpu, "server_idle_cpu_per_s": idle_rate,
        "server_cpu_per_delivery_us": cpu / len(latencies) * 1e6 if latencies else None,
        "blocks": blocks,
    })
    if own_floor:
        ratios = sorted(b["ratio"] for b in blocks if b.get("ratio") is not None)
        entry.update({
            "socket_floor_runs_us": floors,
            "socket_floor_cpu_per_send_us": sum(floors) / len(floors),
            "ratio_to_floor": statistics.median(ratios) if ratios else None,
            "ratio_to_floor_range": [ratios[0], ratios[-1]] if ratios else None,
        })
