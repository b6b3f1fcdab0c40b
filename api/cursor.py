"""Keyset cursors for the comment listing: an opaque token for a position (created_at, id).

Newest first, so "the next page" is everything strictly before the last comment shown.
Comments created meanwhile sort before the first page and never shift the pages after it,
as an offset would. The token is url-safe base64 of ``v1:<epoch microseconds>:<uuid hex>``:
exact to the microsecond, as PostgreSQL stores timestamps.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_PREFIX = "v1"


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class Position:
    created_at: datetime
    id: uuid.UUID


def encode(created_at: datetime, comment_id: uuid.UUID) -> str:
    micros = (created_at - _EPOCH) // _MICRO
    raw = f"{_PREFIX}:{micros}:{comment_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> Position:
    if not token or len(token) > 200 or not token.isascii():
        raise InvalidCursor(token)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        prefix, micros_text, hex_id = raw.split(":")
        if prefix != _PREFIX or not micros_text.lstrip("-").isdigit() or len(hex_id) != 32:
            raise InvalidCursor(token)
        created_at = _EPOCH + int(micros_text) * _MICRO
        return Position(created_at, uuid.UUID(hex=hex_id))
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise InvalidCursor(token) from exc
