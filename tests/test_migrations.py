"""Migrations: forward-only, idempotent, safe to run concurrently, same schema every time."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from courtside import migrate as migrate_mod
from courtside.migrate import MigrationError, migrate
from tests import factories
from tests.pg import Server

FINGERPRINT = """
SELECT 'column', format('%s.%s.%s %s %s %s', table_schema, table_name, column_name, data_type,
                        is_nullable, column_default)
FROM information_schema.columns WHERE table_schema IN ('public', 'realtime')
UNION ALL
SELECT 'relation', format('%s.%s %s %s', n.nspname, c.relname, c.relkind, c.relpersistence)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('public', 'realtime')
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname IN ('public', 'realtime')
UNION ALL
SELECT 'constraint', format('%s %s', conname, pg_get_constraintdef(c.oid))
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
WHERE n.nspname IN ('public', 'realtime')
UNION ALL
SELECT 'trigger', pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND n.nspname IN ('public', 'realtime')
UNION ALL
SELECT 'function', pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('realtime', 'api')
UNION ALL
SELECT 'disabled trigger', tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'
ORDER BY 1, 2
"""


def fingerprint(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(FINGERPRINT).fetchall()


def applied(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT name FROM courtside_migrations ORDER BY name").fetchall()]


@pytest.fixture
def empty_db(pg_server: Server) -> Any:
    name = pg_server.create_database()
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


def test_migrating_twice_changes_nothing_and_equals_a_fresh_build(
    db: str, empty_db: str
) -> None:
    before = fingerprint(db)
    assert migrate(db) == []  # the template was migrated: nothing new to apply
    assert fingerprint(db) == before
    assert len(before) > 50
    names = [f.name for f in migrate_mod.migration_files()]
    assert migrate(empty_db) == names
    assert fingerprint(empty_db) == before
    assert applied(empty_db) == names


def test_concurrent_runs_apply_each_migration_once(empty_db: str) -> None:
    errors: list[BaseException] = []
    results: list[list[str]] = []

    def run() -> None:
        try:
            results.append(migrate(empty_db))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    names = [f.name for f in migrate_mod.migration_files()]
    assert sorted(results, key=len) == [[], [], [], names]
    assert applied(empty_db) == names


def test_an_edited_migration_is_refused(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE courtside_migrations SET checksum = 'edited'"
                     " WHERE name = '0001_core.sql'")
    with pytest.raises(MigrationError, match=r"0001_core\.sql was changed"):
        migrate(db)


# -- the functions and triggers (db/triggers.sql, db/functions/) -------------------------

STAGE_TRIGGER = ("SELECT oid FROM pg_trigger WHERE tgname = 'courtside_stage'"
                 " AND tgrelid = 'public.sport_session_comments'::regclass")


def one(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def run(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


@contextlib.contextmanager
def reading_tokens(dsn: str) -> Iterator[int]:
    """An application transaction left open after reading the tokens table (its ACCESS
    SHARE lock held): the pid of its backend."""
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT count(*) FROM personal_access_tokens")
        yield holder.info.backend_pid
        holder.rollback()


def test_an_up_to_date_database_takes_no_lock_of_the_application(db: str) -> None:
    """Run again with nothing changed, migrate re-creates no trigger, so it needs no lock on
    the application's tables: it does not wait even behind an open transaction that wrote a
    comment and read the tokens."""
    trigger = one(db, STAGE_TRIGGER)
    w = factories.world(db, participants=1, outsiders=0)
    with reading_tokens(db), psycopg.connect(db) as writer:
        writer.execute("INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
                       " VALUES (%s, %s, 'open')", (w.session_id, w.owner))
        assert migrate(db, lock_timeout=0.05, give_up_after=0) == []
    assert one(db, STAGE_TRIGGER) == trigger


@pytest.mark.parametrize("change", [
    "DROP TRIGGER courtside_stage ON sport_session_comments",
    "ALTER TABLE sport_session_comment_mentions DISABLE TRIGGER courtside_flush",
    "CREATE OR REPLACE FUNCTION realtime.stage_truncate_v1() RETURNS trigger"
    " LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    "DROP FUNCTION api.access_refusal_v1(uuid, uuid) CASCADE",
])
def test_what_the_triggers_installed_is_restored_when_changed_by_hand(
        db: str, change: str, caplog: pytest.LogCaptureFixture) -> None:
    """The files did not change, but what they installed did (a Laravel migration dropped and
    re-created the comments table with its triggers, a trigger was disabled, a function
    replaced): migrate applies them again, and comments are broadcast again."""
    before = fingerprint(db)
    run(db, change)
    assert fingerprint(db) != before
    with caplog.at_level(logging.INFO, logger="courtside.migrate"):
        assert migrate(db) == []
    assert fingerprint(db) == before
    assert "applying them again" in caplog.text
    w = factories.world(db, participants=1, outsiders=0)
    run(db, f"INSERT INTO sport_session_comments (sport_session_id, user_id, content)"
            f" VALUES ('{w.session_id}', '{w.owner}', 'seen')")
    assert one(db, "SELECT count(*) FROM realtime.events WHERE type = 'comment.created'") == 1


def test_changed_files_are_applied_again(db: str) -> None:
    trigger = one(db, STAGE_TRIGGER)
    run(db, "UPDATE courtside_repeatables SET files = 'an older version'")
    assert migrate(db) == []
    assert one(db, STAGE_TRIGGER) != trigger
    assert one(db, "SELECT files FROM courtside_repeatables") == \
        migrate_mod.repeatables_checksum(migrate_mod.repeatable_files())


def test_a_migration_waiting_for_locks_does_not_stall_the_application(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    """Applying the triggers needs ACCESS EXCLUSIVE locks. Held off by an open transaction,
    its request would queue every later query of the table behind it; here it waits at most
    lock_timeout at a time, so the application's queries go through meanwhile, and it is
    applied once that transaction ends."""
    trigger = one(db, STAGE_TRIGGER)
    run(db, "UPDATE courtside_repeatables SET files = 'an older version'")
    result: list[object] = []
    with caplog.at_level(logging.INFO, logger="courtside.migrate"), \
            reading_tokens(db) as holder:
        thread = threading.Thread(target=lambda: result.append(
            migrate(db, lock_timeout=0.2, give_up_after=60)))
        thread.start()
        deadline = time.monotonic() + 30
        while "waits for locks" not in caplog.text:
            assert time.monotonic() < deadline, "migrate never waited"
            time.sleep(0.02)
        with psycopg.connect(db, autocommit=True) as app:
            app.execute("SET statement_timeout = '5s'")
            for _ in range(20):  # over a second: several of migrate's attempts
                app.execute("SELECT count(*) FROM personal_access_tokens")
                time.sleep(0.05)
        assert thread.is_alive()
        assert f"pid {holder} idle in transaction" in caplog.text
    thread.join(30)
    assert result == [[]]
    assert one(db, STAGE_TRIGGER) != trigger


def test_a_migration_gives_up_when_the_locks_stay_held(db: str) -> None:
    trigger = one(db, STAGE_TRIGGER)
    run(db, "UPDATE courtside_repeatables SET files = 'an older version'")
    with reading_tokens(db) as holder, \
            pytest.raises(MigrationError, match=rf"stayed held .* pid {holder} "):
        migrate(db, lock_timeout=0.1, give_up_after=0.5)
    assert one(db, STAGE_TRIGGER) == trigger
    assert one(db, "SELECT files FROM courtside_repeatables") == "an older version"


def test_the_cli_says_who_holds_the_locks_and_exits_1(db: str) -> None:
    run(db, "UPDATE courtside_repeatables SET files = 'an older version'")
    command = [sys.executable, "-m", "courtside.cli", "migrate", "--lock-wait", "0.5"]
    env = dict(os.environ, DATABASE_URL=db)
    with reading_tokens(db) as holder:
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                             check=False)
    assert out.returncode == 1, out.stderr
    assert "stayed held by other transactions for 0.5 s" in out.stderr
    assert f"pid {holder} idle in transaction" in out.stderr
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "applied triggers.sql" in out.stderr
