"""Real-browser tests: headless Chromium (Debian's, through Playwright's async API) on pages
served from their own origin, so the browser's CORS, EventSource and WebSocket rules apply
as they do to a web app talking to courtside from another site.

A test module opts in with ``pytest_plugins = ["tests.browser"]`` and then asks for the
fixtures (tests without Chromium or Playwright are skipped, like the nginx tests):

    pytest_plugins = ["tests.browser"]

    @pytest.mark.anyio
    async def test_echo_in_a_page(server: str, page_origin: PageOrigin,
                                  browser_page: BrowserPage) -> None:
        url = page_origin.add("/", page_html(f"window.base = {server!r};"))
        await browser_page.page.goto(url)
        assert await browser_page.page.evaluate("typeof Echo.default") == "function"

`page_origin` serves the test's pages and the browser builds of pusher-js and laravel-echo
(tests/js/node_modules, installed by test_pusher_js's `echo_js`) on a free loopback port:
another origin than any other server of the test (the origin includes the port). Note that
laravel-echo's IIFE build defines ``Echo`` as its module namespace: the class is
``Echo.default`` (``new Echo.default({broadcaster: "pusher", ...})``; it finds
``window.Pusher`` by itself).

`browser_page` is a fresh context and page in a Chromium of its own test: the anyio runner
(and so Playwright's connection) lives for one test, and a launch costs about 0.6 s. Each
console message, page error and failed request is kept (``BrowserPage.log()``) and printed
when the test ends, which pytest shows for a failing test. Use `chromium()` and `new_page()`
for more than one page or context in a test.

Test modules import from here before pytest loads it as their plugin, so pytest leaves its
asserts as they are: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.servers import serve

# test_pusher_js's session fixture: `npm ci` in tests/js when node_modules is missing. Imported
# so that a module loading this plugin gets it (its path is that of echo_client.mjs).
from tests.test_pusher_js import echo_js

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, WebError
    from playwright.async_api import Request as BrowserRequest

__all__ = [
    "LIBRARIES",
    "LIBRARY_SCRIPTS",
    "BrowserPage",
    "PageOrigin",
    "browser",
    "browser_page",
    "chromium",
    "chromium_executable",
    "chromium_path",
    "echo_js",
    "new_page",
    "page_html",
    "page_origin",
    "require_chromium",
    "serve_page_origin",
]

# Debian's Chromium runs as root in a container: no sandbox, and /dev/shm may be small.
LAUNCH_ARGS = ("--no-sandbox", "--disable-dev-shm-usage")
DEFAULT_TIMEOUT_MS = 10_000

# URL prefix on the page origin -> folder of the package's browser builds (in node_modules).
LIBRARIES = {
    "/js/pusher-js": Path("pusher-js/dist/web"),
    "/js/laravel-echo": Path("laravel-echo/dist"),
}
# pusher.js sets the global `Pusher` (UMD), echo.iife.js the global `Echo` (IIFE).
LIBRARY_SCRIPTS = ("/js/pusher-js/pusher.js", "/js/laravel-echo/echo.iife.js")


# -- Chromium ----------------------------------------------------------------------------------

def chromium_executable() -> str | None:
    """$COURTSIDE_CHROMIUM, else Debian's /usr/bin/chromium, else `chromium` on PATH."""
    configured = os.environ.get("COURTSIDE_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def require_chromium() -> str:
    """The Chromium to launch; skips the test without one or without Playwright."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    executable = chromium_executable()
    if executable is None:
        configured = os.environ.get("COURTSIDE_CHROMIUM")
        pytest.skip(f"COURTSIDE_CHROMIUM={configured} is not executable" if configured
                    else "Chromium is not installed (Debian: apt-get install chromium)")
    return executable


@contextlib.asynccontextmanager
async def chromium(executable: str | None = None) -> AsyncIterator[Browser]:
    """A headless Chromium (Playwright's driver with it), closed when the block ends."""
    from playwright.async_api import async_playwright

    executable = executable or require_chromium()
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=executable, headless=True,
                                            args=list(LAUNCH_ARGS))
        try:
            yield instance
        finally:
            await instance.close()


@dataclass
class BrowserPage:
    """A page in a fresh context, and what the browser said while the test ran."""

    page: Page
    context: BrowserContext
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def log(self) -> str:
        lines = [*self.console, *(f"page error: {e}" for e in self.errors),
                 *(f"request failed: {r}" for r in self.failed_requests)]
        return "\n".join(lines) or "(the browser said nothing)"

    async def wait_console(self, text: str, wait: float = 5.0) -> str:
        """The first console line containing `text`, waiting up to `wait` seconds for it
        (console messages arrive apart from the calls that caused them)."""
        with anyio.fail_after(wait):
            while True:
                for line in self.console:
                    if text in line:
                        return line
                await anyio.sleep(0.02)

    def _on_console(self, message: ConsoleMessage) -> None:
        where = message.location
        self.console.append(f"console.{message.type}: {message.text}"
                            f" ({where.get('url', '')}:{where.get('lineNumber', '')})")

    def _on_error(self, error: WebError) -> None:
        self.errors.append(error.error.stack or error.error.message)

    def _on_request_failed(self, request: BrowserRequest) -> None:
        self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")


@contextlib.asynccontextmanager
async def new_page(browser: Browser, **context_options: Any) -> AsyncIterator[BrowserPage]:
    """A page in a new context of `browser` (`context_options` go to `new_context`); its log
    is printed when the block ends."""
    context = await browser.new_context(**context_options)
    try:
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        page = await context.new_page()
        result = BrowserPage(page, context)
        context.on("console", result._on_console)
        context.on("weberror", result._on_error)
        context.on("requestfailed", result._on_request_failed)
        try:
            yield result
        finally:
            print(f"-- browser log\n{result.log()}")
    finally:
        await context.close()


# -- the page origin ---------------------------------------------------------------------------

def page_html(script: str = "", *, head: str = "", libraries: bool = True) -> str:
    """An HTML page running `script` (a classic script, after pusher-js and laravel-echo when
    `libraries`)."""
    tags = "".join(f'<script src="{src}"></script>\n' for src in LIBRARY_SCRIPTS) \
        if libraries else ""
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>courtside test'
            f"</title>{head}</head>\n<body>\n{tags}<script>\n{script}\n</script>\n"
            "</body></html>\n")


