from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from courtside.migrate import migrate
from courtside.pgcluster import Cluster
from tests.pg import Server, owned_cluster, server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    with server() as srv:
        yield srv


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    name = pg_server.create_database()
    try:
        migrate(pg_server.dsn(name))
        yield name
    finally:
        with contextlib.suppress(Exception):
            pg_server.drop_database(name)


@pytest.fixture
def db(pg_server: Server, template_db: str) -> Iterator[str]:
    """The DSN of a fresh, migrated database for this test alone."""
    name = pg_server.create_database(template=template_db)
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A migrated cluster this test owns (database `courtside`): it may stop, restart or kill it."""
    with owned_cluster(migrated_db="courtside") as cluster:
        yield cluster


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
