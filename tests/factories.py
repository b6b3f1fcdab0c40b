"""Rows for tests, written with plain SQL as any other client of the database would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from api import tokens


@dataclass
class World:
    """A session with participants, and a few users who are not in it."""

    session_id: uuid.UUID
    owner: uuid.UUID
    participants: list[uuid.UUID]
    outsiders: list[uuid.UUID] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return f"session:{self.session_id}"


def user(conn: psycopg.Connection[tuple[object, ...]], firstname: str = "Jane",
         lastname: str = "Doe") -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO users (firstname, lastname, email) VALUES (%s, %s, %s) RETURNING id",
        (firstname, lastname, f"{uuid.uuid4().hex}@example.test"),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def session(conn: psycopg.Connection[tuple[object, ...]], owner: uuid.UUID,
            visibility: str = "private") -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO sport_sessions (title, visibility, owner_id) VALUES (%s, %s, %s) RETURNING id",
        ("Five-a-side", visibility, owner),
    ).fetchone()
    assert row is not None
    session_id = uuid.UUID(str(row[0]))
    join(conn, session_id, owner, role="owner")
    return session_id


def join(conn: psycopg.Connection[tuple[object, ...]], session_id: uuid.UUID,
         user_id: uuid.UUID, role: str = "participant") -> None:
    conn.execute(
        "INSERT INTO sport_session_participants (sport_session_id, user_id, role)"
        " VALUES (%s, %s, %s)",
        (session_id, user_id, role),
    )


def world(dsn: str, participants: int = 3, outsiders: int = 1,
          visibility: str = "private") -> World:
    with psycopg.connect(dsn, autocommit=True) as conn:
        owner = user(conn, "Olive", "Owner")
        sid = session(conn, owner, visibility)
        members = [owner]
        for i in range(participants - 1):
            uid = user(conn, f"Player{i}", "Participant")
            join(conn, sid, uid)
            members.append(uid)
        others = [user(conn, f"Out{i}", "Sider") for i in range(outsiders)]
    return World(sid, owner, members, others)


def token(dsn: str, user_id: uuid.UUID, expires_in_seconds: int | None = None) -> str:
    """A bearer token built exactly the way Laravel Sanctum builds one."""
    plaintext = tokens.new_plaintext()
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token,"
            " abilities, expires_at, created_at, updated_at) VALUES ('App\\Models\\User', %s,"
            " 'test', %s, '[\"*\"]', (now() AT TIME ZONE 'UTC') + make_interval(secs => %s),"
            " now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING id",
            (user_id, tokens.hash_plaintext(plaintext), expires_in_seconds),
        ).fetchone()
    assert row is not None
    return f"{row[0]}|{plaintext}"


def token_id(token: str) -> int:
    """The personal_access_tokens id of a bearer token ("<id>|<plaintext>")."""
    return int(token.split("|", 1)[0])


def last_used(dsn: str, *tokens: str) -> list[datetime | None]:
    """Each token's last_used_at, as stored (naive UTC); None where never used."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows: dict[int, datetime | None] = dict(conn.execute(
            "SELECT id, last_used_at FROM personal_access_tokens WHERE id = ANY(%s)",
            ([token_id(t) for t in tokens],)).fetchall())
    return [rows[token_id(t)] for t in tokens]
