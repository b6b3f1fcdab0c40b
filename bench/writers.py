"""Paced comment writers: plain SQL (as psql, a cron job or Laravel would) or courtside's REST.

Open loop: event i is due at start + i / rate whatever happened before, so a slow system is
not given a gentler load. Each writer stamps the wall clock immediately before the
statement that commits (an autocommit INSERT: the trigger flush and the COMMIT run inside
it) and puts the stamp in the comment content, where every receiver can read it.

SQL lanes connect and warm up first (`WARM_UP_COMMITS` to ``warm_target``), and the clock
starts once every lane is ready.
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
# A backend's first commits compile and plan the trigger functions and set up its NOTIFY
# (~13 ms, then ~2 ms each, against ~1 ms warm): a connection that commits measured events
# first commits this many to a session nobody subscribes to.
WARM_UP_COMMITS = 10
WARM_UP_CONTENT = "bench warm-up"


async def write(plan: dict[str, Any]) -> dict[str, Any]:
    """plan: mode ("sql" | "rest"), rate (events/s), count, start_n, lanes, targets
    ([session_id, user_id, token] — event i goes to targets[i % len]), dsn or base_url,
    give_up (seconds: events not yet sent by then are not sent; a saturated system
    must not hold the run), warm_target ([session_id, user_id], optional: where SQL lanes
    warm up)."""
    rate = float(plan["rate"])
    count = int(plan["count"])
    start_n = int(plan["start_n"])
    lanes = max(1, min(int(plan["lanes"]), count))
    targets: list[list[str]] = plan["targets"]
    stamps: list[tuple[int, int]] = []
    round_trips: list[int] = []  # stamp → the committing statement's reply, ns
    errors: list[str] = []
    skipped: list[int] = []
    warm_target: list[str] | None = plan.get("warm_target")
    started = t0 = give_up = 0.0  # set by start_together once every lane is ready
    ready = 0
    go = asyncio.Event()

    async def start_together() -> None:
        """The clock starts when the last lane is ready."""
        nonlocal ready, t0, give_up, started
        ready += 1
        if ready == lanes:
            started = time.monotonic()
            t0 = started + 0.05
            give_up = t0 + float(plan.get("give_up", 3600.0))
            go.set()
        await go.wait()

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
            if warm_target is not None:
                for _ in range(WARM_UP_COMMITS):
                    await conn.execute(INSERT, (*warm_target, WARM_UP_CONTENT))
            await start_together()
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
        await start_together()
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

    if plan["mode"] == "sql":
        async with asyncio.TaskGroup() as tg:  # a lane that fails ends the others
            for k in range(lanes):
                tg.create_task(sql_lane(k))
    elif plan["mode"] == "rest":
        limits = httpx.Limits(max_connections=lanes, max_keepalive_connections=lanes)
        async with httpx.AsyncClient(base_url=plan["base_url"], limits=limits,
                                     timeout=30.0) as client, asyncio.TaskGroup() as tg:
            for k in range(lanes):
                tg.create_task(rest_lane(k, client))
    else:
        raise ValueError(f"unknown writer mode {plan['mode']!r}")
    elapsed = time.monotonic() - started
    stamps.sort()
    return {"sent": len(stamps), "errors": len(errors), "error_samples": errors[:5],
            "not_sent": len(skipped),
            "elapsed": elapsed, "stamps": stamps, "round_trips": round_trips}
