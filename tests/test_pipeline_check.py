"""A running server notices when courtside's triggers stop being what `courtside migrate`
installed (courtside/pipeline_check.py): it logs an error and /metrics says so, until
migrate puts them back."""

from __future__ import annotations

import logging

import anyio
import psycopg
import pytest
from starlette.applications import Starlette

from api.app import ApiConfig, create_app
from api.realtime import RealtimeConfig, realtime_lifespan, realtime_routes
from courtside.migrate import migrate
from courtside.pipeline_check import Pipeline, assess, checked_pipeline
from tests.test_metrics import one, scrape
from tests.test_realtime_support import FAST_BRIDGE, running


def test_assess() -> None:
    assert assess("v2", None, "d") is Pipeline.NOT_RECORDED
    assert assess("v2", ("v1", "d"), "d") is Pipeline.OUTDATED
    assert assess("v2", ("v2", "d"), "d") is Pipeline.INSTALLED
    assert assess("v2", ("v2", "d"), "e") is Pipeline.CHANGED


def build(dsn: str) -> Starlette:
    return create_app(
        ApiConfig(database_url=dsn, pool_max_size=5),
        extra_routes=realtime_routes(),
        extra_lifespan=checked_pipeline(realtime_lifespan(
            dsn, None, config=RealtimeConfig(), bridge_config=FAST_BRIDGE), every=0.1))


async def installed(base: str, expected: float) -> None:
    """Wait for /metrics to say `expected` (the check runs every 0.1 s)."""
    with anyio.fail_after(10):
        while True:
            samples = await scrape(base)
            key = ("courtside_pipeline_installed", ())
            if key in samples and one(samples, "courtside_pipeline_installed") == expected:
                return
            await anyio.sleep(0.05)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "courtside.pipeline" and r.levelno == logging.ERROR]


@pytest.mark.anyio
@pytest.mark.parametrize(("change", "said"), [
    ("DROP TRIGGER courtside_flush ON sport_session_comments", "were changed"),
    ("ALTER TABLE sport_session_comments DISABLE TRIGGER courtside_stage", "were changed"),
    ("UPDATE courtside_repeatables SET files = 'another version'", "another version of courtside"),
    ("DROP TABLE courtside_repeatables", "has not recorded"),
])
async def test_a_changed_pipeline_is_reported_until_migrate_restores_it(
        db: str, change: str, said: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="courtside.pipeline"), \
            running(build(db)) as base:
        await installed(base, 1)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(change.encode())
        await installed(base, 0)
        # Said once, not at every check (every 0.1 s here, repeated every 10 minutes).
        await anyio.sleep(0.5)
        assert len(errors(caplog)) == 1, errors(caplog)
        assert said in errors(caplog)[0]
        assert "run `courtside migrate`" in errors(caplog)[0]
        await anyio.to_thread.run_sync(migrate, db)
        await installed(base, 1)
        assert "installed as courtside migrate left it again" in caplog.text
    assert len(errors(caplog)) == 1
