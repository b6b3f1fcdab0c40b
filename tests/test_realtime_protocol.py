"""The native wire format and the per-connection state machine, without sockets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import orjson
import pytest
from pydantic import ValidationError

from api import sse_format
from api.models import EventsQuery
from api.realtime_limits import RealtimeLimits, TokenBucket, UserConnections
from api.realtime_protocol import (
    FRAME_DETAILS,
    MAX_SEQ,
    CloseCode,
    ErrorCode,
    FrameError,
    Language,
    Ping,
    Subscribe,
    Topic,
    Typing,
    Unsubscribe,
    detail_for,
    error_frame,
    event_frame,
    message_for,
    new_socket_id,
    parse_client_frame,
    parse_topic,
    pick_language,
    subscribed_frame,
)
from api.typing_state import PublishTyping
from api.ws_core import (
    Close,
    Reply,
    StartSubscription,
    StopSubscription,
    WsCore,
)

SID = uuid.UUID("9b2f7c1e-0a51-4d8e-9a57-3c6b1f0e2d44")
ME = uuid.UUID("11111111-2222-4333-8444-555555555555")


def frames(actions: Sequence[object]) -> list[dict[str, object]]:
    return [orjson.loads(a.frame) for a in actions if isinstance(a, Reply)]


def codes(actions: Sequence[object]) -> list[object]:
    return [f.get("code") for f in frames(actions) if f["type"] == "error"]


# -- topics and frames --------------------------------------------------------------------


def test_topics_are_canonical() -> None:
    topic = parse_topic(f"session:{SID}")
    assert topic is not None
    assert topic.kind == "session"
    assert topic.id == SID
    assert topic.name == str(topic) == f"session:{SID}"
    assert topic == Topic("session", SID)
    assert hash(topic) == hash(Topic("session", SID))
    assert parse_topic(f"user:{ME}") is not None
    for bad in [f"session:{str(SID).upper()}", f"session:{SID.hex}", f"room:{SID}", "session:",
                f"session:{SID}x", 42, None, f" session:{SID}"]:
        assert parse_topic(bad) is None, bad


def test_parse_client_frames() -> None:
    assert parse_client_frame('{"type":"ping"}') == Ping()
    sub = parse_client_frame(f'{{"type":"subscribe","topic":"session:{SID}","since":7}}')
    assert isinstance(sub, Subscribe)
    assert sub.since == 7
    assert sub.topic.id == SID
    sub = parse_client_frame(f'{{"type":"subscribe","topic":"session:{SID}","since":null}}')
    assert isinstance(sub, Subscribe)
    assert sub.since is None
    assert isinstance(
        parse_client_frame(f'{{"type":"unsubscribe","topic":"user:{ME}"}}'), Unsubscribe)
    typing = parse_client_frame(
        f'{{"type":"typing","topic":"session:{SID}","isTyping":false,"extra":1}}')
    assert typing == Typing(typing.topic, False)  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "code"), [
    ("not json", ErrorCode.INVALID_FRAME),
    ("[1,2]", ErrorCode.INVALID_FRAME),
    ('{"type":"dance"}', ErrorCode.INVALID_FRAME),
    ('{"topic":"x"}', ErrorCode.INVALID_FRAME),
    ('{"type":"subscribe"}', ErrorCode.INVALID_TOPIC),
    ('{"type":"subscribe","topic":"lobby"}', ErrorCode.INVALID_TOPIC),
    (f'{{"type":"subscribe","topic":"session:{SID}","since":-1}}', ErrorCode.INVALID_FRAME),
    (f'{{"type":"subscribe","topic":"session:{SID}","since":true}}', ErrorCode.INVALID_FRAME),
    (f'{{"type":"subscribe","topic":"session:{SID}","since":"3"}}', ErrorCode.INVALID_FRAME),
    (f'{{"type":"subscribe","topic":"session:{SID}","since":1e3}}', ErrorCode.INVALID_FRAME),
    (f'{{"type":"typing","topic":"session:{SID}","isTyping":"yes"}}', ErrorCode.INVALID_FRAME),
    (f'{{"type":"typing","topic":"user:{ME}"}}', ErrorCode.INVALID_TOPIC),
])
def test_bad_client_frames(text: str, code: ErrorCode) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(text)
    assert info.value.code == code
    # What was wrong is said in the client's language, never French with English inside.
    assert info.value.detail in ("", *FRAME_DETAILS)
    if info.value.detail:
        fr, en = FRAME_DETAILS[info.value.detail]
        langs: tuple[tuple[Language, str], ...] = (("fr", fr), ("en", en))
        for lang, want in langs:
            message = orjson.loads(error_frame(code, lang, None, info.value.detail))["message"]
            assert message == f"{message_for(code, lang)} ({want})"


def test_frame_details_have_two_languages() -> None:
    assert all(fr and en and fr != en for fr, en in FRAME_DETAILS.values())
    # Keys are identifiers; what a client reads is prose.
    assert all(" " in fr and " " in en for fr, en in FRAME_DETAILS.values())
    with pytest.raises(FrameError) as info:
        parse_client_frame("not json")
    detail = info.value.detail
    assert orjson.loads(error_frame(ErrorCode.INVALID_FRAME, "en", None, detail))[
        "message"] == "Invalid frame (not JSON)"
    assert orjson.loads(error_frame(ErrorCode.INVALID_FRAME, "fr", None, detail))[
        "message"] == "Trame invalide (ce n'est pas du JSON)"
    assert detail_for("Last-Event-ID", "fr") == "Last-Event-ID"  # not a key: as it is


def test_event_frame_splices_data_bytes() -> None:
    data = b'{"comment":{"id":"x","content":"\\u00e9t\\u00e9 \xc3\xa9"}}'
    frame = event_frame(f"session:{SID}", 12, "comment.created", data)
    parsed = orjson.loads(frame)
    assert parsed == {"type": "event", "topic": f"session:{SID}", "seq": 12,
                      "event": "comment.created", "data": orjson.loads(data)}
    assert frame.endswith(b',"data":' + data + b"}")
    ephemeral = orjson.loads(event_frame(f"session:{SID}", None, "user.typing", b"{}"))
    assert ephemeral["seq"] is None


def test_server_frames_and_messages() -> None:
    sub = orjson.loads(subscribed_frame("session:x", 3, [{"id": "u"}], "1.2"))
    assert sub == {"type": "subscribed", "topic": "session:x", "seq": 3,
                   "presence": [{"id": "u"}], "socketId": "1.2"}
    fr = orjson.loads(error_frame(ErrorCode.NOT_PARTICIPANT, "fr", "session:x"))
    en = orjson.loads(error_frame(ErrorCode.NOT_PARTICIPANT, "en"))
    assert fr == {"type": "error", "code": "NOT_PARTICIPANT", "topic": "session:x",
                  "message": "Vous devez être participant de cette session"}
    assert en["message"] == "You must be a participant of this session"
    assert "topic" not in en
    assert pick_language(None) == "fr"
    assert pick_language("en-GB,en;q=0.9") == "en"
    assert pick_language("fr-FR,en;q=0.8") == "fr"
    assert pick_language("de;q=0.9,en;q=0.95") == "en"
    ids = {new_socket_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(a.isdigit() and b.isdigit() for a, _, b in (i.partition(".") for i in ids))


# -- limits ---------------------------------------------------------------------------------


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(0.49) is False
    assert bucket.allow(0.5) is True  # one token after half a second at 2/s
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_user_connections() -> None:
    conns = UserConnections(limit=2)
    assert conns.acquire("a")
    assert conns.acquire("a")
    assert not conns.acquire("a")
    assert conns.acquire("b")
    conns.release("a")
    assert conns.acquire("a")
    assert conns.count("a") == 2


def test_limits_from_env() -> None:
    limits = RealtimeLimits.from_env({"COURTSIDE_RT_MAX_SUBSCRIPTIONS": "3",
                                      "COURTSIDE_RT_TYPING_TTL": "0.5"})
    assert limits.max_subscriptions == 3
    assert limits.typing_ttl == 0.5
    assert limits.max_frame_bytes == RealtimeLimits().max_frame_bytes


# -- the connection state machine ---------------------------------------------------------


def core(**overrides: float) -> WsCore:
    return WsCore(RealtimeLimits(**overrides), ME, "en", now=0.0)  # type: ignore[arg-type]


def sub_text(topic: str, since: int | None = None) -> str:
    return orjson.dumps({"type": "subscribe", "topic": topic, "since": since}).decode()


def test_subscribe_flow_and_duplicates() -> None:
    c = core()
    actions = c.receive_text(sub_text(f"session:{SID}", 4), 0.0)
    assert len(actions) == 1
    assert isinstance(actions[0], StartSubscription)
    assert actions[0].since == 4
    # Pending counts as subscribed for duplicates, not for typing.
    assert codes(c.receive_text(sub_text(f"session:{SID}"), 0.0)) == ["ALREADY_SUBSCRIBED"]
    typing = orjson.dumps({"type": "typing", "topic": f"session:{SID}"}).decode()
    assert codes(c.receive_text(typing, 0.0)) == ["NOT_SUBSCRIBED"]
    c.subscription_started(actions[0].topic)
    assert c.is_subscribed(f"session:{SID}")
    unsub = orjson.dumps({"type": "unsubscribe", "topic": f"session:{SID}"}).decode()
    out = c.receive_text(unsub, 0.0)
    assert isinstance(out[0], StopSubscription)
    assert frames(out) == [{"type": "unsubscribed", "topic": f"session:{SID}"}]
    assert codes(c.receive_text(unsub, 0.0)) == ["NOT_SUBSCRIBED"]


def test_refused_subscription_can_be_retried() -> None:
    c = core()
    (start,) = c.receive_text(sub_text(f"session:{SID}"), 0.0)
    assert isinstance(start, StartSubscription)
    c.subscription_refused(start.topic)
    assert isinstance(c.receive_text(sub_text(f"session:{SID}"), 0.0)[0], StartSubscription)


def test_only_own_user_topic() -> None:
    c = core()
    assert isinstance(c.receive_text(sub_text(f"user:{ME}"), 0.0)[0], StartSubscription)
    assert codes(c.receive_text(sub_text(f"user:{SID}"), 0.0)) == ["FORBIDDEN"]


def test_subscription_limit() -> None:
    c = core(max_subscriptions=2)
    topics = [f"session:{uuid.uuid4()}" for _ in range(3)]
    assert isinstance(c.receive_text(sub_text(topics[0]), 0.0)[0], StartSubscription)
    assert isinstance(c.receive_text(sub_text(topics[1]), 0.0)[0], StartSubscription)
    assert codes(c.receive_text(sub_text(topics[2]), 0.0)) == ["TOO_MANY_SUBSCRIPTIONS"]


def test_frame_size_and_binary_close() -> None:
    c = core(max_frame_bytes=64)
    (close,) = c.receive_text('{"type":"ping","pad":"' + "é" * 40 + '"}', 0.0)
    assert isinstance(close, Close)
    assert close.code == CloseCode.MESSAGE_TOO_BIG
    (close,) = c.receive_bytes(0.0)
    assert isinstance(close, Close)
    assert close.code == CloseCode.UNSUPPORTED_DATA
    assert frames(c.receive_text('{"type":"ping"}', 0.0)) == [{"type": "pong"}]


def test_message_rate_warns_once_then_closes() -> None:
    c = core(messages_per_second=1.0, message_burst=2, close_after_rejected=3)
    ping = '{"type":"ping"}'
    assert frames(c.receive_text(ping, 0.0)) == [{"type": "pong"}]
    assert frames(c.receive_text(ping, 0.0)) == [{"type": "pong"}]
    assert codes(c.receive_text(ping, 0.0)) == ["RATE_LIMITED"]
    assert c.receive_text(ping, 0.0) == []
    assert c.receive_text(ping, 0.0) == []
    (close,) = c.receive_text(ping, 0.0)
    assert isinstance(close, Close)
    assert close.code == CloseCode.RATE_LIMITED
    # A client that slows down is forgiven.
    c2 = core(messages_per_second=1.0, message_burst=1, close_after_rejected=1)
    assert frames(c2.receive_text(ping, 0.0)) == [{"type": "pong"}]
    assert codes(c2.receive_text(ping, 0.0)) == ["RATE_LIMITED"]
    assert frames(c2.receive_text(ping, 1.0)) == [{"type": "pong"}]
    assert codes(c2.receive_text(ping, 1.0)) == ["RATE_LIMITED"]


def test_typing_coalesces_limits_and_expires() -> None:
    c = core(typing_per_second=1.0, typing_burst=2, typing_ttl=5.0, typing_refresh=1.0)
    topic = f"session:{SID}"
    (start,) = c.receive_text(sub_text(topic), 0.0)
    assert isinstance(start, StartSubscription)
    c.subscription_started(start.topic)

    def typing(value: bool, now: float) -> list[object]:
        text = orjson.dumps({"type": "typing", "topic": topic, "isTyping": value}).decode()
        return list(c.receive_text(text, now))

    assert typing(True, 0.0) == [PublishTyping(start.topic, True)]
    assert typing(True, 0.5) == []  # within the refresh window: ttl extended, nothing sent
    assert c.next_typing_deadline() == 5.5
    assert typing(False, 0.6) == [PublishTyping(start.topic, False)]
    assert typing(False, 0.7) == []  # already not typing
    assert codes(typing(True, 0.8)) == ["TYPING_RATE_LIMITED"]  # bucket of 2 spent
    assert typing(True, 2.0) == [PublishTyping(start.topic, True)]
    assert c.typing_due(6.9) == []
    assert c.typing_due(7.0) == [PublishTyping(start.topic, False)]
    assert c.next_typing_deadline() is None


def test_revocation_stops_typing_and_tells_why() -> None:
    c = core()
    (start,) = c.receive_text(sub_text(f"session:{SID}"), 0.0)
    assert isinstance(start, StartSubscription)
    c.subscription_started(start.topic)
    c.receive_text(orjson.dumps({"type": "typing", "topic": f"session:{SID}"}).decode(), 0.0)
    actions = c.subscription_revoked(start.topic, ErrorCode.PARTICIPANT_REMOVED)
    assert actions[:2] == [StopSubscription(start.topic), PublishTyping(start.topic, False)]
    assert [f["type"] for f in frames(actions)] == ["error", "unsubscribed"]
    assert codes(actions) == ["PARTICIPANT_REMOVED"]
    assert c.subscription_revoked(start.topic, ErrorCode.PARTICIPANT_REMOVED) == []
    assert c.topics() == []


# -- SSE framing ------------------------------------------------------------------------------


def test_sse_framing() -> None:
    assert sse_format.event("comment.created", b'{"a":1}', 5) == (
        b'id: 5\nevent: comment.created\ndata: {"a":1}\n\n')
    assert sse_format.event("user.typing", b"{}") == b"event: user.typing\ndata: {}\n\n"
    assert sse_format.event("x", b"a\nb") == b"event: x\ndata: a\ndata: b\n\n"
    assert sse_format.reset("session:x", 9) == (
        b'id: 9\nevent: reset\ndata: {"topic":"session:x","seq":9}\n\n')
    assert sse_format.comment("hb\nx") == b": hb x\n\n"
    assert sse_format.retry(3000) == b"retry: 3000\n\n"


def test_sse_resume_point() -> None:
    assert sse_format.resume_point(None, None) is None
    assert sse_format.resume_point("12", "3") == 12
    assert sse_format.resume_point("", "3") == 3
    assert sse_format.resume_point(None, "0") == 0
    for bad in ["-1", "abc", "1.5", "99999999999999999999", "٣"]:
        with pytest.raises(sse_format.ResumeError):
            sse_format.resume_point(bad, None)
    # /openapi.json documents `since` (api/models.EventsQuery): the same bounds.
    for since in [-1, 0, 1, MAX_SEQ, MAX_SEQ + 1]:
        try:
            sse_format.resume_point(None, str(since))
        except sse_format.ResumeError:
            accepted = False
        else:
            accepted = True
        try:
            EventsQuery.model_validate({"since": since})
        except ValidationError:
            documented = False
        else:
            documented = True
        assert accepted == documented == (0 <= since <= MAX_SEQ), since
