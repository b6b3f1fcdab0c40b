"""Migrations: forward-only, idempotent, safe to run concurrently, same schema every time."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from courtside import migrate as migrate_mod
from courtside.migrate import MigrationError, migrate
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
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'realtime'
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
