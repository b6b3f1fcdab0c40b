"""Forward-only migrations, then the event pipeline's functions and triggers, every time.

Files come from the `db` package: ``db/migrations/NNNN_name.sql`` in order, each applied once
in its own transaction and recorded with its checksum; then ``db/triggers.sql`` and
``db/functions/*.sql``, which are idempotent and re-applied on every run so a deploy always
ends with the current trigger code. A session-level advisory lock makes concurrent runs
(several workers starting at once) safe: the second waits, then finds nothing to do.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

import psycopg

log = logging.getLogger("courtside.migrate")

# Any fixed 64-bit number; it names this lock among all advisory locks of the database.
_LOCK_KEY = 0x636F757274736964  # "courtsid"


@dataclass(frozen=True)
class SqlFile:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _read_dir(folder: Traversable) -> list[SqlFile]:
    if not folder.is_dir():
        return []
    files = [f for f in folder.iterdir() if f.name.endswith(".sql")]
    files.sort(key=lambda f: f.name)
    return [SqlFile(f.name, f.read_text(encoding="utf-8")) for f in files]


def migration_files() -> list[SqlFile]:
    return _read_dir(resources.files("db") / "migrations")


def repeatable_files() -> list[SqlFile]:
    root = resources.files("db")
    triggers = root / "triggers.sql"
    functions = _read_dir(root / "functions")
    return [SqlFile("triggers.sql", triggers.read_text(encoding="utf-8")), *functions]


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the shipped ones."""


def migrate(dsn: str) -> list[str]:
    """Bring the database at `dsn` up to date. Returns the names of newly applied migrations."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = 0")
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS public.courtside_migrations (
                       name text PRIMARY KEY,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done: dict[str, str] = dict(
                conn.execute("SELECT name, checksum FROM public.courtside_migrations").fetchall()
            )
            for file in migration_files():
                if file.name in done:
                    if done[file.name] != file.checksum:
                        raise MigrationError(
                            f"migration {file.name} was changed after it was applied; "
                            "migrations are forward-only: add a new file instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(file.sql.encode())
                    conn.execute(
                        "INSERT INTO public.courtside_migrations (name, checksum) VALUES (%s, %s)",
                        (file.name, file.checksum),
                    )
                log.info("applied migration %s", file.name)
                applied_now.append(file.name)
            with conn.transaction():
                for file in repeatable_files():
                    conn.execute(file.sql.encode())
            log.info("applied %s", ", ".join(f.name for f in repeatable_files()))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
