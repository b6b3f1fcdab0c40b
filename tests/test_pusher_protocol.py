"""The Pusher protocol core, without sockets: frames, signatures, channels, decisions."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Any

import orjson
import pytest

from api.pusher_protocol import (
    AUTH_CHANNEL_PATTERN,
    PONG,
    SOCKET_ID_PATTERN,
    Action,
    Binding,
    ClientEvent,
    Close,
    MessageError,
    Ping,
    PusherCode,
    PusherConfig,
    PusherCore,
    Reply,
    Start,
    Stop,
    Subscribe,
    Unsubscribe,
    auth_for,
    channel_data_for,
    check_signed_request,
    connection_established,
    event_frame,
    member_added,
    member_of,
    parse_channel,
    parse_channel_data,
    parse_message,
    protocol_problem,
    request_signature,
    sign,
    subscription_succeeded,
    valid_socket_id,
    verify_auth,
)
from api.realtime_limits import RealtimeLimits
from api.typing_state import PublishTyping

CONFIG = PusherConfig(key="app-key", secret="app-secret", app_id="1")
SID = uuid.UUID("5f6c2d4e-1a2b-4c3d-8e9f-0a1b2c3d4e5f")
UID = uuid.UUID("0b7c9a52-3a8c-4f59-9a84-3d53a7b0c1de")
SOCKET = "1234.5678"


def core(authenticated: bool = False, **limits: float) -> PusherCore:
    return PusherCore(CONFIG, RealtimeLimits(**limits), SOCKET, 0.0,  # type: ignore[arg-type]
                      authenticated=authenticated)


def msg(event: str, data: object, channel: str | None = None) -> str:
    frame: dict[str, object] = {"event": event, "data": data}
    if channel is not None:
        frame["channel"] = channel
    return orjson.dumps(frame).decode()


def only_reply(actions: list[Action]) -> dict[str, Any]:
    assert len(actions) == 1, actions
    assert isinstance(actions[0], Reply), actions
    frame: dict[str, Any] = orjson.loads(actions[0].frame)
    return frame


def test_config_from_env() -> None:
    assert PusherConfig.from_env({}) is None
    assert PusherConfig.from_env({"COURTSIDE_PUSHER_APP_KEY": "k"}) is None
    config = PusherConfig.from_env({"COURTSIDE_PUSHER_APP_KEY": "k",
                                    "COURTSIDE_PUSHER_APP_SECRET": "s"})
    assert config == PusherConfig(key="k", secret="s", app_id="courtside")
    with pytest.raises(ValueError, match="MAX_CONNECTIONS"):
        PusherConfig.from_env({"COURTSIDE_PUSHER_APP_KEY": "k",
                               "COURTSIDE_PUSHER_APP_SECRET": "s",
                               "COURTSIDE_PUSHER_MAX_CONNECTIONS": "many"})
    with pytest.raises(ValueError, match="':'"):
        PusherConfig(key="a:b", secret="s")


def test_protocol_versions() -> None:
    assert protocol_problem("7") is None
    assert protocol_problem("5") is None
    assert protocol_problem(None) == PusherCode.NO_PROTOCOL
    assert protocol_problem("x") == PusherCode.INVALID_VERSION
    assert protocol_problem("4") == PusherCode.UNSUPPORTED_PROTOCOL
    assert protocol_problem("8") == PusherCode.UNSUPPORTED_PROTOCOL


def test_channels() -> None:
    for name, kind, topic in [
        (f"sport-session.{SID}", "public", f"session:{SID}"),
        (f"private-sport-session.{SID}", "private", f"session:{SID}"),
        (f"presence-sport-session.{SID}", "presence", f"session:{SID}"),
        (f"private-user.{UID}", "user", f"user:{UID}"),
    ]:
        channel = parse_channel(name)
        assert channel is not None
        assert (channel.name, channel.kind, channel.topic.name) == (name, kind, topic)
        assert channel.needs_auth == (kind != "public")
    for bad in [f"private-sport-session.{str(SID).upper()}", "private-sport-session.1",
                f"presence-user.{UID}", f"private-encrypted-sport-session.{SID}", "", None, 7,
                f"sport-session.{SID}x"]:
        assert parse_channel(bad) is None, bad


def test_signature_is_pushers() -> None:
    # The example of Pusher's authentication docs (key 278d425bdf160c739803, secret 7ad3...).
    secret = "7ad3773142a6692b25b8"
    expected = hmac.new(secret.encode(), b"1234.1234:private-foobar", hashlib.sha256)
    assert sign(secret, "1234.1234", "private-foobar") == expected.hexdigest()
    assert sign(secret, "1234.1234", "private-foobar") == (
        "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4")
    data = '{"user_id":10}'
    with_data = hmac.new(secret.encode(), f"1234.1234:presence-x:{data}".encode(),
                         hashlib.sha256).hexdigest()
    assert sign(secret, "1234.1234", "presence-x", data) == with_data


def test_verify_auth() -> None:
    channel = f"private-sport-session.{SID}"
    auth = auth_for(CONFIG, SOCKET, channel)
    assert auth.startswith("app-key:")
    assert verify_auth(CONFIG, auth, SOCKET, channel, None)
    assert not verify_auth(CONFIG, auth, "1234.5679", channel, None)
    assert not verify_auth(CONFIG, auth, SOCKET, channel + "0", None)
    assert not verify_auth(CONFIG, auth, SOCKET, channel, "{}")
    assert not verify_auth(CONFIG, "other-key" + auth[7:], SOCKET, channel, None)
    assert not verify_auth(CONFIG, None, SOCKET, channel, None)
    assert not verify_auth(CONFIG, auth[:-1] + ("0" if auth[-1] != "0" else "1"), SOCKET,
                           channel, None)


def test_channel_data_round_trip() -> None:
    data = channel_data_for(UID, 42, {"id": str(UID), "firstname": "Jane"})
    assert orjson.loads(data) == {"user_id": str(UID),
                                  "user_info": {"id": str(UID), "firstname": "Jane"},
                                  "courtside_token": 42}
    assert parse_channel_data(data) == Binding(UID, 42, {"id": str(UID), "firstname": "Jane"})
    assert parse_channel_data(channel_data_for(UID, 7, None)) == Binding(UID, 7, {})
    assert parse_channel_data(f'{{"user_id": "{UID}"}}') == Binding(UID, None, {})
    for bad in ["", "[]", '{"user_id": "nope"}', f'{{"user_id": "{UID}", '
                '"courtside_token": "7"}', f'{{"user_id": "{UID}", "courtside_token": true}}']:
        assert parse_channel_data(bad) is None, bad


def test_socket_ids() -> None:
    assert valid_socket_id("123.456")
    for bad in ["123", "a.b", "1.2.3", "1.2\n", None, "", "1" * 21 + ".1",
                "\u0661\u0662.3"]:  # Arabic-Indic digits: Python's \d, not ours
        assert not valid_socket_id(bad)


def _ecma(pattern: str) -> str:
    assert pattern.index("$") == len(pattern) - 1
    return pattern[:-1] + r"\Z"


def test_documented_patterns_are_what_the_parsers_accept() -> None:
    # /openapi.json states them (api/models.BroadcastingAuth). ECMA patterns: Python's re
    # reads them alike once $ is \Z (Python's $ also matches before a final newline).
    names = [f"{prefix}{id_}" for prefix in ("sport-session.", "private-sport-session.",
                                            "presence-sport-session.", "private-user.",
                                            "private-encrypted-sport-session.", "")
             for id_ in (str(SID), str(SID).upper(), f"{SID}x", "1", "")]
    for name in names:
        channel = parse_channel(name)
        signable = channel is not None and channel.needs_auth
        assert (re.search(_ecma(AUTH_CHANNEL_PATTERN), name) is not None) == signable, name
    for socket_id in ["1.2", "123.456", "1" * 20 + ".1", "1" * 21 + ".1", "1.", ".1", "a.b",
                      "1.2.3", "\u0661.2", "1.2\n"]:
        assert (re.search(_ecma(SOCKET_ID_PATTERN), socket_id) is not None) == \
            valid_socket_id(socket_id), socket_id


def test_frames() -> None:
    established = orjson.loads(connection_established("1.2", 120))
    assert established["event"] == "pusher:connection_established"
    assert orjson.loads(established["data"]) == {"socket_id": "1.2", "activity_timeout": 120}
    assert orjson.loads(PONG) == {"event": "pusher:pong", "data": "{}"}
    payload = b'{"comment":{"id":"c1","content":"\xc3\xa9t\xc3\xa9 \\"quoted\\""}}'
    frame = orjson.loads(event_frame("private-sport-session.x", "comment.created", payload))
    assert frame["event"] == "comment.created"
    assert frame["channel"] == "private-sport-session.x"
    assert isinstance(frame["data"], str)
    assert orjson.loads(frame["data"]) == orjson.loads(payload)
    ok = orjson.loads(subscription_succeeded("private-x"))
    assert ok == {"event": "pusher_internal:subscription_succeeded", "channel": "private-x",
                  "data": "{}"}
    members = [{"user_id": "u1", "user_info": {"id": "u1"}},
               {"user_id": "u2", "user_info": {"id": "u2"}}]
    presence = orjson.loads(orjson.loads(subscription_succeeded("presence-x", members))["data"])
    assert presence == {"presence": {"ids": ["u1", "u2"], "hash": {"u1": {"id": "u1"},
                                                                   "u2": {"id": "u2"}},
                                     "count": 2}}
    added = orjson.loads(member_added("presence-x", "u1", {"id": "u1"}))
    assert orjson.loads(added["data"]) == {"user_id": "u1", "user_info": {"id": "u1"}}
    assert member_of({"id": "u1", "firstname": "A", "lastname": "B", "isTyping": False}) == {
        "user_id": "u1", "user_info": {"id": "u1", "firstname": "A", "lastname": "B"}}
    assert member_of(None) is None


def test_parse_messages() -> None:
    assert parse_message(msg("pusher:ping", {})) == Ping()
    channel = f"private-sport-session.{SID}"
    assert parse_message(msg("pusher:subscribe", {"channel": channel, "auth": "k:s"})) == \
        Subscribe(channel, "k:s", None)
    # data as a JSON string, as some clients send it
    assert parse_message(msg("pusher:unsubscribe", orjson.dumps({"channel": channel}).decode())
                         ) == Unsubscribe(channel)
    assert parse_message(msg("client-typing", {"a": 1}, channel)) == \
        ClientEvent("client-typing", channel, {"a": 1})
    for bad in ["nope", "[]", msg("pusher:subscribe", {"channel": 3}),
                msg("pusher:subscribe", "not json"), msg("client-x", {}),
                msg("pusher:subscribe", {"channel": channel, "auth": 5}),
                msg("pusher_internal:member_added", {})]:
        with pytest.raises(MessageError):
            parse_message(bad)


def test_subscribe_decisions() -> None:
    c = core()
    public = f"sport-session.{SID}"
    (start,) = c.receive_text(msg("pusher:subscribe", {"channel": public}), 0.0)
    assert isinstance(start, Start)
    assert start.binding is None
    assert "Existing subscription" in str(only_reply(c.receive_text(
        msg("pusher:subscribe", {"channel": public}), 0.0))["data"])
    private = f"private-sport-session.{SID}"
    # No signature, a wrong one, one without a token binding on an anonymous connection.
    for data in [{"channel": private},
                 {"channel": private, "auth": "app-key:00"},
                 {"channel": private, "auth": auth_for(CONFIG, SOCKET, private)}]:
        error = only_reply(c.receive_text(msg("pusher:subscribe", data), 0.0))
        assert error["event"] == "pusher:error"
        assert error["channel"] == private
        assert error["data"]["code"] == 4009
    channel_data = channel_data_for(UID, 9, None)
    (start,) = c.receive_text(msg("pusher:subscribe", {
        "channel": private, "auth": auth_for(CONFIG, SOCKET, private, channel_data),
        "channel_data": channel_data}), 0.0)
    assert isinstance(start, Start)
    assert start.binding == Binding(UID, 9, {})
    # Signed for another socket: refused.
    presence = f"presence-sport-session.{SID}"
    error = only_reply(c.receive_text(msg("pusher:subscribe", {
        "channel": presence, "auth": auth_for(CONFIG, "9.9", presence, channel_data),
        "channel_data": channel_data}), 0.0))
    assert error["data"]["code"] == 4009
    # A connection that authenticated at the handshake may use Laravel's standard signature.
    (start,) = core(authenticated=True).receive_text(msg("pusher:subscribe", {
        "channel": private, "auth": auth_for(CONFIG, SOCKET, private)}), 0.0)
    assert isinstance(start, Start)
    assert start.binding is None
    assert only_reply(c.receive_text(msg("pusher:subscribe", {"channel": "bad"}), 0.0))[
        "event"] == "pusher:error"
    assert c.receive_text(msg("pusher:unsubscribe", {"channel": public}), 0.0)[0] == \
        Stop(start.channel.__class__(public, "public", start.channel.topic))
    assert c.receive_text(msg("pusher:unsubscribe", {"channel": public}), 0.0) == []


def test_typing_decisions() -> None:
    c = core(typing_per_second=1.0, typing_burst=2, typing_ttl=5.0, typing_refresh=1.0)
    presence = f"presence-sport-session.{SID}"
    data = channel_data_for(UID, 9, {})
    (start,) = c.receive_text(msg("pusher:subscribe", {
        "channel": presence, "auth": auth_for(CONFIG, SOCKET, presence, data),
        "channel_data": data}), 0.0)
    assert isinstance(start, Start)
    typing = msg("client-typing", {"isTyping": True}, presence)
    # Not before the subscription succeeded.
    assert only_reply(c.receive_text(typing, 0.0))["event"] == "pusher:error"
    c.started(start.channel)
    assert c.receive_text(typing, 0.1) == [PublishTyping(start.channel.topic, True)]
    assert c.receive_text(typing, 0.2) == []  # refreshed, nothing new to say
    assert c.next_typing_deadline() == pytest.approx(5.2)
    stop = msg("client-typing", {"isTyping": False}, presence)
    assert c.receive_text(stop, 0.3) == [PublishTyping(start.channel.topic, False)]
    assert c.receive_text(stop, 0.4) == []  # already stopped
    # The typing bucket (burst 2) was spent by the two publications.
    error = only_reply(c.receive_text(typing, 0.5))
    assert error["data"]["code"] == PusherCode.CLIENT_EVENT_RATE_LIMIT
    assert c.receive_text(typing, 2.0) == [PublishTyping(start.channel.topic, True)]
    assert c.typing_due(6.0) == []
    assert c.typing_due(7.0) == [PublishTyping(start.channel.topic, False)]
    # Other client events, and typing on a private channel, are refused.
    assert "rejected" in str(only_reply(c.receive_text(
        msg("client-other", {}, presence), 8.0))["data"])
    # Unsubscribing while typing says the user stopped.
    c.receive_text(typing, 9.0)
    actions = c.receive_text(msg("pusher:unsubscribe", {"channel": presence}), 9.1)
    assert actions == [Stop(start.channel), PublishTyping(start.channel.topic, False)]


def test_revocation_decision() -> None:
    c = core()
    private = f"private-sport-session.{SID}"
    data = channel_data_for(UID, 9, None)
    (start,) = c.receive_text(msg("pusher:subscribe", {
        "channel": private, "auth": auth_for(CONFIG, SOCKET, private, data),
        "channel_data": data}), 0.0)
    assert isinstance(start, Start)
    c.started(start.channel)
    assert c.channels(f"session:{SID}") == [start.channel]
    stop, reply = c.revoked(start.channel, "PARTICIPANT_REMOVED: gone")
    assert stop == Stop(start.channel)
    assert isinstance(reply, Reply)
    frame = orjson.loads(reply.frame)
    assert frame == {"event": "pusher:error", "channel": private,
                     "data": {"code": 4009, "message": "PARTICIPANT_REMOVED: gone"}}
    assert c.channels() == []
    assert c.revoked(start.channel, "again") == []


def test_rate_limit_and_size() -> None:
    c = core(messages_per_second=1.0, message_burst=2, close_after_rejected=2)
    ping = msg("pusher:ping", {})
    assert c.receive_text(ping, 0.0) == [Reply(PONG)]
    assert c.receive_text(ping, 0.0) == [Reply(PONG)]
    assert only_reply(c.receive_text(ping, 0.0))["data"]["code"] == 4301
    assert c.receive_text(ping, 0.0) == []
    (close,) = c.receive_text(ping, 0.0)
    assert isinstance(close, Close)
    assert close.code == 4301
    big = core(max_frame_bytes=100)
    actions = big.receive_text(msg("pusher:ping", {"x": "y" * 200}), 0.0)
    assert isinstance(actions[-1], Close)


def test_signed_requests() -> None:
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    params = {"auth_key": CONFIG.key, "auth_timestamp": "1353088179", "auth_version": "1.0",
              "body_md5": hashlib.md5(body).hexdigest()}  # noqa: S324
    path = "/apps/1/events"
    params["auth_signature"] = request_signature(CONFIG.secret, "POST", path, params)
    string = ("POST\n/apps/1/events\nauth_key=app-key&auth_timestamp=1353088179"
              f"&auth_version=1.0&body_md5={params['body_md5']}")
    assert params["auth_signature"] == hmac.new(b"app-secret", string.encode(),
                                                hashlib.sha256).hexdigest()
    assert check_signed_request(CONFIG, "POST", path, params, body, 1353088179.0) is None
    assert check_signed_request(CONFIG, "POST", path, params, body + b" ", 1353088179.0) == \
        "body_md5 does not match the body"
    assert check_signed_request(CONFIG, "POST", path, params, body, 1353099999.0) is not None
    assert check_signed_request(CONFIG, "POST", "/apps/2/events", params, body,
                                1353088179.0) == "invalid auth_signature"
    assert check_signed_request(CONFIG, "POST", path, {**params, "auth_key": "x"}, body,
                                1353088179.0) == "unknown auth_key"
