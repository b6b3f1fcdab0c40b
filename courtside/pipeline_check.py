"""Whether the database's event pipeline is still the one `courtside migrate` installed.

The triggers are what makes every write broadcast, whoever makes it. A Laravel migration that
rebuilds the comments table drops them with it; ``ALTER TABLE ... DISABLE TRIGGER`` or a
function edited by hand changes them; courtside upgraded without `courtside migrate` leaves
the previous version's. Each of these stops or changes broadcasting, silently, until the
next migrate: the very bug courtside exists to prevent. So each server process compares,
at start and every `every` seconds, the digest of what is installed and the shipped files
with what migrate recorded (courtside/migrate.py). A mismatch is logged as an error when
found and every `repeat_every` seconds while it lasts, and /metrics says
``courtside_pipeline_installed 0``. Nothing is repaired here: a trigger may have been
disabled on purpose, and `courtside migrate` is the one place that takes DDL locks.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from bridge import sqlfile
from bridge.finish import query_connection
from courtside.beside import Lifespan, beside
from courtside.migrate import repeatable_files, repeatables_checksum

log = logging.getLogger("courtside.pipeline")

_SQL = sqlfile.load("courtside.sql", "migrate.sql")

CHECK_EVERY = 60.0
REPEAT_EVERY = 600.0
QUERY_TIMEOUT = 10.0


class Pipeline(enum.Enum):
    INSTALLED = "installed"
    NOT_RECORDED = "not recorded"
    OUTDATED = "outdated"
    CHANGED = "changed"


_PROBLEMS = {
    Pipeline.NOT_RECORDED: "courtside migrate has not recorded the triggers it installed"
                           " (never run, or run by an earlier version)",
    Pipeline.OUTDATED: "the triggers and functions in the database were installed by another"
                       " version of courtside (or this server is the older side of a deploy"
                       " in progress)",
    Pipeline.CHANGED: "courtside's triggers or functions were changed since courtside"
                      " migrate installed them (dropped with their table, disabled, or"
                      " replaced): writes may not be broadcast",
}


def assess(shipped: str, recorded: tuple[str, str] | None, installed: str) -> Pipeline:
    """`shipped`: the checksum of this version's files; `recorded`: what migrate applied and
    what that installed; `installed`: the digest of what is installed now."""
    if recorded is None:
        return Pipeline.NOT_RECORDED
    files, digest = recorded
    if files != shipped:
        return Pipeline.OUTDATED
    return Pipeline.INSTALLED if digest == installed else Pipeline.CHANGED


class PipelineCheck:
    def __init__(self, pool: AsyncConnectionPool[Any], every: float = CHECK_EVERY,
                 repeat_every: float = REPEAT_EVERY) -> None:
        self._pool = pool
        self.every = every
        self.repeat_every = repeat_every
        self.state: Pipeline | None = None  # None: not known yet
        self._shipped = repeatables_checksum(repeatable_files())
        self._logged_at = float("-inf")

    @property
    def installed(self) -> bool | None:
        """For /metrics: None until known."""
        return None if self.state is None else self.state is Pipeline.INSTALLED

    async def check(self) -> Pipeline | None:
        """Look now; the state stays as it was when the database does not answer."""
        try:
            async with query_connection(self._pool, QUERY_TIMEOUT) as conn:
                cur = await conn.execute(_SQL.repeatables)
                recorded = await cur.fetchone()
                cur = await conn.execute(_SQL.installed)
                row = await cur.fetchone()
        except psycopg.errors.UndefinedTable:
            recorded, row = None, ("",)
        except (psycopg.Error, TimeoutError) as exc:
            log.debug("pipeline check failed: %r", exc)
            return self.state
        assert row is not None
        state = assess(self._shipped, None if recorded is None else (recorded[0], recorded[1]),
                       str(row[0]))
        self._report(state, anyio.current_time())
        return state

    def _report(self, state: Pipeline, now: float) -> None:
        previous, self.state = self.state, state
        if state is Pipeline.INSTALLED:
            if previous not in (None, Pipeline.INSTALLED):
                log.info("the event pipeline is installed as courtside migrate left it again")
            return
        if state is not previous or now - self._logged_at >= self.repeat_every:
            log.error("%s; run `courtside migrate` to install them", _PROBLEMS[state])
            self._logged_at = now

    async def run(self) -> None:
        """Check until cancelled."""
        while True:
            await self.check()
            await anyio.sleep(self.every)


def checked_pipeline(inner: Lifespan, every: float = CHECK_EVERY) -> Lifespan:
    """Wrap an `extra_lifespan`: while the app runs, `PipelineCheck` watches the database's
    pipeline on the app's pool (kept as ``app.state.pipeline_check`` for /metrics)."""
    return beside(inner, "pipeline_check", lambda app: PipelineCheck(app.state.pool, every))
