"""Laravel Sanctum personal access tokens: the format, minting, and the stored hash.

A token is ``"<id>|<plaintext>"``; the row stores ``sha256(plaintext)`` as hex. Sanctum 4
builds the plaintext as ``prefix + random40 + crc32b(random40)``; any plaintext verifies
the same way, so tokens of every Sanctum version work.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

_ALPHABET = string.ascii_letters + string.digits
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True)
class ParsedToken:
    token_id: int | None  # None: a bare plaintext, looked up by its hash as Sanctum does
    plaintext: str


def hash_plaintext(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_plaintext(prefix: str = "") -> str:
    entropy = "".join(secrets.choice(_ALPHABET) for _ in range(40))
    return f"{prefix}{entropy}{zlib.crc32(entropy.encode()) & 0xFFFFFFFF:08x}"


def parse(bearer: str) -> ParsedToken | None:
    """Split a bearer value; None when it cannot be a Sanctum token."""
    if not bearer or len(bearer) > MAX_TOKEN_LENGTH or not bearer.isprintable():
        return None
    if "|" not in bearer:
        return ParsedToken(None, bearer)
    id_part, _, plaintext = bearer.partition("|")
    if not id_part.isdigit() or len(id_part) > 18 or not plaintext:
        return None
    return ParsedToken(int(id_part), plaintext)


def matches(stored_hash: str, plaintext: str) -> bool:
    return hmac.compare_digest(stored_hash.encode(), hash_plaintext(plaintext).encode())
