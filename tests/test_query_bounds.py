"""Database work is bounded, and a bound that runs out cancels the statement in the server.

A lock held elsewhere (a Laravel migration, a long transaction in psql) used to hold REST
requests for as long as it lasted, each on a pooled connection, and their writes went
through once it was released, long after their clients had given up. Now the request
answers 503 after `query_timeout` and its statement is gone from the server: nothing is
written later, and the connection goes back to the pool (bridge/finish.py)."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from api.app import ApiConfig, create_app
from bridge.finish import query_connection
from tests import factories
from tests.servers import serve
from tests.test_pusher_support import broadcasting_auth, build_pusher_app
from tests.test_realtime_support import running, ws_url

# What psycopg and its pool say when a connection is given up mid-statement.
GIVEN_UP = ("query cancellation interrupted", "query not terminated", "discarding closed")


def scalar(db: str, query: str) -> Any:
    with psycopg.connect(db) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def waiting_on_locks(db: str) -> int:
    """Backends of this database waiting for a lock (statements the server still runs)."""
    return int(scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                          " current_database() AND wait_event_type = 'Lock'"))


def given_up(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if any(s in r.getMessage() for s in GIVEN_UP)]


def test_rest_requests_held_on_a_lock_answer_503_and_write_nothing(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    w = factories.world(db, participants=2, outsiders=0)
    headers = {"Authorization": f"Bearer {factories.token(db, w.owner)}"}
    # Fewer connections than requests: the later ones wait for a connection, then for the
    # lock, and are bounded all the same.
    config = ApiConfig(database_url=db, pool_max_size=2, query_timeout=1.0)
    with caplog.at_level(logging.INFO), serve(create_app(config)) as base:
        url = f"{base}/api/sessions/{w.session_id}/comments"

        def post(i: int) -> httpx.Response:
            return httpx.post(url, headers=headers, json={"content": f"c{i}"}, timeout=30)

        keyed = {**headers, "Idempotency-Key": "retried-after-503"}
        with psycopg.connect(db) as locker:
            locker.execute("LOCK TABLE sport_session_comments IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(6) as pool:
                posts = list(pool.map(post, range(4)))
                listed = httpx.get(url, headers=headers, timeout=30)
                # Its transaction claimed the key before it waited: rolled back with it.
                once = httpx.post(url, headers=keyed, json={"content": "once"}, timeout=30)
            for r in [*posts, listed, once]:
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
                assert r.headers["retry-after"] == "1"
            # Still locked: the server runs none of the refused statements any more.
            assert waiting_on_locks(db) == 0
        # Released: nothing the refused requests asked for is written now.
        time.sleep(0.2)
        assert scalar(db, "SELECT count(*) FROM sport_session_comments") == 0
        assert scalar(db, "SELECT count(*) FROM realtime.events") == 0
        r = post(99)
        assert r.status_code == 201, r.text
        # The client retries with its key: created now, and once.
        for _ in range(2):
            r = httpx.post(url, headers=keyed, json={"content": "once"}, timeout=30)
            assert r.status_code == 201, r.text
    assert scalar(db, "SELECT count(*) FROM sport_session_comments") == 2
    assert given_up(caplog) == []
    said = [r.getMessage() for r in caplog.records if "did not finish within 1 s" in
            r.getMessage()]
    assert len(said) == 6, said


@pytest.mark.anyio
async def test_query_connection_bounds_the_wait_and_the_work_apart(db: str) -> None:
    """A query that waited for its connection still has its whole bound to run, and one that
    runs past its bound leaves nothing running in the server and keeps its connection."""
    async with AsyncConnectionPool(db, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid

        async def hold_the_connection() -> None:
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_sleep(0.6)")

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_the_connection)
            await anyio.sleep(0.1)
            async with query_connection(pool, 1.0) as conn:  # waits ~0.5 s for it
                await conn.execute("SELECT pg_sleep(0.7)")
        with pytest.raises(TimeoutError):
            async with query_connection(pool, 0.3) as conn:
                await conn.execute("SELECT pg_sleep(30)")
        assert int(scalar(db, "SELECT count(*) FROM pg_stat_activity"
                              " WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")) == 0
        async with query_connection(pool, 1.0) as conn:
            assert conn.info.backend_pid == pid
            await conn.execute("SELECT 1")


@pytest.mark.anyio
async def test_realtime_http_requests_held_on_a_lock_are_bounded(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    """Tickets, WebSocket handshakes and /broadcasting/auth authenticate, issue and read
    within the realtime side's bound (10 s, api/auth.py): a locked tokens table costs their
    clients a refusal to retry, not a request that hangs."""
    w = factories.world(db, participants=1, outsiders=0)
    token = factories.token(db, w.owner)
    presence = f"presence-sport-session.{w.session_id}"
    answers: dict[str, httpx.Response] = {}
    handshakes: list[int] = []

    async def ticket(base: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            answers["ticket"] = await http.post(
                "/api/realtime/tickets", headers={"Authorization": f"Bearer {token}"})

    async def handshake(base: str) -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(base), open_timeout=30,
                               additional_headers={"Authorization": f"Bearer {token}"}):
                pass
        handshakes.append(refused.value.response.status_code)

    async def auth(base: str) -> None:
        answers["auth"] = await broadcasting_auth(base, token, "1.2", presence,
                                           client_timeout=30)

    with caplog.at_level(logging.INFO), running(build_pusher_app(db)) as base:
        with psycopg.connect(db) as locker:
            locker.execute("LOCK TABLE personal_access_tokens IN ACCESS EXCLUSIVE MODE")
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticket, base)
                tg.start_soon(auth, base)
                tg.start_soon(handshake, base)
            assert answers["ticket"].status_code == 503, answers["ticket"].text
            assert answers["ticket"].json()["error"]["code"] == "NOT_READY"
            assert answers["auth"].status_code == 503, answers["auth"].text
            assert answers["auth"].json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert handshakes == [403]  # closed before accept: 1013, try again later
            assert waiting_on_locks(db) == 0
        assert scalar(db, "SELECT count(*) FROM realtime.tickets") == 0
        await ticket(base)
        await auth(base)
        async with connect(ws_url(base), open_timeout=30,
                           additional_headers={"Authorization": f"Bearer {token}"}):
            pass
        assert answers["ticket"].status_code == 201, answers["ticket"].text
        assert answers["auth"].status_code == 200, answers["auth"].text
        assert str(uuid.UUID(scalar(db, "SELECT user_id::text FROM realtime.tickets"))) == \
            str(w.owner)
    assert given_up(caplog) == []
