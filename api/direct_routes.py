"""Long-lived routes served without the ASGI layers above them that they do not need.

A WebSocket's handler, and an SSE stream's response, stays suspended for the whole life of
the connection, and so does every ASGI layer between uvicorn and it: Starlette's error and
exception middleware, the router, the route's exception wrapper — a dozen coroutine frames
and closures, about 5 KB per idle connection. None of them does anything for such a
connection but pass it on and map what its set-up raises.

`DirectApp` matches these routes itself, calls their endpoints, and maps exceptions with the
app's own handlers, as Starlette's ExceptionMiddleware would:

- `DirectWebSocketRoute`: straight to the endpoint. Middleware added to the app does not see
  these connections (none of courtside's acts on a WebSocket).
- `DirectHttpRoute`: through the app's own middleware (courtside's: CORS, then CatchAll),
  then straight to the endpoint and its response; a method the route does not serve goes
  the usual way (405, or a CORS preflight).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Match, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

WebSocketEndpoint = Callable[[WebSocket], Awaitable[None]]
HttpEndpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[HTTPConnection, Exception], Awaitable[Any]]


class DirectWebSocketRoute(WebSocketRoute):
    """A route for a function endpoint ``async def endpoint(websocket)``, which `DirectApp`
    calls directly. Mounted in a plain Starlette app it works as a WebSocketRoute."""

    def __init__(self, path: str, endpoint: WebSocketEndpoint, *, name: str | None = None
                 ) -> None:
        super().__init__(path, endpoint, name=name)
        self.direct: WebSocketEndpoint = endpoint


class DirectHttpRoute(Route):
    """A route for a function endpoint ``async def endpoint(request) -> Response`` whose
    requests `DirectApp` passes through the app's middleware to the endpoint directly (the
    endpoint reaches it as ``scope["endpoint"]``, which `Route.matches` sets). Mounted in a
    plain Starlette app it works as a Route."""


async def _close_for(conn: HTTPConnection, exc: Exception) -> None:
    assert isinstance(conn, WebSocket)
    assert isinstance(exc, WebSocketException)
    await conn.close(code=exc.code, reason=exc.reason)


class DirectApp(Starlette):
    """Starlette, with `DirectWebSocketRoute` connections going straight to their endpoint
    and `DirectHttpRoute` requests through the app's middleware only."""

    _direct_http: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._direct_route(scope)
        if route is None:
            await super().__call__(scope, receive, send)
        elif isinstance(route, DirectWebSocketRoute):
            await self._serve(route.direct, WebSocket(scope, receive, send))
        else:
            if self._direct_http is None:
                self._direct_http = self._build_direct_http()
            await self._direct_http(scope, receive, send)

    def _direct_route(self, scope: Scope) -> DirectWebSocketRoute | DirectHttpRoute | None:
        kind = _KINDS.get(scope["type"])
        if kind is None:
            return None
        for route in self.router.routes:
            if isinstance(route, kind):
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.update(child)
                    return route
        return None

    def _build_direct_http(self) -> ASGIApp:
        app: ASGIApp = self._respond
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The matched route's endpoint (``scope["endpoint"]``, set by `Route.matches`),
        then its response. What the endpoint raises goes to the app's handler for it, or
        on up to the middleware."""
        endpoint: HttpEndpoint = scope["endpoint"]
        # Not kept once the response exists: a stream's suspended frames need only that.
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        del request
        await response(scope, receive, send)

    async def _serve(self, endpoint: WebSocketEndpoint, websocket: WebSocket) -> None:
        try:
            await endpoint(websocket)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # uvicorn logs it and closes with 1011 (or answers 500 before accept)
            await handler(websocket, exc)

    def _handler_for(self, exc: Exception) -> Handler | None:
        handlers: dict[Any, Any] = {WebSocketException: _close_for, **self.exception_handlers}
        for cls in type(exc).__mro__:
            if cls in handlers:
                handler: Handler = handlers[cls]
                return handler
        return None


_KINDS: dict[str, type[DirectWebSocketRoute] | type[DirectHttpRoute]] = {
    "websocket": DirectWebSocketRoute, "http": DirectHttpRoute}
