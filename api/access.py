"""Who may read and write a session: its participants, while the session exists.

The REST API asks it with `api.session_access_v1` (db/functions/api.sql), most often inside
the statement that does the request's work; the realtime transports ask it in batches
(api/session_access.py) of the same rows.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from api import errors
from bridge import sqlfile

_SQL = sqlfile.load("api.sql", "auth.sql")


async def can_read_session(conn: psycopg.AsyncConnection[Any], session_id: uuid.UUID,
                           user_id: uuid.UUID) -> None:
    """Returns when `user_id` takes part in the session; raises SESSION_NOT_FOUND (unknown or
    soft-deleted session) or NOT_PARTICIPANT."""
    cur = await conn.execute(_SQL.session_access,
                             {"session_id": session_id, "user_id": user_id})
    row = await cur.fetchone()
    refuse_unless_allowed(row[0] if row is not None else None)


def refuse_unless_allowed(access: bool | None) -> None:
    """What `api.session_access_v1` answered, as the API's refusal: NULL is no session
    (SESSION_NOT_FOUND), false NOT_PARTICIPANT. Queries that ask it in the same statement as
    their work pass its answer here."""
    if access is None:
        raise errors.session_not_found()
    if not access:
        raise errors.not_participant()


# Writing takes the same rights as reading: every participant may comment and be present.
can_write_session = can_read_session
