"""NOTIFY carries each event when it fits and only its address when it does not."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import psycopg

from tests import factories

Conn = psycopg.Connection[tuple[Any, ...]]


def drain(listener: Conn) -> list[dict[str, Any]]:
    """Every notification committed so far. PostgreSQL delivers them in commit order, so
    once the listener's own sentinel arrives, all those before it have."""
    listener.execute("LISTEN courtside_test_sentinel")
    listener.execute("NOTIFY courtside_test_sentinel")
    out: list[dict[str, Any]] = []
    for note in listener.notifies(timeout=10.0):
        if note.channel == "courtside_test_sentinel":
            return out
        assert note.channel == "courtside"
        out.append(orjson.loads(note.payload))
    raise AssertionError("the sentinel notification did not arrive in 10 s")


def test_listener_receives_each_event_in_full(db: str) -> None:
    w = factories.world(db, participants=2)
    with psycopg.connect(db, autocommit=True) as listener, \
            psycopg.connect(db, autocommit=True) as writer:
        listener.execute("LISTEN courtside")
        ids = []
        for i in range(3):
            row = writer.execute(
                "INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                " VALUES (%s, %s, %s) RETURNING id", (w.session_id, w.owner, f"c{i}")).fetchone()
            assert row is not None
            ids.append(str(row[0]))
        notes = drain(listener)
        logged = writer.execute(
            "SELECT seq, type, payload FROM realtime.events WHERE topic = %s ORDER BY seq",
            (w.topic,)).fetchall()
    assert [(n["k"], n["t"], n["s"], n["e"]) for n in notes] == [
        ("e", w.topic, seq, typ) for seq, typ, _ in logged]
    assert [n["d"] for n in notes] == [payload for _, _, payload in logged]
    assert [n["d"]["comment"]["id"] for n in notes] == ids


def test_an_oversized_event_commits_and_notifies_its_address_only(db: str) -> None:
    w = factories.world(db, participants=1)
    with psycopg.connect(db, autocommit=True) as conn:
        # 50 mentioned users with long names, 1000 four-byte characters of content.
        users = [factories.user(conn, "Ж" * 40, "名" * 40) for _ in range(50)]
        for uid in users:
            factories.join(conn, w.session_id, uid)
        listener = psycopg.connect(db, autocommit=True)
        try:
            listener.execute("LISTEN courtside")
            cid = uuid.uuid4()
            with conn.transaction():
                conn.execute(
                    "INSERT INTO sport_session_comments (id, sport_session_id, user_id, content)"
                    " VALUES (%s, %s, %s, %s)", (cid, w.session_id, w.owner, "😀" * 1000))
                for uid in users:
                    conn.execute(
                        "INSERT INTO sport_session_comment_mentions (comment_id, mentioned_user_id)"
                        " VALUES (%s, %s)", (cid, uid))
            notes = drain(listener)
        finally:
            listener.close()
        row = conn.execute(
            "SELECT seq, payload FROM realtime.events WHERE topic = %s", (w.topic,)).fetchone()
    assert row is not None
    seq, payload = row
    assert len(payload["comment"]["mentions"]) == 50
    assert payload["comment"]["content"] == "😀" * 1000
    session_notes = [n for n in notes if n["t"] == w.topic]
    assert session_notes == [{"k": "e", "t": w.topic, "s": seq}]
    # The mention notifications for the 50 users are too large as well: addresses only.
    user_notes = [n for n in notes if n["t"].startswith("user:")]
    assert len(user_notes) == 50
    assert all(set(n) == {"k", "t", "s"} for n in user_notes)


def test_ephemeral_and_control_messages(db: str) -> None:
    w = factories.world(db, participants=2)
    bearer = factories.token(db, w.owner)
    token_id = int(bearer.split("|")[0])
    with psycopg.connect(db, autocommit=True) as listener, \
            psycopg.connect(db, autocommit=True) as conn:
        listener.execute("LISTEN courtside")
        conn.execute("SELECT realtime.publish_ephemeral_v1(%s, 'user.typing', %s)",
                     (w.topic, orjson.dumps({"isTyping": True}).decode()))
        conn.execute("DELETE FROM personal_access_tokens WHERE id = %s", (token_id,))
        conn.execute("DELETE FROM sport_session_participants WHERE sport_session_id = %s"
                     " AND user_id = %s", (w.session_id, w.participants[1]))
        conn.execute("UPDATE sport_sessions SET visibility = 'public' WHERE id = %s",
                     (w.session_id,))
        notes = drain(listener)
        assert conn.execute("SELECT count(*) FROM realtime.events").fetchone() == (0,)
    assert notes == [
        {"k": "x", "t": w.topic, "e": "user.typing", "o": None, "d": {"isTyping": True}},
        {"k": "c", "e": "token.revoked", "d": {"tokenId": token_id, "userId": str(w.owner)}},
        {"k": "c", "e": "participant.removed",
         "d": {"sessionId": str(w.session_id), "userId": str(w.participants[1])}},
        {"k": "c", "e": "session.changed",
         "d": {"sessionId": str(w.session_id), "visibility": "public", "deleted": False}},
    ]
