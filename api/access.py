"""Who may read and write a session: its participants, while the session exists.

The REST API asks it with `api.access_refusal_v1` (db/functions/api.sql), most often inside
the statement that does the request's work; the realtime transports ask it in batches
(api/session_access.py) of the same rows.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from api import errors
from api.i18n import Message
from bridge import sqlfile

_SQL = sqlfile.load("api.sql", "auth.sql")


async def can_read_session(conn: psycopg.AsyncConnection[Any], session_id: uuid.UUID,
                           user_id: uuid.UUID) -> None:
    """Returns when `user_id` takes part in the session; raises SESSION_NOT_FOUND (unknown or
    soft-deleted session) or NOT_PARTICIPANT."""
    cur = await conn.execute(_SQL.session_refusal,
                             {"session_id": session_id, "user_id": user_id})
    row = await cur.fetchone()
    refuse(row[0] if row is not None else None)


# Writing takes the same rights as reading: every participant may comment and be present.
can_write_session = can_read_session


def refuse(outcome: str | None) -> None:
    """Raise the API error for a refusal the database answered (api.access_refusal_v1, in
    the statement that would have done the work); return when there is none."""
    if outcome is not None:
        raise refusal(outcome)


def refusal(outcome: str, body: Any = None, forbidden_key: str = "") -> errors.ApiError:
    """The API error for a refusal of the REST functions and statements (db/functions/api.sql:
    nothing was written). `body`: the refused mentions, or the seconds to wait;
    `forbidden_key`: the message of a FORBIDDEN."""
    if outcome == "session_not_found":
        return errors.session_not_found()
    if outcome == "not_participant":
        return errors.not_participant()
    if outcome == "comment_not_found":
        return errors.comment_not_found()
    if outcome == "forbidden":
        return errors.forbidden(forbidden_key)
    if outcome == "strangers":
        return errors.validation(Message("validation.mentions_not_participants",
                                         {"ids": ", ".join(str(i) for i in body)}))
    if outcome == "rate_limited":
        return errors.rate_limited(float(body))
    raise AssertionError(f"unknown refusal from the database: {outcome!r}")
