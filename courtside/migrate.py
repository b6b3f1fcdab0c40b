"""Forward-only migrations, then the event pipeline's functions and triggers.

Files come from the `db` package: ``db/migrations/NNNN_name.sql`` in order, each applied once
in its own transaction and recorded with its checksum; then ``db/triggers.sql`` and
``db/functions/*.sql``, which are idempotent: they are applied again whenever they changed
or what they installed did (a trigger dropped with its table by a Laravel migration, one
disabled, a function replaced by hand), so a deploy always ends with the current trigger code
in place. A session-level advisory lock makes concurrent runs (several workers starting at
once) safe: the second waits, then finds nothing to do.

Applying the triggers takes ACCESS EXCLUSIVE locks on the application's busiest tables (the
comments, the tokens every request reads). A lock request waits behind any transaction that
touched the table, and every later query on the table waits behind the request: one long
transaction would stall the whole application for as long as it lasted. So nothing is
re-applied when nothing changed, and each transaction waits at most `lock_timeout` for a
lock, then lets the queue drain and tries again, saying who holds it, for up to
`give_up_after` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from typing import Any

import psycopg
from psycopg import errors

from bridge import sqlfile

log = logging.getLogger("courtside.migrate")

_SQL = sqlfile.load("courtside.sql", "migrate.sql")

# Any fixed 64-bit number; it names this lock among all advisory locks of the database.
_LOCK_KEY = 0x636F757274736964  # "courtsid"

LOCK_TIMEOUT = 2.0
GIVE_UP_AFTER = 300.0
_MAX_PAUSE = 10.0


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


def repeatables_checksum(files: list[SqlFile]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{file.checksum}\n".encode())
    return digest.hexdigest()


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the shipped ones, or the locks a
    migration needs stayed held by others for longer than it may wait."""


def migrate(dsn: str, *, lock_timeout: float = LOCK_TIMEOUT,
            give_up_after: float = GIVE_UP_AFTER) -> list[str]:
    """Bring the database at `dsn` up to date. Returns the names of newly applied migrations."""
    applied_now: list[str] = []
    retry = _Retry(lock_timeout, give_up_after)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = 0")  # the advisory lock: wait for the other run
        conn.execute(_SQL.lock, {"key": _LOCK_KEY})
        try:
            retry.run(conn, "creating courtside's tables",
                      lambda: conn.execute(_SQL.create_state))
            done: dict[str, str] = dict(conn.execute(_SQL.applied_migrations).fetchall())
            for file in migration_files():
                if file.name in done:
                    if done[file.name] != file.checksum:
                        raise MigrationError(
                            f"migration {file.name} was changed after it was applied; "
                            "migrations are forward-only: add a new file instead"
                        )
                    continue
                retry.run(conn, f"migration {file.name}", _applying(conn, file))
                log.info("applied migration %s", file.name)
                applied_now.append(file.name)
            _apply_repeatables(conn, retry)
        finally:
            conn.execute(_SQL.unlock, {"key": _LOCK_KEY})
    return applied_now


def _applying(conn: psycopg.Connection[Any], file: SqlFile) -> Callable[[], None]:
    def apply() -> None:
        conn.execute(file.sql.encode())
        conn.execute(_SQL.record_migration, {"name": file.name, "checksum": file.checksum})
    return apply


def _installed(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(_SQL.installed).fetchone()
    assert row is not None
    return str(row[0])


def _apply_repeatables(conn: psycopg.Connection[Any], retry: _Retry) -> None:
    files = repeatable_files()
    names = ", ".join(f.name for f in files)
    checksum = repeatables_checksum(files)
    row = conn.execute(_SQL.repeatables).fetchone()
    if row is not None and row[0] == checksum:
        if row[1] == _installed(conn):
            log.info("%s: up to date", names)
            return
        log.warning("%s: what they installed has changed since (a trigger dropped, disabled"
                    " or a function replaced): applying them again", names)

    def apply() -> None:
        for file in files:
            conn.execute(file.sql.encode())
        conn.execute(_SQL.record_repeatables, {"files": checksum,
                                               "installed": _installed(conn)})

    retry.run(conn, names, apply)
    log.info("applied %s", names)


class _Retry:
    """Runs a transaction whose statements wait at most `lock_timeout` for each lock; one
    that timed out is rolled back and run again after a pause (doubling, up to 10 s), until
    `give_up_after` seconds have passed (MigrationError)."""

    def __init__(self, lock_timeout: float, give_up_after: float) -> None:
        self._lock_timeout_ms = max(1, round(lock_timeout * 1000))
        self._deadline = time.monotonic() + give_up_after
        self._give_up_after = give_up_after

    def run(self, conn: psycopg.Connection[Any], what: str, work: Callable[[], object]
            ) -> None:
        pause = 0.25
        while True:
            try:
                with conn.transaction():
                    conn.execute(_SQL.set_lock_timeout, {"ms": str(self._lock_timeout_ms)})
                    work()
                return
            except errors.LockNotAvailable as exc:
                if time.monotonic() + pause > self._deadline:
                    raise MigrationError(
                        f"{what}: the locks it needs stayed held by other transactions for"
                        f" {self._give_up_after:g} s ({_holders(conn)})") from exc
                log.warning("%s waits for locks other transactions hold (%s); nothing"
                            " applied, trying again in %.2g s", what, _holders(conn), pause)
                time.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE)


def _holders(conn: psycopg.Connection[Any]) -> str:
    rows = conn.execute(_SQL.oldest_transactions).fetchall()
    if not rows:
        return "none open now"
    return "oldest open transactions: " + "; ".join(
        f"pid {pid} {state} for {seconds} s: {query}" for pid, state, seconds, query in rows)
