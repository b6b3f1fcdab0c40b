"""`courtside serve`: the REST API and the realtime transports in one uvicorn app.

With no DATABASE_URL the embedded PostgreSQL is started (and left as found) and migrated
first, so the first run on a bare machine works. With ``--workers N`` uvicorn forks N
processes; each builds its own app (`build_app`, an import-string factory) and so its own
pool and its own Bridge with its own LISTEN connection: PostgreSQL is the bus between them.

Shutdown (SIGTERM/SIGINT): uvicorn stops accepting, closes every WebSocket with 1012
(service restart: reconnect), sse-starlette ends every SSE stream; after
``COURTSIDE_SHUTDOWN_TIMEOUT`` seconds whatever is left is cut, so nothing hangs.

Knobs (environment): DATABASE_URL, LISTEN_DATABASE_URL, COURTSIDE_DATA_DIR,
COURTSIDE_RETENTION_DAYS, COURTSIDE_TOKEN_EXPIRATION_MINUTES (Sanctum's `expiration`),
COURTSIDE_WS_PING_INTERVAL / COURTSIDE_WS_PING_TIMEOUT (keepalive, seconds, default 20/20),
COURTSIDE_WS_DEFLATE=1 (permessage-deflate), COURTSIDE_SHUTDOWN_TIMEOUT (default 10),
COURTSIDE_LOG_LEVEL, COURTSIDE_LOG_FORMAT (text or json), COURTSIDE_RT_<FIELD> for each field of
api.realtime_limits.RealtimeLimits (e.g. COURTSIDE_RT_MAX_SUBSCRIPTIONS=10),
COURTSIDE_API_<FIELD> for the numbers of api.config.ApiConfig (e.g.
COURTSIDE_API_COMMENTS_PER_MINUTE=10), COURTSIDE_CORS_ORIGINS (api/cors.py), and
COURTSIDE_PUSHER_APP_KEY / _SECRET / _ID (the Pusher protocol transport, off unless key and
secret are set).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from api import metrics_workers
from api.app import ApiConfig, create_app
from api.pusher import PusherConfig, pusher_operations, pusher_routes
from api.realtime import (
    REALTIME_OPERATIONS,
    RealtimeConfig,
    realtime_lifespan,
    realtime_routes,
)
from bridge import BridgeConfig
from courtside import embedded, logs, orphans
from courtside.gctune import tuned_gc
from courtside.looplag import measured_loop
from courtside.migrate import migrate
from courtside.pipeline_check import checked_pipeline
from courtside.settings import Settings

log = logging.getLogger("courtside.serve")

def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    return None if raw in (None, "") else int(raw)


def build_app() -> Starlette:
    """The app of one worker process, configured from the environment."""
    orphans.die_with_master()
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)  # a spawned worker starts bare
    dsn = settings.database_url
    if not dsn:
        raise RuntimeError("DATABASE_URL is not set (courtside serve sets it for its workers)")
    expiration = _env_int("COURTSIDE_TOKEN_EXPIRATION_MINUTES")
    api_config = ApiConfig.from_env(dsn, token_expiration_minutes=expiration)
    rt_config = RealtimeConfig.from_env(token_expiration_minutes=expiration)
    bridge_config = BridgeConfig(retention=settings.retention_days * 86400.0)
    pusher = PusherConfig.from_env()
    return create_app(
        api_config,
        extra_routes=realtime_routes() + (pusher_routes(pusher) if pusher else []),
        extra_lifespan=checked_pipeline(measured_loop(tuned_gc(realtime_lifespan(
            dsn, settings.listen_database_url, config=rt_config, bridge_config=bridge_config,
            metrics_dir=metrics_workers.directory_from_env())))),
        extra_operations=REALTIME_OPERATIONS + (pusher_operations(pusher) if pusher else ()),
    )


def run(settings: Settings, *, host: str, port: int, workers: int) -> int:
    server = None
    if not settings.database_url:
        server = embedded.ensure_running(settings.data_dir)
        migrate(server.dsn)
        # The workers read their settings from the environment they inherit.
        os.environ["DATABASE_URL"] = server.dsn
    # uvicorn re-raises the SIGTERM it handled once it has shut down; by default that kills
    # the process before `finally` runs and the embedded PostgreSQL would outlive us.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    metrics_dir = None
    if workers > 1:
        orphans.mark_master()
        # Where the workers leave their metrics for each other (api/metrics_workers.py).
        metrics_dir = metrics_workers.make_directory()
        os.environ[metrics_workers.DIR_ENV] = str(metrics_dir)
    try:
        limits = RealtimeConfig.from_env().limits
        uvicorn.run(
            "courtside.serve:build_app",
            factory=True,
            host=host,
            port=port,
            workers=max(1, workers),
            lifespan="on",
            # uvicorn's httptools, plus pre-built SSE chunks (api/http_protocol.py).
            http="api.http_protocol:CourtsideHttpProtocol",
            # uvicorn's websockets-sansio, plus pre-built frames (api/ws_protocol.py).
            ws="api.ws_protocol:CourtsideWebSocketProtocol",
            # Refuse an oversized frame before it is buffered whole; the app checks the
            # exact limit (and answers with close 1009) for frames under this bound.
            ws_max_size=max(limits.max_frame_bytes * 4, 16 * 1024),
            ws_ping_interval=_env_float("COURTSIDE_WS_PING_INTERVAL", 20.0),
            ws_ping_timeout=_env_float("COURTSIDE_WS_PING_TIMEOUT", 20.0),
            # permessage-deflate costs a zlib context per connection and CPU per frame, and
            # defeats encoding a frame once for all subscribers; off unless asked for.
            ws_per_message_deflate=os.environ.get("COURTSIDE_WS_DEFLATE", "") in ("1", "true"),
            timeout_graceful_shutdown=int(_env_float("COURTSIDE_SHUTDOWN_TIMEOUT", 10.0)),
            log_level=settings.log_level,
            log_config=None,  # courtside.logs configured the process; uvicorn's records join it
            access_log=False,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if metrics_dir is not None:
            os.environ.pop(metrics_workers.DIR_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if server is not None:
            server.close()
    return 0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
