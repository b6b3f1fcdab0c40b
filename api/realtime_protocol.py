"""The native realtime wire format, without any I/O: topics, client frames, server frames.

Client → server (JSON text frames)::

    {"type": "subscribe", "topic": "session:<uuid>", "since": <seq or null>}
    {"type": "unsubscribe", "topic": "..."}
    {"type": "typing", "topic": "session:<uuid>", "isTyping": true}
    {"type": "ping"}

Server → client::

    {"type": "connected", "socketId": "..."}                      (first frame)
    {"type": "subscribed", "topic", "seq", "presence": [...], "socketId"}
    {"type": "event", "topic", "seq" (null: ephemeral), "event", "data"}
    {"type": "reset", "topic", "seq"}
    {"type": "unsubscribed", "topic"}
    {"type": "error", "code", "message"[, "topic"]}
    {"type": "pong"}

This is a contract with deployed clients: fields and frame types may be added, never
changed or removed. Unknown fields in client frames are ignored for the same reason.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Literal

import orjson

from api.i18n import Lang, negotiate

Language = Lang
MAX_SEQ = 2**63 - 1


class ErrorCode(StrEnum):
    """`code` of an `error` frame (and of the JSON envelope of refused SSE/ticket requests)."""

    INVALID_FRAME = "INVALID_FRAME"
    INVALID_TOPIC = "INVALID_TOPIC"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    NOT_PARTICIPANT = "NOT_PARTICIPANT"
    FORBIDDEN = "FORBIDDEN"
    ALREADY_SUBSCRIBED = "ALREADY_SUBSCRIBED"
    NOT_SUBSCRIBED = "NOT_SUBSCRIBED"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    RATE_LIMITED = "RATE_LIMITED"
    TYPING_RATE_LIMITED = "TYPING_RATE_LIMITED"
    PARTICIPANT_REMOVED = "PARTICIPANT_REMOVED"
    SESSION_CLOSED = "SESSION_CLOSED"
    TOKEN_REVOKED = "TOKEN_REVOKED"  # noqa: S105 - an error code, not a secret
    TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105
    SLOW_CONSUMER = "SLOW_CONSUMER"
    SERVICE_RESTART = "SERVICE_RESTART"
    STREAM_REPLACED = "STREAM_REPLACED"  # an SSE stream's ticket was taken by a newer one
    NOT_READY = "NOT_READY"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses; 4xxx are ours (RFC 6455 §7.4.2)."""

    NORMAL = 1000
    UNSUPPORTED_DATA = 1003  # a binary frame: the protocol is JSON text
    MESSAGE_TOO_BIG = 1009  # a frame over the size limit
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # graceful shutdown: reconnect, to this node or another
    TRY_AGAIN_LATER = 1013  # the database is unreachable: reconnect after a while
    TOKEN_REVOKED = 4001  # the bearer token was deleted: do not reconnect with it
    TOKEN_EXPIRED = 4002  # the bearer token's expires_at passed
    RATE_LIMITED = 4008  # kept sending over the message rate after being told
    SLOW_CONSUMER = 4009  # fell too far behind: reconnect and resume with `since`


