"""The realtime transports, composed: routes, the per-process state, the lifespan.

Used by `courtside serve` (and the tests) as::

    app = create_app(api_config, extra_routes=realtime_routes(),
                     extra_lifespan=realtime_lifespan(dsn, listen_dsn),
                     extra_operations=REALTIME_OPERATIONS)

The lifespan starts one Bridge (one LISTEN connection) per process and the hub that acts on
its control notifications. Routes: ``/ws``, ``GET /api/sessions/{sessionId}/events``,
``POST /api/realtime/tickets``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from api import metrics_workers, models
from api.direct_routes import DirectHttpRoute, DirectWebSocketRoute
from api.metrics import local_registry, metrics
from api.realtime_http import create_ticket, healthz, readyz
from api.realtime_state import Realtime, RealtimeConfig, realtime_of
from api.routes import Operation
from api.sse import sse_endpoint
from api.token_touch import TokenTouches
from api.ws import ws_endpoint
from bridge import Bridge, BridgeConfig

__all__ = ["REALTIME_OPERATIONS", "Realtime", "RealtimeConfig", "realtime_lifespan",
           "realtime_of", "realtime_routes"]

log = logging.getLogger("courtside.realtime")


def realtime_lifespan(
    dsn: str,
    listen_dsn: str | None = None,
    *,
    config: RealtimeConfig | None = None,
    bridge_config: BridgeConfig | None = None,
    node_id: str | None = None,
    metrics_dir: Path | None = None,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """An `extra_lifespan` for create_app: one Bridge and one hub for this process.
    ``metrics_dir``: a directory shared with sibling workers, for ``/metrics`` to report all
    of them (api/metrics_workers.py)."""
    rt_config = config or RealtimeConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bridge = Bridge(dsn, listen_dsn=listen_dsn, node_id=node_id,
                        config=bridge_config or BridgeConfig())
        async with anyio.create_task_group() as tg:
            # Not `tg.start`: the app must come up (and /healthz answer, /readyz say 503)
            # while the database is still unreachable; the bridge retries on its own.
            tg.start_soon(bridge.run)
            pool = getattr(app.state, "pool", None) or bridge.pool
            # create_app's, written until its pool closes.
            touches: TokenTouches = app.state.touches
            rt = Realtime(bridge, pool, rt_config, touches)
            await tg.start(rt.run)
            app.state.realtime = rt
            app.state.bridge = bridge
            if metrics_dir is not None:
                app.state.metrics_dir = metrics_dir
                tg.start_soon(metrics_workers.publish, local_registry(app), metrics_dir)
            try:
                yield
            finally:
                rt.hub.shutdown()
                tg.cancel_scope.cancel()

    return lifespan


# The realtime side's HTTP routes that /openapi.json describes (create_app's
# extra_operations); /ws and the operational routes are not REST.
REALTIME_OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/api/realtime/tickets", create_ticket, "createTicket",
              "Trade the bearer token for a ticket (browsers: `?ticket=` on /ws and on the"
              " SSE stream)", "realtime", 201, models.TicketResponse, errors=(401, 429, 503),
              error_response=models.RealtimeErrorResponse,
              error_notes=((401, "Missing, invalid or expired token (UNAUTHENTICATED)"),
                           (429, "Too many unexpired tickets for this token (RATE_LIMITED)"))),
    Operation("GET", "/api/sessions/{sessionId}/events", sse_endpoint, "streamEvents",
              "The session's events as Server-Sent Events: `id:` is the seq, `event:` the"
              " event's name; ends with `event: closed` and the reason", "realtime", 200,
              None, query=models.EventsQuery, headers=("Last-Event-ID",),
              errors=(401, 403, 404, 422, 429, 503), media_type="text/event-stream",
              error_response=models.RealtimeErrorResponse, ticket_auth=True,
              error_notes=(
                  (401, "Missing, invalid or used ticket or token (UNAUTHENTICATED)"),
                  (403, "Not a participant of a private session (NOT_PARTICIPANT)"),
                  (404, "Unknown or deleted session (SESSION_NOT_FOUND)"),
                  (422, "Last-Event-ID or since is not a seq (INVALID_FRAME)"),
                  (429, "Too many open connections for this user (TOO_MANY_CONNECTIONS)"),
                  (503, "Not ready, or restarting (NOT_READY, SERVICE_RESTART); retry"))),
)


def realtime_routes() -> list[BaseRoute]:
    return [
        DirectWebSocketRoute("/ws", ws_endpoint),
        # A stream's request stays open for its whole life: it skips the router's layers.
        *((DirectHttpRoute if op.media_type == "text/event-stream" else Route)(
            op.path, op.handler, methods=[op.method]) for op in REALTIME_OPERATIONS),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
