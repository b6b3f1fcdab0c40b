"""The bridge against a real PostgreSQL: live delivery, backlog handover, gaps, stubs, resets,
ephemeral events, control notifications, presence."""

from __future__ import annotations

import uuid
from dataclasses import replace

import anyio
import psycopg
import pytest

from bridge import BridgeClosed, Control, CutOff, Event, Reset
from tests import factories
from tests.bridge_helpers import (
    FAST,
    Writer,
    assert_exactly_once,
    collect,
    last_seq,
    running,
    settle,
    topics_of,
    wait_for,
    writing,
)

pytestmark = pytest.mark.anyio


def sql(dsn: str, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params or None)
        return cur.fetchall() if cur.description else []


async def test_live_events_arrive_in_order_with_the_logs_bytes(db: str) -> None:
    [(topic, sid, uid)] = topics_of(db, 1)
    async with running(db) as bridge, anyio.create_task_group() as tg:
        c = await collect(tg, bridge, topic)
        assert c.start_seq == 0
        with psycopg.connect(db, autocommit=True) as conn:
            for i in range(5):
                conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id,"
                             " content) VALUES (%s, %s, %s)", (sid, uid, f"hello {i} é"))
        await wait_for(lambda: len(c.seqs) == 5, 5, "5 events")
        assert assert_exactly_once(c, db) == 5
        first = c.durable[0]
        assert first.type == "comment.created"
        assert first.origin is None
        assert first.payload["comment"]["content"] == "hello 0 é"
        tg.cancel_scope.cancel()


async def test_one_event_object_is_shared_by_every_subscriber(db: str) -> None:
    [(topic, sid, uid)] = topics_of(db, 1)
    async with running(db) as bridge, anyio.create_task_group() as tg:
        cs = [await collect(tg, bridge, topic) for _ in range(3)]
        sql(db, "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                " VALUES (%s, %s, 'x')", sid, uid)
        await wait_for(lambda: all(len(c.seqs) == 1 for c in cs), 5, "one event each")
        events = [c.durable[0] for c in cs]
        assert events[0] is events[1] is events[2]
        calls: list[int] = []

        def frame(ev: Event) -> bytes:
            calls.append(1)
            return ev.data

        for e in events:
            assert e.encoded("ws", frame) == e.data
        assert len(calls) == 1
        tg.cancel_scope.cancel()


async def test_backlog_then_live_has_no_gap_and_no_duplicate_under_concurrent_writes(
        db: str) -> None:
    sessions = topics_of(db, 1)
    topic = sessions[0][0]
    async with running(db) as bridge, anyio.create_task_group() as tg:
        async with writing(Writer(db, sessions, interval=0.002)) as writer:
            await wait_for(lambda: writer.committed >= 30, 10, "a backlog")
            # Subscribers from several points while the writer keeps going: each read of the
            # log races with live notifications for the same seqs.
            cs = []
            for since in (0, 5, 17):
                cs.append(await collect(tg, bridge, topic, since=since))
                await anyio.sleep(0.05)
            mark = writer.committed
            await wait_for(lambda: writer.committed >= mark + 30, 10, "more live writes")
        await settle(cs, db)
        for c in cs:
            assert assert_exactly_once(c, db) >= 60 - (c.since or 0)
        tg.cancel_scope.cancel()
    final = last_seq(db, topic)
    async with anyio.create_task_group() as tg, running(db) as bridge:
        # A fresh bridge, nothing live: all from the log; then the bridge stops under it.
        late = await collect(tg, bridge, topic, since=final - 10)
        await settle([late], db)
        assert assert_exactly_once(late, db) == 10
    assert late.items[-1] == CutOff("shutdown", final, topic)
    assert late.done


async def test_live_gap_is_repaired_from_the_log(db: str) -> None:
    [(topic, _sid, _uid)] = topics_of(db, 1)
    async with running(db) as bridge, anyio.create_task_group() as tg:
        c = await collect(tg, bridge, topic)
        # A writer that logs events without notifying (as if the notification were lost):
        # the next notified event arrives as seq 4 after 1.
        sql(db, "SELECT realtime.emit_v1(%s, 'comment.created', '{\"n\": 1}')", topic)
        await wait_for(lambda: c.seqs == [1], 5, "seq 1")
        sql(db, """
            WITH s AS (UPDATE realtime.streams SET last_seq = last_seq + 2 WHERE topic = %s
                       RETURNING last_seq)
            INSERT INTO realtime.events (topic, seq, type, payload)
            SELECT %s, g, 'comment.created', jsonb_build_object('n', g)
            FROM s, generate_series(s.last_seq - 1, s.last_seq) g""", topic, topic)
        sql(db, "SELECT realtime.emit_v1(%s, 'comment.created', '{\"n\": 4}')", topic)
        await wait_for(lambda: len(c.seqs) == 4, 5, "the hole filled")
        assert c.seqs == [1, 2, 3, 4]
        assert [e.payload["n"] for e in c.durable] == [1, 2, 3, 4]
        assert bridge.stats()["repairs"] >= 2
        tg.cancel_scope.cancel()


async def test_stub_notifications_are_read_from_the_log(db: str) -> None:
    [(topic, _, _)] = topics_of(db, 1)
    async with running(db) as bridge, anyio.create_task_group() as tg:
        c = await collect(tg, bridge, topic)
        # 9000 bytes cannot ride in a NOTIFY: the trigger sends only (topic, seq).
        sql(db, "SELECT realtime.emit_v1(%s, 'comment.updated',"
                " jsonb_build_object('blob', repeat('é', 4500)))", topic)
        sql(db, "SELECT realtime.emit_v1(%s, 'comment.created', '{\"small\": true}')", topic)
        await wait_for(lambda: len(c.seqs) == 2, 5, "both events")
        big, small = c.durable
        assert big.type == "comment.updated"
        assert big.payload == {"blob": "é" * 4500}
        assert small.payload == {"small": True}
        assert_exactly_once(c, db)
        tg.cancel_scope.cancel()


async def test_since_older_than_retention_gets_a_reset_then_live(db: str) -> None:
    [(topic, _, _)] = topics_of(db, 1)
    for n in range(1, 7):
        sql(db, "SELECT realtime.emit_v1(%s, 'comment.created', jsonb_build_object('n', %s))",
            topic, n)
    sql(db, "DELETE FROM realtime.events WHERE topic = %s AND seq <= 3", topic)  # retention
    async with running(db) as bridge, anyio.create_task_group() as tg:
        ok = await collect(tg, bridge, topic, since=3)  # min retained 4: since 3 resumes
        stale = await collect(tg, bridge, topic, since=2)
        ahead = await collect(tg, bridge, topic, since=50)  # beyond the last seq
        await wait_for(lambda: len(ok.items) == 3 and len(stale.items) == 1
                       and len(ahead.items) == 1, 5, "backlogs")
        assert ok.seqs == [4, 5, 6]
        assert stale.items == [Reset(topic, 6)]
        assert ahead.items == [Reset(topic, 6)]
        sql(db, "SELECT realtime.emit_v1(%s, 'comment.created', '{\"n\": 7}')", topic)
        await wait_for(lambda: all(7 in x.seqs for x in (ok, stale, ahead)), 5, "live 7")
        assert stale.seqs == [7]
        assert ahead.seqs == [7]
        sql(db, "SELECT realtime.prune_events_v1('0 seconds')")
        everything_gone = await collect(tg, bridge, topic, since=0)
        caught_up = await collect(tg, bridge, topic, since=7)
        await wait_for(lambda: len(everything_gone.items) == 1, 5, "reset")
        assert everything_gone.items == [Reset(topic, 7)]
        sql(db, "SELECT realtime.emit_v1(%s, 'comment.created', '{\"n\": 8}')", topic)
        await wait_for(lambda: caught_up.seqs == [8] and everything_gone.seqs == [8], 5, "8")
        assert caught_up.items[0] == next(i for i in everything_gone.items if isinstance(i, Event))
        tg.cancel_scope.cancel()


async def test_ephemeral_events_pass_through_without_seq(db: str) -> None:
    w = factories.world(db)
    async with running(db) as bridge, anyio.create_task_group() as tg:
        c = await collect(tg, bridge, w.topic)
        await bridge.presence.typing(w.topic, w.owner, True, origin="sock-9")
        await wait_for(lambda: len(c.ephemeral) == 1, 5, "typing")
        typing = c.ephemeral[0]
        assert typing.seq is None
        assert typing.type == "user.typing"
        assert typing.origin == "sock-9"
        assert typing.payload["userId"] == str(w.owner)
        assert typing.payload["isTyping"] is True
        assert sql(db, "SELECT count(*) FROM realtime.events") == [(0,)]
        tg.cancel_scope.cancel()


async def test_control_notifications_reach_callbacks(db: str) -> None:
    w = factories.world(db)
    token = factories.token(db, w.participants[1])
    token_id = int(token.split("|")[0])
    got: list[Control] = []
    async with running(db) as bridge:
        unregister = bridge.on_control(got.append)

        def broken(control: Control) -> None:
            raise RuntimeError("a broken callback does not stop the others")

        bridge.on_control(broken)
        sql(db, "DELETE FROM personal_access_tokens WHERE id = %s", token_id)
        sql(db, "DELETE FROM sport_session_participants WHERE sport_session_id = %s"
                " AND user_id = %s", w.session_id, w.participants[2])
        await wait_for(lambda: len(got) == 2, 5, "two controls")
        assert got[0] == Control("token.revoked",
                                 {"tokenId": token_id, "userId": str(w.participants[1])})
        assert got[1] == Control("participant.removed",
                                 {"sessionId": str(w.session_id),
                                  "userId": str(w.participants[2])})
        unregister()
        sql(db, "UPDATE sport_sessions SET visibility = 'public' WHERE id = %s", w.session_id)
        await anyio.sleep(0.3)
        assert len(got) == 2


async def test_presence_online_offline_once_per_user_and_clean_shutdown(db: str) -> None:
    w = factories.world(db)
    alice, bob = w.participants[0], w.participants[1]
    async with running(db, node_id="watcher") as watcher, anyio.create_task_group() as tg:
        c = await collect(tg, watcher, w.topic)
        async with running(db, node_id="node-a") as a:
            assert await a.presence.join(w.topic, alice, "a1") is True
            assert await a.presence.join(w.topic, alice, "a2") is False  # second tab
            assert await a.presence.join(w.topic, bob, "b1") is True
            listed = await watcher.presence.list(w.topic)
            assert [p["id"] for p in listed] == [str(alice), str(bob)]
            assert set(listed[0]) == {"id", "firstname", "lastname", "avatar", "isTyping",
                                      "lastSeen"}
            assert await a.presence.leave(w.topic, alice, "a1") is False  # a2 still open
            assert await a.presence.leave(w.topic, alice, "a2") is True
            # REST join: alive for its ttl, on no node.
            assert await watcher.presence.join(w.topic, alice, "rest", ttl=30) is True
            await wait_for(lambda: len(c.ephemeral) == 4, 5, "4 presence events")
        # node-a stopped cleanly: node_leave_v1 took bob offline at once, no reaper needed.
        await wait_for(lambda: len(c.ephemeral) == 5, 5, "bob offline")
        kinds = [(e.type, e.payload["userId"]) for e in c.ephemeral]
        assert kinds == [("user.online", str(alice)), ("user.online", str(bob)),
                         ("user.offline", str(alice)), ("user.online", str(alice)),
                         ("user.offline", str(bob))]
        assert [p["id"] for p in await watcher.presence.list(w.topic)] == [str(alice)]
        tg.cancel_scope.cancel()


async def test_subscribe_needs_a_running_bridge(db: str) -> None:
    from bridge import Bridge

    bridge = Bridge(db)
    with pytest.raises(BridgeClosed):
        async with bridge.subscribe("session:x"):
            pass
    async with anyio.create_task_group() as tg, running(db) as b:
        c = await collect(tg, b, f"session:{uuid.uuid4()}")
        assert c.start_seq == 0
    # Stopping the bridge ended the subscription with a shutdown cut-off.
    assert c.items == [CutOff("shutdown", 0, c.topic)]
    assert c.done
    assert b.stats()["subscribers"] == 0
    with pytest.raises(BridgeClosed):
        async with b.subscribe(c.topic):
            pass


async def test_the_bridge_prunes_the_log_past_retention(db: str) -> None:
    [(topic, _, _)] = topics_of(db, 1)
    for n in range(1, 5):
        sql(db, "SELECT realtime.emit_v1(%s, 'comment.created', jsonb_build_object('n', %s))",
            topic, n)
    sql(db, "UPDATE realtime.events SET created_at = now() - interval '1 hour'"
            " WHERE topic = %s AND seq <= 2", topic)
    config = replace(FAST, retention=600.0, prune_interval=0.1)
    async with running(db, config=config) as bridge, anyio.create_task_group() as tg:
        await wait_for(lambda: sql(db, "SELECT min(seq) FROM realtime.events") == [(3,)], 5,
                       "events older than retention to go")
        assert last_seq(db, topic) == 4  # counters are never reset
        resumed = await collect(tg, bridge, topic, since=2)
        too_old = await collect(tg, bridge, topic, since=1)
        await wait_for(lambda: len(resumed.items) == 2 and len(too_old.items) == 1, 5, "replies")
        assert resumed.seqs == [3, 4]
        assert too_old.items == [Reset(topic, 4)]
        tg.cancel_scope.cancel()
