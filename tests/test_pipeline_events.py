"""The event pipeline through plain SQL: each committed change gives exactly the expected event.

No application code runs here: these are the guarantees any SQL client (Laravel, a cron job,
psql) gets from the triggers alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from courtside.migrate import migration_files
from tests import factories
from tests.factories import World

Conn = psycopg.Connection[tuple[Any, ...]]


Event = tuple[int, str, dict[str, Any], str | None]


def events(conn: Conn, topic: str, after: int = 0) -> list[Event]:
    rows = conn.execute(
        "SELECT seq, type, payload, origin FROM realtime.events WHERE topic = %s AND seq > %s"
        " ORDER BY seq",
        (topic, after),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def last_seq(conn: Conn, topic: str) -> int:
    row = conn.execute("SELECT last_seq FROM realtime.streams WHERE topic = %s",
                       (topic,)).fetchone()
    return int(row[0]) if row else 0


def add_comment(conn: Conn, w: World, content: str = "Super session !",
                author: uuid.UUID | None = None) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
        " VALUES (%s, %s, %s) RETURNING id",
        (w.session_id, author or w.owner, content),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def mention(conn: Conn, comment_id: uuid.UUID, user_id: uuid.UUID) -> None:
    conn.execute(
        "INSERT INTO sport_session_comment_mentions (comment_id, mentioned_user_id)"
        " VALUES (%s, %s)",
        (comment_id, user_id),
    )


def rendered(conn: Conn, comment_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute(
        "SELECT realtime.comment_json_v1(c) FROM sport_session_comments c WHERE id = %s",
        (comment_id,),
    ).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


@contextmanager
def triggers_off(conn: Conn) -> Iterator[None]:
    """Writes made inside skip courtside's triggers, as before it was installed."""
    tables = ("sport_session_comments", "sport_session_comment_mentions")
    for table in tables:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    try:
        yield
    finally:
        for table in tables:
            conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


@pytest.fixture
def world(db: str) -> World:
    return factories.world(db, participants=4, outsiders=1)


@pytest.fixture
def conn(db: str) -> Any:
    with psycopg.connect(db, autocommit=True) as c:
        yield c


def test_insert_emits_created_with_the_rendered_comment(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world, "Super session !")
    [(seq, typ, payload, origin)] = events(conn, world.topic)
    assert (seq, typ, origin) == (1, "comment.created", None)
    assert payload == {"comment": rendered(conn, cid)}
    comment = payload["comment"]
    assert comment["content"] == "Super session !"
    assert comment["user"]["id"] == str(world.owner)
    assert set(comment["user"]) == {"id", "firstname", "lastname", "avatar"}
    assert comment["mentions"] == []
    assert comment["created_at"].endswith("Z")
    assert len(comment["created_at"]) == len("2025-01-20T10:30:00.000000Z")


def test_comment_and_three_mentions_in_one_transaction_give_one_event(
    conn: Conn, world: World
) -> None:
    with conn.transaction():
        cid = add_comment(conn, world)
        for uid in world.participants[1:4]:
            mention(conn, cid, uid)
    evs = events(conn, world.topic)
    assert [e[1] for e in evs] == ["comment.created"]
    assert {m["id"] for m in evs[0][2]["comment"]["mentions"]} == {
        str(u) for u in world.participants[1:4]
    }
    # Each newly mentioned user hears of it once, on their own topic.
    for uid in world.participants[1:4]:
        [(seq, typ, payload, _)] = events(conn, f"user:{uid}")
        assert (seq, typ) == (1, "mention.created")
        assert payload["sessionId"] == str(world.session_id)
        assert payload["comment"]["id"] == str(cid)


def test_a_sessions_first_comments_committed_at_once_create_its_counter(
        db: str, conn: Conn, world: World) -> None:
    """A session's first comment finds no counter row to take. Two of them commit at once
    (both held at commit, on a third transaction's uncommitted counter row, until it rolls
    back): both get their event, seqs 1 and 2, and the next comment counts on from there."""
    assert last_seq(conn, world.topic) == 0
    writers = [psycopg.connect(db) for _ in range(2)]
    try:
        firsts = [add_comment(w, world, f"first {i}") for i, w in enumerate(writers)]
        # The blocker closes first, so a failure here cannot leave the commits waiting.
        with ThreadPoolExecutor(2) as pool, psycopg.connect(db) as blocker:
            blocker.execute("INSERT INTO realtime.streams (topic) VALUES (%s)", (world.topic,))
            commits = [pool.submit(w.commit) for w in writers]
            pids = [w.info.backend_pid for w in writers]
            deadline = time.monotonic() + 10
            while conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
                    (pids,)).fetchone() != (2,):
                assert time.monotonic() < deadline, "the two commits never waited together"
                time.sleep(0.01)
            blocker.rollback()
            for done in commits:
                done.result(timeout=10)
    finally:
        for w in writers:
            w.close()
    third = add_comment(conn, world, "third")
    got = events(conn, world.topic)
    assert [(seq, typ) for seq, typ, _, _ in got] == [
        (1, "comment.created"), (2, "comment.created"), (3, "comment.created")]
    assert {got[0][2]["comment"]["id"], got[1][2]["comment"]["id"]} == {str(c) for c in firsts}
    assert got[2][2]["comment"] == rendered(conn, third)
    assert last_seq(conn, world.topic) == 3


