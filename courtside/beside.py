"""Something that runs beside the app for as long as it serves: a loop-lag probe, the
pipeline check. Wraps an `extra_lifespan` (api/app.py) the way courtside serve composes
them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import anyio
from starlette.applications import Starlette

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


class Runs(Protocol):
    async def run(self) -> None:
        """Until cancelled."""


def beside(inner: Lifespan, attribute: str, make: Callable[[Starlette], Runs]) -> Lifespan:
    """Once `inner` has started, ``make(app)`` is kept as ``app.state.<attribute>`` (for
    /metrics) and its `run` goes on until the app shuts down."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app):
            runner = make(app)
            setattr(app.state, attribute, runner)
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()

    return lifespan