class PageOrigin:
    """The pages' own server: `url` is its origin (``http://127.0.0.1:<port>``)."""

    def __init__(self, node_modules: Path | None) -> None:
        self.url = ""
        self.documents: dict[str, tuple[bytes, str]] = {}
        routes: list[Route | Mount] = [Route("/favicon.ico", lambda _: Response(status_code=204))]
        if node_modules is not None:
            for prefix, folder in LIBRARIES.items():
                routes.append(Mount(prefix, StaticFiles(directory=node_modules / folder)))
        routes.append(Route("/{path:path}", self._document))
        self.app = Starlette(routes=routes)

    def add(self, path: str, body: str | bytes,
            content_type: str = "text/html; charset=utf-8") -> str:
        """Serve `body` at `path` (from now on); returns its full URL."""
        assert path.startswith("/"), path
        self.documents[path] = (body.encode() if isinstance(body, str) else body, content_type)
        return self.url + path

    async def _document(self, request: Request) -> Response:
        found = self.documents.get(request.url.path)
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        body, content_type = found
        return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})


@contextlib.contextmanager
def serve_page_origin(node_modules: Path | None = None) -> Iterator[PageOrigin]:
    """A PageOrigin on a free loopback port; with `node_modules`, it serves the libraries."""
    if node_modules is not None:
        for folder in LIBRARIES.values():
            assert (node_modules / folder).is_dir(), f"{node_modules / folder} is missing"
    origin = PageOrigin(node_modules)
    with serve(origin.app) as url:
        origin.url = url
        yield origin


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium executable (skips without it or without Playwright)."""
    return require_chromium()


@pytest.fixture
def page_origin(echo_js: Path) -> Iterator[PageOrigin]:
    """A PageOrigin serving pusher-js and laravel-echo (LIBRARY_SCRIPTS) besides the test's
    pages."""
    with serve_page_origin(echo_js.parent / "node_modules") as origin:
        yield origin


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    """A headless Chromium for this test (an anyio test: `@pytest.mark.anyio`)."""
    async with chromium(chromium_path) as instance:
        yield instance


@pytest.fixture
async def browser_page(browser: Browser) -> AsyncIterator[BrowserPage]:
    """A fresh context and page in `browser`."""
    async with new_page(browser) as page:
        yield page
