"""What every proxy configuration must get right, as checks the nginx and HAProxy tests share.

Each check takes a running proxy (its shipped config, TLS terminated there) in front of a
Trunkline process running docs/deploy/trunkline.toml, and talks to it with real clients:
centrifuge-python over wss://, centrifuge-js in Chromium, aiohttp with a chosen source address
(127.0.0.2 and up are loopback addresses too, so the proxy sees a client that is not itself).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from cent import AsyncClient, PublishRequest
from playwright.async_api import Browser
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import API_KEY, eventually, token
from tests.deploy.conftest import ADMIN_PASSWORD, Node, Proxy, Tls
from tests.sdk.helpers import Recorder, new_client, subscribe_ready


class HasApi(Protocol):
    """A Trunkline process as the checks see it: where its server API is."""

    @property
    def api_url(self) -> str: ...


TIMEOUT = 15.0  # seconds for any one wait
LOGIN_FAILURES = 10  # the dashboard's limit per client address (observe/dashboard.py)


def session(tls: Tls, source: str = "127.0.0.1") -> aiohttp.ClientSession:
    """An HTTP client that trusts the test CA and connects from ``source``."""
    connector = aiohttp.TCPConnector(ssl=tls.client_context(), local_addr=(source, 0))
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT))


async def publish(node: HasApi, channel: str, data: dict[str, Any]) -> None:
    async with AsyncClient(node.api_url, API_KEY, timeout=5) as api:
        await api.publish(PublishRequest(channel=channel, data=data))


# ------------------------------------------------------------------------------ clients


async def sdk_receives_over_wss(proxy: Proxy, node: Node, tls: Tls) -> None:
    """centrifuge-python connects over wss:// (TLS ends at the proxy) and gets an API publication."""
    client = new_client(proxy.wss_url, token=token("py"), ssl_context=tls.client_context())
    rec = Recorder()
    await client.connect()
    conn = client._conn  # the websockets connection, to wait for its TLS close below
    try:
        await subscribe_ready(client.new_subscription("chat:wss", rec))
        await publish(node, "chat:wss", {"text": "through the proxy"})
        await eventually(lambda: rec.publications, timeout=TIMEOUT)
        assert rec.publications[0][1] == {"text": "through the proxy"}
    finally:
        await client.disconnect()
        if conn is not None:  # the SDK returns before the TLS layer has closed the socket
            await asyncio.wait_for(conn.wait_closed(), TIMEOUT)


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>deploy</title>
<script src="/static/vendor/centrifuge.js"></script>
<script>
window.__t = {clients: {}};
window.__t.start = (name, transports, token, channel) => {
  const state = window.__t.clients[name] = {state: 'disconnected', transport: null, received: [], subscribed: false};
  const client = new Centrifuge(transports, {token, emulationEndpoint: '/emulation'});
  client.on('state', ctx => { state.state = ctx.newState; });
  client.on('connected', ctx => { state.transport = ctx.transport; });
  const sub = client.newSubscription(channel);
  sub.on('subscribed', () => { state.subscribed = true; });
  sub.on('publication', ctx => state.received.push(ctx.data));
  state.publish = data => sub.publish(data).then(() => true);
  sub.subscribe();
  client.connect();
};
</script>
"""


async def browser_chats(proxy: Proxy, node: Node, chromium: Callable[..., Awaitable[Browser]]) -> None:
    """Chromium over the proxy: one page client on WebSocket, one on http_stream, one on SSE.

    The WebSocket client publishes, the others receive it; a server API publication reaches all.
    """
    browser = await chromium("--ignore-certificate-errors")
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT * 1000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = await page.goto(proxy.origin + "/static/vendor/centrifuge.js")
    assert response is not None and response.ok
    await page.set_content(PAGE)
    await page.wait_for_function("() => typeof Centrifuge === 'function' && !!window.__t")
    base = proxy.origin.replace("https://", "wss://")
    transports = {
        "ws": [{"transport": "websocket", "endpoint": base + "/connection/websocket"}],
        "stream": [{"transport": "http_stream", "endpoint": proxy.origin + "/connection/http_stream"}],
        "sse": [{"transport": "sse", "endpoint": proxy.origin + "/connection/sse"}],
    }
    for name, chosen in transports.items():
        args = [name, chosen, token(f"browser-{name}"), "chat:browser"]
        await page.evaluate("([n, t, tok, ch]) => window.__t.start(n, t, tok, ch)", args)

    async def wait(expression: str) -> None:
        try:
            await page.wait_for_function(expression, timeout=TIMEOUT * 1000)
        except PlaywrightTimeoutError:
            state = await page.evaluate("() => JSON.stringify(window.__t.clients)")
            raise AssertionError(f"{expression} not met; page: {state}; errors: {errors}") from None

    await wait("() => Object.values(window.__t.clients).every(c => c.state === 'connected' && c.subscribed)")
    used = await page.evaluate(
        "() => Object.fromEntries(Object.entries(window.__t.clients).map(([k, c]) => [k, c.transport]))"
    )
    assert used == {"ws": "websocket", "stream": "http_stream", "sse": "sse"}
    assert await page.evaluate("() => window.__t.clients.ws.publish({text: 'hello from chromium'})")
    await publish(node, "chat:browser", {"text": "hello from the API"})
    await wait("() => Object.values(window.__t.clients).every(c => c.received.length >= 2)")
    received = await page.evaluate(
        "() => Object.fromEntries(Object.entries(window.__t.clients).map(([k, c]) => [k, c.received]))"
    )
    for name in transports:
        assert received[name] == [{"text": "hello from chromium"}, {"text": "hello from the API"}], received
    assert errors == []
    await context.close()


# ------------------------------------------------------------------------------ streaming


async def streams_pass_unbuffered(proxy: Proxy, node: Node, tls: Tls) -> None:
    """uni_sse and http_stream through the proxy: each event arrives while the response is open."""
    connect = json.dumps({"token": token("streamer", channels=["chat:stream"])})
    async with session(tls) as http:
        sse_url = f"{proxy.origin}/connection/uni_sse?cf_connect={urllib.parse.quote(connect)}"
        body = json.dumps({"id": 1, "connect": {"token": token("streamer2", channels=["chat:stream"])}})
        headers = {"Content-Type": "application/json", "Origin": proxy.origin}
        async with (
            http.get(sse_url, headers={"Origin": proxy.origin}) as sse,
            http.post(f"{proxy.origin}/connection/http_stream", data=body, headers=headers) as stream,
        ):
            assert sse.status == 200 and sse.headers["Content-Type"].startswith("text/event-stream")
            assert stream.status == 200
            first_sse = await _sse_event(sse)
            assert "connect" in first_sse and "chat:stream" in first_sse["connect"]["subs"]
            first_stream = await _json_line(stream)
            assert first_stream["id"] == 1 and "connect" in first_stream
            assert not sse.content.at_eof() and not stream.content.at_eof()
            for n in range(3):
                sent = time.monotonic()
                await publish(node, "chat:stream", {"n": n})
                event = await _sse_event(sse)
                line = await _json_line(stream)
                assert event["pub"]["data"] == {"n": n} and event["channel"] == "chat:stream"
                assert line["push"]["pub"]["data"] == {"n": n}
                assert time.monotonic() - sent < 5, "a push waited in a proxy buffer"
            assert not sse.content.at_eof() and not stream.content.at_eof()
            for response in (sse, stream):
                _abort(response)


def _abort(response: aiohttp.ClientResponse) -> None:
    """Drop an endless response's connection now (a graceful TLS close would outlive the test's loop)."""
    connection = response.connection
    if connection is not None and connection.transport is not None:
        connection.transport.abort()
    response.close()


async def _sse_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next ``data:`` event of an SSE response (comments and blank lines skipped)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await response.content.readline()).decode()
            assert line, "the stream ended"
            if line.startswith("data:"):
                event: dict[str, Any] = json.loads(line[5:])
                return event


async def _json_line(response: aiohttp.ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await response.content.readline()).decode()
            assert line, "the stream ended"
            if line.strip() and line.strip() != "{}":  # {} is a ping
                message: dict[str, Any] = json.loads(line)
                return message


# ------------------------------------------------------------------------------ client address, scheme


async def client_address_is_the_real_one(proxy: Proxy, node: Node, tls: Tls) -> None:
    """The address Trunkline logs and rate-limits by is the client's, not the proxy's, and a
    spoofed X-Forwarded-For from the client does not change it."""
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "Origin": "https://evil.example"}
    async with session(tls, "127.0.0.2") as http:
        try:
            async with http.ws_connect(proxy.wss_url, headers=spoof) as ws:
                raise AssertionError(f"a foreign origin was upgraded: {ws}")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 403
    await eventually(lambda: "refused websocket from 127.0.0.2: origin" in node.output(), timeout=TIMEOUT)
    assert "from 6.6.6.6" not in node.output() and "refused websocket from 127.0.0.1" not in node.output()

    # The dashboard login limit counts per client: 127.0.0.2 is locked out, 127.0.0.3 is not.
    login = f"{proxy.origin}/dashboard/login"
    form = {"password": "wrong"}
    async with session(tls, "127.0.0.2") as http:
        for _ in range(LOGIN_FAILURES):
            async with http.post(login, data=form, headers={"X-Forwarded-For": "6.6.6.6"}) as r:
                assert r.status == 401, r.status
        async with http.post(login, data=form) as r:
            assert r.status == 429, r.status
    async with session(tls, "127.0.0.3") as http, http.post(login, data=form) as r:
        assert r.status == 401
    assert "dashboard login failed from 127.0.0.2" in node.output()
    assert "dashboard login failed from 127.0.0.3" in node.output()


async def dashboard_cookie_is_secure_over_https(proxy: Proxy, node: Node, tls: Tls) -> None:
    """Logged in through the TLS-terminating proxy: Secure; straight over HTTP: not Secure, even
    with a spoofed X-Forwarded-Proto from a peer that is no trusted proxy."""
    form = {"password": ADMIN_PASSWORD}
    async with session(tls) as http:
        async with http.post(f"{proxy.origin}/dashboard/login", data=form, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            cookie = r.headers["Set-Cookie"]
        assert re.search(r";\s*Secure", cookie, re.IGNORECASE), cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    direct = f"http://127.0.0.1:{node.internal_port}/dashboard/login"
    async with session(tls, "127.0.0.4") as http:
        async with http.post(direct, data=form, headers={"X-Forwarded-Proto": "https"}, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
        assert not re.search(r";\s*Secure", cookie, re.IGNORECASE), cookie


async def plain_http_redirects_to_https(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{proxy.http_port}/connection/websocket"
        async with http.get(url, allow_redirects=False) as r:
            assert r.status == 301
            assert r.headers["Location"].startswith("https://127.0.0.1"), r.headers["Location"]


async def admin_routes_stay_internal(proxy: Proxy, tls: Tls) -> None:
    """The dashboard is proxied to the internal listener (for admin networks: loopback here); the
    server API and /metrics are not served through the proxy at all."""
    async with session(tls) as http:
        async with http.get(f"{proxy.origin}/dashboard") as r:
            assert r.status == 200 and "Admin password" in await r.text()
        async with http.post(f"{proxy.origin}/api/publish", json={"channel": "x", "data": {}}) as r:
            assert r.status == 404
        async with http.get(f"{proxy.origin}/metrics") as r:
            assert r.status == 404
