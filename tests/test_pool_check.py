"""bridge/poolcheck.py against a real server: which checkouts cost a round trip, and that a
connection whose backend died in the pool is never handed to a caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from bridge.poolcheck import RecentCheck

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def pool_of_one(dsn: str, check: RecentCheck) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=1, open=False, check=check,
        kwargs={"autocommit": True, "prepare_threshold": None})
    await pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


async def last_query(dsn: str, pid: int) -> str:
    """What the server says this backend last ran (the empty string for the pool's check)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
        cur = await other.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def test_a_recently_checked_connection_is_handed_out_without_a_round_trip(
        db: str) -> None:
    check = RecentCheck(rested=30.0)
    async with pool_of_one(db, check) as pool:
        async with pool.connection() as conn:
            pid = conn.pgconn.backend_pid
            await conn.execute("SELECT 'marker-1'")
        assert check.round_trips == 1  # never checked before
        assert await last_query(db, pid) == "SELECT 'marker-1'"
        for _ in range(5):
            async with pool.connection() as conn:
                assert conn.pgconn.backend_pid == pid
        assert check.round_trips == 1
        # The server saw nothing from those checkouts.
        assert await last_query(db, pid) == "SELECT 'marker-1'"


async def test_a_rested_connection_is_checked_with_a_round_trip(db: str) -> None:
    check = RecentCheck(rested=0.2)
    async with pool_of_one(db, check) as pool:
        async with pool.connection() as conn:
            pid = conn.pgconn.backend_pid
            await conn.execute("SELECT 'marker-2'")
        await anyio.sleep(0.4)
        async with pool.connection() as conn:
            assert conn.pgconn.backend_pid == pid
        assert check.round_trips == 2
        assert await last_query(db, pid) == ""  # the pool's empty check query


async def test_a_connection_terminated_in_the_pool_is_replaced_within_the_rest_window(
        db: str) -> None:
    check = RecentCheck(rested=60.0)
    async with pool_of_one(db, check) as pool:
        async with pool.connection() as conn:
            pid = conn.pgconn.backend_pid
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as other:
            await other.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        # Checked a moment ago, so only the socket tells: the backend's FATAL and EOF.
        async with pool.connection(timeout=10) as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            row = await cur.fetchone()
        assert row is not None
        assert row[0] != pid
        assert check.round_trips >= 2
