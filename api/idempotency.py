"""Idempotency-Key for creations: the same key (per user) gives the same response, once.

The key's row is inserted first in the creating transaction. A concurrent request with the
same key blocks on the primary key until that transaction ends: after a commit it finds the
stored response, after a rollback it proceeds itself. The fingerprint of what was asked
guards against a key reused for a different request.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from api import errors, jsonio
from api.i18n import Message
from bridge import sqlfile

_SQL = sqlfile.load("api.sql", "limits.sql")
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class Stored:
    status: int
    data: Any


def fingerprint(request: Any) -> str:
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def claim(conn: psycopg.AsyncConnection[Any], user_id: uuid.UUID, key: str,
                request_fingerprint: str) -> Stored | None:
    """In the creating transaction: None when this request owns the key and must do the
    work (then call `store`), else the response stored by the request that did it."""
    params = {"user_id": user_id, "key": key, "fingerprint": request_fingerprint}
    for _ in range(3):  # the other row may be pruned between our insert and our read
        cur = await conn.execute(_SQL.claim_key, params)
        if await cur.fetchone() is not None:
            return None
        cur = await conn.execute(_SQL.stored_response, params)
        row = await cur.fetchone()
        if row is None:
            continue
        stored_fingerprint, status, data = row
        if status is None:  # cannot happen: the row commits with its response
            break
        if stored_fingerprint != request_fingerprint:
            raise errors.validation(Message("validation.idempotency_reused"))
        return Stored(int(status), data)
    raise errors.unavailable()


async def store(conn: psycopg.AsyncConnection[Any], user_id: uuid.UUID, key: str,
                status: int, data: Any) -> None:
    await conn.execute(_SQL.store_response, {"user_id": user_id, "key": key, "status": status,
                                             "response": jsonio.jsonb(data)})
