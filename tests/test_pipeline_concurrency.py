"""Concurrent writers colliding on a few comments: the log stays gapless, in commit order,
and replaying it rebuilds exactly the final state of every comment."""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest

from courtside.pgcluster import Cluster
from tests import factories

WRITERS = 8
SECONDS = 4.0
Conn = psycopg.Connection[tuple[Any, ...]]


class Abort(Exception):
    """A writer chose to roll its transaction back."""


def _pick_comments(conn: Conn, session_ids: list[uuid.UUID], rng: random.Random,
                   k: int) -> list[uuid.UUID]:
    rows = conn.execute(
        "SELECT id FROM sport_session_comments WHERE sport_session_id = ANY(%s)"
        " ORDER BY created_at DESC LIMIT 12",
        (session_ids,),
    ).fetchall()
    ids = [uuid.UUID(str(r[0])) for r in rows]
    # Always touch rows in one order, as well-behaved applications do: any deadlock left
    # would then be the triggers' own.
    return sorted(rng.sample(ids, min(k, len(ids))))


def _writer(dsn: str, worlds: list[factories.World], seed: int, deadline: float,
            stats: Counter[str], lock: threading.Lock) -> None:
    rng = random.Random(seed)
    local: Counter[str] = Counter()
    with psycopg.connect(dsn) as conn:
        while time.monotonic() < deadline:
            world = rng.choice(worlds)
            try:
                with conn.transaction():
                    if rng.random() < 0.3:
                        conn.execute("SELECT set_config('courtside.origin', %s, true)",
                                     (f"writer-{seed}",))
                    # A third of the transactions only write new comments (and their
                    # mentions), the path a new comment alone takes at commit.
                    fresh_only = rng.random() < 0.33
                    targets = ([] if fresh_only else
                               _pick_comments(conn, [world.session_id], rng, rng.randint(1, 3)))
                    for cid in targets:
                        op = rng.choice(["update", "update", "mention", "unmention",
                                         "soft_delete", "restore", "hard_delete"])
                        if op == "update":
                            conn.execute(
                                "UPDATE sport_session_comments SET content = %s,"
                                " updated_at = clock_timestamp() WHERE id = %s",
                                (f"edit {seed}-{rng.random():.6f}", cid))
                        elif op == "mention":
                            conn.execute(
                                "INSERT INTO sport_session_comment_mentions"
                                " (comment_id, mentioned_user_id) VALUES (%s, %s)"
                                " ON CONFLICT DO NOTHING",
                                (cid, rng.choice(world.participants)))
                        elif op == "unmention":
                            conn.execute(
                                "DELETE FROM sport_session_comment_mentions WHERE comment_id = %s"
                                " AND mentioned_user_id = %s",
                                (cid, rng.choice(world.participants)))
                        elif op == "soft_delete":
                            conn.execute("UPDATE sport_session_comments SET deleted_at = now()"
                                         " WHERE id = %s", (cid,))
                        elif op == "restore":
                            conn.execute("UPDATE sport_session_comments SET deleted_at = NULL"
                                         " WHERE id = %s", (cid,))
                        else:
                            conn.execute("DELETE FROM sport_session_comments WHERE id = %s",
                                         (cid,))
                    for _ in range(rng.choice([1, 1, 1, 2] if fresh_only else [0, 0, 1, 2])):
                        row = conn.execute(
                            "INSERT INTO sport_session_comments (sport_session_id, user_id,"
                            " content) VALUES (%s, %s, %s) RETURNING id",
                            (world.session_id, rng.choice(world.participants),
                             f"new {seed}")).fetchone()
                        assert row is not None
                        if rng.random() < 0.5:
                            conn.execute(
                                "INSERT INTO sport_session_comment_mentions"
                                " (comment_id, mentioned_user_id) VALUES (%s, %s)",
                                (row[0], rng.choice(world.participants)))
                    if rng.random() < 0.15:
                        raise Abort
                local["committed"] += 1
            except Abort:
                local["rolled_back"] += 1
            except psycopg.errors.DeadlockDetected:
                local["deadlocks"] += 1
            except psycopg.errors.ForeignKeyViolation:
                # A mention of a comment another writer hard-deleted meanwhile: the
                # application's conflict, rolled back like any other.
                local["fk_conflicts"] += 1
    with lock:
        stats.update(local)


def _replay(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for typ, payload in events:
        if typ in ("comment.created", "comment.updated"):
            state[payload["comment"]["id"]] = payload["comment"]
        elif typ == "comment.deleted":
            del state[payload["commentId"]]  # KeyError: a delete of something never created
        else:
            pytest.fail(f"unexpected event type {typ} on a session topic")
    return state


def test_concurrent_writers_keep_the_log_gapless_ordered_and_replayable(
    own_cluster: Cluster,
) -> None:
    dsn = own_cluster.dsn("courtside")
    worlds = [factories.world(dsn, participants=4, outsiders=0) for _ in range(3)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for w in worlds:
            for i in range(4):
                conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id,"
                             " content) VALUES (%s, %s, %s)", (w.session_id, w.owner, f"seed {i}"))

    stats: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS
    threads = [
        threading.Thread(target=_writer, args=(dsn, worlds, seed, deadline, stats, lock))
        for seed in range(WRITERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 60)
    assert not any(t.is_alive() for t in threads)
    assert stats["committed"] > 50, stats
    assert stats["rolled_back"] > 0, stats
    assert stats["deadlocks"] == 0, stats

    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM realtime.pending_comments").fetchone() == (0,)
        topics = [r[0] for r in conn.execute("SELECT topic FROM realtime.streams").fetchall()]
        assert {w.topic for w in worlds} <= set(topics)
        for topic in topics:
            rows = conn.execute(
                "SELECT e.seq, e.type, e.payload, pg_xact_commit_timestamp(e.xmin), e.xmin::text"
                " FROM realtime.events e WHERE e.topic = %s ORDER BY e.seq", (topic,)
            ).fetchall()
            last = conn.execute("SELECT last_seq FROM realtime.streams WHERE topic = %s",
                                (topic,)).fetchone()
            assert last is not None
            # Gapless: exactly 1..n, and n is the counter.
            assert [r[0] for r in rows] == list(range(1, last[0] + 1)), topic
            # Commit order: a later seq never belongs to an earlier commit.
            stamps = [r[3] for r in rows]
            assert all(a <= b for a, b in itertools.pairwise(stamps)), topic
            # One transaction's events on a topic are contiguous.
            xids = [r[4] for r in rows]
            seen: set[str] = set()
            for prev, cur in zip([None, *xids], xids, strict=False):
                if cur != prev:
                    assert cur not in seen, f"{topic}: transaction {cur} interleaved"
                    seen.add(cur)

        for w in worlds:
            evs = conn.execute(
                "SELECT type, payload FROM realtime.events WHERE topic = %s ORDER BY seq",
                (w.topic,)).fetchall()
            replayed = _replay([(r[0], r[1]) for r in evs])
            final = {
                str(r[0]): r[1]
                for r in conn.execute(
                    "SELECT c.id, realtime.comment_json_v1(c) FROM sport_session_comments c"
                    " WHERE c.sport_session_id = %s AND c.deleted_at IS NULL",
                    (w.session_id,)).fetchall()
            }
            assert replayed == final, w.topic
