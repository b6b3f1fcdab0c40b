"""Real PostgreSQL for the tests: a server, migrated template databases, owned clusters."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from courtside.migrate import migrate
from courtside.pgcluster import Cluster

# Test clusters trade durability for speed; commit timestamps let tests check commit order.
TEST_SETTINGS = {"track_commit_timestamp": "on", "max_connections": "300"}


def with_dbname(dsn: str, dbname: str) -> str:
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    params["dbname"] = dbname
    return make_conninfo("", **params)


@dataclass
class Server:
    admin_dsn: str

    def create_database(self, template: str | None = None) -> str:
        name = f"courtside_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            if template is None:
                conn.execute(f'CREATE DATABASE "{name}"')
            else:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dsn(self, dbname: str) -> str:
        return with_dbname(self.admin_dsn, dbname)


@contextlib.contextmanager
def server() -> Iterator[Server]:
    """COURTSIDE_TEST_DATABASE_URL's server, or a throwaway cluster removed afterwards."""
    url = os.environ.get("COURTSIDE_TEST_DATABASE_URL")
    if url:
        yield Server(url)
        return
    with owned_cluster() as cluster:
        yield Server(cluster.dsn("postgres"))


@contextlib.contextmanager
def owned_cluster(migrated_db: str | None = None) -> Iterator[Cluster]:
    """A cluster of the caller's own, free to stop, restart or kill; removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="courtside-pg-"))
    cluster = Cluster(tmp / "data", fsync=False, settings=TEST_SETTINGS)
    try:
        cluster.init()
        cluster.start()
        if migrated_db is not None:
            with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{migrated_db}"')
            migrate(cluster.dsn(migrated_db))
        yield cluster
    finally:
        cluster.destroy()
        with contextlib.suppress(OSError):
            tmp.rmdir()
