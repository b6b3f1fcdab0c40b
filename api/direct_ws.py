"""WebSocket routes served without the ASGI stack above them.

A WebSocket's handler stays suspended for the whole life of the connection, and so does every
ASGI layer between uvicorn and the handler: Starlette's error and exception middleware,
CatchAll, the router, the route's exception wrapper — a dozen coroutine frames and closures,
about 5 KB per idle connection, and a layer more on every ASGI send. None of them does
anything for a WebSocket but pass it on, and map what the handshake raises to a close.
`DirectApp` matches a `DirectWebSocketRoute` itself, calls its endpoint, and maps exceptions
with the app's own handlers, as Starlette's ExceptionMiddleware would. Middleware added to
the app does not see these connections (none of courtside's acts on a WebSocket).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import WebSocketException
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

WebSocketEndpoint = Callable[[WebSocket], Awaitable[None]]
Handler = Callable[[WebSocket, Exception], Awaitable[Any]]


class DirectWebSocketRoute(WebSocketRoute):
    """A route for a function endpoint ``async def endpoint(websocket)``, which `DirectApp`
    calls directly. Mounted in a plain Starlette app it works as a WebSocketRoute."""

    def __init__(self, path: str, endpoint: WebSocketEndpoint, *, name: str | None = None
                 ) -> None:
        super().__init__(path, endpoint, name=name)
        self.direct: WebSocketEndpoint = endpoint


async def _close_for(websocket: WebSocket, exc: Exception) -> None:
    assert isinstance(exc, WebSocketException)
    await websocket.close(code=exc.code, reason=exc.reason)


class DirectApp(Starlette):
    """Starlette, with `DirectWebSocketRoute` connections going straight to their endpoint."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            for route in self.router.routes:
                if not isinstance(route, DirectWebSocketRoute):
                    continue
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.update(child)
                    await self._serve(route.direct, WebSocket(scope, receive, send))
                    return
        await super().__call__(scope, receive, send)

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
