"""CORS for web pages on another origin (api/cors.py): the preflights a browser sends before
the REST calls, the ticket, the SSE stream and Laravel Echo's channel authorization, and
the headers on their answers — errors included, so that a page can read why it was refused.
(tests/test_browser.py shows a real browser relying on them.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.app import ApiConfig, create_app
from api.cors import ENV, origins_from_env
from api.pusher import pusher_routes
from api.realtime import RealtimeConfig, realtime_lifespan, realtime_routes
from tests import factories
from tests.test_pusher_support import PUSHER
from tests.test_realtime_support import FAST_BRIDGE, running

PAGE = "http://app.example:5173"
OTHER = "https://elsewhere.example"


async def boom(_request: Request) -> Response:
    raise ZeroDivisionError("a true bug")


def _app(dsn: str, origins: tuple[str, ...]) -> Starlette:
    return create_app(
        ApiConfig(database_url=dsn, pool_max_size=5, cors_origins=origins),
        extra_routes=[*realtime_routes(), *pusher_routes(PUSHER), Route("/api/boom", boom)],
        extra_lifespan=realtime_lifespan(dsn, None, config=RealtimeConfig(),
                                         bridge_config=FAST_BRIDGE),
    )


@pytest.fixture
def page_server(db: str) -> Iterator[str]:
    with running(_app(db, (PAGE,))) as base:
        yield base


def _preflight(base: str, path: str, method: str, headers: str = "",
               origin: str = PAGE) -> httpx.Response:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return httpx.options(f"{base}{path}", headers=asked)


def test_origins_from_the_environment() -> None:
    assert origins_from_env({}) == ("*",)
    assert origins_from_env({ENV: "  "}) == ("*",)
    assert origins_from_env({ENV: "none"}) == ()
    assert origins_from_env({ENV: "NONE"}) == ()
    assert origins_from_env({ENV: "https://App.Example, http://localhost:5173,"}) == (
        "https://app.example", "http://localhost:5173")
    assert origins_from_env({ENV: "https://a.example,*"}) == ("*",)
    for bad in ("https://app.example/", "app.example", "https://a.example/path", "http://"):
        with pytest.raises(ValueError, match=f"{ENV}: '{bad}' is not an origin"):
            origins_from_env({ENV: f"https://ok.example,{bad}"})
    with pytest.raises(ValueError, match="no origin given"):
        origins_from_env({ENV: ", ,"})
    assert ApiConfig.from_env("postgresql://x", environ={ENV: PAGE}).cors_origins == (PAGE,)


def test_preflights_of_what_a_page_calls_are_answered(db: str, page_server: str) -> None:
    w = factories.world(db)
    sid = w.session_id
    wanted = "authorization,content-type,idempotency-key,x-socket-id,accept-language"
    for path, method in [(f"/api/sessions/{sid}/comments", "POST"),
                         (f"/api/sessions/{sid}/comments/{uuid.uuid4()}", "PUT"),
                         (f"/api/sessions/{sid}/comments/{uuid.uuid4()}", "DELETE"),
                         ("/api/realtime/tickets", "POST"),
                         (f"/api/sessions/{sid}/events", "GET"),
                         ("/broadcasting/auth", "POST")]:
        r = _preflight(page_server, path, method, wanted)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.headers["access-control-allow-origin"] == PAGE
        assert method in r.headers["access-control-allow-methods"]
        assert set(r.headers["access-control-allow-headers"].split(",")) >= set(
            wanted.split(","))
        assert r.headers["access-control-max-age"] == "7200"
        # Bearer tokens only: a page's cookies are never asked for.
        assert "access-control-allow-credentials" not in r.headers

    # Another origin is refused, and told nothing a browser would accept.
    r = _preflight(page_server, f"/api/sessions/{sid}/comments", "POST", "authorization",
                   origin=OTHER)
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


def test_answers_carry_the_headers_a_page_needs(db: str, page_server: str) -> None:
    w = factories.world(db)
    token = factories.token(db, w.owner)
    auth = {"Authorization": f"Bearer {token}", "Origin": PAGE}
    url = f"{page_server}/api/sessions/{w.session_id}/comments"
    with httpx.Client() as http:
        r = http.post(url, json={"content": "hello"},
                      headers={**auth, "Idempotency-Key": "k1"})
        assert r.status_code == 201, r.text
        assert r.headers["access-control-allow-origin"] == PAGE
        assert r.headers["vary"] == "Origin"
        exposed = {h.strip().lower()
                   for h in r.headers["access-control-expose-headers"].split(",")}
        assert exposed == {"retry-after", "idempotent-replayed"}

        # Refusals are readable by the page too: 401, 422, and a true bug's 500.
        r = http.get(url, headers={"Origin": PAGE})
        assert (r.status_code, r.headers["access-control-allow-origin"]) == (401, PAGE)
        r = http.post(url, json={"content": ""}, headers=auth)
        assert (r.status_code, r.headers["access-control-allow-origin"]) == (422, PAGE)
        r = http.get(f"{page_server}/api/boom", headers={"Origin": PAGE})
        assert (r.status_code, r.headers["access-control-allow-origin"]) == (500, PAGE)

        # The SSE stream (an EventSource's GET): the headers come with the 200.
        with http.stream("GET", f"{page_server}/api/sessions/{w.session_id}/events",
                         headers=auth) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["access-control-allow-origin"] == PAGE

        # Another origin's request is served (CORS binds browsers, not servers) but carries
        # nothing that lets a browser hand the answer to that origin's page.
        r = http.get(url, headers={**auth, "Origin": OTHER})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers

        # Routes no page calls get no CORS: Pusher's events API (a backend's, signed),
        # liveness, metrics.
        r = _preflight(page_server, f"/apps/{PUSHER.app_id}/events", "POST", "content-type")
        assert "access-control-allow-origin" not in r.headers
        for path in ("/healthz", "/metrics"):
            r = http.get(f"{page_server}{path}", headers={"Origin": PAGE})
            assert r.status_code == 200
            assert "access-control-allow-origin" not in r.headers


def test_any_origin_by_default_and_none_when_turned_off(db: str) -> None:
    w = factories.world(db)
    token = factories.token(db, w.owner)
    path = f"/api/sessions/{w.session_id}/comments"
    headers = {"Authorization": f"Bearer {token}", "Origin": OTHER}
    assert ApiConfig(database_url=db).cors_origins == ("*",)
    with running(_app(db, ("*",))) as base:
        r = _preflight(base, path, "POST", "authorization", origin=OTHER)
        assert (r.status_code, r.headers["access-control-allow-origin"]) == (200, "*")
        r = httpx.get(f"{base}{path}", headers=headers)
        assert (r.status_code, r.headers["access-control-allow-origin"]) == (200, "*")
    with running(_app(db, ())) as base:
        r = _preflight(base, path, "POST", "authorization", origin=OTHER)
        assert r.status_code == 405  # OPTIONS is no route's method
        assert "access-control-allow-origin" not in r.headers
        r = httpx.get(f"{base}{path}", headers=headers)
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers
