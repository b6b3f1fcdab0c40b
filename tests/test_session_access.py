"""Session access checks shared by concurrent subscriptions (api/session_access.py), on a real
database: every check gets its own verdict, concurrent checks share queries, and no answer
comes from a query that started before the check was asked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api import realtime_auth
from api.realtime_auth import AccessDenied, Principal
from api.realtime_protocol import ErrorCode, Topic
from api.session_access import Key, Row, SessionAccess, session_access
from tests import factories

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool(db: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(db, min_size=1, max_size=4, open=False,
                                   kwargs={"autocommit": True}) as p:
        yield p


class Counted:
    """The real query, counted; while the test holds `gate`, its answer is held back after
    the query has read the database."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self.calls: list[list[Key]] = []
        self.gate: anyio.Event | None = None
        self.read = anyio.Event()

    async def __call__(self, keys: list[Key]) -> dict[Key, Row]:
        self.calls.append(keys)
        rows = await realtime_auth.session_access_rows(self.pool, keys)
        self.read.set()
        if self.gate is not None:
            await self.gate.wait()
        return rows


async def verdict(access: SessionAccess, user_id: uuid.UUID, session_id: uuid.UUID
                  ) -> ErrorCode | None:
    try:
        await realtime_auth.check_session(access, user_id, session_id)
    except AccessDenied as denied:
        return denied.code
    return None


class Asks:
    """Named checks of one session, run as tasks; their verdicts collected as they come."""

    def __init__(self, access: SessionAccess, session_id: uuid.UUID) -> None:
        self.access = access
        self.session_id = session_id
        self.results: dict[str, ErrorCode | None] = {}

    async def __call__(self, name: str, user: uuid.UUID) -> None:
        self.results[name] = await verdict(self.access, user, self.session_id)


async def test_concurrent_checks_each_get_their_verdict_from_two_queries(
        db: str, pool: AsyncConnectionPool[Any]) -> None:
    private = factories.world(db, participants=3, outsiders=2)
    public = factories.world(db, participants=2, outsiders=1, visibility="public")
    gone = factories.world(db, participants=2, outsiders=1)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE sport_sessions SET deleted_at = now() WHERE id = %s",
                     (gone.session_id,))
    missing = uuid.uuid4()
    expected: list[tuple[uuid.UUID, uuid.UUID, ErrorCode | None]] = []
    for user in private.participants:
        expected.append((user, private.session_id, None))
    for user in private.outsiders:
        expected.append((user, private.session_id, ErrorCode.NOT_PARTICIPANT))
    for user in public.participants + public.outsiders + private.outsiders:
        expected.append((user, public.session_id, None))
    for user in gone.participants:
        expected.append((user, gone.session_id, ErrorCode.SESSION_NOT_FOUND))
    expected.append((private.owner, missing, ErrorCode.SESSION_NOT_FOUND))
    asks = expected * 20  # the same pair asked many times at once, as in a reconnect storm

    fetch = Counted(pool)
    access = session_access(fetch)
    got: list[ErrorCode | None] = [None] * len(asks)

    async def ask(i: int, user: uuid.UUID, session: uuid.UUID) -> None:
        got[i] = await verdict(access, user, session)

    async with anyio.create_task_group() as tg:
        for i, (user, session, _) in enumerate(asks):
            tg.start_soon(ask, i, user, session)
    assert got == [want for _, _, want in asks]
    # The first check's query runs alone; every check asked while it ran shares the next.
    assert len(fetch.calls) == 2, [len(c) for c in fetch.calls]
    assert len(fetch.calls[1]) == len(set(expected))  # each pair once