def test_a_new_comment_written_again_in_its_transaction_gives_one_created(
    conn: Conn, world: World
) -> None:
    with conn.transaction():
        cid = add_comment(conn, world, "draft")
        conn.execute("UPDATE sport_session_comments SET content = 'final' WHERE id = %s", (cid,))
        mention(conn, cid, world.participants[1])

        def doomed_savepoint() -> None:
            with conn.transaction():
                mention(conn, cid, world.participants[2])
                conn.execute("DO $$ BEGIN RAISE EXCEPTION 'abort'; END $$")

        with pytest.raises(psycopg.errors.RaiseException):
            doomed_savepoint()
    [(seq, typ, payload, _)] = events(conn, world.topic)
    assert (seq, typ) == (1, "comment.created")
    assert payload == {"comment": rendered(conn, cid)}
    assert payload["comment"]["content"] == "final"
    assert [m["id"] for m in payload["comment"]["mentions"]] == [str(world.participants[1])]
    assert [e[1] for e in events(conn, f"user:{world.participants[1]}")] == ["mention.created"]
    assert events(conn, f"user:{world.participants[2]}") == []


def test_a_new_comment_rolled_back_to_a_savepoint_is_forgotten(conn: Conn, world: World) -> None:
    def doomed_savepoint() -> None:
        with conn.transaction():
            add_comment(conn, world, "lost")
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'abort'; END $$")

    with conn.transaction():
        with pytest.raises(psycopg.errors.RaiseException):
            doomed_savepoint()
        kept = add_comment(conn, world, "kept")
    evs = events(conn, world.topic)
    assert [(e[0], e[1], e[2]["comment"]["id"]) for e in evs] == [
        (1, "comment.created", str(kept))]


def test_several_comments_in_one_transaction_each_give_one_event(
    conn: Conn, world: World
) -> None:
    old = add_comment(conn, world, "old")
    with conn.transaction():
        first = add_comment(conn, world, "first")
        second = add_comment(conn, world, "second")
        mention(conn, second, world.participants[1])
        conn.execute("UPDATE sport_session_comments SET content = 'old, edited' WHERE id = %s",
                     (old,))
        mention(conn, first, world.participants[2])
        conn.execute("UPDATE sport_session_comments SET content = 'first, edited' WHERE id = %s",
                     (first,))
    evs = events(conn, world.topic, after=1)
    # In the order the transaction first touched them, each as it stood at commit.
    assert [(e[1], e[2]["comment"]["id"]) for e in evs] == [
        ("comment.created", str(first)), ("comment.created", str(second)),
        ("comment.updated", str(old))]
    assert [e[2] for e in evs] == [{"comment": rendered(conn, c)} for c in (first, second, old)]
    assert [e[1] for e in events(conn, f"user:{world.participants[1]}")] == ["mention.created"]
    assert [e[1] for e in events(conn, f"user:{world.participants[2]}")] == ["mention.created"]
    assert conn.execute("SELECT count(*) FROM realtime.pending_comments").fetchone() == (0,)


def test_a_comment_born_hidden_is_created_when_restored(conn: Conn, world: World) -> None:
    row = conn.execute(
        "INSERT INTO sport_session_comments (sport_session_id, user_id, content, deleted_at)"
        " VALUES (%s, %s, 'hidden', now()) RETURNING id", (world.session_id, world.owner)
    ).fetchone()
    assert row is not None
    assert events(conn, world.topic) == []
    conn.execute("UPDATE sport_session_comments SET deleted_at = NULL WHERE id = %s", (row[0],))
    assert [e[1] for e in events(conn, world.topic)] == ["comment.created"]


