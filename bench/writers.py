"""Paced comment writers: plain SQL (as psql, a cron job or Laravel would) or courtside's REST.

Open loop: event i is due at start + i / rate whatever happened before, so a slow system is
not given a gentler load. Each writer stamps the wall clock immediately before the
statement that commits (an autocommit INSERT: the trigger flush and the COMMIT run inside
it) and puts the stamp in the comment content, where every receiver can read it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from bench.dialects import marker_content

INSERT = ("INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
          " VALUES (%s, %s, %s)")


async def write(plan: dict[str, Any]) -> dict[str, Any]:
    """plan: mode ("sql" | "rest"), rate (events/s), count, start_n, lanes, targets
    ([session_id, user_id, token] — event i goes to targets[i % len]), dsn or base_url,
    give_up (seconds: events not yet sent by then are not sent; a saturated system
    must not hold the run)."""
    rate = float(plan["rate"])
    count = int(plan["count"])
    start_n = int(plan["start_n"])
    lanes = max(1, min(int(plan["lanes"]), count))
    targets: list[list[str]] = plan["targets"]
    stamps: list[tuple[int, int]] = []
    round_trips: list[int] = []  # stamp → the committing statement's reply, ns
    errors: list[str] = []
    t0 = time.monotonic() + 0.05
    give_up = t0 + float(plan.get("give_up", 3600.0))
    skipped: list[int] = []

    async def pace(i: int) -> bool:
        now = time.monotonic()
        if now > give_up:
            skipped.append(i)
            return False
        delay = t0 + i / rate - now
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    async def sql_lane(lane: int) -> None:
        async with await psycopg.AsyncConnection.connect(plan["dsn"], autocommit=True) as conn:
            for i in range(lane, count, lanes):
                if not await pace(i):
                    continue
                session_id, user_id, _ = targets[i % len(targets)]
                n = start_n + i
                stamp = time.time_ns()
                try:
                    await conn.execute(INSERT, (session_id, user_id, marker_content(n, stamp)))
                except psycopg.Error as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                round_trips.append(time.time_ns() - stamp)
                stamps.append((n, stamp))

    async def rest_lane(lane: int, client: httpx.AsyncClient) -> None:
        for i in range(lane, count, lanes):
            if not await pace(i):
                continue
            session_id, _, token = targets[i % len(targets)]
            n = start_n + i
            stamp = time.time_ns()
            try:
                response = await client.post(
                    f"/api/sessions/{session_id}/comments",
                    json={"content": marker_content(n, stamp)},
                    headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if response.status_code != 201:
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                continue
            round_trips.append(time.time_ns() - stamp)
            stamps.append((n, stamp))

    started = time.monotonic()
    if plan["mode"] == "sql":
        await asyncio.gather(*(sql_lane(k) for k in range(lanes)))
    elif plan["mode"] == "rest":
        limits = httpx.Limits(max_connections=lanes, max_keepalive_connections=lanes)
        async with httpx.AsyncClient(base_url=plan["base_url"], limits=limits,
                                     timeout=30.0) as client:
            await asyncio.gather(*(rest_lane(k, client) for k in range(lanes)))
    else:
        raise ValueError(f"unknown writer mode {plan['mode']!r}")
    elapsed = time.monotonic() - started
    stamps.sort()
    return {"sent": len(stamps), "errors": len(errors), "error_samples": errors[:5],
            "not_sent": len(skipped),
            "elapsed": elapsed, "stamps": stamps, "round_trips": round_trips}
