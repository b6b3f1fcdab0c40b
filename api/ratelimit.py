"""Rate limits kept in PostgreSQL (db/functions/api.sql), so they hold across processes."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from api import errors
from bridge import sqlfile

_SQL = sqlfile.load("api.sql", "limits.sql")
WINDOW_SECONDS = 60.0


def comments_bucket(user_id: uuid.UUID) -> str:
    return f"comments:{user_id}"


async def hit(conn: psycopg.AsyncConnection[Any], bucket: str, limit: int,
              window_seconds: float = WINDOW_SECONDS) -> None:
    """Count one hit, or raise RATE_LIMITED with the seconds to wait.

    Run it inside the transaction that does the limited work: the hit then only counts if
    the work commits, and the bucket's row lock serializes concurrent hits.
    """
    cur = await conn.execute(_SQL.rate_hit,
                             {"bucket": bucket, "limit": limit, "window": window_seconds})
    row = await cur.fetchone()
    refuse_if_waiting(float(row[0]) if row is not None else 0.0)


def refuse_if_waiting(wait: float) -> None:
    """What a hit answered (api.rate_hit_v1): RATE_LIMITED unless it was counted."""
    if wait > 0:
        raise errors.rate_limited(wait)
