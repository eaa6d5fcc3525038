"""The dashboard: login, the admin token, live stats over Trunkline's WebSocket, and Chromium drawing them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
import pytest
from centrifuge import Client, ClientState, SubscriptionState

from tests.conftest import ROOT, Running, eventually, free_port, token
from trunkline.config import Settings
from trunkline.node import SYSTEM_PREFIX, Node
from trunkline.observe import dashboard, stats

from . import connect, subscribe

PASSWORD = "correct horse battery staple"
ADMIN_SECRET = "admin-secret-0123456789abcdef0123456789"
ADMIN = {"admin": {"enabled": True, "password": PASSWORD, "secret": ADMIN_SECRET}}
SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe: keep cookies for an IP-address host such as 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def login(http: aiohttp.ClientSession, base: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
    async with http.post(f"{base}/dashboard/login", data={"password": password}, allow_redirects=False) as resp:
        await resp.read()
        return resp


# ------------------------------------------------------------------------------ HTTP: login and token


async def test_login_required(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    base = running.http_url
    async with http_session() as http:
        async with http.get(f"{base}/dashboard/token") as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": "login required"}
        async with http.get(f"{base}/dashboard/stats") as resp:
            assert resp.status == 401
        async with http.get(f"{base}/dashboard") as resp:
            page = await resp.text()
            assert resp.status == 200
            assert 'action="/dashboard/login"' in page
            assert 'type="password"' in page
            assert "dashboard.js" not in page

        # wrong passwords: refused, no cookie, as a form and as JSON
        resp = await login(http, base, "wrong")
        assert resp.status == 401
        assert dashboard.COOKIE not in resp.cookies
        async with http.post(f"{base}/dashboard/login", json={"password": PASSWORD + "x"}) as jresp:
            assert jresp.status == 401
            assert await jresp.json() == {"error": "wrong password"}
        async with http.get(f"{base}/dashboard/token") as resp:
            assert resp.status == 401

        # the right one: a hardened session cookie, then the page and a token
        resp = await login(http, base)
        assert resp.status == 303
        assert resp.headers["Location"] == "/dashboard"
        cookie = resp.cookies[dashboard.COOKIE]
        assert cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/dashboard"
        assert PASSWORD not in cookie.value and ADMIN_SECRET not in cookie.value
        async with http.get(f"{base}/dashboard") as resp:
            page = await resp.text()
            assert "/dashboard/assets/dashboard.js" in page
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        async with http.get(f"{base}/dashboard/token") as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            issued = (await resp.json())["token"]
        claims = jwt.decode(issued, ADMIN_SECRET, algorithms=["HS256"])
        assert claims["sub"] == "admin"
        assert claims["meta"] == {"trunkline_admin": True}
        assert 3500 <= claims["exp"] - time.time() <= 3600
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(issued, "secret", algorithms=["HS256"])  # not the client token key

        # logout clears the cookie, given the session's CSRF token (a bare cross-site post is refused)
        async with http.post(f"{base}/dashboard/logout", allow_redirects=False) as resp:
            assert resp.status == 403
            assert await resp.json() == {"error": "missing or wrong CSRF token"}
        async with http.get(f"{base}/dashboard/session") as resp:
            csrf = (await resp.json())["csrf"]
        async with http.post(f"{base}/dashboard/logout", data={"csrf": csrf}, allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get(f"{base}/dashboard/token") as resp:
            assert resp.status == 401


async def test_session_cookie_is_signed_and_expires() -> None:
    from trunkline.config import settings_from_mapping

    settings = settings_from_mapping(ADMIN)
    now = time.time()
    good = dashboard.new_session_value(settings, now)
    assert dashboard.valid_session(settings, good, now + 60)
    assert not dashboard.valid_session(settings, good, now + dashboard.SESSION_TTL + 1)  # expired
    version, expires, nonce, mac = good.split(".")
    assert not dashboard.valid_session(settings, f"{version}.{int(expires) + 9999}.{nonce}.{mac}", now)  # extended
    assert not dashboard.valid_session(settings, f"{version}.{expires}.{nonce}.{'0' * len(mac)}", now)
    assert not dashboard.valid_session(settings, "", now)
    assert not dashboard.valid_session(settings, "v1.x.y.z", now)
    # changing the password (or the secret) ends every session
    changed = settings_from_mapping({"admin": {**ADMIN["admin"], "password": "new password"}})
    assert not dashboard.valid_session(changed, good, now)
    assert not dashboard.valid_session(Settings(), good, now)


async def test_login_failures_are_limited(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    async with http_session() as http:
        for _ in range(dashboard.LOGIN_FAILURES):
            assert (await login(http, running.http_url, "guess")).status == 401
        assert (await login(http, running.http_url)).status == 429  # even the right one, for a while
        async with http.get(f"{running.http_url}/dashboard/token") as resp:
            assert resp.status == 401


async def test_no_dashboard_unless_enabled(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server()
    async with aiohttp.ClientSession() as http:
        for path in ("/dashboard", "/dashboard/token", "/dashboard/assets/dashboard.js"):
            async with http.get(running.http_url + path) as resp:
                assert resp.status == 404, path


async def test_insecure_admin_needs_no_login(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server({"admin": {"enabled": True, "insecure": True, "secret": ADMIN_SECRET}})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{running.http_url}/dashboard") as resp:
            assert "/dashboard/assets/dashboard.js" in await resp.text()
        async with http.get(f"{running.http_url}/dashboard/token") as resp:
            assert resp.status == 200
            jwt.decode((await resp.json())["token"], ADMIN_SECRET, algorithms=["HS256"])


async def test_assets_are_served_from_the_package(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    async with aiohttp.ClientSession() as http:
        for name, (_, content_type) in dashboard.ASSETS.items():
            async with http.get(f"{running.http_url}/dashboard/assets/{name}") as resp:
                assert resp.status == 200, name
                assert resp.content_type == content_type
                assert len(await resp.read()) > 100
        async with http.get(f"{running.http_url}/dashboard/assets/..%2Fdashboard.html") as resp:
            assert resp.status == 404
        async with http.get(f"{running.http_url}/dashboard/assets/secret.txt") as resp:
            assert resp.status == 404


# ------------------------------------------------------------------------------ stats over the WebSocket


async def admin_client(url: str, http: aiohttp.ClientSession, base: str) -> Client:
    async def get_token() -> str:
        async with http.get(f"{base}/dashboard/token") as resp:
            return str((await resp.json())["token"])

    client = Client(url, get_token=get_token, proxy=None)
    await client.connect()
    await client.ready(timeout=5)
    return client


async def test_stats_reach_admin_connections_only(start_server: Callable[..., Any]) -> None:
    assert stats.STATS_CHANNEL.startswith(SYSTEM_PREFIX)
    running: Running = await start_server(ADMIN)
    async with http_session() as http:
        assert (await login(http, running.http_url)).status == 303
        admin = await admin_client(running.ws_url, http, running.http_url)
        users = [await connect(running.ws_url, token(f"u{i}")) for i in range(3)]
        try:
            for user in users:
                await subscribe(user, "news")
            # a regular client may not subscribe to the node's channels
            denied = users[0].new_subscription(stats.STATS_CHANNEL)
            await denied.subscribe()
            await eventually(lambda: denied.state == SubscriptionState.UNSUBSCRIBED)

            _, received = await subscribe(admin, stats.STATS_CHANNEL)
            await received.wait_for(1, timeout=3)
            await users[1].publish("news", {"text": "hi"})

            def settled() -> bool:
                last = received.publications[-1]
                return bool(last["connections"] == 3 and last["subscriptions"] == 3 and last["deliveries_per_sec"] == 0)

            await eventually(lambda: any(p["deliveries_per_sec"] > 0 for p in received.publications), timeout=4)
            await eventually(settled, timeout=4)
            doc = received.publications[-1]
            node = running.server.node
            assert doc["node"] == node.uid
            assert doc["version"] == node.version
            # the dashboard's own connection, user, subscription and channel are left out
            assert doc["channels"] == 1  # news
            assert doc["users"] == 3  # u0..u2
            assert node.hub.num_clients == 4 and node.hub.num_channels == 2  # still counted by the node itself
            assert [n["uid"] for n in doc["nodes"]] == [node.uid]
            own = doc["nodes"][0]
            assert (own["num_clients"], own["num_users"], own["num_subs"], own["num_channels"]) == (3, 3, 3, 1)
            busy = next(p for p in received.publications if p["deliveries_per_sec"] > 0)
            assert busy["top_namespaces"][0]["namespace"] == "_"
            assert busy["top_namespaces"][0]["deliveries"] == 3
            assert busy["latency_ms"]["command_p99"] is not None

            async with http.get(f"{running.http_url}/dashboard/stats") as resp:
                recent = (await resp.json())["recent"]
            assert len(recent) >= 2
            assert recent[-1]["time"] >= doc["time"]
        finally:
            for client in (admin, *users):
                await client.disconnect()


async def test_a_user_called_admin_still_counts(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    node = running.server.node
    async with http_session() as http:
        assert (await login(http, running.http_url)).status == 303
        admin = await admin_client(running.ws_url, http, running.http_url)
        namesake = await connect(running.ws_url, token(stats.ADMIN_USER))  # a regular token, sub "admin"
        try:
            await subscribe(admin, stats.STATS_CHANNEL)
            await subscribe(namesake, "news")
            assert stats.admin_share(node) == (1, 0, 1, 1)  # one connection, no user, its stats subscription
            doc = stats.NodeStats(node).tick()
            assert (doc["connections"], doc["users"], doc["subscriptions"], doc["channels"]) == (1, 1, 1, 1)
        finally:
            await admin.disconnect()
            await namesake.disconnect()
    await eventually(lambda: stats.admin_share(node) == (0, 0, 0, 0))


async def test_dashboard_works_on_the_internal_port(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server({**ADMIN, "http_server": {"internal_port": free_port()}})
    internal = f"http://127.0.0.1:{running.server.internal_port}"
    async with http_session() as http:
        async with http.get(f"{running.http_url}/dashboard") as resp:
            assert resp.status == 404  # not on the public listener
        assert (await login(http, internal)).status == 303
        admin = await admin_client(
            f"ws://127.0.0.1:{running.server.internal_port}/connection/websocket", http, internal
        )
        try:
            _, received = await subscribe(admin, stats.STATS_CHANNEL)
            await received.wait_for(1, timeout=3)
        finally:
            await admin.disconnect()


# ------------------------------------------------------------------------------ Chromium


@pytest.mark.browser
async def test_browser_sees_live_charts(
    start_server: Callable[..., Any], chromium: Callable[..., Any], tmp_path: Path
) -> None:
    # TRUNKLINE_TEST_SCREENSHOTS=1 refreshes docs/img/dashboard.png; otherwise the shot stays in tmp_path
    screenshot = SCREENSHOT if os.environ.get("TRUNKLINE_TEST_SCREENSHOTS") else tmp_path / "dashboard.png"
    running: Running = await start_server(ADMIN)
    base = running.http_url
    outside: list[str] = []
    console_errors: list[str] = []

    browser = await chromium()
    context = await browser.new_context(viewport={"width": 1360, "height": 680})

    async def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:  # no CDN, no internet: record and refuse
            outside.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_local)
    page = await context.new_page()
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

    # log in through the form
    await page.goto(f"{base}/dashboard")
    await page.fill("#password", "wrong")
    await page.click("button[type=submit]")
    await page.wait_for_selector("text=Wrong password.")
    console_errors.clear()  # the refused login's 401 is reported as a failed load
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_function("() => window.__dashboard && window.__dashboard.state === 'live'", timeout=10_000)
    await page.wait_for_function("() => window.__dashboard.updates >= 1", timeout=5_000)
    start = await page.evaluate("window.__dashboard.updates")
    assert await page.evaluate("window.__dashboard.last.connections") == 0  # the dashboard does not count itself

    # drive traffic with real clients
    clients = [await connect(running.ws_url, token(f"user-{i}")) for i in range(3)]
    try:
        for i, client in enumerate(clients):
            await subscribe(client, "news")
            await subscribe(client, _second(i))
        publisher = asyncio.ensure_future(_publish_for(clients, seconds=6.0))

        latest = "window.__dashboard.charts.connections.data[1].at(-1)"
        await page.wait_for_function(f"() => {latest} === 3", timeout=10_000)
        await page.wait_for_function(
            "() => window.__dashboard.last.messages_in_per_sec > 0"
            " && window.__dashboard.last.top_namespaces.length > 0",
            timeout=10_000,
        )
        await publisher
        await page.wait_for_function(f"() => window.__dashboard.updates >= {start + 5}", timeout=10_000)
        assert await page.evaluate("window.__dashboard.last.connections") == 3
        assert await page.evaluate(latest) == 3
        assert await page.text_content("#tile-connections") == "3"
        assert await page.evaluate("window.__dashboard.charts.messages.data[1].some(v => v > 0)")
        assert await page.evaluate("window.__dashboard.charts.latency.data[2].some(v => v != null)")  # cmd p99
        assert await page.evaluate("window.__dashboard.charts.messages.data[2].some(v => v > 0)")  # out
        assert await page.evaluate("window.__dashboard.charts.latency.data[4].some(v => v != null)")
        names = await page.eval_on_selector_all(
            "#namespaces tbody td:first-child", "tds => tds.map(t => t.textContent)"
        )
        assert "(no namespace)" in names
        nodes = await page.eval_on_selector_all("#nodes tbody tr", "rows => rows.length")
        assert nodes == 1
        assert await page.locator("canvas").count() == 3  # the three uPlot charts

        screenshot.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(screenshot), full_page=True)
    finally:
        for client in clients:
            await client.disconnect()

    # the chart follows the clients leaving
    await page.wait_for_function(f"() => {latest} === 0", timeout=10_000)

    assert outside == []
    assert console_errors == []
    assert screenshot.stat().st_size > 10_000


async def _publish_for(clients: list[Client], seconds: float) -> None:
    """A few dozen messages a second from the clients, with a varying rate so the charts have a shape."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        i = n % len(clients)
        await clients[i].publish("news", {"n": n})
        burst = 1 + int(4 * abs(((time.monotonic() * 0.8) % 2) - 1))
        for _ in range(burst):
            await clients[i].publish(_second(i), {"n": n})
        await asyncio.sleep(0.03)


