"""Limits kept in PostgreSQL: the comment rate limit holds across two servers, and an
Idempotency-Key sent ten times at once creates one comment and one event."""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from api.app import ApiConfig, create_app
from tests import factories
from tests.factories import World
from tests.servers import serve


@pytest.fixture
def world(db: str) -> World:
    return factories.world(db, participants=3, outsiders=0)


def comments_url(base: str, w: World) -> str:
    return f"{base}/api/sessions/{w.session_id}/comments"


def count(db: str, sql: str, *params: Any) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def test_rate_limit_holds_across_two_servers(world: World, db: str) -> None:
    config = ApiConfig(database_url=db, comments_per_minute=3)
    alice = {"Authorization": f"Bearer {factories.token(db, world.participants[0])}"}
    bob = {"Authorization": f"Bearer {factories.token(db, world.participants[1])}"}
    with serve(create_app(config)) as a, serve(create_app(config)) as b:
        # A refused creation (invalid mention) does not use the budget.
        r = httpx.post(comments_url(a, world), headers=alice,
                       json={"content": "x", "mentions": [str(uuid.uuid4())]})
        assert r.status_code == 422
        statuses = [httpx.post(comments_url(url, world), headers=alice,
                               json={"content": f"n{i}"}).status_code
                    for i, url in enumerate([a, b, a])]
        assert statuses == [201, 201, 201]
        for url in (b, a):
            r = httpx.post(comments_url(url, world), headers=alice, json={"content": "spam"})
            assert r.status_code == 429, r.text
            assert r.json()["success"] is False
            assert r.json()["error"]["code"] == "RATE_LIMITED"
            assert 1 <= int(r.headers["retry-after"]) <= 60
        r = httpx.post(comments_url(a, world), headers={**alice, "Accept-Language": "en"},
                       json={"content": "spam"})
        assert r.json()["error"]["message"].startswith("Too many comments")
        # Creations with mentions or an idempotency key (their own path, api/comments.py)
        # draw on the same budget.
        r = httpx.post(comments_url(b, world), headers=alice,
                       json={"content": "hey", "mentions": [str(world.participants[1])]})
        assert r.status_code == 429, r.text
        r = httpx.post(comments_url(a, world), headers={**alice, "Idempotency-Key": "k1"},
                       json={"content": "once"})
        assert r.status_code == 429, r.text
        # Other users have their own budget; reading and editing are not limited.
        assert httpx.post(comments_url(b, world), headers=bob,
                          json={"content": "hi"}).status_code == 201
        assert httpx.get(comments_url(a, world), headers=alice).status_code == 200
    assert count(db, "SELECT count(*) FROM sport_session_comments WHERE user_id = %s",
                 world.participants[0]) == 3


def test_rate_limit_window_slides(world: World, db: str) -> None:
    """Hits older than the window stop counting (the window is aged in the database)."""
    config = ApiConfig(database_url=db, comments_per_minute=2)
    alice = {"Authorization": f"Bearer {factories.token(db, world.owner)}"}
    with serve(create_app(config)) as a:
        assert [httpx.post(comments_url(a, world), headers=alice,
                           json={"content": "x"}).status_code for _ in range(3)] == [201, 201,
                                                                                    429]
        with psycopg.connect(db, autocommit=True) as conn:
            # Age the first hit past the window, as a minute passing would.
            conn.execute("UPDATE api.rate_limits SET hits[1] = hits[1] - interval '61 seconds'")
        assert httpx.post(comments_url(a, world), headers=alice,
                          json={"content": "x"}).status_code == 201
        r = httpx.post(comments_url(a, world), headers=alice, json={"content": "x"})
        assert r.status_code == 429


@pytest.mark.anyio
async def test_same_idempotency_key_ten_times_at_once_creates_one_comment(world: World,
                                                                          db: str) -> None:
    config = ApiConfig(database_url=db, pool_max_size=12)
    headers = {"Authorization": f"Bearer {factories.token(db, world.owner)}",
               "Idempotency-Key": "create-7d1f", "X-Socket-ID": "77.1"}
    body = {"content": "Une seule fois", "mentions": [str(world.participants[1])]}
    with serve(create_app(config)) as base:
        responses: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(
                max_connections=20)) as client:

            async def send() -> None:
                responses.append(await client.post(comments_url(base, world), json=body,
                                                   headers=headers))

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(send)
            later = await client.post(comments_url(base, world), json=body, headers=headers)

    assert [r.status_code for r in responses] == [201] * 10
    assert len({r.content for r in [*responses, later]}) == 1  # the very same response
    replayed = [r.headers.get("idempotent-replayed") for r in responses]
    assert replayed.count(None) == 1
    assert replayed.count("true") == 9
    assert later.headers["idempotent-replayed"] == "true"
    cid = responses[0].json()["data"]["id"]
    assert count(db, "SELECT count(*) FROM sport_session_comments") == 1
    assert count(db, "SELECT count(*) FROM sport_session_comment_mentions") == 1
    assert count(db, "SELECT count(*) FROM realtime.events WHERE topic = %s",
                 world.topic) == 1
    assert count(db, "SELECT count(*) FROM realtime.events WHERE topic = %s"
                     " AND type = 'comment.created' AND payload->'comment'->>'id' = %s",
                 world.topic, cid) == 1
    assert count(db, "SELECT count(*) FROM realtime.events WHERE topic = %s",
                 f"user:{world.participants[1]}") == 1


