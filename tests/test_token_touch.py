"""Sanctum's last_used_at is written after the request, together, by TokenTouches
(api/token_touch.py): a request never waits for it, and every noted token is written."""

from __future__ import annotations

import logging
import time

import anyio
import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import ApiConfig, create_app
from api.token_touch import MAX_PENDING, TokenTouches
from tests import factories
from tests.servers import serve


def _age(db: str, token: str, seconds: int) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE personal_access_tokens SET last_used_at = (now() AT TIME ZONE"
                     " 'UTC') - make_interval(secs => %s) WHERE id = %s",
                     (seconds, factories.token_id(token)))


def test_a_request_does_not_wait_for_its_token_write(db: str) -> None:
    """The token's row is locked (a Laravel request writing it, say): the API still
    answers at once, and the write lands once the lock goes."""
    world = factories.world(db)
    token = factories.token(db, world.owner)
    url = f"/api/sessions/{world.session_id}/comments"
    with serve(create_app(ApiConfig(database_url=db))) as base, \
            psycopg.connect(db) as holder:
        holder.execute("SELECT 1 FROM personal_access_tokens WHERE id = %s FOR UPDATE",
                       (factories.token_id(token),))
        started = time.monotonic()
        # Before: the request's own UPDATE waited on the lock until this timeout.
        response = httpx.get(base + url, headers={"Authorization": f"Bearer {token}"},
                             timeout=5)
        assert response.status_code == 200
        answered = time.monotonic() - started
        time.sleep(1.5)  # the writer has tried by now, and waits on the lock
        assert factories.last_used(db, token) == [None]
        holder.rollback()
        deadline = time.monotonic() + 10
        while factories.last_used(db, token) == [None]:
            assert time.monotonic() < deadline, "last_used_at never written"
            time.sleep(0.05)
    assert answered < 5


@pytest.mark.anyio
async def test_noted_tokens_are_written_together_and_only_when_stale(db: str) -> None:
    world = factories.world(db)
    stale, never, fresh = (factories.token(db, world.owner) for _ in range(3))
    _age(db, stale, 120)
    _age(db, fresh, 10)
    before = factories.last_used(db, stale, never, fresh)
    async with AsyncConnectionPool(db, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        touches = TokenTouches(pool)
        for token in (stale, never, stale, fresh, never):
            touches.touch(factories.token_id(token))
        assert touches.pending == 3
        assert await touches.flush() == 2  # one statement; `fresh` was written 10 s ago
        assert touches.pending == 0
        assert await touches.flush() == 0
    after = factories.last_used(db, stale, never, fresh)
    assert before[0] is not None
    assert after[0] is not None
    assert after[0] > before[0]
    assert before[1] is None
    assert after[1] is not None
    assert after[2] == before[2]


@pytest.mark.anyio
async def test_what_is_noted_is_written_when_the_writer_stops(db: str) -> None:
    world = factories.world(db)
    token = factories.token(db, world.owner)
    async with AsyncConnectionPool(db, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        touches = TokenTouches(pool, interval=3600)  # its timer never fires here
        async with anyio.create_task_group() as tg:
            await tg.start(touches.run)
            touches.touch(factories.token_id(token))
            tg.cancel_scope.cancel()
    assert touches.written == 1
    assert factories.last_used(db, token)[0] is not None


@pytest.mark.anyio
async def test_a_write_without_a_connection_is_tried_again(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    """No connection in time: the tokens stay noted and the next writes try again, the
    warning said once for the whole outage; written once a connection is free."""
    world = factories.world(db)
    token = factories.token(db, world.owner)
    async with AsyncConnectionPool(db, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        touches = TokenTouches(pool, interval=0.05, timeout=0.2)
        with caplog.at_level(logging.INFO, logger="courtside.api"):
            async with anyio.create_task_group() as tg:
                await tg.start(touches.run)
                async with pool.connection() as held:  # the only connection: writes time out
                    touches.touch(factories.token_id(token))
                    await anyio.sleep(0.8)  # several tries
                    assert touches.pending == 1  # failed, kept
                    assert factories.last_used(db, token) == [None]
                    await held.execute("SELECT 1")
                # Written by the loop's next turn, not by the last write at stop.
                deadline = time.monotonic() + 10
                while touches.written == 0:
                    assert time.monotonic() < deadline, "the writer gave up after a failure"
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
    assert touches.written == 1
    assert factories.last_used(db, token)[0] is not None
    messages = [r.getMessage() for r in caplog.records]
    failed = [m for m in messages if "recording last_used_at of 1 tokens failed" in m]
    assert len(failed) == 1, messages
    assert any("recording last_used_at of 1 tokens succeeded again" in m for m in messages)


@pytest.mark.anyio
async def test_a_write_stopped_while_waiting_for_a_connection_is_made_by_the_last_one(
        db: str) -> None:
    world = factories.world(db)
    token = factories.token(db, world.owner)
    async with AsyncConnectionPool(db, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        touches = TokenTouches(pool, interval=0.05)
        async with anyio.create_task_group() as tg:
            await tg.start(touches.run)
            held = anyio.Event()

            async def hold() -> None:
                async with pool.connection():  # until the stop below
                    held.set()
                    await anyio.sleep_forever()

            tg.start_soon(hold)
            await held.wait()
            touches.touch(factories.token_id(token))
            await anyio.sleep(0.3)
            assert touches.pending == 0  # taken by a write that waits for the connection
            tg.cancel_scope.cancel()
    assert touches.written == 1
    assert factories.last_used(db, token)[0] is not None


@pytest.mark.anyio
async def test_noted_tokens_are_capped_and_the_cap_frees_once_written(db: str) -> None:
    world = factories.world(db)
    first, late = factories.token(db, world.owner), factories.token(db, world.owner)
    # Ids no token has, above every real one, fill the set up to the cap.
    filler = range(10**9, 10**9 + MAX_PENDING)
    async with AsyncConnectionPool(db, min_size=1, max_size=1, open=False,
                                   kwargs={"autocommit": True}) as pool:
        touches = TokenTouches(pool)
        touches.touch(factories.token_id(first))
        for token_id in filler:
            touches.touch(token_id)
        assert touches.pending == MAX_PENDING
        touches.touch(factories.token_id(late))  # beyond the cap: left for its next request
        assert touches.pending == MAX_PENDING
        assert await touches.flush() == 1  # all the noted ids in one statement
        assert factories.last_used(db, first, late)[1] is None
        touches.touch(factories.token_id(late))
        assert await touches.flush() == 1
    assert all(factories.last_used(db, first, late))