async def test_a_check_asked_while_a_query_runs_sees_what_committed_before_it(
        db: str, pool: AsyncConnectionPool[Any]) -> None:
    """A participant is removed after one check's query has read the session, while its
    answer is still on the way: a check asked then must not share that answer."""
    w = factories.world(db, participants=3, outsiders=0)
    removed = w.participants[1]
    fetch = Counted(pool)
    fetch.gate = anyio.Event()
    ask = Asks(session_access(fetch), w.session_id)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "before", removed)
            await fetch.read.wait()  # its query has read the session; the answer is held
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("DELETE FROM sport_session_participants"
                             " WHERE sport_session_id = %s AND user_id = %s",
                             (w.session_id, removed))
            tg.start_soon(ask, "after", removed)
            await anyio.wait_all_tasks_blocked()
            fetch.gate.set()
    assert ask.results == {"before": None, "after": ErrorCode.NOT_PARTICIPANT}
    assert len(fetch.calls) == 2


async def test_waiters_of_a_cancelled_query_get_their_answer_from_the_next(
        db: str, pool: AsyncConnectionPool[Any]) -> None:
    """Three checks wait for a running query; the first of them leads the next query and is
    cancelled before its answer comes: the other two get theirs from a third query."""
    w = factories.world(db, participants=2, outsiders=1)
    fetch = Counted(pool)
    first_gate = fetch.gate = anyio.Event()
    ask = Asks(session_access(fetch), w.session_id)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "first", w.owner)
            async with anyio.create_task_group() as cancelled:
                await fetch.read.wait()  # the first query has read; its answer is held
                cancelled.start_soon(ask, "leader", w.owner)  # wakes first: leads the next
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(ask, "member", w.participants[1])
                tg.start_soon(ask, "outsider", w.outsiders[0])
                await anyio.wait_all_tasks_blocked()
                fetch.read = anyio.Event()
                fetch.gate = anyio.Event()  # the second query's answer is held too
                first_gate.set()
                await fetch.read.wait()
                fetch.gate = None  # the third runs freely
                cancelled.cancel_scope.cancel()
    assert ask.results == {"first": None, "member": None,
                           "outsider": ErrorCode.NOT_PARTICIPANT}
    assert len(fetch.calls) == 3, fetch.calls
    # The cancelled query's keys moved to the third at once (the leader's own among them).
    assert set(fetch.calls[2]) == {(w.session_id, w.owner), (w.session_id, w.participants[1]),
                                   (w.session_id, w.outsiders[0])}


async def test_a_failed_query_fails_every_check_that_shared_it(
        db: str, pool: AsyncConnectionPool[Any]) -> None:
    w = factories.world(db, participants=2, outsiders=0)
    calls = 0

    async def broken(keys: list[Key]) -> dict[Key, Row]:
        nonlocal calls
        calls += 1
        async with pool.connection() as conn:
            await anyio.sleep(0.05)  # long enough for the others to ask meanwhile
            await conn.execute("SELECT * FROM no_such_table_here")
        raise AssertionError("unreachable")

    access = session_access(broken)
    errors: list[BaseException] = []

    async def ask(user: uuid.UUID) -> None:
        try:
            await realtime_auth.check_session(access, user, w.session_id)
        except psycopg.Error as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for user in w.participants * 3:
            tg.start_soon(ask, user)
    assert len(errors) == 6
    assert calls == 2
    # Each waiter has an exception of its own, chained to the query's.
    assert len({id(e) for e in errors}) == 6
    assert all(isinstance(e.__cause__ or e, psycopg.errors.UndefinedTable) for e in errors)


async def test_check_topic_reads_user_topics_without_a_query(
        db: str, pool: AsyncConnectionPool[Any]) -> None:
    w = factories.world(db, participants=2, outsiders=0)
    fetch = Counted(pool)
    access = session_access(fetch)
    me = Principal(w.owner, 1, None)
    await realtime_auth.check_topic(access, me, Topic("user", w.owner))
    with pytest.raises(AccessDenied) as denied:
        await realtime_auth.check_topic(access, me, Topic("user", w.participants[1]))
    assert denied.value.code == ErrorCode.FORBIDDEN
    await realtime_auth.check_topic(access, me, Topic("session", w.session_id))
    assert len(fetch.calls) == 1
