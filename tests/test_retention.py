"""Retention prunes old events and never resets a topic's counter."""

from __future__ import annotations

import psycopg

from tests import factories


def test_prune_keeps_recent_events_and_the_counter(db: str) -> None:
    w = factories.world(db)
    with psycopg.connect(db, autocommit=True) as conn:
        for i in range(5):
            conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                         " VALUES (%s, %s, %s)", (w.session_id, w.owner, f"c{i}"))
        conn.execute("UPDATE realtime.events SET created_at = now() - interval '8 days'"
                     " WHERE topic = %s AND seq <= 3", (w.topic,))
        pruned = conn.execute("SELECT realtime.prune_events_v1(interval '7 days')").fetchone()
        assert pruned == (3,)
        conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                     " VALUES (%s, %s, 'after')", (w.session_id, w.owner))
        seqs = [r[0] for r in conn.execute(
            "SELECT seq FROM realtime.events WHERE topic = %s ORDER BY seq", (w.topic,))]
        last = conn.execute("SELECT last_seq FROM realtime.streams WHERE topic = %s",
                            (w.topic,)).fetchone()
    assert seqs == [4, 5, 6]
    assert last == (6,)
