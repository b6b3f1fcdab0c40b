"""Real browsers (headless Chromium, tests/browser.py) on a page of another origin than
courtside's: the harness itself (the page has pusher-js and laravel-echo; the browser
enforces CORS), then courtside's browser clients — a native EventSource that resumes by
itself across a restart, Laravel Echo with its channel authorization and `toOthers`, and a
native WebSocket opened with a ticket."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests import factories
from tests.browser import BrowserPage, PageOrigin, page_html
from tests.servers import port_of, serve
from tests.tcpproxy import proxy
from tests.test_pusher_support import PUSHER, build_pusher_app
from tests.test_realtime_support import running, serve_process, sql_comment, stop

pytest_plugins = ["tests.browser"]

FETCH = """async (url) => {
    try {
        const response = await fetch(url);
        return {ok: true, status: response.status, body: await response.json()};
    } catch (error) {
        return {ok: false, error: `${error.name}: ${error.message}`};
    }
}"""


@dataclass
class Other:
    """A server on another origin than the page's: /plain without CORS headers, /cors with
    `Access-Control-Allow-Origin: *`; `hits` are the paths it answered."""

    url: str
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def other_origin() -> Iterator[Other]:
    hits: list[str] = []

    async def plain(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        return JSONResponse({"served": "plain"})

    async def cors(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        return JSONResponse({"served": "cors"}, headers={"access-control-allow-origin": "*"})

    app = Starlette(routes=[Route("/plain", plain), Route("/cors", cors)])
    with serve(app) as url:
        yield Other(url, hits)


@pytest.mark.anyio
async def test_page_has_the_libraries_and_the_browser_enforces_cors(
        page_origin: PageOrigin, other_origin: Other, browser_page: BrowserPage) -> None:
    assert page_origin.url != other_origin.url
    page = browser_page.page
    url = page_origin.add("/", page_html("window.loaded = true;"))
    response = await page.goto(url)
    assert response is not None
    assert response.ok
    assert await page.evaluate("window.loaded") is True, browser_page.log()
    assert await page.evaluate("typeof Pusher") == "function", browser_page.log()
    assert await page.evaluate("typeof Echo.default") == "function", browser_page.log()

    blocked = await page.evaluate(FETCH, f"{other_origin.url}/plain")
    assert blocked == {"ok": False, "error": "TypeError: Failed to fetch"}, browser_page.log()
    # The server did answer: the browser withheld the response, for want of CORS headers.
    assert other_origin.hits == ["/plain"]
    await browser_page.wait_console("has been blocked by CORS policy")

    allowed = await page.evaluate(FETCH, f"{other_origin.url}/cors")
    assert allowed == {"ok": True, "status": 200, "body": {"served": "cors"}}, browser_page.log()
    assert other_origin.hits == ["/plain", "/cors"]


# -- courtside's browser clients, from a page on another origin ---------------------------------

def _sse_page(base: str, token: str, session_id: uuid.UUID) -> str:
    """A page that trades its token for a ticket (a cross-origin POST with Authorization:
    preflighted) and follows the session with a native EventSource."""
    return page_html(f"""
