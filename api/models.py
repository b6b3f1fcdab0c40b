"""The API's shapes as pydantic models: request bodies and query strings are validated with
them, and /openapi.json is generated from them (responses included, so a client can check
what it receives).

Field names are the seed's, including its mix of snake_case (`created_at` in a comment)
and camelCase (`isTyping`, `totalPages`, `joinedAt`).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from api.errors import ErrorCode
from api.pusher_protocol import AUTH_CHANNEL_PATTERN, SOCKET_ID_PATTERN
from api.realtime_protocol import MAX_SEQ
from api.realtime_protocol import ErrorCode as RealtimeErrorCode

CONTENT_MAX = 1000
MENTIONS_MAX = 50
LIMIT_MAX = 100
PAGE_MAX = 100_000
CURSOR_MAX = 200

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
# Tabs and line breaks are text; every other C0/C1 control character (NUL included) is not.
_ALLOWED_CONTROLS = frozenset("\t\n\r")
# What the schema tells generators: no control character but \t \n \r, and something that is
# not white space (the server trims, then wants 1 to 1000 characters).
CONTENT_PATTERN = (
    r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F]"
    r"[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"
)


def clean_content(value: str) -> str:
    """Trim, refuse control characters, bound the length; otherwise keep the text verbatim
    (``<script>`` is text: escaping is the renderer's job, not the store's)."""
    for ch in value:
        if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS:
            raise PydanticCustomError("content_control", "control characters are not allowed")
    trimmed = value.strip()
    if not 1 <= len(trimmed) <= CONTENT_MAX:
        raise PydanticCustomError("content_length", "between 1 and 1000 characters")
    return trimmed


Uuid = Annotated[str, Field(pattern=UUID_PATTERN, json_schema_extra={"format": "uuid"})]
Timestamp = Annotated[str, Field(pattern=TIMESTAMP_PATTERN,
                                 examples=["2025-01-20T10:30:00.000000Z"])]
Content = Annotated[str, AfterValidator(clean_content), Field(
    min_length=1,
    json_schema_extra={"pattern": CONTENT_PATTERN},
    description="1 to 1000 characters once trimmed; no control characters but tab and line"
                " breaks. Stored trimmed, otherwise verbatim.",
    examples=["Super session !"],
)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests

class CommentCreate(_Request):
    content: Content
    mentions: list[Uuid] | None = Field(
        default=None, max_length=MENTIONS_MAX,
        description="Participants of the session to mention (duplicates are ignored).")


class CommentUpdate(_Request):
    content: Content
    mentions: list[Uuid] | None = Field(
        default=None, max_length=MENTIONS_MAX,
        description="Replaces the mentions; left out or null keeps them as they are.")


class TypingUpdate(_Request):
    isTyping: bool


class EventsQuery(_Request):
    """The SSE stream's query (documented here; api/sse_format.py parses it)."""

    since: int | None = Field(
        default=None, ge=0, le=MAX_SEQ,
        description="The last seq seen: the stream starts after it, from the log. A"
                    " Last-Event-ID header (an EventSource's reconnection) wins over it.")


class BroadcastingAuth(_Request):
    """What Laravel Echo (pusher-js) posts before subscribing to a private or presence
    channel; form-encoded as pusher-js sends it, or JSON (documented here; api/pusher_auth.py
    parses it)."""

    socket_id: str = Field(pattern=SOCKET_ID_PATTERN,
                           description="The Pusher connection's socket_id.")
    channel_name: str = Field(
        max_length=64, pattern=AUTH_CHANNEL_PATTERN,
        description="`private-sport-session.{id}` or `presence-sport-session.{id}`"
                    " (participants only), `private-user.{id}` (that user only).")


class ListQuery(_Request):
    page: int = Field(default=1, ge=1, le=PAGE_MAX,
                      description="Page number, counted from `before` when it is given.")
    limit: int = Field(default=20, ge=1, le=LIMIT_MAX)
    before: str | None = Field(
        default=None, min_length=1, max_length=CURSOR_MAX,
        description="Keyset cursor (`pagination.nextCursor` of a previous page): only comments"
                    " older than it. Stable while new comments arrive.")


# Responses

class CommentUser(_Response):
    id: Uuid
    firstname: str
    lastname: str
    avatar: str | None


class Mention(_Response):
    id: Uuid
    firstname: str
    lastname: str


class Comment(_Response):
    id: Uuid
    content: str
    user: CommentUser
    mentions: list[Mention]
    created_at: Timestamp
    updated_at: Timestamp


class CommentResponse(_Response):
    success: Literal[True]
    data: Comment
    message: str


class Pagination(_Response):
    page: int
    limit: int
    total: int
    totalPages: int
    nextCursor: str | None


class CommentListResponse(_Response):
    success: Literal[True]
    data: list[Comment]
    pagination: Pagination


class MessageResponse(_Response):
    success: Literal[True]
    message: str


class PresenceJoined(_Response):
    sessionId: Uuid
    userId: Uuid
    joinedAt: Timestamp


class PresenceJoinResponse(_Response):
    success: Literal[True]
    data: PresenceJoined
    message: str


class PresenceLeft(_Response):
    sessionId: Uuid
    userId: Uuid
    leftAt: Timestamp


class PresenceLeaveResponse(_Response):
    success: Literal[True]
    data: PresenceLeft
    message: str


class Typing(_Response):
    sessionId: Uuid
    userId: Uuid
    isTyping: bool
    timestamp: Timestamp


class TypingResponse(_Response):
    success: Literal[True]
    data: Typing


class PresenceUser(_Response):
    id: Uuid
    firstname: str
    lastname: str
    avatar: str | None
    isTyping: bool
    lastSeen: Timestamp


class PresenceUsersResponse(_Response):
    success: Literal[True]
    data: list[PresenceUser]
    total: int


class ErrorDetail(_Response):
    code: ErrorCode
    message: str


class ErrorResponse(_Response):
    success: Literal[False]
    error: ErrorDetail


# The realtime side's answers (tickets, the SSE stream's refusals): the same envelope, with
# the realtime transports' error codes (api/realtime_protocol.py).

class Ticket(_Response):
    ticket: str = Field(description="Pass it as `?ticket=` to /ws or to the SSE stream.")
    expiresAt: Timestamp
    expiresIn: int = Field(description="Seconds the ticket stays good for.")


class TicketResponse(_Response):
    success: Literal[True]
    data: Ticket


class RealtimeErrorDetail(_Response):
    code: RealtimeErrorCode
    message: str


class RealtimeErrorResponse(_Response):
    success: Literal[False]
    error: RealtimeErrorDetail


# POST /broadcasting/auth (Pusher protocol transport; api/pusher_auth.py).

class BroadcastingAuthResponse(_Response):
    auth: str = Field(description="`<app key>:<hex HMAC-SHA256 of"
                                  " socket_id:channel_name:channel_data>`, as Pusher signs.")
    channel_data: str = Field(
        description="JSON: `user_id`, `user_info` (presence channels: the user as the"
                    " presence list shows them) and `courtside_token`, the id of the token"
                    " that asked; pusher-js sends it back with the subscription.")


class BroadcastingErrorDetail(_Response):
    code: ErrorCode | RealtimeErrorCode
    message: str


class BroadcastingErrorResponse(_Response):
    success: Literal[False]
    error: BroadcastingErrorDetail
