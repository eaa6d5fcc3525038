"""The demo chat (``/``) in real Chromium against a real ``trunkline serve`` process.

The page uses the unmodified centrifuge-js bundle, so these tests also check the server
against the SDK's own behaviour: presence, join/leave, recovery after a lost connection
and reconnecting after a server restart. ``POST /demo/token`` is tested in-process first.

Set ``TRUNKLINE_TEST_SCREENSHOT=docs/img/demo-chat.png`` to refresh the screenshot of the
README from the two-user test.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from cent import AsyncClient, Disconnect, DisconnectRequest, PresenceRequest, PublishRequest
from playwright.async_api import Browser, Page

from tests.conftest import ROOT, Process, Running
from tests.e2e.blocking_proxy import UpgradeBlockingProxy
from tests.e2e.conftest import demo_config

TIMEOUT_MS = 15_000  # every Playwright wait
ROOM = "lobby"
CHANNEL = f"chat:{ROOM}"
DEMO = demo_config()
SECRET: str = DEMO["client"]["token"]["hmac_secret_key"]
API_KEY: str = DEMO["http_api"]["key"]


# ------------------------------------------------------------------------------ POST /demo/token


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def post_token(http: aiohttp.ClientSession, running: Running, body: Any) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
    async with http.post(f"{running.http_url}/demo/token", **kwargs) as resp:
        return resp.status, await resp.json()


async def test_token_route_signs_name(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    running: Running = await start_server(DEMO)
    before = int(time.time())
    status, body = await post_token(http, running, {"user": "  Zoë O.Brien-2_ "})
    assert status == 200, body
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert re.fullmatch("[0-9a-f]{12}", claims["sub"]), claims  # a random user id, not the name
    assert body["user"] == claims["sub"]
    assert body["name"] == "Zoë O.Brien-2_"
    assert claims["info"] == {"name": "Zoë O.Brien-2_"}
    assert before + 3600 <= claims["exp"] <= int(time.time()) + 3600


async def test_token_route_gives_each_request_its_own_user(
    start_server: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """Two "Ann"s are two users; bringing back an earlier id keeps it (reloads, token refresh)."""
    running: Running = await start_server(DEMO)
    first = (await post_token(http, running, {"user": "Ann"}))[1]
    second = (await post_token(http, running, {"user": "Ann"}))[1]
    assert first["user"] != second["user"]
    status, again = await post_token(http, running, {"user": "Ann", "id": first["user"]})
    assert status == 200, again
    assert again["user"] == first["user"]
    assert jwt.decode(again["token"], SECRET, algorithms=["HS256"])["sub"] == first["user"]
    renamed = (await post_token(http, running, {"user": "Ann B", "id": first["user"]}))[1]
    assert (renamed["user"], renamed["name"]) == (first["user"], "Ann B")


@pytest.mark.parametrize(
    "body",
    [
        {"user": ""},
        {"user": "   "},
        {"user": "x" * 33},
        {"user": "<script>"},
        {"user": "a/b"},
        {"user": 42},
        {"name": "alice"},
        ["alice"],
        "not json",
        {"user": "alice", "id": ""},
        {"user": "alice", "id": "ABCDEF012345"},
        {"user": "alice", "id": "0123456789a"},
        {"user": "alice", "id": "0123456789abc"},
        {"user": "alice", "id": 1234567890},
        {"user": "alice", "id": ["0123456789ab"]},
    ],
)
async def test_token_route_rejects_bad_names(
    start_server: Callable[..., Any], http: aiohttp.ClientSession, body: Any
) -> None:
    running: Running = await start_server(DEMO)
    status, answer = await post_token(http, running, body)
    assert status == 400
    assert isinstance(answer["error"], str)


async def test_token_route_needs_a_secret(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    running: Running = await start_server({**DEMO, "client": {"token": {"hmac_secret_key": ""}}})
    status, answer = await post_token(http, running, {"user": "alice"})
    assert status == 400
    assert "hmac_secret_key" in answer["error"]


async def test_token_route_is_off_by_default(start_server: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    running: Running = await start_server()
    async with http.post(f"{running.http_url}/demo/token", json={"user": "alice"}) as resp:
        assert resp.status == 404


# ------------------------------------------------------------------------------ the page


class Chat:
    """One person in the demo chat: a browser context and its page (and what it sent over the network)."""

    def __init__(self, page: Page, name: str) -> None:
        self.page = page
        self.name = name
        self.user = ""  # the user id POST /demo/token gave this page
        self.errors: list[str] = []
        self.websockets: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))
        page.on("request", lambda r: self.requests.append((r.method, "/" + r.url.split("/", 3)[-1].split("?")[0])))

    @classmethod
    async def join(
        cls,
        browser: Browser,
        server: Process,
        name: str,
        room: str = ROOM,
        *,
        transport: str | None = None,
        base_url: str | None = None,
        query: str = "",
    ) -> Chat:
        """Open the page (at ``base_url``, default the server), pick ``transport`` if given, join."""
        context = await browser.new_context(viewport={"width": 900, "height": 600})
        context.set_default_timeout(TIMEOUT_MS)
        chat = cls(await context.new_page(), name)
        await chat.page.goto((base_url or server.http_url) + "/" + query)
        await chat.page.fill("#name", name)
        await chat.page.fill("#room", room)
        if transport is not None:
            await chat.page.select_option("#transport", transport)
        await chat.page.click("#join")
        await chat.wait("name => window.__chat.state === 'connected' && window.__chat.online.includes(name)", name)
        chat.user = (await chat.state())["user"]
        return chat

    async def wait(self, expression: str, arg: Any = None) -> None:
        await self.page.wait_for_function(expression, arg=arg, timeout=TIMEOUT_MS)

    async def state(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.page.evaluate("() => window.__chat")
        return result

    async def send(self, text: str) -> None:
        await self.page.fill("#text", text)
        await self.page.press("#text", "Enter")

    async def wait_for_texts(self, count: int) -> None:
        await self.wait("n => window.__chat.messages.length >= n", count)

    async def rendered(self) -> list[tuple[int, str, str]]:
        """(data-offset, author, text) of every message in the DOM, top to bottom."""
        rows: list[list[Any]] = await self.page.eval_on_selector_all(
            "#messages li",
            "items => items.map(li => [Number(li.dataset.offset), li.querySelector('.author').textContent,"
            " li.querySelector('.text').textContent])",
        )
        return [(int(o), a, t) for o, a, t in rows]


@pytest.fixture
async def api(demo_server: Process) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(f"{demo_server.http_url}/api", API_KEY, timeout=5)
    yield client
    await client.close()


async def online_users(api: AsyncClient) -> set[str]:
    result = await api.presence(PresenceRequest(channel=CHANNEL))
    return {info.user for info in result.presence.values()}


async def until(check: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


def assert_consecutive(rows: list[tuple[int, str, str]]) -> None:
    offsets = [offset for offset, _, _ in rows]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets


@pytest.mark.browser
async def test_two_users_chat(browser: Browser, demo_server: Process) -> None:
    alice = await Chat.join(browser, demo_server, "Alice")
    bob = await Chat.join(browser, demo_server, "Bob")
    for chat, other in ((alice, "Bob"), (bob, "Alice")):
        await chat.wait("name => window.__chat.online.includes(name)", other)

    conversation = [
        (alice, "Alice", "Hi Bob! Is this thing live?"),
        (bob, "Bob", "Hello Alice! Live, and it recovers what you miss while offline."),
        (alice, "Alice", "Nice: <b>markup</b> & <img src=x onerror=alert(1)> stay plain text."),
    ]
    for n, (sender, _, text) in enumerate(conversation, start=1):
        await sender.send(text)
        await alice.wait_for_texts(n)
        await bob.wait_for_texts(n)

    for chat in (alice, bob):
        state = await chat.state()
        assert sorted(state["online"]) == ["Alice", "Bob"]
        rows = await chat.rendered()
        assert [(a, t) for _, a, t in rows] == [(name, text) for _, name, text in conversation]
        assert_consecutive(rows)
        assert await chat.page.locator("#messages b, #messages img").count() == 0  # text is never parsed as HTML
        assert await chat.page.locator("#messages li.mine").count() == (2 if chat is alice else 1)
        assert chat.errors == []

    if screenshot := os.environ.get("TRUNKLINE_TEST_SCREENSHOT"):
        path = ROOT / screenshot
        path.parent.mkdir(parents=True, exist_ok=True)
        await bob.page.screenshot(path=str(path))

    # Bob leaves: Alice sees him go.
    await bob.page.click("#leave")
    await alice.wait("() => !window.__chat.online.includes('Bob')")


@pytest.mark.browser
async def test_page_explains_a_disabled_demo(browser: Browser, server_process: Callable[..., Process]) -> None:
    server = server_process()  # no [demo]: /demo/token is not mounted
    page = await browser.new_page()
    await page.goto(server.http_url + "/")
    await page.fill("#name", "Alice")
    await page.click("#join")
    error = page.locator("#join-error")
    await error.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "enable [demo]" in await error.inner_text()
    assert await page.evaluate("() => window.__chat.state") == "disconnected"


@pytest.mark.browser
async def test_recovers_messages_missed_while_offline(browser: Browser, demo_server: Process, api: AsyncClient) -> None:
    alice = await Chat.join(browser, demo_server, "Alice")
    bob = await Chat.join(browser, demo_server, "Bob")
    await bob.send("before")
    await alice.wait_for_texts(1)

    await alice.page.context.set_offline(True)
    # centrifuge-js closes its transport on the browser's "offline" event; should that not
    # reach the server, the server API drops the connection with a reconnect code.
    await alice.wait("() => window.__chat.state !== 'connected'")
    if not await until(lambda: _gone(api, alice.user), timeout=3):
        await api.disconnect(
            DisconnectRequest(user=alice.user, disconnect=Disconnect(code=3011, reason="force reconnect"))
        )
        assert await until(lambda: _gone(api, alice.user), timeout=5), "server kept Alice's connection"

    for i in range(1, 21):
        await bob.send(f"missed {i}")
    await bob.wait_for_texts(21)
    assert [m["text"] for m in (await alice.state())["messages"]] == ["before"]

    await alice.page.context.set_offline(False)
    await alice.wait("() => window.__chat.state === 'connected' && window.__chat.recovery !== null")
    await alice.wait_for_texts(21)
    await asyncio.sleep(0.3)  # a duplicate, if any, would arrive right behind

    rows = await alice.rendered()
    assert [t for _, _, t in rows] == ["before"] + [f"missed {i}" for i in range(1, 21)]
    assert_consecutive(rows)
    assert rows == await bob.rendered()
    state = await alice.state()
    assert state["recovery"] == {"wasRecovering": True, "recovered": True, "count": 20}
    notice = alice.page.locator("#notice")
    assert await notice.get_attribute("data-kind") == "recovered"
    assert "20 missed messages recovered" in await notice.inner_text()
    assert alice.errors == []

    await alice.wait("() => window.__chat.online.includes('Bob') && window.__chat.online.includes('Alice')")
    assert await online_users(api) == {alice.user, bob.user}


async def _gone(api: AsyncClient, user: str) -> bool:
    return user not in await online_users(api)


@pytest.mark.browser
async def test_recovery_while_publishing_continues(browser: Browser, demo_server: Process, api: AsyncClient) -> None:
    """Publications racing the recovering subscribe: the server merges them, each shows once, in order."""
    alice = await Chat.join(browser, demo_server, "Alice")
    published = 0
    running = True

    async def publish() -> None:
        nonlocal published
        while running:
            await api.publish(PublishRequest(channel=CHANNEL, data={"text": f"p{published + 1}", "name": "server"}))
            published += 1
            await asyncio.sleep(0.02)

    publisher = asyncio.create_task(publish())
    try:
        for _ in range(3):
            await asyncio.sleep(0.3)
            await alice.page.context.set_offline(True)
            await alice.wait("() => window.__chat.state !== 'connected'")
            await asyncio.sleep(0.3)
            await alice.page.context.set_offline(False)
            await alice.wait("() => window.__chat.state === 'connected'")
        await asyncio.sleep(0.3)
    finally:
        running = False
        await publisher
    await alice.wait_for_texts(published)
    await asyncio.sleep(0.3)

    rows = await alice.rendered()
    assert [t for _, _, t in rows] == [f"p{i}" for i in range(1, published + 1)]
    assert [o for o, _, _ in rows] == list(range(1, published + 1))
    recovery = (await alice.state())["recovery"]
    assert recovery["recovered"] is True and recovery["wasRecovering"] is True
    assert alice.errors == []


@pytest.mark.browser
async def test_reconnects_after_server_restart(browser: Browser, demo_server: Process, api: AsyncClient) -> None:
    alice = await Chat.join(browser, demo_server, "Alice")
    await alice.send("before the restart")
    await alice.wait_for_texts(1)

    assert await asyncio.to_thread(demo_server.stop) == 0  # SIGTERM: graceful, clients get 3001
    await alice.wait("() => window.__chat.state !== 'connected'")
    started = time.monotonic()
    await asyncio.to_thread(demo_server.start)
    await alice.wait("() => window.__chat.state === 'connected' && window.__chat.recovery !== null")
    assert time.monotonic() - started < TIMEOUT_MS / 1000

    # The memory engine lost the stream: a new epoch, so the SDK's recovery honestly fails.
    state = await alice.state()
    assert state["recovery"] == {"wasRecovering": True, "recovered": False, "count": 0}
    assert await alice.page.locator("#notice").get_attribute("data-kind") == "lost"

    await api.publish(PublishRequest(channel=CHANNEL, data={"text": "after the restart", "name": "server"}))
    await alice.wait_for_texts(2)
    await alice.send("me too")
    await alice.wait_for_texts(3)
    rows = await alice.rendered()
    assert [(a, t) for _, a, t in rows] == [
        ("Alice", "before the restart"),
        ("server", "after the restart"),
        ("Alice", "me too"),
    ]
    assert [o for o, _, _ in rows[1:]] == [1, 2]  # the new stream starts over
    assert alice.errors == []


# ------------------------------------------------------------------------------ transports
#
# The page's "Transport" selector: [websocket, http_stream, sse] by default (centrifuge-js falls
# back by itself), or one transport; ``?transports=`` preselects a list. examples/demo.toml
# enables http_stream and sse, so ``make run`` offers them.

DEFAULT_TRANSPORTS = "websocket,http_stream,sse"


async def chat_both_ways(first: Chat, second: Chat) -> None:
    for chat, other in ((first, second.name), (second, first.name)):
        await chat.wait("name => window.__chat.online.includes(name)", other)
    await first.send(f"hello from {first.name}")
    await second.wait_for_texts(1)
    await second.send(f"hello from {second.name}")
    await first.wait_for_texts(2)
    await second.wait_for_texts(2)
    for chat in (first, second):
        rows = await chat.rendered()
        assert [(a, t) for _, a, t in rows] == [
            (first.name, f"hello from {first.name}"),
            (second.name, f"hello from {second.name}"),
        ]
        assert_consecutive(rows)
        assert chat.errors == []


def emulated(chat: Chat, endpoint: str) -> None:
    """The page talked over HTTP only: its stream endpoint and POST /emulation, no WebSocket."""
    assert chat.websockets == []
    assert any(path == endpoint for _, path in chat.requests), chat.requests
    assert ("POST", "/emulation") in chat.requests


@pytest.mark.browser
async def test_selector_defaults_to_websocket_with_http_fallbacks(browser: Browser, demo_server: Process) -> None:
    alice = await Chat.join(browser, demo_server, "Alice")
    state = await alice.state()
    assert state["transports"] == ["websocket", "http_stream", "sse"]
    assert state["transport"] == "websocket"
    assert await alice.page.input_value("#transport") == DEFAULT_TRANSPORTS
    assert await alice.page.inner_text("#transport-used") == "websocket"
    assert alice.websockets == [demo_server.ws_url]
    assert ("POST", "/emulation") not in alice.requests


@pytest.mark.browser
@pytest.mark.parametrize(
    ("transport", "endpoint"),
    [("http_stream", "/connection/http_stream"), ("sse", "/connection/sse")],
)
async def test_selector_picks_an_http_transport(
    browser: Browser, demo_server: Process, transport: str, endpoint: str
) -> None:
    alice = await Chat.join(browser, demo_server, "Alice", transport=transport)
    bob = await Chat.join(browser, demo_server, "Bob")  # the default: WebSocket
    await chat_both_ways(alice, bob)
    assert (await alice.state())["transport"] == transport
    assert await alice.page.inner_text("#transport-used") == transport
    assert (await bob.state())["transport"] == "websocket"
    emulated(alice, endpoint)


@pytest.mark.browser
async def test_transports_query_preselects_a_list(browser: Browser, demo_server: Process) -> None:
    alice = await Chat.join(browser, demo_server, "Alice", query="?transports=sse,bogus,http_stream")
    assert await alice.page.input_value("#transport") == "sse,http_stream"  # unknown names dropped
    state = await alice.state()
    assert state["transports"] == ["sse", "http_stream"]
    assert state["transport"] == "sse"
    emulated(alice, "/connection/sse")


@pytest.mark.browser
async def test_default_falls_back_when_a_proxy_blocks_websocket(browser: Browser, demo_server: Process) -> None:
    """Alice's network refuses WebSocket upgrades; the default selection moves on to http_stream."""
    proxy = await UpgradeBlockingProxy(demo_server.port).start()
    try:
        alice = await Chat.join(browser, demo_server, "Alice", base_url=proxy.http_url)
        bob = await Chat.join(browser, demo_server, "Bob")
        await chat_both_ways(alice, bob)
        assert proxy.refused >= 1, "the page never tried WebSocket"
        state = await alice.state()
        assert state["transports"] == ["websocket", "http_stream", "sse"]
        assert state["transport"] == "http_stream"
        assert (await bob.state())["transport"] == "websocket"
        assert ("POST", "/emulation") in alice.requests
    finally:
        await proxy.close()