_MESSAGES: dict[ErrorCode, tuple[str, str]] = {
    ErrorCode.INVALID_FRAME: ("Trame invalide", "Invalid frame"),
    ErrorCode.INVALID_TOPIC: (
        "Sujet invalide : attendu session:<uuid> ou user:<uuid>",
        "Invalid topic: expected session:<uuid> or user:<uuid>"),
    ErrorCode.UNAUTHENTICATED: ("Non authentifié", "Unauthenticated"),
    ErrorCode.SESSION_NOT_FOUND: ("Session non trouvée", "Session not found"),
    ErrorCode.NOT_PARTICIPANT: (
        "Vous devez être participant de cette session",
        "You must be a participant of this session"),
    ErrorCode.FORBIDDEN: (
        "Vous n'êtes pas autorisé à vous abonner à ce sujet",
        "You are not allowed to subscribe to this topic"),
    ErrorCode.ALREADY_SUBSCRIBED: ("Déjà abonné à ce sujet", "Already subscribed to this topic"),
    ErrorCode.NOT_SUBSCRIBED: ("Pas abonné à ce sujet", "Not subscribed to this topic"),
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: (
        "Trop d'abonnements sur cette connexion", "Too many subscriptions on this connection"),
    ErrorCode.TOO_MANY_CONNECTIONS: (
        "Trop de connexions ouvertes pour cet utilisateur",
        "Too many open connections for this user"),
    ErrorCode.RATE_LIMITED: (
        "Trop de messages : ralentissez", "Too many messages: slow down"),
    ErrorCode.TYPING_RATE_LIMITED: (
        "Trop d'indicateurs de frappe : ralentissez", "Too many typing indicators: slow down"),
    ErrorCode.PARTICIPANT_REMOVED: (
        "Vous avez été retiré de cette session", "You were removed from this session"),
    ErrorCode.SESSION_CLOSED: (
        "Cette session n'est plus accessible", "This session is no longer available"),
    ErrorCode.TOKEN_REVOKED: ("Le jeton a été révoqué", "The token was revoked"),
    ErrorCode.TOKEN_EXPIRED: ("Le jeton a expiré", "The token expired"),
    ErrorCode.SLOW_CONSUMER: (
        "Connexion trop lente : reconnectez-vous avec since",
        "Connection too slow: reconnect with since"),
    ErrorCode.SERVICE_RESTART: (
        "Le serveur redémarre : reconnectez-vous", "Server restarting: reconnect"),
    ErrorCode.STREAM_REPLACED: (
        "Flux rouvert par une autre connexion avec le même ticket",
        "Stream reopened by another connection with the same ticket"),
    ErrorCode.NOT_READY: ("Service indisponible", "Service unavailable"),
    ErrorCode.INTERNAL_ERROR: ("Erreur interne", "Internal error"),
}


def message_for(code: ErrorCode, lang: Language = "fr") -> str:
    fr, en = _MESSAGES[code]
    return en if lang == "en" else fr


# What was wrong with a refused client frame, in the client's language (FrameError.detail).
FRAME_DETAILS: dict[str, tuple[str, str]] = {
    "not_json": ("ce n'est pas du JSON", "not JSON"),
    "not_object": ("une trame est un objet JSON", "a frame is a JSON object"),
    "since": ("since : un entier positif ou nul, ou null",
              "since: a non-negative integer or null"),
    "is_typing": ("isTyping : un booléen", "isTyping: a boolean"),
    "typing_topic": ("l'indicateur de frappe ne vaut que pour une session",
                     "typing is for session topics"),
    "unknown_type": ("type de trame inconnu", "unknown frame type"),
}


def detail_for(detail: str, lang: Language = "fr") -> str:
    """A FRAME_DETAILS key in `lang`; anything else (a field name, a number) as it is."""
    pair = FRAME_DETAILS.get(detail)
    if pair is None:
        return detail
    return pair[1] if lang == "en" else pair[0]


def pick_language(accept_language: str | None) -> Language:
    """French unless the client prefers English, as in the REST API."""
    return negotiate(accept_language)


def new_socket_id() -> str:
    """Pusher's format (``digits.digits``): Laravel and pusher-php validate X-Socket-ID so."""
    return f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}"


# -- topics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    kind: Literal["session", "user"]
    id: uuid.UUID
    # Built once: a subscription reads it at every step, and formatting a UUID is not cheap.
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.kind}:{self.id}")

    def __str__(self) -> str:
        return self.name


def parse_topic(value: object) -> Topic | None:
    """``session:<uuid>`` or ``user:<uuid>``, the uuid in canonical lowercase form (the form
    every frame echoes back, so clients can match frames by string)."""
    if not isinstance(value, str) or len(value) > 48:
        return None
    kind, sep, rest = value.partition(":")
    if not sep or kind not in ("session", "user") or len(rest) != 36:
        return None
    try:
        topic = Topic("session" if kind == "session" else "user", uuid.UUID(rest))
    except ValueError:
        return None
    return topic if topic.name == value else None  # not canonical: refused


