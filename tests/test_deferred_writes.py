"""DeferredWrites (api/deferred_writes.py) against a real database: what a write could not
do for want of the database is written by a later one, exactly once; what fails otherwise
is dropped, and the writer goes on."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api.deferred_writes import DeferredWrites

pytestmark = pytest.mark.anyio

BUMP = "UPDATE deferred_t SET v = v + 1 WHERE k = ANY(%(keys)s)"


def _params(noted: dict[int, None]) -> dict[str, Any]:
    return {"keys": list(noted)}


def _values(db: str) -> dict[int, int]:
    with psycopg.connect(db, autocommit=True) as conn:
        return dict(conn.execute("SELECT k, v FROM deferred_t ORDER BY k").fetchall())


@pytest.fixture
def table(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE deferred_t (k int PRIMARY KEY, v int NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO deferred_t (k) SELECT generate_series(1, 3)")
    return db


async def test_a_write_a_lock_timed_out_is_made_by_the_next_exactly_once(
        table: str, caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncConnectionPool(table, min_size=1, max_size=2, open=False, kwargs={
            "autocommit": True, "options": "-c lock_timeout=100"}) as pool:
        writes = DeferredWrites(pool, BUMP, _params, "bumps of %d rows")
        writes.note(1, None)
        writes.note(2, None)
        with caplog.at_level(logging.INFO, logger="courtside.api"):
            async with await psycopg.AsyncConnection.connect(table) as locker:
                await locker.execute("SELECT * FROM deferred_t WHERE k = 2 FOR UPDATE")
                assert await writes.flush() == 0  # LockNotAvailable: kept
                assert writes.pending == 2
                writes.note(3, None)  # noted meanwhile: goes with the retry
                assert await writes.flush() == 0
                assert writes.pending == 3
                await locker.rollback()
            assert await writes.flush() == 3
        assert writes.pending == 0
        assert await writes.flush() == 0  # nothing left: nothing written twice
    assert _values(table) == {1: 1, 2: 1, 3: 1}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("bumps of" in m and "failed, to be tried again" in m for m in messages) == 1
    assert any("bumps of 3 rows succeeded again" in m for m in messages)


async def test_a_write_that_fails_otherwise_is_dropped(
        table: str, caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncConnectionPool(table, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        broken = DeferredWrites(pool, "UPDATE deferred_t SET nope = 1 WHERE k = ANY(%(keys)s)",
                                _params, "broken bumps of %d rows")
        broken.note(1, None)
        with caplog.at_level(logging.WARNING, logger="courtside.api"):
            assert await broken.flush() == 0  # UndefinedColumn: trying again would not mend it
        assert broken.pending == 0
        assert await broken.flush() == 0
    assert _values(table) == {1: 0, 2: 0, 3: 0}
    [failed] = [r.getMessage() for r in caplog.records if "broken bumps" in r.getMessage()]
    assert failed.startswith("recording broken bumps of 1 rows failed: UndefinedColumn(")
    assert "to be tried again" not in failed


async def test_past_max_pending_the_newest_are_kept_and_the_drops_are_told(
        table: str, caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncConnectionPool(table, min_size=1, max_size=2, open=False, kwargs={
            "autocommit": True, "options": "-c lock_timeout=3000"}) as pool:
        writes = DeferredWrites(pool, BUMP, _params, "bumps of %d rows", max_pending=2)
        writes.note(1, None)
        writes.note(2, None)
        with caplog.at_level(logging.INFO, logger="courtside.api"):
            async with await psycopg.AsyncConnection.connect(table) as locker:
                await locker.execute("SELECT * FROM deferred_t WHERE k = 2 FOR UPDATE")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(writes.flush)
                    for _ in range(2000):  # until the flush has taken 1 and 2 (it then waits)
                        if not writes.pending:
                            break
                        await anyio.sleep(0.001)
                    assert writes.pending == 0
                    writes.note(3, None)  # long before the lock times out
                # LockNotAvailable: of 1 and 2 only one fits beside 3, noted meanwhile.
                assert writes.pending == 2
                writes.note(2, None)  # full: dropped
                assert writes.pending == 2
                await locker.rollback()
            assert await writes.flush() == 2
            assert await writes.flush() == 0
    assert _values(table) == {1: 1, 2: 0, 3: 1}
    messages = [r.getMessage() for r in caplog.records]
    assert "dropping bumps of 2 rows: more than 2 pending" in messages
    assert "dropped bumps of 2 rows in all, for want of room" in messages
    assert sum("bumps of" in m and "dropp" in m for m in messages) == 2
