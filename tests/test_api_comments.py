"""Comments through real HTTP against a real uvicorn and a real database: the seed's
envelopes and errors, events byte-equal to responses, X-Socket-ID origins, keyset paging."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import orjson
import psycopg
import pytest
from psycopg.types.json import set_json_loads

from api.app import ApiConfig, create_app
from tests import factories
from tests.factories import World
from tests.servers import serve

TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


@pytest.fixture
def world(db: str) -> World:
    return factories.world(db, participants=3, outsiders=1)


@pytest.fixture
def base_url(db: str) -> Iterator[str]:
    with serve(create_app(ApiConfig(database_url=db, comments_per_minute=1000))) as url:
        yield url


def client(base_url: str, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=10,
                        headers={"Authorization": f"Bearer {token}", **headers})


def connect(db: str) -> psycopg.Connection[tuple[Any, ...]]:
    conn = psycopg.connect(db, autocommit=True)
    set_json_loads(orjson.loads, conn)  # as the API and the bridge parse jsonb
    return conn


def comments_url(w: World, comment_id: object | None = None) -> str:
    base = f"/api/sessions/{w.session_id}/comments"
    return base if comment_id is None else f"{base}/{comment_id}"


def events(db: str, topic: str) -> list[tuple[int, str, Any, str | None]]:
    with connect(db) as conn:
        rows = conn.execute("SELECT seq, type, payload, origin FROM realtime.events"
                            " WHERE topic = %s ORDER BY seq", (topic,)).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def assert_error(response: httpx.Response, status: int, code: str,
                 message: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert set(body) == {"success", "error"}
    assert set(body["error"]) == {"code", "message"}
    if message is not None:
        assert body["error"]["message"] == message


# The seed's happy paths

def test_create_list_update_delete_as_in_the_seed(world: World, db: str, base_url: str) -> None:
    w = world
    author, mentioned = w.participants[0], w.participants[1]
    with client(base_url, factories.token(db, author)) as c:
        r = c.post(comments_url(w), json={"content": "Super session !",
                                          "mentions": [str(mentioned)]})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["success"] is True
        assert body["message"] == "Commentaire créé avec succès"
        data = body["data"]
        assert data["content"] == "Super session !"
        assert data["user"] == {"id": str(author), "firstname": "Olive", "lastname": "Owner",
                                "avatar": None}
        assert data["mentions"] == [{"id": str(mentioned), "firstname": "Player0",
                                     "lastname": "Participant"}]
        for key in ("created_at", "updated_at"):
            assert re.match(TIMESTAMP, data[key]), data[key]
        cid = data["id"]

        r = c.get(comments_url(w), params={"page": 1, "limit": 20})
        assert r.status_code == 200
        listing = r.json()
        assert listing["success"] is True
        assert listing["data"] == [data]
        assert listing["pagination"] == {"page": 1, "limit": 20, "total": 1, "totalPages": 1,
                                         "nextCursor": None}

        r = c.put(comments_url(w, cid), json={"content": "Commentaire modifié",
                                              "mentions": [str(w.participants[2])]})
        assert r.status_code == 200, r.text
        assert r.json()["message"] == "Commentaire modifié avec succès"
        edited = r.json()["data"]
        assert edited["content"] == "Commentaire modifié"
        assert [m["id"] for m in edited["mentions"]] == [str(w.participants[2])]
        assert edited["created_at"] == data["created_at"]
        assert edited["updated_at"] > data["updated_at"]

        # Mentions left out of an edit stay as they are.
        r = c.put(comments_url(w, cid), json={"content": "Encore"})
        assert r.json()["data"]["mentions"] == edited["mentions"]

        r = c.delete(comments_url(w, cid))
        assert r.status_code == 200
        assert r.json() == {"success": True, "message": "Commentaire supprimé avec succès"}
        assert c.get(comments_url(w)).json()["data"] == []

    with connect(db) as conn:
        row = conn.execute("SELECT content, deleted_at IS NOT NULL FROM sport_session_comments"
                           " WHERE id = %s", (cid,)).fetchone()
    assert row == ("Encore", True)  # soft delete: the row stays
    assert [e[1] for e in events(db, w.topic)] == [
        "comment.created", "comment.updated", "comment.updated", "comment.deleted"]


def test_content_is_stored_trimmed_and_verbatim(world: World, db: str, base_url: str) -> None:
    with client(base_url, factories.token(db, world.owner)) as c:
        for raw, stored in [("  <script>alert('x')</script>\n", "<script>alert('x')</script>"),
                            ("  " + "é" * 1000 + " ", "é" * 1000),
                            ("ligne 1\nligne 2", "ligne 1\nligne 2"),
                            ("😀", "😀")]:
            r = c.post(comments_url(world), json={"content": raw})
            assert r.status_code == 201, r.text
            assert r.json()["data"]["content"] == stored
            with connect(db) as conn:
                row = conn.execute("SELECT content FROM sport_session_comments WHERE id = %s",
                                   (r.json()["data"]["id"],)).fetchone()
            assert row == (stored,)


def test_duplicate_mentions_are_one(world: World, db: str, base_url: str) -> None:
    p = str(world.participants[1])
    with client(base_url, factories.token(db, world.owner)) as c:
        r = c.post(comments_url(world), json={"content": "hey", "mentions": [p, p.upper(), p]})
    assert r.status_code == 201, r.text
    assert [m["id"] for m in r.json()["data"]["mentions"]] == [p]


def test_english_messages(world: World, db: str, base_url: str) -> None:
    with client(base_url, factories.token(db, world.owner), **{"Accept-Language": "en"}) as c:
        r = c.post(comments_url(world), json={"content": "Great"})
        assert r.json()["message"] == "Comment created successfully"
        assert_error(c.post(comments_url(world), json={"content": ""}), 422, "VALIDATION_ERROR",
                     "The comment content is required and must contain between 1 and 1000"
                     " characters")
        assert_error(c.get(comments_url(world, uuid.uuid4())), 405, "METHOD_NOT_ALLOWED",
                     "Method not allowed")


# Every error code of the seed

def test_comment_not_found(world: World, db: str, base_url: str) -> None:
    other = factories.world(db)
    with client(base_url, factories.token(db, world.owner)) as c:
        assert_error(c.put(comments_url(world, uuid.uuid4()), json={"content": "x"}), 404,
                     "COMMENT_NOT_FOUND", "Commentaire non trouvé")
        assert_error(c.delete(comments_url(world, uuid.uuid4())), 404, "COMMENT_NOT_FOUND")
        cid = c.post(comments_url(world), json={"content": "soon gone"}).json()["data"]["id"]
        assert c.delete(comments_url(world, cid)).status_code == 200
        # Deleted: gone for edits and deletes alike.
        assert_error(c.put(comments_url(world, cid), json={"content": "x"}), 404,
                     "COMMENT_NOT_FOUND")
        assert_error(c.delete(comments_url(world, cid)), 404, "COMMENT_NOT_FOUND")
    # A comment of another session is not found through this one.
    with client(base_url, factories.token(db, other.owner)) as c:
        foreign = c.post(comments_url(other), json={"content": "x"}).json()["data"]["id"]
    with psycopg.connect(db, autocommit=True) as conn:
        factories.join(conn, other.session_id, world.owner)
    with client(base_url, factories.token(db, world.owner)) as c:
        assert_error(c.delete(comments_url(world, foreign)), 404, "COMMENT_NOT_FOUND")


def test_forbidden_to_edit_or_delete_someone_elses_comment(world: World, db: str,
                                                           base_url: str) -> None:
    with client(base_url, factories.token(db, world.participants[0])) as c:
        cid = c.post(comments_url(world), json={"content": "mine"}).json()["data"]["id"]
    with client(base_url, factories.token(db, world.participants[1])) as c:
        assert_error(c.put(comments_url(world, cid), json={"content": "yours?"}), 403,
                     "FORBIDDEN", "Vous n'êtes pas autorisé à modifier ce commentaire")
        assert_error(c.delete(comments_url(world, cid)), 403, "FORBIDDEN",
                     "Vous n'êtes pas autorisé à supprimer ce commentaire")
    with connect(db) as conn:
        row = conn.execute("SELECT content, deleted_at FROM sport_session_comments"
                           " WHERE id = %s", (cid,)).fetchone()
    assert row == ("mine", None)


def test_session_not_found(world: World, db: str, base_url: str) -> None:
    token = factories.token(db, world.owner)
    ghost = World(uuid.uuid4(), world.owner, world.participants)
    with client(base_url, token) as c:
        assert_error(c.get(comments_url(ghost)), 404, "SESSION_NOT_FOUND", "Session non trouvée")
        assert_error(c.post(comments_url(ghost), json={"content": "x"}), 404,
                     "SESSION_NOT_FOUND")
        assert_error(c.put(comments_url(ghost, uuid.uuid4()), json={"content": "x"}), 404,
                     "SESSION_NOT_FOUND")
        assert_error(c.delete(comments_url(ghost, uuid.uuid4())), 404, "SESSION_NOT_FOUND")
        # A soft-deleted session is gone too.
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE sport_sessions SET deleted_at = now() WHERE id = %s",
                         (world.session_id,))
        assert_error(c.get(comments_url(world)), 404, "SESSION_NOT_FOUND")


def test_not_participant(world: World, db: str, base_url: str) -> None:
    with client(base_url, factories.token(db, world.owner)) as c:
        cid = c.post(comments_url(world), json={"content": "x"}).json()["data"]["id"]
    with client(base_url, factories.token(db, world.outsiders[0])) as c:
        for r in [c.get(comments_url(world)), c.post(comments_url(world), json={"content": "x"}),
                  c.put(comments_url(world, cid), json={"content": "x"}),
                  c.delete(comments_url(world, cid))]:
            assert_error(r, 403, "NOT_PARTICIPANT",
                         "Vous devez être participant de cette session")


BAD_BODIES: list[tuple[object, str]] = [
    ({}, "Le contenu du commentaire est requis"),
    ({"content": ""}, "entre 1 et 1000 caractères"),
    ({"content": "   \n "}, "entre 1 et 1000 caractères"),
    ({"content": "x" * 1001}, "entre 1 et 1000 caractères"),
    ({"content": 42}, "entre 1 et 1000 caractères"),
    ({"content": None}, "entre 1 et 1000 caractères"),
    ({"content": "nul\u0000byte"}, "caractères de contrôle"),
    ({"content": "bell\u0007"}, "caractères de contrôle"),
    ({"content": "ok", "mentions": ["not-a-uuid"]}, "mentions[0] doit être un UUID valide"),
    ({"content": "ok", "mentions": [1]}, "mentions[0] doit être de type chaîne"),
    ({"content": "ok", "mentions": "x"}, "mentions doit être de type tableau"),
    ({"content": "ok", "user_id": "x"}, "Le champ user_id n'est pas autorisé"),
]


def test_validation_errors_on_create(world: World, db: str, base_url: str) -> None:
    with client(base_url, factories.token(db, world.owner)) as c:
        for body, fragment in BAD_BODIES:
            r = c.post(comments_url(world), json=body)
            assert_error(r, 422, "VALIDATION_ERROR")
            assert fragment in r.json()["error"]["message"], (body, r.text)
    assert events(db, world.topic) == []


def test_validation_errors_on_raw_bodies_and_paths(world: World, db: str, base_url: str) -> None:
    with client(base_url, factories.token(db, world.owner)) as c:
        url = comments_url(world)
        json_type = {"Content-Type": "application/json"}
        for raw in [b"{", b"[]", b'"x"', b"null", b'{"content": "\\ud800"}', b"\xff\xfe",
                    b'{"content": "a"} trailing']:
            assert_error(c.post(url, content=raw, headers=json_type), 422, "VALIDATION_ERROR")
        assert_error(c.post(url, content=b'{"content": "x"}',
                            headers={"Content-Type": "text/plain"}), 415, "VALIDATION_ERROR")
        assert_error(c.post(url, content=b"x" * 70_000, headers=json_type), 413,
                     "VALIDATION_ERROR")
        assert_error(c.get("/api/sessions/not-a-uuid/comments"), 422, "VALIDATION_ERROR",
                     "L'identifiant sessionId doit être un UUID valide")
        assert_error(c.put(comments_url(world, "123"), json={"content": "x"}), 422,
                     "VALIDATION_ERROR", "L'identifiant commentId doit être un UUID valide")
        assert_error(c.get(url, params={"limit": 0}), 422, "VALIDATION_ERROR")
        assert_error(c.get(url, params={"before": "garbage"}), 422, "VALIDATION_ERROR",
                     "Le paramètre before n'est pas un curseur valide")
        # A body without Content-Type is taken as JSON.
        r = c.post(url, content=b'{"content": "sans en-tete"}')
        assert r.status_code == 201, r.text


def test_mentions_must_be_participants(world: World, db: str, base_url: str) -> None:
    outsider = world.outsiders[0]
    with client(base_url, factories.token(db, world.owner)) as c:
        r = c.post(comments_url(world), json={"content": "hey",
                                              "mentions": [str(world.participants[1]),
                                                           str(outsider)]})
        assert_error(r, 422, "VALIDATION_ERROR")
        assert str(outsider) in r.json()["error"]["message"]
        assert str(world.participants[1]) not in r.json()["error"]["message"]
        cid = c.post(comments_url(world), json={"content": "hey"}).json()["data"]["id"]
        assert_error(c.put(comments_url(world, cid), json={"content": "x",
                                                           "mentions": [str(uuid.uuid4())]}),
                     422, "VALIDATION_ERROR")
    with connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM sport_session_comments").fetchone()
    assert rows == (1,)  # the refused creation left nothing behind


def test_an_invalid_body_is_refused_after_the_sessions_own_refusals(world: World, db: str,
                                                                     base_url: str) -> None:
    """The write functions check access before anything; a body that never reaches them
    is still refused for access first (api/comments.py _parse_body)."""
    with client(base_url, factories.token(db, world.owner)) as c:
        cid = c.post(comments_url(world), json={"content": "x"}).json()["data"]["id"]
    ghost = World(uuid.uuid4(), world.owner, world.participants)
    with client(base_url, factories.token(db, world.outsiders[0])) as c:
        assert_error(c.post(comments_url(world), json={}), 403, "NOT_PARTICIPANT")
        assert_error(c.put(comments_url(world, cid), json={"content": ""}), 403,
                     "NOT_PARTICIPANT")
        assert_error(c.post(comments_url(ghost), json={}), 404, "SESSION_NOT_FOUND")
    with client(base_url, factories.token(db, world.owner)) as c:
        assert_error(c.put(comments_url(world, cid), json={"content": ""}), 422,
                     "VALIDATION_ERROR")
        assert_error(c.put(comments_url(ghost, cid), json={"content": ""}), 404,
                     "SESSION_NOT_FOUND")


def test_a_refused_edit_changes_nothing(world: World, db: str, base_url: str) -> None:
    """Checks come before writes: an edit naming a stranger leaves content, mentions and
    events as they were, though it asked to drop a mention too."""
    kept, dropped = world.participants[1], world.participants[2]
    with client(base_url, factories.token(db, world.owner)) as c:
        created = c.post(comments_url(world), json={
            "content": "avant", "mentions": [str(kept), str(dropped)]}).json()["data"]
        r = c.put(comments_url(world, created["id"]), json={
            "content": "après", "mentions": [str(kept), str(world.outsiders[0])]})
        assert_error(r, 422, "VALIDATION_ERROR")
        assert str(world.outsiders[0]) in r.json()["error"]["message"]
        assert c.get(comments_url(world)).json()["data"] == [created]
    assert [e[1] for e in events(db, world.topic)] == ["comment.created"]


@pytest.mark.anyio
async def test_concurrent_edits_each_answer_the_event_they_caused(world: World, db: str,
                                                                   base_url: str) -> None:
    """Edits of one comment at once, each with its own content and mentions: every edit's
    response is byte for byte one event's comment, one event each, and the last event is
    the comment as it stands. (Without the comment's lock taken first, edits deadlock on
    or interleave each other's mention rows: 3 runs in 5 failed with 4 rounds.)"""
    people = [str(p) for p in world.participants]
    token = factories.token(db, world.owner)
    headers = {"Authorization": f"Bearer {token}"}
    rounds, edits = 6, 12
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=headers) as c:
        for n in range(rounds):
            created = await c.post(comments_url(world), json={"content": f"round {n}"})
            cid = created.json()["data"]["id"]
            responses: list[httpx.Response] = []

            async def edit(i: int, cid: str = cid, n: int = n,
                           responses: list[httpx.Response] = responses) -> None:
                mentions = [people[j] for j in range(len(people)) if (i >> j) & 1]
                responses.append(await c.put(comments_url(world, cid), json={
                    "content": f"round {n} v{i + 1}", "mentions": mentions}))

            async with anyio.create_task_group() as tg:
                for i in range(edits):
                    tg.start_soon(edit, i)
            assert [r.status_code for r in responses] == [200] * edits
            logged = [e for e in events(db, world.topic) if e[2]["comment"]["id"] == cid]
            assert [e[1] for e in logged] == ["comment.created"] + ["comment.updated"] * edits
            answered = sorted(orjson.dumps(r.json()["data"]) for r in responses)
            assert answered == sorted(orjson.dumps(e[2]["comment"]) for e in logged[1:])
            listing = (await c.get(comments_url(world))).json()["data"]
            assert listing[0] == logged[-1][2]["comment"]


