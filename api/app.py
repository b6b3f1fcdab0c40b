"""The API application: REST routes, /openapi.json, errors as envelopes, and the pool.

Composition (docs/INTERNALS.md "API app")::

    app = create_app(config, extra_routes=[...], extra_lifespan=None, extra_operations=())

The lifespan opens ``app.state.pool`` (an AsyncConnectionPool, autocommit connections whose
json/jsonb are parsed by orjson), prunes idempotency keys and rate-limit buckets now and
then, and enters ``extra_lifespan(app)`` once the pool is open.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from api import errors, openapi, routes
from api.config import ApiConfig
from api.cors import Cors
from api.direct_routes import DirectApp
from api.errors import ApiError, ErrorCode
from api.i18n import Lang, negotiate, render
from api.jsonio import configure_connection
from api.token_touch import TokenTouches
from bridge import sqlfile
from bridge.finish import query_connection
from bridge.poolcheck import RecentCheck

__all__ = ["ApiConfig", "create_app"]

log = logging.getLogger("courtside.api")
_LIMITS = sqlfile.load("api.sql", "limits.sql")
POOL_OPEN_TIMEOUT = 30.0
PRUNE_TIMEOUT = 10.0

ExtraLifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def _lang(conn: HTTPConnection) -> Lang:
    return negotiate(conn.headers.get("accept-language"))


async def _api_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, ApiError)
    if isinstance(conn, WebSocket):  # a transport's handshake: refuse it
        await conn.close(code=1008, reason=exc.code)
        return None
    return exc.response(_lang(conn))


async def _http_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, HTTPException)
    if isinstance(conn, WebSocket):
        await conn.close(code=1008)
        return None
    if exc.status_code == 404:
        code, key = ErrorCode.NOT_FOUND, "error.route_not_found"
    elif exc.status_code == 405:
        code, key = ErrorCode.METHOD_NOT_ALLOWED, "error.method_not_allowed"
    else:
        code, key = ErrorCode.VALIDATION_ERROR, "validation.invalid"
    message = render(key, _lang(conn), {"field": "request"})
    return errors.error_response(code, exc.status_code, message, exc.headers)


async def _database_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    # The database is down, restarting, or the pool is exhausted: the client may retry.
    log.warning("database unavailable for %s %s: %s", conn.scope.get("method", "WS"),
                conn.url.path, exc)
    if isinstance(conn, WebSocket):
        await conn.close(code=1013)
        return None
    return errors.unavailable().response(_lang(conn))


class CatchAll:
    """The last line: a true bug is logged and answered with a clean 500 envelope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # the server closes the half-sent response
            request = Request(scope)
            body = orjson.dumps(errors.error_body(
                ErrorCode.INTERNAL_ERROR, render("error.internal", _lang(request))))
            await Response(body, 500, media_type="application/json")(scope, receive, send)


async def _maintain(pool: AsyncConnectionPool[Any], config: ApiConfig) -> None:
    """Forget old idempotency keys and idle rate-limit buckets, now and then. The prune runs
    shielded within PRUNE_TIMEOUT (bridge/finish.py): a stop that lands in it waits for it,
    rather than making psycopg give up cancelling it and drop the connection."""
    while True:
        await anyio.sleep(config.maintenance_interval)
        try:
            async with query_connection(pool, PRUNE_TIMEOUT) as conn:
                await conn.execute(_LIMITS.prune, {"keys_ttl": config.idempotency_ttl,
                                                   "window": 3600})
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("pruning api state failed: %r", exc)


def _lifespan(config: ApiConfig, extra: ExtraLifespan | None
              ) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            config.database_url,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            timeout=config.pool_timeout,
            # No server-side prepared statements: DATABASE_URL may be a transaction pooler.
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=configure_connection,
            check=RecentCheck(),
            name="courtside-api",
            open=False,
        )
        await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT)
        app.state.pool = pool
        touches = app.state.touches = TokenTouches(pool)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_maintain, pool, config)
                # Cancelled before the pool closes: its last write still has a connection.
                await tg.start(touches.run)
                if extra is None:
                    yield
                else:
                    async with extra(app):
                        yield
                tg.cancel_scope.cancel()
        finally:
            await pool.close()

    return lifespan


def create_app(config: ApiConfig, extra_routes: Sequence[BaseRoute] = (),
               extra_lifespan: ExtraLifespan | None = None,
               extra_operations: Sequence[routes.Operation] = ()) -> Starlette:
    """`extra_operations`: what /openapi.json says of `extra_routes` besides the REST API."""
    document = orjson.dumps(openapi.build((*routes.OPERATIONS, *extra_operations)))

    async def openapi_json(_request: Request) -> Response:
        return Response(document, media_type="application/json")

    # One handler per kind serves HTTP (a response) and WebSocket handshakes (a close).
    handlers: dict[Any, Any] = {
        ApiError: _api_error,
        HTTPException: _http_error,
        psycopg.OperationalError: _database_error,
        psycopg.InterfaceError: _database_error,
    }
    app = DirectApp(
        routes=[*routes.starlette_routes(), Route("/openapi.json", openapi_json, methods=["GET"]),
                *extra_routes],
        # CORS outside CatchAll: a 500 reaches the page that caused it readably too.
        middleware=[Middleware(Cors, origins=config.cors_origins), Middleware(CatchAll)],
        exception_handlers=handlers,
        lifespan=_lifespan(config, extra_lifespan),
    )
    app.state.config = config
    return app