def _second(i: int) -> str:
    """Each client's own second channel (publishing in smallhistory needs a subscription)."""
    return f"smallhistory:room-{i}" if i % 2 else f"nohistory:room-{i}"


def test_stats_turn_totals_into_rates_and_window_quantiles() -> None:
    node = Node()
    feed = stats.NodeStats(node)
    m = node.metrics
    first = feed.tick(now=100.0)
    assert first["messages_in_per_sec"] == 0
    assert first["latency_ms"]["command_p50"] is None
    assert first["nodes"][0]["uid"] == node.uid

    for _ in range(10):
        m.command("publish", 0, 0.0004)  # (0.00025, 0.0005]
    for ns, subscribers in (("chat", 30), ("", 2), ("feed", 10), ("a", 1), ("b", 1), ("c", 1)):
        m.published(ns)
        m.fanout(ns, subscribers, 0.0001)
    m.outbound.messages += 50
    m.outbound.bytes += 5000
    for _ in range(4):  # server API commands are messages in too
        m.api_command("publish", "ok")
    doc = feed.tick(now=102.0)  # two seconds later
    assert doc["messages_in_per_sec"] == 7.0
    assert doc["messages_out_per_sec"] == 25.0
    assert doc["bytes_out_per_sec"] == 2500.0
    assert doc["publications_per_sec"] == 3.0
    assert doc["deliveries_per_sec"] == 22.5
    assert [n["namespace"] for n in doc["top_namespaces"]] == ["chat", "feed", "_", "a", "b"]  # top 5
    assert doc["top_namespaces"][0] == {
        "namespace": "chat",
        "deliveries_per_sec": 15.0,
        "publications_per_sec": 0.5,
        "deliveries": 30,
    }
    assert 0.25 < doc["latency_ms"]["command_p50"] <= 0.5
    assert 0.25 < doc["latency_ms"]["command_p99"] <= 0.5

    quiet = feed.tick(now=103.0)
    assert quiet["messages_in_per_sec"] == 0
    assert quiet["latency_ms"]["command_p50"] is not None  # still inside the window
    for i in range(stats.LATENCY_WINDOW):
        quiet = feed.tick(now=104.0 + i)
    assert quiet["latency_ms"]["command_p50"] is None  # the window has moved past the commands
    assert len(feed.recent) == 3 + stats.LATENCY_WINDOW
    assert feed.publish(quiet) == 0  # nobody subscribed