# The same bytes in the API and in the events

def test_rest_data_is_byte_equal_to_event_data_comment(world: World, db: str,
                                                        base_url: str) -> None:
    mentioned = world.participants[1]
    with connect(db) as listener:
        listener.execute("LISTEN courtside")
        with client(base_url, factories.token(db, world.owner)) as c:
            created = c.post(comments_url(world), json={"content": "Super session ! é 😀",
                                                        "mentions": [str(mentioned)]})
            assert created.status_code == 201
            cid = created.json()["data"]["id"]
            updated = c.put(comments_url(world, cid), json={
                "content": "modifié", "mentions": [str(world.participants[2]), str(mentioned)]})
            assert updated.status_code == 200
        notified = [orjson.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=4)]

    logged = events(db, world.topic)
    assert [e[1] for e in logged] == ["comment.created", "comment.updated"]
    for response, event in [(created, logged[0]), (updated, logged[1])]:
        event_bytes = orjson.dumps(event[2]["comment"])
        # The response body holds exactly these bytes as its data.
        assert b'"data":' + event_bytes + b',"message":' in response.content
        assert orjson.dumps(response.json()["data"]) == event_bytes
    # The NOTIFY carrying each event holds the same comment.
    durable = [n for n in notified if n["k"] == "e" and n["t"] == world.topic]
    assert [orjson.dumps(n["d"]["comment"]) for n in durable] == [
        orjson.dumps(e[2]["comment"]) for e in logged]
    # And the mentioned user's own topic carries it too.
    mention_events = events(db, f"user:{mentioned}")
    assert [e[1] for e in mention_events] == ["mention.created"]
    assert b'"data":' + orjson.dumps(mention_events[0][2]["comment"]) in created.content


