"""Rate limits kept in PostgreSQL (db/functions/api.sql `api.rate_hit_v1`), so they hold
across processes. A comment's creation counts its hit inside its own transaction
(`api.create_comment_v1`): a refused or failed creation costs nothing."""

from __future__ import annotations

import uuid

WINDOW_SECONDS = 60.0


def comments_bucket(user_id: uuid.UUID) -> str:
    return f"comments:{user_id}"
