"""The Pusher Channels protocol v7 transport, composed: `pusher_routes()`.

Routes (all off, ``[]``, unless COURTSIDE_PUSHER_APP_KEY and _SECRET are set; see
api/pusher_protocol.py for the configuration and the channels):

- ``/app/{key}`` — the WebSocket endpoint pusher-js connects to (api/pusher_ws.py).
- ``POST /broadcasting/auth`` — signs private/presence subscriptions (api/pusher_auth.py).
- ``POST /apps/{app_id}/events`` — Pusher's signed HTTP events API, so an existing backend
  (pusher-php-server, Laravel's `pusher` broadcaster) can publish. Events published so are
  ephemeral: delivered to the channels' current subscribers, not stored in the event log.
  Body ``{"name", "data": "<JSON string>", "channel" | "channels", "socket_id"?}``.

The routes need the realtime lifespan (api/realtime.py) to be running.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from api import models, realtime_auth
from api.direct_routes import DirectWebSocketRoute
from api.jsonio import JSONResponse
from api.pusher_auth import SQL, broadcasting_auth
from api.pusher_protocol import (
    PusherConfig,
    check_signed_request,
    parse_channel,
    valid_socket_id,
)
from api.pusher_ws import PusherRegistry, pusher_endpoint
from api.realtime_state import realtime_of
from api.routes import Operation

__all__ = ["PusherConfig", "pusher_operations", "pusher_routes"]

log = logging.getLogger("courtside.pusher")

_MAX_EVENTS_BODY = 64 * 1024
_MAX_EVENT_DATA = 10 * 1024  # Pusher's limit on one event's data
_MAX_CHANNELS = 100


def pusher_operations(config: PusherConfig) -> tuple[Operation, ...]:
    """What /openapi.json says of the transport's HTTP routes (create_app's
    extra_operations), and their one declaration. The events API is Pusher's own, described
    by Pusher; its requests are signed, which no schema can state."""

    async def auth(request: Request) -> Response:
        return await broadcasting_auth(request, config)

    return (
        Operation("POST", "/broadcasting/auth", auth, "authorizeChannel",
                  "Sign a private or presence channel subscription for Laravel Echo"
                  " (pusher-js `authEndpoint`)", "pusher", 200,
                  models.BroadcastingAuthResponse, body=models.BroadcastingAuth,
                  body_media_types=("application/x-www-form-urlencoded", "application/json"),
                  errors=(401, 403, 503), error_response=models.BroadcastingErrorResponse,
                  error_notes=(
                      (403, "Any other refusal, as Laravel answers (pusher-js only reads"
                            " the status): an invalid socket_id or channel_name"
                            " (VALIDATION_ERROR), not a participant (NOT_PARTICIPANT), an"
                            " unknown session (SESSION_NOT_FOUND), another user's channel"
                            " (FORBIDDEN)"),
                      (503, "Database unavailable for now (SERVICE_UNAVAILABLE); retry"))),
    )


def pusher_routes(config: PusherConfig | None = None) -> list[BaseRoute]:
    """The transport's routes; `config` defaults to `PusherConfig.from_env()`."""
    config = config or PusherConfig.from_env()
    if config is None:
        return []
    registry = PusherRegistry(config)
    app_config = config

    async def events(request: Request) -> Response:
        return await publish_events(request, app_config)

    return [
        # A partial, not a wrapper coroutine: its frame would live as long as the connection.
        DirectWebSocketRoute("/app/{key}", functools.partial(pusher_endpoint, registry=registry),
                             name="pusher"),
        *(Route(op.path, op.handler, methods=[op.method]) for op in pusher_operations(config)),
        Route("/apps/{app_id}/events", events, methods=["POST"]),
    ]


def _bad(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


async def publish_events(request: Request, config: PusherConfig) -> Response:
    rt = realtime_of(request.app)
    if request.path_params.get("app_id") != config.app_id:
        return _bad(404, "Unknown app")
    body = await request.body()
    if len(body) > _MAX_EVENTS_BODY:
        return _bad(413, "Request too large")
    problem = check_signed_request(config, "POST", request.url.path,
                                   dict(request.query_params), body, time.time())
    if problem is not None:
        return _bad(401, problem)
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _bad(400, "Body is not JSON")
    if not isinstance(message, dict):
        return _bad(400, "Body must be an object")
    name, data = message.get("name"), message.get("data")
    if not isinstance(name, str) or not 0 < len(name) <= 200 or name.startswith("pusher"):
        return _bad(400, "name: an event name")
    if not isinstance(data, str) or len(data.encode()) > _MAX_EVENT_DATA:
        return _bad(400 if not isinstance(data, str) else 413, "data: a string up to 10 KB")
    names = message.get("channels", [message.get("channel")])
    if (not isinstance(names, list) or not 0 < len(names) <= _MAX_CHANNELS
            or not all(isinstance(n, str) for n in names)):
        return _bad(400, "channels: a list of channel names")
    topics: list[str] = []
    for channel_name in names:
        channel = parse_channel(channel_name)
        if channel is None:
            return _bad(400, f"Unknown channel {str(channel_name)[:64]}")
        if channel.topic.name not in topics:
            topics.append(channel.topic.name)
    socket_id = message.get("socket_id")
    if socket_id is not None and not valid_socket_id(socket_id):
        return _bad(400, "socket_id: <digits>.<digits>")
    payload: Any
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = data  # not JSON: carried as a JSON string
    encoded = orjson.dumps(payload).decode()
    try:
        async with realtime_auth.connection(rt.pool) as conn:
            for topic in topics:
                await conn.execute(SQL.publish_ephemeral, {
                    "topic": topic, "type": name, "payload": encoded, "origin": socket_id})
    except psycopg.Error:
        log.warning("events API publish failed", exc_info=True)
        return _bad(503, "Database unavailable")
    return JSONResponse({})