def test_a_plain_creation_answers_the_event_bytes(world: World, db: str,
                                                 base_url: str) -> None:
    """No mentions: the same bytes as the event, the author rendered, no mentions."""
    with client(base_url, factories.token(db, world.participants[0])) as c:
        created = c.post(comments_url(world), json={"content": "  Qui amène le ballon ?  "})
    assert created.status_code == 201
    (event,) = events(db, world.topic)
    assert event[1] == "comment.created"
    assert b'"data":' + orjson.dumps(event[2]["comment"]) + b',"message":' in created.content
    data = created.json()["data"]
    assert data["content"] == "Qui amène le ballon ?"
    assert data["mentions"] == []
    assert data["user"]["id"] == str(world.participants[0])


def test_listing_items_are_the_event_bytes_too(world: World, db: str, base_url: str) -> None:
    with client(base_url, factories.token(db, world.owner)) as c:
        c.post(comments_url(world), json={"content": "one"})
        c.post(comments_url(world), json={"content": "two", "mentions": [
            str(world.participants[1])]})
        listing = c.get(comments_url(world)).content
    logged = [orjson.dumps(e[2]["comment"]) for e in events(db, world.topic)]
    assert b'"data":[' + logged[1] + b"," + logged[0] + b'],"pagination"' in listing


