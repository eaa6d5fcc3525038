"""Cross-site WebSocket hijacking: the Origin check, by hand and from a real browser.

A page from another origin can open a WebSocket to any host; only the server can
refuse it, by the Origin header browsers always send. Trunkline refuses with HTTP
403 before the upgrade, so no session is ever created. Clients that send no Origin
(SDKs, servers) are not browsers and are allowed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from tests.conftest import Running, eventually, free_port
from tests.security.conftest import conn_token, handshake, sdk_client
from trunkline.transport.websocket import open_websockets

Serve = Callable[..., Awaitable[Running]]
Launch = Callable[..., Awaitable[Browser]]

ATTEMPT_JS = """
async (url) => await new Promise((resolve) => {
  const events = [];
  const ws = new WebSocket(url);
  ws.onopen = () => { events.push("open"); ws.close(); };
  ws.onerror = () => events.push("error");
  ws.onclose = (e) => { events.push("close:" + e.code); resolve(events); };
  setTimeout(() => resolve(events.concat(["timeout"])), 5000);
})
"""
CENTRIFUGE_JS = """
async ({url, token}) => await new Promise((resolve) => {
  const c = new Centrifuge(url, {token});
  c.on("connected", (ctx) => { resolve("connected"); c.disconnect(); });
  c.on("disconnected", (ctx) => resolve("disconnected:" + ctx.code + ":" + ctx.reason));
  c.connect();
  setTimeout(() => resolve("timeout"), 5000);
})
"""


# ----------------------------------------------------------------------------------- by hand


async def test_cross_origin_handshake_is_refused_before_upgrade(serve: Serve) -> None:
    """Default (no ``client.allowed_origins``): same origin only, refusal is a 403 with a reason."""
    running = await serve()
    url = running.ws_url
    assert await handshake(url, {"Origin": "https://evil.example"}) == (403, {"error": "origin not allowed"})
    assert await handshake(url, {"Origin": "http://127.0.0.1:1"}) == (403, {"error": "origin not allowed"})
    assert await handshake(url, {"Origin": "null"}) == (403, {"error": "origin not allowed"})
    assert await handshake(url, {"Origin": f"http://127.0.0.1:{running.port}"}) == (101, None)
    assert await handshake(url, {"Origin": f"https://127.0.0.1:{running.port}"}) == (101, None)
    assert await handshake(url) == (101, None)
    await eventually(lambda: open_websockets(running.server.node) == 0)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://a.b.example.com", True),
        ("HTTPS://APP.EXAMPLE.COM", True),
        ("https://app.example.com:443", True),
        ("http://localhost:3000", True),
        ("http://localhost", True),
        ("https://example.com", False),
        ("https://evil-example.com", False),
        ("https://example.com.evil.com", False),
        ("https://evil.com/.example.com", False),
        ("https://evil.com?.example.com", False),
        ("https://evil.com#.example.com", False),
        ("https://user@app.example.com", False),
        ("https://evil.com:1@app.example.com", False),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://app.example.com/", False),
        ("http://localhost.evil.com:3000", False),
        ("null", False),
        ("file://", False),
        ("app.example.com", False),
    ],
)
async def test_allowed_origins_globs(serve: Serve, origin: str, allowed: bool) -> None:
    running = await serve({"client": {"allowed_origins": ["https://*.example.com", "http://localhost:*"]}})
    status, body = await handshake(running.ws_url, {"Origin": origin})
    assert (status, body) == ((101, None) if allowed else (403, {"error": "origin not allowed"}))


async def test_star_allows_every_origin(serve: Serve) -> None:
    running = await serve({"client": {"allowed_origins": ["*"]}})
    for origin in ("https://anything.example", "null"):
        assert (await handshake(running.ws_url, {"Origin": origin}))[0] == 101


async def test_clients_without_origin_are_allowed(serve: Serve) -> None:
    """SDKs send no Origin; the strictest allow-list does not lock them out."""
    running = await serve({"client": {"allowed_origins": ["https://app.example.com"]}})
    async with sdk_client(running.ws_url, conn_token("42")) as (client, events):
        await client.connect()
        await client.ready(timeout=5)
        assert events.connected


# ----------------------------------------------------------------------------------- browser


@pytest.fixture
async def other_origin() -> AsyncIterator[str]:
    """A tiny static site on another port: another origin, the attacker's page."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>elsewhere</title><p>another site</p>", content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def same_origin_page(browser: Browser, running: Running) -> Page:
    """The server's own demo page (``/``), with the vendored centrifuge-js loaded."""
    page = await browser.new_page()
    response = await page.goto(running.http_url + "/")
    assert response is not None and response.ok
    if not await page.evaluate("typeof Centrifuge !== 'undefined'"):
        await page.add_script_tag(url="/static/vendor/centrifuge.js")
    return page


async def test_browser_page_from_another_origin_cannot_connect(
    serve: Serve, chromium: Launch, other_origin: str
) -> None:
    running = await serve()
    browser = await chromium()
    attacker = await browser.new_page()
    await attacker.goto(other_origin + "/")
    events: list[Any] = await attacker.evaluate(ATTEMPT_JS, running.ws_url)
    assert "open" not in events
    assert events[-1] == "close:1006", events
    assert running.server.node.hub.num_clients == 0
    assert open_websockets(running.server.node) == 0

    # The same browser, on the server's own page: the WebSocket opens and connects.
    page = await same_origin_page(browser, running)
    assert await page.evaluate(ATTEMPT_JS, running.ws_url) == ["open", "close:1000"]
    result = await page.evaluate(CENTRIFUGE_JS, {"url": running.ws_url, "token": conn_token("42")})
    assert result == "connected"


async def test_browser_page_from_an_allowed_origin_connects(serve: Serve, chromium: Launch, other_origin: str) -> None:
    """``client.allowed_origins`` lets a listed site in (here by a port glob) and nobody else."""
    running = await serve({"client": {"allowed_origins": ["http://127.0.0.1:*"]}})
    only_localhost = await serve({"client": {"allowed_origins": ["http://localhost:*"]}})
    browser = await chromium()
    page = await browser.new_page()
    await page.goto(other_origin + "/")
    await page.add_script_tag(url=running.http_url + "/static/vendor/centrifuge.js")
    result = await page.evaluate(CENTRIFUGE_JS, {"url": running.ws_url, "token": conn_token("42")})
    assert result == "connected"
    events = await page.evaluate(ATTEMPT_JS, only_localhost.ws_url)
    assert "open" not in events and events[-1] == "close:1006"