def test_update_soft_delete_and_hard_delete(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world)
    conn.execute("UPDATE sport_session_comments SET content = 'Commentaire modifié',"
                 " updated_at = now() WHERE id = %s", (cid,))
    conn.execute("UPDATE sport_session_comments SET deleted_at = now() WHERE id = %s", (cid,))
    cid2 = add_comment(conn, world, "second")
    conn.execute("DELETE FROM sport_session_comments WHERE id = %s", (cid2,))
    evs = events(conn, world.topic)
    assert [(e[0], e[1]) for e in evs] == [
        (1, "comment.created"), (2, "comment.updated"), (3, "comment.deleted"),
        (4, "comment.created"), (5, "comment.deleted"),
    ]
    assert evs[1][2]["comment"]["content"] == "Commentaire modifié"
    deleted_at = conn.execute(
        "SELECT realtime.ts_v1(deleted_at) FROM sport_session_comments WHERE id = %s", (cid,)
    ).fetchone()
    assert deleted_at is not None
    assert evs[2][2] == {"commentId": str(cid), "deletedAt": deleted_at[0]}
    assert evs[4][2]["commentId"] == str(cid2)
    assert set(evs[4][2]) == {"commentId", "deletedAt"}


def test_mention_only_changes_emit_updated(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world)
    mention(conn, cid, world.participants[1])
    conn.execute("DELETE FROM sport_session_comment_mentions WHERE comment_id = %s", (cid,))
    evs = events(conn, world.topic)
    assert [e[1] for e in evs] == ["comment.created", "comment.updated", "comment.updated"]
    assert [m["id"] for m in evs[1][2]["comment"]["mentions"]] == [str(world.participants[1])]
    assert evs[2][2]["comment"]["mentions"] == []
    # Mentioned once: one notification, even though the mention was removed later.
    assert [e[1] for e in events(conn, f"user:{world.participants[1]}")] == ["mention.created"]


def test_only_participants_hear_of_their_mention(conn: Conn, world: World) -> None:
    """A mention of someone outside the session stays in the comment, but their own topic
    is told nothing: no event, and no seq for a subscriber there to find missing."""
    member, outsider = world.participants[1], world.outsiders[0]
    late = factories.user(conn, "Late", "Comer")
    with conn.transaction():
        cid = add_comment(conn, world)
        mention(conn, cid, member)
        mention(conn, cid, outsider)
    [(_, typ, payload, _)] = events(conn, world.topic)
    assert typ == "comment.created"
    assert {m["id"] for m in payload["comment"]["mentions"]} == {str(member), str(outsider)}
    assert payload == {"comment": rendered(conn, cid)}
    assert [e[1] for e in events(conn, f"user:{member}")] == ["mention.created"]
    assert events(conn, f"user:{outsider}") == []
    assert last_seq(conn, f"user:{outsider}") == 0

    # A mention added later, to a comment already reported, follows the same rule.
    other = world.participants[2]
    with conn.transaction():
        mention(conn, cid, late)
        mention(conn, cid, other)
    evs = events(conn, world.topic)
    assert [e[1] for e in evs] == ["comment.created", "comment.updated"]
    assert len(evs[1][2]["comment"]["mentions"]) == 4
    assert [e[1] for e in events(conn, f"user:{other}")] == ["mention.created"]
    assert events(conn, f"user:{late}") == []
    assert last_seq(conn, f"user:{late}") == 0

    # Once they have joined, the next change to the comment tells them, once.
    factories.join(conn, world.session_id, late)
    conn.execute("UPDATE sport_session_comments SET content = 'edited' WHERE id = %s", (cid,))
    conn.execute("UPDATE sport_session_comments SET content = 'edited again' WHERE id = %s",
                 (cid,))
    [(seq, typ, payload, _)] = events(conn, f"user:{late}")
    assert (seq, typ) == (1, "mention.created")
    assert payload["comment"]["id"] == str(cid)
    assert events(conn, f"user:{outsider}") == []
    assert [e[1] for e in events(conn, f"user:{member}")] == ["mention.created"]


def test_rollback_emits_nothing(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world)
    before = last_seq(conn, world.topic)

    def doomed() -> None:
        with conn.transaction():
            add_comment(conn, world, "never")
            conn.execute("UPDATE sport_session_comments SET content = 'nope' WHERE id = %s",
                         (cid,))
            mention(conn, cid, world.participants[2])
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'abort'; END $$")

    with pytest.raises(psycopg.errors.RaiseException):
        doomed()
    assert last_seq(conn, world.topic) == before
    assert len(events(conn, world.topic)) == before
    assert events(conn, f"user:{world.participants[2]}") == []
    assert conn.execute("SELECT count(*) FROM realtime.pending_comments").fetchone() == (0,)