# X-Socket-ID: the origin of the events, for sender exclusion

def test_socket_id_is_recorded_as_the_event_origin(world: World, db: str, base_url: str) -> None:
    with client(base_url, factories.token(db, world.owner)) as c:
        sid = {"X-Socket-ID": "1234.5678"}
        cid = c.post(comments_url(world), json={"content": "a"}, headers=sid).json()["data"]["id"]
        c.put(comments_url(world, cid), json={"content": "b"}, headers={"X-Socket-ID": "9.9"})
        c.delete(comments_url(world, cid), headers=sid)
        c.post(comments_url(world), json={"content": "no socket"})
        assert_error(c.post(comments_url(world), json={"content": "x"},
                            headers={"X-Socket-ID": "x" * 129}), 422, "VALIDATION_ERROR")
        assert_error(c.post(comments_url(world), json={"content": "x"},
                            headers={"X-Socket-ID": "has space"}), 422, "VALIDATION_ERROR")
    assert [(e[1], e[3]) for e in events(db, world.topic)] == [
        ("comment.created", "1234.5678"), ("comment.updated", "9.9"),
        ("comment.deleted", "1234.5678"), ("comment.created", None)]
    # The origin is transaction-local: a pooled connection does not carry it over.
    with connect(db) as conn:
        conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                     " VALUES (%s, %s, 'sql')", (world.session_id, world.owner))
    assert events(db, world.topic)[-1][3] is None