# ------------------------------------------------------------------------------ admin connections over time


async def test_admin_connection_survives_token_refresh(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(ADMIN)
    issued: list[str] = []

    async def short_token() -> str:  # expires in 2 s, so the SDK refreshes soon
        issued.append(dashboard.admin_token(ADMIN_SECRET, now=time.time() - dashboard.TOKEN_TTL + 2))
        return issued[-1]

    client = Client(running.ws_url, get_token=short_token, proxy=None)
    try:
        await client.connect()
        await client.ready(timeout=5)
        _, received = await subscribe(client, stats.STATS_CHANNEL)
        await eventually(lambda: len(issued) >= 2, timeout=6)  # refreshed at least once
        count = len(received.publications)
        await received.wait_for(count + 2, timeout=4)  # still receiving on the same connection
        assert client.state == ClientState.CONNECTED
        (session,) = running.server.node.hub.connections()
        assert session.is_admin
        assert session.expire_at is not None and session.expire_at > time.time()
    finally:
        await client.disconnect()


async def test_insecure_admin_without_secret_still_connects(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server({"admin": {"enabled": True, "insecure": True}})
    async with aiohttp.ClientSession() as http:
        admin = await admin_client(running.ws_url, http, running.http_url)
        try:
            _, received = await subscribe(admin, stats.STATS_CHANNEL)
            await received.wait_for(1, timeout=3)
        finally:
            await admin.disconnect()