# -- client frames --------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscribe:
    topic: Topic
    since: int | None


@dataclass(frozen=True)
class Unsubscribe:
    topic: Topic


@dataclass(frozen=True)
class Typing:
    topic: Topic
    is_typing: bool


@dataclass(frozen=True)
class Ping:
    pass


ClientFrame = Subscribe | Unsubscribe | Typing | Ping


class FrameError(Exception):
    """A client frame that cannot be acted on; answered with an `error` frame."""

    def __init__(self, code: ErrorCode, detail: str = "", topic: str | None = None) -> None:
        # detail: a FRAME_DETAILS key, rendered in the client's language by error_frame.
        super().__init__(detail or code.value)
        self.code = code
        self.detail = detail
        self.topic = topic


def _topic_of(frame: dict[str, Any]) -> Topic:
    topic = parse_topic(frame.get("topic"))
    if topic is None:
        raw = frame.get("topic")
        raise FrameError(ErrorCode.INVALID_TOPIC, topic=raw if isinstance(raw, str) else None)
    return topic


def parse_client_frame(text: str) -> ClientFrame:
    """One text frame → a command, or FrameError. Size and rate are checked before this."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError(ErrorCode.INVALID_FRAME, "not_json") from None
    if not isinstance(frame, dict):
        raise FrameError(ErrorCode.INVALID_FRAME, "not_object")
    kind = frame.get("type")
    if kind == "ping":
        return Ping()
    if kind == "subscribe":
        topic = _topic_of(frame)
        since = frame.get("since")
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SEQ
        ):
            raise FrameError(ErrorCode.INVALID_FRAME, "since", topic.name)
        return Subscribe(topic, since)
    if kind == "unsubscribe":
        return Unsubscribe(_topic_of(frame))
    if kind == "typing":
        topic = _topic_of(frame)
        is_typing = frame.get("isTyping", True)
        if not isinstance(is_typing, bool):
            raise FrameError(ErrorCode.INVALID_FRAME, "is_typing", topic.name)
        if topic.kind != "session":
            raise FrameError(ErrorCode.INVALID_TOPIC, "typing_topic", topic.name)
        return Typing(topic, is_typing)
    raise FrameError(ErrorCode.INVALID_FRAME, "unknown_type")


# -- server frames --------------------------------------------------------------------------
# Frames are built as bytes (orjson), and sent as text frames: the bytes are UTF-8.


def connected_frame(socket_id: str) -> bytes:
    return orjson.dumps({"type": "connected", "socketId": socket_id})


def subscribed_frame(topic: str, seq: int, presence: list[Any], socket_id: str) -> bytes:
    return orjson.dumps({"type": "subscribed", "topic": topic, "seq": seq,
                         "presence": presence, "socketId": socket_id})


def event_frame(topic: str, seq: int | None, event: str, data: bytes) -> bytes:
    """`data` is the event's payload JSON, already encoded: it is spliced in, not re-encoded,
    so it stays byte-for-byte what PostgreSQL rendered (and what the REST API returns)."""
    return b"".join((
        b'{"type":"event","topic":', orjson.dumps(topic),
        b',"seq":', b"null" if seq is None else str(seq).encode(),
        b',"event":', orjson.dumps(event),
        b',"data":', data, b"}",
    ))


def reset_frame(topic: str, seq: int) -> bytes:
    return orjson.dumps({"type": "reset", "topic": topic, "seq": seq})


def unsubscribed_frame(topic: str) -> bytes:
    return orjson.dumps({"type": "unsubscribed", "topic": topic})


def error_frame(code: ErrorCode, lang: Language = "fr", topic: str | None = None,
                detail: str = "") -> bytes:
    message = message_for(code, lang)
    if detail:
        message = f"{message} ({detail_for(detail, lang)})"
    frame: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if topic is not None:
        frame["topic"] = topic
    return orjson.dumps(frame)


PONG_FRAME = orjson.dumps({"type": "pong"})
