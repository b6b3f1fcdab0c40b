"""The Pusher protocol against a real server: a real WebSocket client speaking Pusher v7,
/broadcasting/auth over HTTP, events written with plain SQL."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.pusher_protocol import PusherConfig, auth_for, channel_data_for, request_signature
from tests import factories
from tests.pg import Server
from tests.test_pusher_support import (
    PUSHER,
    PusherClient,
    app_url,
    authorized,
    broadcasting_auth,
    build_pusher_app,
    pusher_client,
)
from tests.test_realtime_support import running, sql, sql_comment


@pytest.fixture(scope="module")
def shared_db(pg_server: Server, template_db: str) -> Iterator[str]:
    """One database and one server for the module: every test makes its own users and
    sessions, so they do not see each other (and the module stays fast)."""
    name = pg_server.create_database(template=template_db)
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def server(shared_db: str) -> Iterator[str]:
    with running(build_pusher_app(shared_db)) as base:
        yield base


@pytest.fixture
def db(shared_db: str) -> str:
    return shared_db


def data(frame: dict[str, Any]) -> Any:
    assert isinstance(frame["data"], str), frame  # Pusher carries data as a JSON string
    return orjson.loads(frame["data"])


async def closed(client: PusherClient, wait: float = 5.0) -> tuple[int, list[dict[str, Any]]]:
    """Read until the server closes; (close code, frames read before)."""
    frames: list[dict[str, Any]] = []

    async def read_all() -> None:
        while True:
            frames.append(orjson.loads(await client.conn.recv()))

    with anyio.fail_after(wait), pytest.raises(ConnectionClosed) as info:
        await read_all()
    assert info.value.rcvd is not None, "no close frame"
    return info.value.rcvd.code, frames


@pytest.mark.anyio
async def test_private_channel_delivers_sql_comments(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    token = factories.token(db, world.participants[1])
    channel = f"private-sport-session.{world.session_id}"
    async with pusher_client(server) as client:
        ok = await authorized(server, token, client, channel)
        assert ok == {"event": "pusher_internal:subscription_succeeded", "channel": channel,
                      "data": "{}"}
        comment_id = sql_comment(db, world.session_id, world.owner, "écrit en SQL")
        frame = await client.event(channel, "comment.created")
        comment = data(frame)["comment"]
        assert (comment["id"], comment["content"]) == (comment_id, "écrit en SQL")
        sql(db, "UPDATE sport_session_comments SET content = 'modifié' WHERE id = %s",
            (comment_id,))
        assert data(await client.event(channel, "comment.updated"))["comment"]["content"] == \
            "modifié"
        await client.send("pusher:ping", {})
        assert (await client.expect(lambda f: f["event"] == "pusher:pong"))["data"] == "{}"
        await client.send("pusher:unsubscribe", {"channel": channel})
        await client.send("pusher:ping", {})
        await client.expect(lambda f: f["event"] == "pusher:pong")
        sql_comment(db, world.session_id, world.owner, "after unsubscribe")
        assert not [f for f in await client.quiet(0.5) if f.get("channel") == channel]


@pytest.mark.anyio
async def test_broadcasting_auth_refusals(db: str, server: str) -> None:
    world = factories.world(db, participants=2, outsiders=1)
    member = world.participants[1]
    token = factories.token(db, member)
    outsider = factories.token(db, world.outsiders[0])
    session_channel = f"private-sport-session.{world.session_id}"
    presence = f"presence-sport-session.{world.session_id}"
    socket = "123.456"
    for who, channel in [(None, presence), ("1|not-a-token", session_channel)]:
        r = await broadcasting_auth(server, who, socket, channel)
        assert r.status_code == 401, (who, channel, r.text)
        assert r.json()["error"]["code"] == "UNAUTHENTICATED"
    for who, channel in [(outsider, session_channel), (outsider, presence),
                         (token, f"private-user.{world.owner}"),
                         (token, f"sport-session.{world.session_id}"),
                         (token, f"private-sport-session.{uuid.uuid4()}"),
                         (token, "private-anything")]:
        r = await broadcasting_auth(server, who, socket, channel)
        assert r.status_code == 403, (who, channel, r.text)
        assert "auth" not in r.json()
    r = await broadcasting_auth(server, token, "not-a-socket", session_channel)
    assert r.status_code == 403
    r = await broadcasting_auth(server, token, socket, f"private-user.{member}",
                                json_body=True)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["auth"].startswith(f"{PUSHER.key}:")
    assert orjson.loads(answer["channel_data"]) == {"user_id": str(member),
                                                    "courtside_token": factories.token_id(token)}
    r = await broadcasting_auth(server, token, socket, presence)
    assert r.status_code == 200, r.text
    channel_data = orjson.loads(r.json()["channel_data"])
    assert channel_data["user_id"] == str(member)
    assert channel_data["user_info"] == {"id": str(member), "firstname": "Player0",
                                         "lastname": "Participant"}


@pytest.mark.anyio
async def test_bad_signatures_are_refused(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    token = factories.token(db, world.owner)
    channel = f"private-sport-session.{world.session_id}"
    async with pusher_client(server) as client, pusher_client(server) as other:
        good = (await broadcasting_auth(server, token, client.socket_id, channel)).json()
        forged = dict(good, auth=good["auth"][:-4] + ("0000" if not good["auth"].endswith(
            "0000") else "1111"))
        tampered = dict(good, channel_data=good["channel_data"].replace(
            str(factories.token_id(token)), str(factories.token_id(token) + 1)))
        for attempt in [forged, tampered, {"auth": good["auth"]}, {}]:
            error = await client.subscribe(channel, attempt)
            assert error["event"] == "pusher:error", error
            assert error["data"]["code"] == 4009
        # Signed for another socket.
        error = await other.subscribe(channel, good)
        assert error["event"] == "pusher:error"
        assert error["data"]["code"] == 4009
        sql_comment(db, world.session_id, world.owner, "nobody may see this")
        for c in (client, other):
            assert not [f for f in await c.quiet(0.3) if f["event"] == "comment.created"]


@pytest.mark.anyio
async def test_unknown_key_and_protocol_are_refused(server: str) -> None:
    for url, code in [(app_url(server, key="wrong"), 4001),
                      (app_url(server, query="client=js"), 4008),
                      (app_url(server, query="protocol=3"), 4007)]:
        async with connect(url, open_timeout=5, close_timeout=2) as conn:
            frame = orjson.loads(await conn.recv())
            assert frame["event"] == "pusher:error"
            assert frame["data"]["code"] == code
            with anyio.fail_after(5), pytest.raises(ConnectionClosed) as info:
                await conn.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == code


@pytest.mark.anyio
async def test_presence_members_and_typing(db: str, server: str) -> None:
    world = factories.world(db, participants=3)
    alice, bob = world.participants[1], world.participants[2]
    alice_token, bob_token = factories.token(db, alice), factories.token(db, bob)
    channel = f"presence-sport-session.{world.session_id}"
    async with pusher_client(server) as a:
        ok = await authorized(server, alice_token, a, channel)
        assert ok["event"] == "pusher_internal:subscription_succeeded", ok
        assert data(ok)["presence"]["ids"] == [str(alice)]
        async with pusher_client(server) as b:
            ok = await authorized(server, bob_token, b, channel)
            presence = data(ok)["presence"]
            assert presence["count"] == 2
            assert presence["ids"] == [str(alice), str(bob)]
            assert presence["hash"][str(alice)] == {"id": str(alice), "firstname": "Player0",
                                                    "lastname": "Participant"}
            added = data(await a.event(channel, "pusher_internal:member_added"))
            assert added == {"user_id": str(bob), "user_info": {
                "id": str(bob), "firstname": "Player1", "lastname": "Participant"}}
            # A whisper becomes courtside typing, seen by the others, not by the sender.
            await b.send("client-typing", {"isTyping": True}, channel)
            typing = data(await a.event(channel, "user.typing"))
            assert (typing["userId"], typing["isTyping"]) == (str(bob), True)
            assert data(await a.event(channel, "client-typing")) == typing  # Echo's whisper
            # Other client events are refused.
            await b.send("client-shout", {"x": 1}, channel)
            error = await b.expect(lambda f: f["event"] == "pusher:error")
            assert "rejected" in error["data"]["message"]
            assert not [f for f in await b.quiet(0.3)
                        if f["event"] in ("user.typing", "client-typing")]
        removed = data(await a.event(channel, "pusher_internal:member_removed"))
        assert removed == {"user_id": str(bob)}
        # Nobody is told about themselves.
        assert not [f for f in await a.quiet(0.3)
                    if f["event"].startswith("pusher_internal:member")]


@pytest.mark.anyio
async def test_public_channel_needs_no_auth_and_ends_when_private(db: str,
                                                                  server: str) -> None:
    public = factories.world(db, participants=1, visibility="public")
    private = factories.world(db, participants=1)
    async with pusher_client(server) as client:
        refused = await client.subscribe(f"sport-session.{private.session_id}")
        assert refused["event"] == "pusher:error"
        channel = f"sport-session.{public.session_id}"
        ok = await client.subscribe(channel)
        assert ok["event"] == "pusher_internal:subscription_succeeded"
        sql_comment(db, public.session_id, public.owner, "public")
        assert data(await client.event(channel, "comment.created"))["comment"]["content"] == \
            "public"
        sql(db, "UPDATE sport_sessions SET visibility = 'private' WHERE id = %s",
            (public.session_id,))
        error = await client.expect(lambda f: f["event"] == "pusher:error", wait=5)
        assert error["channel"] == channel
        sql_comment(db, public.session_id, public.owner, "now private")
        assert not [f for f in await client.quiet(0.5) if f["event"] == "comment.created"]


@pytest.mark.anyio
async def test_private_and_presence_channels_are_for_participants_only(db: str,
                                                                       server: str) -> None:
    """What the socket itself checks of a signed subscription (whoever signed it): a public
    session's public channel is anyone's, its private and presence channels its
    participants' only, and a deleted session's nobody's. Subscriptions asked at once share
    their session checks (api/session_access.py), each with its own verdict."""
    world = factories.world(db, participants=2, outsiders=1, visibility="public")
    gone = factories.world(db, participants=1)
    sql(db, "UPDATE sport_sessions SET deleted_at = now() WHERE id = %s", (gone.session_id,))
    private = f"private-sport-session.{world.session_id}"
    presence = f"presence-sport-session.{world.session_id}"
    public = f"sport-session.{world.session_id}"
    gone_private = f"private-sport-session.{gone.session_id}"
    people = {"member": (world.participants[1], (private, presence, public)),
              "outsider": (world.outsiders[0], (private, presence, public)),
              "gone": (gone.owner, (gone_private,))}
    async with pusher_client(server) as m, pusher_client(server) as o, \
            pusher_client(server) as g:
        clients = {"member": m, "outsider": o, "gone": g}
        for who, (user, channels) in people.items():  # every one asked before any answer
            client, token = clients[who], factories.token(db, user)
            for channel in channels:
                request: dict[str, Any] = {"channel": channel}
                if not channel.startswith("sport-session."):
                    data = channel_data_for(user, factories.token_id(token), None)
                    request.update(channel_data=data,
                                   auth=auth_for(PUSHER, client.socket_id, channel, data))
                await client.send("pusher:subscribe", request)
        verdicts = {}
        for who, (_, channels) in people.items():
            for channel in channels:
                frame = await clients[who].expect(_answer_to(channel))
                verdicts[(who, channel)] = (frame["event"], frame["data"]["message"].split(":")[0]
                                            if frame["event"] == "pusher:error" else None)
    ok = ("pusher_internal:subscription_succeeded", None)
    assert verdicts == {
        ("member", private): ok, ("member", presence): ok, ("member", public): ok,
        ("outsider", private): ("pusher:error", "NOT_PARTICIPANT"),
        ("outsider", presence): ("pusher:error", "NOT_PARTICIPANT"),
        ("outsider", public): ok,
        ("gone", gone_private): ("pusher:error", "SESSION_NOT_FOUND"),
    }


def _answer_to(channel: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("channel") == channel and f["event"] in (
        "pusher_internal:subscription_succeeded", "pusher:error")


@pytest.mark.anyio
async def test_revocation(db: str, server: str) -> None:
    world = factories.world(db, participants=3, visibility="public")
    bound, removed, handshake = world.participants
    bound_token = factories.token(db, bound)
    removed_token = factories.token(db, removed)
    handshake_token = factories.token(db, handshake)
    private = f"private-sport-session.{world.session_id}"
    public = f"sport-session.{world.session_id}"
    async with pusher_client(server) as a, pusher_client(server) as b, \
            pusher_client(server, handshake_token) as c:
        for client, token in [(a, bound_token), (b, removed_token), (c, handshake_token)]:
            ok = await authorized(server, token, client, private)
            assert ok["event"] == "pusher_internal:subscription_succeeded", ok
        assert (await a.subscribe(public))["event"] == "pusher_internal:subscription_succeeded"
        # Deleting the token that /broadcasting/auth bound `a` to ends its private channel;
        # its public channel goes on.
        sql(db, "DELETE FROM personal_access_tokens WHERE id = %s",
            (factories.token_id(bound_token),))
        error = await a.expect(lambda f: f["event"] == "pusher:error", wait=5)
        assert error["channel"] == private
        assert error["data"]["code"] == 4009
        assert "TOKEN_REVOKED" in error["data"]["message"]
        sql_comment(db, world.session_id, world.owner, "after revocation")
        assert data(await a.event(public, "comment.created"))["comment"]["content"] == \
            "after revocation"
        assert not [f for f in await a.quiet(0.3) if f.get("channel") == private]
        # And it cannot sign in again with it.
        r = await broadcasting_auth(server, bound_token, a.socket_id, private)
        assert r.status_code == 401
        # A removed participant loses the session's private channel, though the session is
        # public (private channels are for participants only) — and keeps its public one.
        await b.event(private, "comment.created")
        assert (await b.subscribe(public))["event"] == "pusher_internal:subscription_succeeded"
        sql(db, "DELETE FROM sport_session_participants WHERE sport_session_id = %s"
            " AND user_id = %s", (world.session_id, removed))
        error = await b.expect(lambda f: f["event"] == "pusher:error", wait=5)
        assert error["channel"] == private
        assert "PARTICIPANT_REMOVED" in error["data"]["message"]
        sql_comment(db, world.session_id, world.owner, "public still")
        assert data(await b.event(public, "comment.created"))["comment"]["content"] == \
            "public still"
        assert not [f for f in await b.quiet(0.3) if f.get("channel") == private]
        # A token given at the handshake closes the connection when deleted.
        await c.event(private, "comment.created")
        sql(db, "DELETE FROM personal_access_tokens WHERE id = %s",
            (factories.token_id(handshake_token),))
        code, frames = await closed(c)
        assert code == 4009
        assert any(f["event"] == "pusher:error" and f["data"]["code"] == 4009 for f in frames)


@pytest.mark.anyio
async def test_participant_removed_from_private_session(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    member = world.participants[1]
    token = factories.token(db, member)
    presence = f"presence-sport-session.{world.session_id}"
    owner_token = factories.token(db, world.owner)
    async with pusher_client(server) as client, pusher_client(server) as owner:
        assert (await authorized(server, owner_token, owner, presence))["event"] == \
            "pusher_internal:subscription_succeeded"
        ok = await authorized(server, token, client, presence)
        assert ok["event"] == "pusher_internal:subscription_succeeded"
        await owner.event(presence, "pusher_internal:member_added")
        sql(db, "DELETE FROM sport_session_participants WHERE sport_session_id = %s"
            " AND user_id = %s", (world.session_id, member))
        error = await client.expect(lambda f: f["event"] == "pusher:error", wait=5)
        assert error["channel"] == presence
        assert "PARTICIPANT_REMOVED" in error["data"]["message"]
        # Their presence ends with the subscription.
        removed = data(await owner.event(presence, "pusher_internal:member_removed"))
        assert removed == {"user_id": str(member)}


@pytest.mark.anyio
async def test_mentions_on_the_user_channel(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    member = world.participants[1]
    token = factories.token(db, member)
    owner_token = factories.token(db, world.owner)
    channel = f"private-user.{member}"
    async with pusher_client(server) as client:
        ok = await authorized(server, token, client, channel)
        assert ok["event"] == "pusher_internal:subscription_succeeded"
        async with httpx.AsyncClient(base_url=server, timeout=10) as http:
            r = await http.post(f"/api/sessions/{world.session_id}/comments",
                                json={"content": "hey @you", "mentions": [str(member)]},
                                headers={"Authorization": f"Bearer {owner_token}"})
            assert r.status_code == 201, r.text
        mention = data(await client.event(channel, "mention.created"))
        assert mention["sessionId"] == str(world.session_id)


@pytest.mark.anyio
async def test_events_api(db: str, server: str) -> None:
    world = factories.world(db, participants=1, visibility="public")
    channel = f"sport-session.{world.session_id}"
    async with pusher_client(server) as client, \
            httpx.AsyncClient(base_url=server, timeout=10) as http:
        assert (await client.subscribe(channel))["event"] == \
            "pusher_internal:subscription_succeeded"
        body = orjson.dumps({"name": "score.updated", "channels": [channel],
                             "data": orjson.dumps({"home": 2, "away": 1}).decode()})
        path = f"/apps/{PUSHER.app_id}/events"
        params = {"auth_key": PUSHER.key, "auth_timestamp": str(int(time.time())),
                  "auth_version": "1.0", "body_md5": hashlib.md5(body).hexdigest()}  # noqa: S324
        signed = dict(params, auth_signature=request_signature(PUSHER.secret, "POST", path,
                                                                 params))
        bad = dict(params, auth_signature="0" * 64)
        r = await http.post(path, params=bad, content=body,
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 401
        r = await http.post(path, params=signed, content=body,
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert data(await client.event(channel, "score.updated")) == {"home": 2, "away": 1}


@pytest.mark.anyio
async def test_token_expiry_ends_bound_channels(db: str, server: str) -> None:
    world = factories.world(db, participants=2)
    token = factories.token(db, world.participants[1], expires_in_seconds=2)
    channel = f"private-sport-session.{world.session_id}"
    async with pusher_client(server) as client:
        ok = await authorized(server, token, client, channel)
        assert ok["event"] == "pusher_internal:subscription_succeeded", ok
        error = await client.expect(lambda f: f["event"] == "pusher:error", wait=10)
        assert error["channel"] == channel
        assert "TOKEN_EXPIRED" in error["data"]["message"]
        # The connection itself stays usable.
        await client.send("pusher:ping", {})
        await client.expect(lambda f: f["event"] == "pusher:pong")


@pytest.mark.anyio
async def test_over_capacity(db: str) -> None:
    config = PusherConfig(key=PUSHER.key, secret=PUSHER.secret, max_connections=1)
    with running(build_pusher_app(db, config)) as base:
        async with pusher_client(base), connect(app_url(base), open_timeout=5,
                                                close_timeout=2) as conn:
            frame = orjson.loads(await conn.recv())
            assert frame["event"] == "pusher:error"
            assert frame["data"]["code"] == 4100
        # The slot is given back when the first connection goes.
        async with pusher_client(base) as client:
            assert client.socket_id


@pytest.mark.anyio
async def test_over_capacity_holds_for_handshakes_at_once(db: str) -> None:
    # Connections with a bearer token are authenticated (a database read) before they are
    # accepted: many arriving together must not all pass the limit while none is counted yet.
    cap, n = 3, 16
    world = factories.world(db, participants=n)
    tokens = [factories.token(db, u) for u in world.participants]
    config = PusherConfig(key=PUSHER.key, secret=PUSHER.secret, max_connections=cap)
    with running(build_pusher_app(db, config)) as base:
        firsts: list[dict[str, Any]] = []
        all_answered, release = anyio.Event(), anyio.Event()

        async def one(token: str) -> None:
            async with connect(app_url(base), open_timeout=10, close_timeout=2,
                               additional_headers={"Authorization": f"Bearer {token}"}) as conn:
                firsts.append(orjson.loads(await conn.recv()))
                if len(firsts) == n:
                    all_answered.set()
                await release.wait()  # held open until every one has its answer

        async with anyio.create_task_group() as tg:
            for token in tokens:
                tg.start_soon(one, token)
            with anyio.fail_after(20):
                await all_answered.wait()
            release.set()
    events = sorted(f["event"] for f in firsts)
    assert events == ["pusher:connection_established"] * cap + ["pusher:error"] * (n - cap)
    assert all(f["data"]["code"] == 4100 for f in firsts if f["event"] == "pusher:error")


@pytest.mark.anyio
async def test_presence_typing_and_comments_through_asgi_sends(db: str) -> None:
    """With permessage-deflate negotiated there is no frame writer and no sink: every event
    goes through the channel's drain task and ASGI sends — the same frames, in order."""
    world = factories.world(db, participants=3)
    alice, bob = world.participants[1], world.participants[2]
    alice_token, bob_token = factories.token(db, alice), factories.token(db, bob)
    channel = f"presence-sport-session.{world.session_id}"
    with running(build_pusher_app(db), ws_per_message_deflate=True) as base:
        async with pusher_client(base) as a:
            assert a.conn.protocol.extensions, "permessage-deflate was not negotiated"
            await authorized(base, alice_token, a, channel)
            async with pusher_client(base) as b:
                await authorized(base, bob_token, b, channel)
                added = data(await a.event(channel, "pusher_internal:member_added"))
                assert added["user_id"] == str(bob)
                await b.send("client-typing", {"isTyping": True}, channel)
                typing = data(await a.event(channel, "user.typing"))
                assert data(await a.event(channel, "client-typing")) == typing
                ids = [sql_comment(db, world.session_id, world.owner, f"c{i}") for i in range(3)]
                for frames in (a, b):
                    got = [data(await frames.event(channel, "comment.created"))["comment"]["id"]
                           for _ in ids]
                    assert got == ids
            removed = data(await a.event(channel, "pusher_internal:member_removed"))
            assert removed == {"user_id": str(bob)}