# Pagination

def _insert(db: str, w: World, n: int, prefix: str, one_transaction: bool = False) -> None:
    with connect(db) as conn:
        if one_transaction:
            with conn.transaction():
                for i in range(n):
                    conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id,"
                                 " content) VALUES (%s, %s, %s)",
                                 (w.session_id, w.owner, f"{prefix}{i}"))
        else:
            for i in range(n):
                conn.execute("INSERT INTO sport_session_comments (sport_session_id, user_id,"
                             " content) VALUES (%s, %s, %s)",
                             (w.session_id, w.owner, f"{prefix}{i}"))


def test_page_and_limit_as_in_the_seed(world: World, db: str, base_url: str) -> None:
    _insert(db, world, 45, "c")
    with client(base_url, factories.token(db, world.owner)) as c:
        pages = [c.get(comments_url(world), params={"page": p, "limit": 20}).json()
                 for p in (1, 2, 3, 4)]
        default = c.get(comments_url(world)).json()
    assert [len(p["data"]) for p in pages] == [20, 20, 5, 0]
    assert all(p["pagination"]["total"] == 45 and p["pagination"]["totalPages"] == 3
               for p in pages)
    seen = [item["content"] for p in pages for item in p["data"]]
    assert seen == [f"c{i}" for i in reversed(range(45))]  # newest first
    assert default["pagination"]["limit"] == 20
    assert default["pagination"]["page"] == 1