def test_idempotency_key_scope_and_reuse(world: World, db: str) -> None:
    owner = {"Authorization": f"Bearer {factories.token(db, world.owner)}"}
    other = {"Authorization": f"Bearer {factories.token(db, world.participants[1])}"}
    with serve(create_app(ApiConfig(database_url=db))) as base:
        url = comments_url(base, world)
        first = httpx.post(url, headers={**owner, "Idempotency-Key": "k1"},
                           json={"content": "a"})
        assert first.status_code == 201
        # Same key, different request: refused, nothing created.
        r = httpx.post(url, headers={**owner, "Idempotency-Key": "k1"}, json={"content": "b"})
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
        assert "Idempotency-Key" in r.json()["error"]["message"]
        # Keys are per user: another user's k1 is another request.
        r = httpx.post(url, headers={**other, "Idempotency-Key": "k1"}, json={"content": "a"})
        assert r.status_code == 201
        assert r.json()["data"]["id"] != first.json()["data"]["id"]
        # The replay is the creation's response even after the comment was edited.
        cid = first.json()["data"]["id"]
        httpx.put(f"{url}/{cid}", headers=owner, json={"content": "edited"})
        again = httpx.post(url, headers={**owner, "Idempotency-Key": "k1"},
                           json={"content": "a"})
        assert again.content == first.content
        # A failed attempt does not burn the key.
        r = httpx.post(url, headers={**owner, "Idempotency-Key": "k2"},
                       json={"content": "c", "mentions": [str(uuid.uuid4())]})
        assert r.status_code == 422
        r = httpx.post(url, headers={**owner, "Idempotency-Key": "k2"}, json={"content": "c"})
        assert r.status_code == 201
        assert "idempotent-replayed" not in r.headers
        # Malformed keys are refused.
        for key in ["has space", "k" * 256]:
            r = httpx.post(url, headers={**owner, "Idempotency-Key": key},
                           json={"content": "x"})
            assert r.status_code == 422
    assert count(db, "SELECT count(*) FROM sport_session_comments") == 3


def test_old_keys_and_idle_buckets_are_pruned(world: World, db: str) -> None:
    config = ApiConfig(database_url=db, maintenance_interval=0.2, idempotency_ttl=3600)
    owner = {"Authorization": f"Bearer {factories.token(db, world.owner)}"}
    other = {"Authorization": f"Bearer {factories.token(db, world.participants[1])}"}
    with serve(create_app(config)) as base:
        url = comments_url(base, world)
        for key in ("old", "new"):
            assert httpx.post(url, headers={**owner, "Idempotency-Key": key},
                              json={"content": key}).status_code == 201
        typing = f"{base}/api/sessions/{world.session_id}/presence/typing"
        for who in (owner, other):
            assert httpx.post(typing, headers=who, json={"isTyping": True}).status_code == 200
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE api.idempotency_keys SET created_at = now() - interval '2 hours'"
                         " WHERE key = 'old'")
            conn.execute("UPDATE api.rate_limits SET updated_at = now() - interval '2 hours'")
            conn.execute("UPDATE api.typing SET stamp = now() - interval '2 hours'"
                         " WHERE user_id = %s", (world.owner,))
        deadline = time.monotonic() + 10
        while count(db, "SELECT count(*) FROM api.idempotency_keys") != 1:
            assert time.monotonic() < deadline, "old key never pruned"
            time.sleep(0.1)
        assert count(db, "SELECT count(*) FROM api.idempotency_keys WHERE key = 'new'") == 1
        assert count(db, "SELECT count(*) FROM api.rate_limits") == 0
        assert count(db, "SELECT count(*) FROM api.typing WHERE user_id = %s",
                     world.participants[1]) == 1  # the idle one alone went
        assert count(db, "SELECT count(*) FROM api.typing") == 1
        # A pruned key is a new key again.
        r = httpx.post(url, headers={**owner, "Idempotency-Key": "old"}, json={"content": "again"})
        assert r.status_code == 201
        assert "idempotent-replayed" not in r.headers


@pytest.mark.anyio
async def test_an_app_stopped_mid_prune_closes_quietly(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    """With a prune every millisecond, stopping the app at random moments lands in one
    again and again: it finishes first, and psycopg never has to give up cancelling it."""
    app = create_app(ApiConfig(database_url=db, maintenance_interval=0.001))
    rng = random.Random(11)
    with caplog.at_level(logging.WARNING):
        for _ in range(25):
            async with app.router.lifespan_context(app):
                await anyio.sleep(rng.uniform(0.005, 0.03))
    assert [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.name in ("psycopg", "courtside.api")] == []
