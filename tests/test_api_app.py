"""The application around the routes: composition (extra routes and lifespan, state), errors
outside the handlers (404, 405, a bug, the database going away), /openapi.json."""

from __future__ import annotations

import contextlib
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from types import FrameType

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from api import errors
from api.app import ApiConfig, create_app
from api.auth import authenticate
from api.direct_routes import DirectHttpRoute, DirectWebSocketRoute
from api.errors import ApiError, ErrorCode
from courtside.pgcluster import Cluster
from tests import factories
from tests.servers import serve


async def boom(_request: Request) -> Response:
    raise ZeroDivisionError("a true bug")


async def whoami(request: Request) -> Response:
    """What a transport does: reuse api.auth with the app's pool."""
    user = await authenticate(request.app.state.pool, request.headers.get("authorization"),
                              touches=request.app.state.touches)
    return JSONResponse({"user": str(user.user_id), "token": user.token_id})


def test_extra_routes_and_lifespan_plug_into_the_app(db: str) -> None:
    w = factories.world(db)
    token = factories.token(db, w.owner)
    seen: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def transports(app: Starlette) -> AsyncIterator[None]:
        # Entered once the pool is open: it can be used right away.
        pool = app.state.pool
        assert isinstance(pool, AsyncConnectionPool)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT '{\"b\": 1, \"a\": [2]}'::jsonb")
            row = await cur.fetchone()
            seen["jsonb"] = row[0] if row else None
        seen["config"] = app.state.config
        seen["entered"] = True
        yield
        seen["exited"] = True

    config = ApiConfig(database_url=db)
    app = create_app(config, extra_routes=[Route("/whoami", whoami)], extra_lifespan=transports)
    with serve(app) as base:
        assert seen["entered"] is True
        assert seen["config"] is config
        assert seen["jsonb"] == {"a": [2], "b": 1}
        r = httpx.get(f"{base}/whoami", headers={"Authorization": f"Bearer {token}"})
        assert r.json() == {"user": str(w.owner), "token": int(token.split("|")[0])}
        # An ApiError raised by an extra route becomes the envelope too.
        r = httpx.get(f"{base}/whoami")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "UNAUTHENTICATED"
    assert seen["exited"] is True


def test_unknown_routes_and_methods_are_enveloped(db: str) -> None:
    with serve(create_app(ApiConfig(database_url=db))) as base:
        r = httpx.get(f"{base}/nowhere")
        assert r.status_code == 404
        assert r.json() == {"success": False, "error": {"code": "NOT_FOUND",
                                                        "message": "Ressource non trouvée"}}
        r = httpx.patch(f"{base}/api/sessions/{uuid.uuid4()}/comments")
        assert r.status_code == 405
        assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
        assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
        r = httpx.get(f"{base}/api/sessions/{uuid.uuid4()}/presence/join")
        assert r.status_code == 405
        assert r.headers["allow"] == "POST"


def test_a_bug_is_logged_and_answered_with_a_clean_500(db: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ApiConfig(database_url=db), extra_routes=[Route("/boom", boom)])
    with caplog.at_level(logging.ERROR, logger="courtside.api"), serve(app) as base:
        r = httpx.get(f"{base}/boom", headers={"Accept-Language": "en"})
    assert r.status_code == 500
    assert r.json() == {"success": False, "error": {"code": "INTERNAL_ERROR",
                                                    "message": "Internal server error"}}
    assert any("unhandled error in GET /boom" in rec.getMessage() and rec.exc_info
               for rec in caplog.records)