def test_keyset_pagination_stays_correct_while_comments_arrive(world: World, db: str,
                                                               base_url: str) -> None:
    # Ties on created_at (one transaction) are ordered by id, and the cursor respects that.
    _insert(db, world, 6, "old", one_transaction=True)
    _insert(db, world, 6, "mid")
    with connect(db) as conn:
        original = [r[0] for r in conn.execute(
            "SELECT content FROM sport_session_comments ORDER BY created_at DESC, id DESC")]
    with client(base_url, factories.token(db, world.owner)) as c:
        first = c.get(comments_url(world), params={"limit": 5}).json()
        seen = [i["content"] for i in first["data"]]
        cursor = first["pagination"]["nextCursor"]
        # What offsets get wrong: new comments shift page 2 onto page 1's items.
        _insert(db, world, 3, "new")
        shifted = c.get(comments_url(world), params={"limit": 5, "page": 2}).json()
        assert {i["content"] for i in shifted["data"]} & set(seen)
        # The last comment shown goes away: the cursor is a position, not a row.
        with connect(db) as conn:
            conn.execute("UPDATE sport_session_comments SET deleted_at = now() WHERE id = %s",
                         (first["data"][-1]["id"],))
        pages = 1
        while cursor is not None:
            page = c.get(comments_url(world), params={"limit": 5, "before": cursor}).json()
            assert page["success"] is True
            seen += [i["content"] for i in page["data"]]
            cursor = page["pagination"]["nextCursor"]
            _insert(db, world, 2, f"newer{pages}")
            pages += 1
    assert seen == original
    assert pages == 3


def test_next_cursor_is_null_on_the_last_page(world: World, db: str, base_url: str) -> None:
    _insert(db, world, 4, "c")
    with client(base_url, factories.token(db, world.owner)) as c:
        full = c.get(comments_url(world), params={"limit": 4}).json()
        assert full["pagination"]["nextCursor"] is None
        partial = c.get(comments_url(world), params={"limit": 3}).json()
        after = c.get(comments_url(world), params={
            "limit": 3, "before": partial["pagination"]["nextCursor"]}).json()
        assert [i["content"] for i in after["data"]] == ["c0"]
        assert after["pagination"]["nextCursor"] is None
        assert after["pagination"]["total"] == 4
