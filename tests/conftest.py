from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from courtside.migrate import migrate
from courtside.pgcluster import Cluster
from tests import pg
from tests.pg import Server, owned_cluster
from tests.test_realtime_support import build_app, running


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    with pg.server() as srv:
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
def server(request: pytest.FixtureRequest, db: str) -> Iterator[str]:
    """The base URL of the app under a real uvicorn on `db`: `build_app`, or the module's
    ``SERVER_APP`` (e.g. the Pusher-enabled app)."""
    build = getattr(request.module, "SERVER_APP", build_app)
    with running(build(db)) as base:
        yield base


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