def test_openapi_json_is_served(db: str) -> None:
    with serve(create_app(ApiConfig(database_url=db))) as base:
        r = httpx.get(f"{base}/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    assert "/api/sessions/{sessionId}/comments" in doc["paths"]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="comments_per_minute"):
        ApiConfig(database_url="postgresql://x", comments_per_minute=0)
    with pytest.raises(ValueError, match="pool"):
        ApiConfig(database_url="postgresql://x", pool_min_size=5, pool_max_size=2)
    with pytest.raises(ValueError, match="typing_ttl"):
        ApiConfig(database_url="postgresql://x", typing_ttl=0)


def test_database_down_is_503_then_recovers(own_cluster: Cluster) -> None:
    dsn = own_cluster.dsn("courtside")
    w = factories.world(dsn)
    token = factories.token(dsn, w.owner)
    headers = {"Authorization": f"Bearer {token}"}
    config = ApiConfig(database_url=dsn, pool_timeout=2.0)
    with serve(create_app(config)) as base:
        url = f"{base}/api/sessions/{w.session_id}/comments"
        assert httpx.get(url, headers=headers).status_code == 200
        own_cluster.stop()
        try:
            r = httpx.get(url, headers=headers, timeout=30)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == ErrorCode.SERVICE_UNAVAILABLE
            assert r.headers["retry-after"] == "1"
        finally:
            own_cluster.start()
        # Connections broken by the restart are replaced: no error reaches the client.
        assert httpx.get(url, headers=headers, timeout=30).status_code == 200
        r = httpx.post(url, headers=headers, json={"content": "back"}, timeout=30)
        assert r.status_code == 201
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM sport_session_comments").fetchone()
    assert row == (1,)


def test_api_error_is_the_one_exception_type() -> None:
    err = ApiError(ErrorCode.FORBIDDEN, 403, "error.forbidden_update")
    assert isinstance(err, Exception)
    assert err.render_message("fr") == "Vous n'êtes pas autorisé à modifier ce commentaire"
    assert err.response("en").body == (
        b'{"success":false,"error":{"code":"FORBIDDEN",'
        b'"message":"You are not allowed to edit this comment"}}')


async def _ws_denied(websocket: WebSocket) -> None:
    raise errors.unauthenticated()  # before accept: the handshake is refused


async def _ws_db_down(websocket: WebSocket) -> None:
    await websocket.accept()
    raise psycopg.OperationalError("the server went away")


async def _ws_bug(websocket: WebSocket) -> None:
    await websocket.accept()
    raise ZeroDivisionError("a true bug")


async def _ws_hello(websocket: WebSocket) -> None:
    await websocket.accept()
    assert websocket.app.state.config is not None  # the app, as under the Starlette stack
    await websocket.send_text(f"hello {websocket.path_params['name']}")
    await websocket.close()


def test_direct_websocket_routes_map_exceptions_as_the_stack_does(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ApiConfig(database_url=db), extra_routes=[
        DirectWebSocketRoute("/denied", _ws_denied),
        DirectWebSocketRoute("/db-down", _ws_db_down),
        DirectWebSocketRoute("/bug", _ws_bug),
        DirectWebSocketRoute("/hello/{name}", _ws_hello),
    ])
    with serve(app) as base:
        url = base.replace("http://", "ws://")
        with ws_connect(f"{url}/hello/court") as ws:
            assert ws.recv(timeout=10) == "hello court"
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(f"{url}/denied")
        assert refused.value.response.status_code == 403
        with ws_connect(f"{url}/db-down") as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
        # A true bug reaches uvicorn, which logs it and drops the connection (no close frame).
        with ws_connect(f"{url}/bug") as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is None
    assert any("a true bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def _layers() -> set[str]:
    """The files of the frames the running coroutine was awaited through (while a coroutine
    runs, each frame's f_back is its awaiter's)."""
    files: set[str] = set()
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        files.add(frame.f_code.co_filename.replace("\\", "/"))
        frame = frame.f_back
    return files


async def _http_hello(request: Request) -> Response:
    layers = sorted({f.rsplit("/", 2)[-2] + "/" + f.rsplit("/", 1)[-1] for f in _layers()})
    return JSONResponse({"hello": request.path_params["name"], "layers": layers,
                         "app": request.app.state.config is not None})


async def _http_denied(_request: Request) -> Response:
    raise errors.unauthenticated()


async def _http_db_down(_request: Request) -> Response:
    raise psycopg.OperationalError("the server went away")


def test_direct_http_routes_skip_the_router_but_not_the_middleware(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ApiConfig(database_url=db), extra_routes=[
        DirectHttpRoute("/api/direct/hello/{name}", _http_hello, methods=["GET"]),
        DirectHttpRoute("/api/direct/denied", _http_denied, methods=["GET"]),
        DirectHttpRoute("/api/direct/db-down", _http_db_down, methods=["GET"]),
        DirectHttpRoute("/api/direct/bug", boom, methods=["GET"]),
    ])
    page = {"Origin": "https://app.example.test"}
    with serve(app) as base, httpx.Client(base_url=base, headers=page) as http:
        r = http.get("/api/direct/hello/court")
        assert r.status_code == 200
        body = r.json()
        assert (body["hello"], body["app"]) == ("court", True)
        # The app's middleware (CORS, CatchAll) ran; Starlette's router and its exception
        # layers did not.
        assert r.headers["access-control-allow-origin"] == "*"
        assert {"api/cors.py", "api/app.py", "middleware/cors.py"} <= set(body["layers"])
        assert not {"starlette/routing.py", "starlette/_exception_handler.py",
                    "middleware/exceptions.py", "middleware/errors.py"} & set(body["layers"])
        # Other methods go the usual way: a preflight, a 405 in the API's envelope.
        r = http.options("/api/direct/hello/court", headers={
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200
        assert "GET" in r.headers["access-control-allow-methods"]
        r = http.post("/api/direct/hello/court")
        assert r.status_code == 405
        assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
        # Exceptions: the app's handlers, then CatchAll.
        r = http.get("/api/direct/denied")
        assert (r.status_code, r.json()["error"]["code"]) == (401, "UNAUTHENTICATED")
        r = http.get("/api/direct/db-down")
        assert r.status_code == 503
        assert r.headers["access-control-allow-origin"] == "*"
        with caplog.at_level(logging.ERROR):
            r = http.get("/api/direct/bug")
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "INTERNAL_ERROR"
        assert r.headers["access-control-allow-origin"] == "*"
    assert any("unhandled error in GET /api/direct/bug" in r.getMessage()
               for r in caplog.records)
