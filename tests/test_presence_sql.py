"""Presence liveness in SQL, row by row: what `presence_online_v1` and `presence_list_v1`
count as alive (a row of a heartbeating node, or a REST row before its expiry), with dead
rows placed where a check that stopped early, or looked at the wrong row, would be fooled."""

from __future__ import annotations

import uuid

import psycopg

from tests import factories


def _row(conn: psycopg.Connection[tuple[object, ...]], topic: str, user: uuid.UUID, *,
         node: str | None = None, expires_in: float | None = None,
         conn_id: str | None = None) -> None:
    conn.execute(
        "INSERT INTO realtime.presence (topic, user_id, conn_id, node_id, expires_at)"
        " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))",
        (topic, user, conn_id or uuid.uuid4().hex, node, expires_in))


def test_only_live_rows_make_a_user_online_and_listed(db: str) -> None:
    w = factories.world(db, participants=5)
    topic = w.topic
    live_node, gone_node = "node-live", "node-gone"
    both, dead_only, rest_live, rest_expired, nobody = w.participants
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO realtime.nodes (node_id) VALUES (%s)", (live_node,))
        # Dead rows first for `both`, in the key's order (topic, user, conn): the check must
        # look past them to the live one.
        for i in range(3):
            _row(conn, topic, both, node=gone_node, conn_id=f"a{i}")
            _row(conn, topic, both, expires_in=-5, conn_id=f"b{i}")
        _row(conn, topic, both, node=live_node, conn_id="z")
        _row(conn, topic, dead_only, node=gone_node)
        _row(conn, topic, dead_only, expires_in=-1)
        _row(conn, topic, rest_live, expires_in=30)
        _row(conn, topic, rest_expired, expires_in=-1)
        # A live row in another topic says nothing about this one.
        _row(conn, "session:elsewhere", nobody, node=live_node)

        def online(user: uuid.UUID) -> bool:
            row = conn.execute("SELECT realtime.presence_online_v1(%s, %s)",
                               (topic, user)).fetchone()
            assert row is not None
            return bool(row[0])

        assert [online(u) for u in w.participants] == [True, False, True, False, False]
        listed = {uuid.UUID(r[0]) for r in conn.execute(
            "SELECT p->>'id' FROM realtime.presence_list_v1(%s) p", (topic,))}
        assert listed == {both, rest_live}

        # The node stops heartbeating (reaped): its rows die with it.
        conn.execute("DELETE FROM realtime.nodes WHERE node_id = %s", (live_node,))
        assert not online(both)
        listed = {uuid.UUID(r[0]) for r in conn.execute(
            "SELECT p->>'id' FROM realtime.presence_list_v1(%s) p", (topic,))}
        assert listed == {rest_live}


def test_a_node_that_goes_counts_and_settles_each_user_once(db: str) -> None:
    """node_leave_v1 and presence_reap_v1 answer how many users went offline: one per user,
    however many connections each had (they answered one per connection, settling each
    user once per row)."""
    w = factories.world(db, participants=3)
    alice, bob, carol = w.participants
    with psycopg.connect(db, autocommit=True) as conn:
        def one(query: str, *params: object) -> int:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return int(str(row[0]))

        for node in ("node-a", "node-b"):
            conn.execute("INSERT INTO realtime.nodes (node_id) VALUES (%s)", (node,))
            for _ in range(3):
                _row(conn, w.topic, alice, node=node)
                _row(conn, "session:other", alice, node=node)
            _row(conn, w.topic, bob, node=node)
        _row(conn, w.topic, carol, node="node-b")
        assert one("SELECT realtime.node_leave_v1('node-a')") == 0  # node-b keeps them
        conn.execute("DELETE FROM realtime.nodes WHERE node_id = 'node-b'")
        # alice on two topics, bob, carol
        assert one("SELECT realtime.presence_reap_v1('1 hour')") == 4
        conn.execute("INSERT INTO realtime.nodes (node_id) VALUES ('node-c')")
        conn.execute(
            "INSERT INTO realtime.presence (topic, user_id, conn_id, node_id)"
            " SELECT %s, %s, 'c' || i, 'node-c' FROM generate_series(1, 2000) i",
            (w.topic, alice))
        _row(conn, w.topic, bob, node="node-c")
        assert one("SELECT realtime.node_leave_v1('node-c')") == 2