window.seen = [];
window.closes = [];
window.ready = (async () => {{
    const r = await fetch({base!r} + "/api/realtime/tickets", {{
        method: "POST", headers: {{Authorization: "Bearer " + {token!r}}}}});
    const ticket = (await r.json()).data.ticket;
    const url = {base!r} + "/api/sessions/{session_id}/events?ticket=" + ticket;
    window.source = new EventSource(url);
    source.addEventListener("comment.created", (e) => seen.push(
        {{id: e.lastEventId, content: JSON.parse(e.data).comment.content}}));
    source.addEventListener("closed", (e) => closes.push(JSON.parse(e.data).code));
    await new Promise((resolve) => source.addEventListener("open", resolve, {{once: true}}));
    return r.status;
}})();
""", libraries=False)


@pytest.mark.anyio
async def test_a_pages_eventsource_resumes_by_itself_across_a_restart(
        db: str, tmp_path: Path, page_origin: PageOrigin, browser_page: BrowserPage) -> None:
    """The browser's own reconnection (same URL, same ticket, Last-Event-ID) lands on
    another server after the first one restarts (SIGTERM), and misses nothing written
    meanwhile. The page reaches both through one proxy: one origin, as behind a balancer."""
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    page = browser_page.page
    fast = {"COURTSIDE_RT_SSE_RETRY_MS": "200"}

    async def seen(n: int) -> list[dict[str, str]]:
        await page.wait_for_function(f"window.seen.length >= {n}", timeout=10_000)
        got: list[dict[str, str]] = await page.evaluate("window.seen")
        return got

    with contextlib.ExitStack() as nodes:
        node_a = await anyio.to_thread.run_sync(
            nodes.enter_context, serve_process(db, tmp_path, env=fast))
        async with proxy("127.0.0.1", port_of(node_a.base)) as front:
            base = f"http://127.0.0.1:{front.port}"
            await page.goto(page_origin.add("/", _sse_page(base, token, world.session_id)))
            assert await page.evaluate("window.ready") == 201, browser_page.log()
            sql_comment(db, world.session_id, world.owner, "one")
            assert [e["content"] for e in await seen(1)] == ["one"]

            # Node A stops; meanwhile the EventSource's retries find nothing (refused).
            front.refusing = True
            assert await anyio.to_thread.run_sync(stop, node_a.proc) == 0
            await page.wait_for_function("window.closes.length >= 1")
            assert await page.evaluate("window.closes") == ["SERVICE_RESTART"]
            sql_comment(db, world.session_id, world.owner, "two, while away")
            node_b = await anyio.to_thread.run_sync(
                nodes.enter_context, serve_process(db, tmp_path, env=fast))
            assert await page.evaluate("window.source.readyState") == 0  # reconnecting
            front.target = ("127.0.0.1", port_of(node_b.base))
            front.refusing = False
            await seen(2)
            sql_comment(db, world.session_id, world.owner, "three")
            got = await seen(3)
    assert [e["content"] for e in got] == ["one", "two, while away", "three"], (
        browser_page.log())
    ids = [int(e["id"]) for e in got]
    assert ids == list(range(ids[0], ids[0] + 3))


@pytest.mark.anyio
async def test_laravel_echo_in_a_page_on_another_origin(
        db: str, page_origin: PageOrigin, browser_page: BrowserPage) -> None:
    """Echo's channel authorization and a REST write with X-Socket-ID from a page on another
    origin: the page hears others' comments and not its own (`toOthers`)."""
    world = factories.world(db, participants=2)
    token = factories.token(db, world.owner)
    other = world.participants[1] if world.participants[0] == world.owner else \
        world.participants[0]
    page = browser_page.page
    with running(build_pusher_app(db)) as base:
        host, port = "127.0.0.1", port_of(base)
        script = f"""
window.heard = [];
window.echo = new Echo.default({{
    broadcaster: "pusher", key: {PUSHER.key!r}, cluster: "mt1", wsHost: {host!r},
    wsPort: {port}, wssPort: {port}, forceTLS: false, enabledTransports: ["ws"],
    disableStats: true, authEndpoint: {base!r} + "/broadcasting/auth",
    auth: {{headers: {{Authorization: "Bearer " + {token!r}}}}},
}});
window.subscribed = new Promise((resolve, reject) => echo
    .private("sport-session.{world.session_id}")
    .subscribed(resolve)
    .error((e) => reject(new Error("subscription refused: " + JSON.stringify(e))))
    .listen(".comment.created", (e) => heard.push(e.comment.content)));
window.post = async (content) => {{
    const r = await fetch({base!r} + "/api/sessions/{world.session_id}/comments", {{
        method: "POST",
        headers: {{"Authorization": "Bearer " + {token!r}, "Content-Type": "application/json",
                   "X-Socket-ID": echo.socketId()}},
        body: JSON.stringify({{content}}),
    }});
    return r.status;
}};
"""
        await page.goto(page_origin.add("/", page_html(script)))
        await page.evaluate("window.subscribed")
        assert await page.evaluate("window.post('mine')") == 201, browser_page.log()
        sql_comment(db, world.session_id, other, "theirs")
        await page.wait_for_function("window.heard.length >= 1")
        # Same topic, so in order: had 'mine' been sent to this page, it would be first.
        assert await page.evaluate("window.heard") == ["theirs"], browser_page.log()


@pytest.mark.anyio
async def test_a_pages_websocket_opens_with_a_ticket(
        db: str, server: str, page_origin: PageOrigin, browser_page: BrowserPage) -> None:
    world = factories.world(db, participants=1)
    token = factories.token(db, world.owner)
    ws_base = server.replace("http://", "ws://")
    script = f"""
window.frames_ = [];
window.opened = (async () => {{
    const r = await fetch({server!r} + "/api/realtime/tickets", {{
        method: "POST", headers: {{Authorization: "Bearer " + {token!r}}}}});
    const ticket = (await r.json()).data.ticket;
    const ws = new WebSocket({ws_base!r} + "/ws?ticket=" + ticket);
    ws.onmessage = (m) => frames_.push(JSON.parse(m.data));
    await new Promise((resolve) => ws.addEventListener("open", resolve, {{once: true}}));
    ws.send(JSON.stringify({{type: "subscribe", topic: {world.topic!r}, since: null}}));
}})();
"""
    page = browser_page.page
    await page.goto(page_origin.add("/", page_html(script, libraries=False)))
    await page.evaluate("window.opened")
    await page.wait_for_function(
        "window.frames_.some((f) => f.type === 'subscribed')")
    sql_comment(db, world.session_id, world.owner, "over the socket")
    await page.wait_for_function("window.frames_.some((f) => f.event === 'comment.created')")
    events = [f for f in await page.evaluate("window.frames_")
              if f.get("event") == "comment.created"]
    assert [e["data"]["comment"]["content"] for e in events] == ["over the socket"]