def test_rolled_back_savepoint_is_forgotten(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world, "original")

    def doomed_savepoint() -> None:
        with conn.transaction():
            conn.execute("UPDATE sport_session_comments SET content = 'lost' WHERE id = %s",
                         (cid,))
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'abort'; END $$")

    with conn.transaction():
        with pytest.raises(psycopg.errors.RaiseException):
            doomed_savepoint()
        conn.execute("UPDATE sport_session_comments SET content = 'kept' WHERE id = %s", (cid,))
    evs = events(conn, world.topic)
    assert [e[1] for e in evs] == ["comment.created", "comment.updated"]
    assert evs[1][2]["comment"]["content"] == "kept"


def test_born_and_removed_in_one_transaction_emits_nothing(conn: Conn, world: World) -> None:
    with conn.transaction():
        cid = add_comment(conn, world)
        mention(conn, cid, world.participants[1])
        conn.execute("UPDATE sport_session_comments SET deleted_at = now() WHERE id = %s", (cid,))
    with conn.transaction():
        cid2 = add_comment(conn, world)
        conn.execute("DELETE FROM sport_session_comments WHERE id = %s", (cid2,))
    assert events(conn, world.topic) == []
    assert events(conn, f"user:{world.participants[1]}") == []


def test_many_writes_to_one_comment_in_a_transaction_give_its_final_state(
    conn: Conn, world: World
) -> None:
    cid = add_comment(conn, world)
    with conn.transaction():
        for i in range(5):
            conn.execute("UPDATE sport_session_comments SET content = %s WHERE id = %s",
                         (f"v{i}", cid))
        mention(conn, cid, world.participants[1])
        mention(conn, cid, world.participants[2])
    evs = events(conn, world.topic)
    assert [e[1] for e in evs] == ["comment.created", "comment.updated"]
    assert evs[1][2] == {"comment": rendered(conn, cid)}
    assert evs[1][2]["comment"]["content"] == "v4"


def test_no_op_update_emits_nothing(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world)
    conn.execute("UPDATE sport_session_comments SET content = content WHERE id = %s", (cid,))
    assert [e[1] for e in events(conn, world.topic)] == ["comment.created"]


def test_restoring_a_soft_deleted_comment_recreates_it(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world)
    conn.execute("UPDATE sport_session_comments SET deleted_at = now() WHERE id = %s", (cid,))
    conn.execute("UPDATE sport_session_comments SET content = 'while hidden' WHERE id = %s",
                 (cid,))
    conn.execute("UPDATE sport_session_comments SET deleted_at = NULL WHERE id = %s", (cid,))
    conn.execute("DELETE FROM sport_session_comments WHERE id = %s", (cid,))
    assert [e[1] for e in events(conn, world.topic)] == [
        "comment.created", "comment.deleted", "comment.created", "comment.deleted"]


def test_origin_is_recorded_and_scoped_to_the_transaction(conn: Conn, world: World) -> None:
    with conn.transaction():
        conn.execute("SELECT set_config('courtside.origin', '1234.5678', true)")
        add_comment(conn, world)
    add_comment(conn, world)
    assert [e[3] for e in events(conn, world.topic)] == ["1234.5678", None]


def test_truncate_reports_every_visible_comment_deleted(conn: Conn, world: World) -> None:
    ids = {add_comment(conn, world, f"c{i}") for i in range(3)}
    hidden = add_comment(conn, world, "hidden")
    conn.execute("UPDATE sport_session_comments SET deleted_at = now() WHERE id = %s", (hidden,))
    conn.execute("TRUNCATE sport_session_comments CASCADE")
    deleted = [e for e in events(conn, world.topic, after=5) if e[1] == "comment.deleted"]
    assert {uuid.UUID(e[2]["commentId"]) for e in deleted} == ids


def test_moving_a_comment_to_another_session(conn: Conn, world: World, db: str) -> None:
    other = factories.world(db)
    cid = add_comment(conn, world)
    conn.execute("UPDATE sport_session_comments SET sport_session_id = %s WHERE id = %s",
                 (other.session_id, cid))
    assert [e[1] for e in events(conn, world.topic)] == ["comment.created", "comment.deleted"]
    assert [e[1] for e in events(conn, other.topic)] == ["comment.created"]


def test_first_touches_after_creation_compare_with_the_comment_as_it_stood(
    conn: Conn, world: World, db: str
) -> None:
    """A comment reported by its creation alone keeps no state row: its next transaction
    compares it with how it stood before, as kept at its first touch — for the
    transaction's first comment (in a setting) and for the further ones (spilled)."""
    other = factories.world(db)
    noop, edited, moved, mentioned, gone = (add_comment(conn, world, f"c{i}") for i in range(5))
    with conn.transaction():
        conn.execute("UPDATE sport_session_comments SET content = content WHERE id = %s",
                     (noop,))
        conn.execute("UPDATE sport_session_comments SET content = 'edited' WHERE id = %s",
                     (edited,))
        conn.execute("UPDATE sport_session_comments SET sport_session_id = %s WHERE id = %s",
                     (other.session_id, moved))
        mention(conn, mentioned, world.participants[1])
        conn.execute("DELETE FROM sport_session_comments WHERE id = %s", (gone,))
    told = [(typ, payload.get("commentId") or payload["comment"]["id"])
            for _, typ, payload, _ in events(conn, world.topic, after=5)]
    assert sorted(told) == sorted([
        ("comment.updated", str(edited)), ("comment.deleted", str(moved)),
        ("comment.updated", str(mentioned)), ("comment.deleted", str(gone))])
    assert [e[1] for e in events(conn, other.topic)] == ["comment.created"]
    assert [e[1] for e in events(conn, f"user:{world.participants[1]}")] == ["mention.created"]
    # Each now has a state row, and the next no-op changes nothing either.
    with conn.transaction():
        for cid in (noop, edited, moved, mentioned):
            conn.execute("UPDATE sport_session_comments SET content = content WHERE id = %s",
                         (cid,))
    assert len(events(conn, world.topic)) == 9
    assert len(events(conn, other.topic)) == 1


def test_comments_from_before_courtside_are_adopted_as_known(conn: Conn, world: World) -> None:
    """Comments written while courtside's triggers were off (as before it was installed),
    then migration 0006: each gets a state row. Its present mentions count as told, so its
    next change tells no one of an old mention; a soft-deleted one counts as hidden; a hard
    delete is reported where it was."""
    old_mention = world.participants[1]
    with triggers_off(conn):
        old = add_comment(conn, world, "old")
        mention(conn, old, old_mention)
        hidden = add_comment(conn, world, "hidden")
        conn.execute("UPDATE sport_session_comments SET deleted_at = now() WHERE id = %s",
                     (hidden,))
        gone = add_comment(conn, world, "gone")
    [adopt] = [f for f in migration_files() if f.name == "0006_stateless_created.sql"]
    conn.execute(adopt.sql.encode())
    conn.execute("UPDATE sport_session_comments SET content = 'edited' WHERE id = %s", (old,))
    conn.execute("UPDATE sport_session_comments SET content = 'still hidden' WHERE id = %s",
                 (hidden,))
    conn.execute("DELETE FROM sport_session_comments WHERE id = %s", (gone,))
    evs = events(conn, world.topic)
    assert [(e[1], e[2].get("commentId") or e[2]["comment"]["id"]) for e in evs] == [
        ("comment.updated", str(old)), ("comment.deleted", str(gone))]
    assert events(conn, f"user:{old_mention}") == []


def test_a_comment_written_with_the_triggers_off_counts_as_reported_by_its_creation(
    conn: Conn, world: World
) -> None:
    """Written while courtside's triggers were off (a restore, say), with mentions and no
    state row: deleting it later (the cascade removing its mentions too) reports it
    deleted where it stood, alone or beside others in one statement."""
    with triggers_off(conn):
        ids = [add_comment(conn, world, f"restored {i}") for i in range(3)]
        for cid in ids:
            mention(conn, cid, world.participants[1])
    conn.execute("DELETE FROM sport_session_comments WHERE id = %s", (ids[0],))
    conn.execute("DELETE FROM sport_session_comments WHERE id = ANY (%s)", (ids[1:],))
    evs = events(conn, world.topic)
    assert [e[1] for e in evs] == ["comment.deleted"] * 3
    assert [e[2]["commentId"] for e in evs[:1]] == [str(ids[0])]
    assert {e[2]["commentId"] for e in evs[1:]} == {str(i) for i in ids[1:]}


def test_deleting_the_session_reports_its_comments_deleted(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world)
    conn.execute("DELETE FROM sport_sessions WHERE id = %s", (world.session_id,))
    evs = events(conn, world.topic)
    assert [e[1] for e in evs] == ["comment.created", "comment.deleted"]
    assert evs[1][2]["commentId"] == str(cid)


@pytest.mark.parametrize("content", ["", "   ", "x" * 1001])
def test_the_database_refuses_invalid_content(conn: Conn, world: World, content: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        add_comment(conn, world, content)
    assert events(conn, world.topic) == []


def test_content_of_1000_four_byte_characters_is_accepted(conn: Conn, world: World) -> None:
    cid = add_comment(conn, world, "😀" * 1000)
    assert rendered(conn, cid)["content"] == "😀" * 1000
