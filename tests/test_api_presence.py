"""Presence through REST: join with a TTL renewed by another join, leave, typing that expires,
the users list in the seed's shape, and the online/offline/typing notifications."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from api.app import ApiConfig, create_app
from tests import factories
from tests.factories import World
from tests.servers import serve

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


@pytest.fixture
def world(db: str) -> World:
    return factories.world(db, participants=3, outsiders=1)


@pytest.fixture
def base_url(db: str) -> Iterator[str]:
    config = ApiConfig(database_url=db, presence_ttl=60, typing_ttl=1.0)
    with serve(create_app(config)) as url:
        yield url


def client(base_url: str, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=10,
                        headers={"Authorization": f"Bearer {token}", **headers})


def url(w: World, action: str) -> str:
    return f"/api/sessions/{w.session_id}/presence/{action}"


def ephemeral(conn: psycopg.Connection[Any], n: int) -> list[dict[str, Any]]:
    out = []
    for note in conn.notifies(timeout=5, stop_after=n):
        msg = orjson.loads(note.payload)
        if msg["k"] == "x":
            out.append(msg)
    return out


def test_join_users_typing_leave_as_in_the_seed(world: World, db: str, base_url: str) -> None:
    owner, other = world.participants[0], world.participants[1]
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN courtside")
        with client(base_url, factories.token(db, owner)) as c:
            r = c.post(url(world, "join"))
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["success"] is True
            assert body["message"] == "Utilisateur connecté à la session"
            assert body["data"]["sessionId"] == str(world.session_id)
            assert body["data"]["userId"] == str(owner)
            assert TIMESTAMP.match(body["data"]["joinedAt"])
            joined_at = body["data"]["joinedAt"]

            # Joining again renews, it does not announce the user twice.
            assert c.post(url(world, "join")).json()["data"]["joinedAt"] == joined_at

            r = c.post(url(world, "typing"), json={"isTyping": True},
                       headers={"X-Socket-ID": "42.1"})
            assert r.status_code == 200, r.text
            typing = r.json()
            assert set(typing) == {"success", "data"}
            assert typing["data"]["isTyping"] is True
            assert typing["data"]["userId"] == str(owner)
            assert TIMESTAMP.match(typing["data"]["timestamp"])

            r = c.get(url(world, "users"))
            assert r.status_code == 200
            users = r.json()
            assert users["success"] is True
            assert users["total"] == 1
            assert users["data"] == [{"id": str(owner), "firstname": "Olive",
                                      "lastname": "Owner", "avatar": None, "isTyping": True,
                                      "lastSeen": typing["data"]["timestamp"]}]

            r = c.post(url(world, "leave"))
            assert r.status_code == 200
            assert r.json()["message"] == "Utilisateur déconnecté de la session"
            assert TIMESTAMP.match(r.json()["data"]["leftAt"])
            assert r.json()["data"]["userId"] == str(owner)
        with client(base_url, factories.token(db, other)) as c:
            assert c.get(url(world, "users")).json() == {"success": True, "data": [],
                                                         "total": 0}
        notes = ephemeral(listener, 3)
    assert [(n["e"], n["o"]) for n in notes] == [
        ("user.online", None), ("user.typing", "42.1"), ("user.offline", None)]
    assert notes[0]["d"]["joinedAt"] == joined_at
    assert notes[0]["t"] == world.topic


def test_typing_expires_by_itself(world: World, db: str, base_url: str) -> None:
    with client(base_url, factories.token(db, world.owner)) as c:
        c.post(url(world, "join"))
        c.post(url(world, "typing"), json={"isTyping": True})
        assert c.get(url(world, "users")).json()["data"][0]["isTyping"] is True
        deadline = time.monotonic() + 10
        while c.get(url(world, "users")).json()["data"][0]["isTyping"]:
            assert time.monotonic() < deadline, "typing never expired"
            time.sleep(0.2)
        c.post(url(world, "typing"), json={"isTyping": True})
        c.post(url(world, "typing"), json={"isTyping": False})
        assert c.get(url(world, "users")).json()["data"][0]["isTyping"] is False


def test_rest_presence_lasts_its_ttl_and_a_join_renews_it(world: World, db: str) -> None:
    with serve(create_app(ApiConfig(database_url=db, presence_ttl=1.5))) as base, \
            client(base, factories.token(db, world.owner)) as c:
        first = c.post(url(world, "join")).json()["data"]["joinedAt"]
        time.sleep(0.9)
        # renewed: alive until 1.5 s from now, and still the same stay
        assert c.post(url(world, "join")).json()["data"]["joinedAt"] == first
        time.sleep(0.9)
        assert c.get(url(world, "users")).json()["total"] == 1
        deadline = time.monotonic() + 10
        while c.get(url(world, "users")).json()["total"] != 0:
            assert time.monotonic() < deadline, "REST presence never expired"
            time.sleep(0.2)
        # coming back after expiry is a new stay, not the old one revived
        again = c.post(url(world, "join")).json()["data"]["joinedAt"]
        assert again > first


def test_each_token_is_one_presence(world: World, db: str, base_url: str) -> None:
    owner = world.owner
    phone, laptop = factories.token(db, owner), factories.token(db, owner)
    friend = factories.token(db, world.participants[1])
    with client(base_url, phone) as a, client(base_url, laptop) as b, \
            client(base_url, friend) as f:
        a.post(url(world, "join"))
        b.post(url(world, "join"))
        f.post(url(world, "join"))
        listing = a.get(url(world, "users")).json()
        assert listing["total"] == 2  # users, not connections
        assert [u["id"] for u in listing["data"]] == [str(owner), str(world.participants[1])]
        a.post(url(world, "leave"))
        assert a.get(url(world, "users")).json()["total"] == 2  # the laptop is still there
        b.post(url(world, "leave"))
        assert [u["id"] for u in a.get(url(world, "users")).json()["data"]] == [
            str(world.participants[1])]


def test_presence_errors(world: World, db: str, base_url: str) -> None:
    ghost = World(uuid.uuid4(), world.owner, world.participants)
    with client(base_url, factories.token(db, world.owner)) as c:
        for action in ("join", "leave", "users"):
            method = c.get if action == "users" else c.post
            r = method(url(ghost, action))
            assert r.status_code == 404
            assert r.json()["error"] == {"code": "SESSION_NOT_FOUND",
                                         "message": "Session non trouvée"}
        r = c.post(url(ghost, "typing"), json={"isTyping": True})
        assert r.json()["error"]["code"] == "SESSION_NOT_FOUND"
        for body in [{}, {"isTyping": "yes"}, {"isTyping": True, "x": 1}]:
            r = c.post(url(world, "typing"), json=body)
            assert r.status_code == 422
            assert r.json()["error"]["code"] == "VALIDATION_ERROR"
        r = c.post("/api/sessions/nope/presence/join")
        assert (r.status_code, r.json()["error"]["code"]) == (422, "VALIDATION_ERROR")
    with client(base_url, factories.token(db, world.outsiders[0])) as c:
        for r in [c.post(url(world, "join")), c.post(url(world, "leave")),
                  c.post(url(world, "typing"), json={"isTyping": True}),
                  c.get(url(world, "users"))]:
            assert r.status_code == 403
            assert r.json()["error"] == {"code": "NOT_PARTICIPANT",
                                         "message": "Vous devez être participant de cette session"}
        # Refused for access before its body is looked at.
        r = c.post(url(world, "typing"), json={"isTyping": "yes"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "NOT_PARTICIPANT")
    # The refused join and typing wrote nothing (their statement checks access first).
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM realtime.presence WHERE user_id = %s",
                           (world.outsiders[0],)).fetchone()
        assert row == (0,)
        row = conn.execute("SELECT count(*) FROM api.typing WHERE user_id = %s",
                           (world.outsiders[0],)).fetchone()
        assert row == (0,)
    with httpx.Client(base_url=base_url) as anonymous:
        r = anonymous.post(url(world, "join"))
        assert (r.status_code, r.json()["error"]["code"]) == (401, "UNAUTHENTICATED")


def typing_notes(listener: psycopg.Connection[Any], db: str) -> list[tuple[str, bool]]:
    """(user, isTyping) of every user.typing notified so far, read up to a sentinel sent
    now (notifications arrive in commit order)."""
    with psycopg.connect(db, autocommit=True) as sender:
        sender.execute("SELECT pg_notify('courtside', '{\"k\": \"sentinel\"}')")
    seen: list[tuple[str, bool]] = []
    for note in listener.notifies(timeout=10):
        msg = orjson.loads(note.payload)
        if msg["k"] == "sentinel":
            return seen
        if msg["k"] == "x" and msg["e"] == "user.typing":
            seen.append((msg["d"]["userId"], msg["d"]["isTyping"]))
    raise AssertionError("the sentinel never came")


def test_typing_is_coalesced_and_metered_over_every_server(world: World, db: str) -> None:
    """As the realtime transports do per connection (api/typing_state.py), per user and
    session over every server: a repeated `true` says nothing new, a `false` when not
    typing neither, and publications past the bucket get 429 and publish nothing."""
    owner, friend = world.participants[0], world.participants[1]
    # A bucket that refills too slowly to matter during the test; repeats always coalesce.
    config = ApiConfig(database_url=db, typing_ttl=60, typing_refresh=60,
                       typing_per_second=0.1, typing_burst=2)
    with psycopg.connect(db, autocommit=True) as listener, \
            serve(create_app(config)) as a_url, serve(create_app(config)) as b_url, \
            client(a_url, factories.token(db, owner), **{"Accept-Language": "en"}) as a, \
            client(b_url, factories.token(db, owner), **{"Accept-Language": "en"}) as b, \
            client(a_url, factories.token(db, friend)) as f:
        listener.execute("LISTEN courtside")
        a.post(url(world, "join"))
        said = [(c, typing, c.post(url(world, "typing"), json={"isTyping": typing}))
                for c, typing in [(a, True), (b, True), (a, True), (b, False), (a, False)]]
        for _, typing, r in said:
            assert r.status_code == 200, r.text
            assert r.json()["data"]["isTyping"] is typing
            assert TIMESTAMP.match(r.json()["data"]["timestamp"])
        assert typing_notes(listener, db) == [(str(owner), True), (str(owner), False)]
        assert a.get(url(world, "users")).json()["data"][0]["isTyping"] is False
        # Two publications spent the bucket: the third is refused, on either server.
        for c in (b, a):
            r = c.post(url(world, "typing"), json={"isTyping": True})
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "RATE_LIMITED"
            assert r.json()["error"]["message"].startswith("Too many typing updates")
            assert 1 <= int(r.headers["retry-after"]) <= 10
        assert a.get(url(world, "users")).json()["data"][0]["isTyping"] is False
        # Another user has a bucket of their own.
        assert f.post(url(world, "typing"), json={"isTyping": True}).status_code == 200
        assert typing_notes(listener, db) == [(str(friend), True)]
