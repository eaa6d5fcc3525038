"""centrifuge-js 5 in real Chromium over HTTP-streaming and SSE, with WebSocket as the control.

Every page here is the test's own: it is written into a document loaded from the server
(``/static/vendor/centrifuge.js`` or the Protobuf bundle), so it has the server's origin and
its local address space, and the SDK's relative ``emulationEndpoint: '/emulation'`` resolves
to the server (see ``test_protobuf_browser.py`` for why pages are not fulfilled by Playwright).

The SDK is the unmodified vendored bundle (npm ``centrifuge`` 5, pinned in package-lock.json):

- once per transport (``websocket``, ``http_stream``, ``sse``): connect, subscribe, receive a
  server API publication, publish, presence, history and an RPC answered by ``on_rpc``, next
  to a centrifuge-python client on WebSocket on the same channel;
- recovery after the stream is cut mid-way, two real ways: the server API ``disconnect`` with
  a reconnect code (a disconnect push, then the stream ends), and the server aborting the
  connection (the stream just ends). Publications made while the page is away all arrive, in
  order, once, and the SDK reports ``recovered``;
- a page configured ``[websocket, http_stream, sse]`` whose WebSocket endpoint is refused (a
  closed port, or a path that answers 404) falls back to ``http_stream`` and chats with a
  WebSocket client;
- the Protobuf bundle over ``http_stream`` (binary request bodies, a Protobuf session);
- a plain browser ``EventSource`` on ``/connection/uni_sse`` (no SDK) gets publications.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cent import AsyncClient, Disconnect, DisconnectRequest, PublishRequest
from playwright.async_api import Browser, Page, Request
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import API_KEY, ROOT, Running, eventually, free_port, make_settings, token
from tests.e2e.blocking_proxy import UpgradeBlockingProxy
from tests.sdk.helpers import Recorder, new_client, subscribe_ready
from trunkline.events import RPCEvent
from trunkline.node import Node

TIMEOUT_MS = 15_000  # every Playwright wait
VENDOR = ROOT / "src" / "trunkline" / "web" / "static" / "vendor"
JSON_BUNDLE = "/static/vendor/centrifuge.js"
PROTOBUF_BUNDLE = "/static/vendor/centrifuge.protobuf.js"
TRANSPORTS = ("websocket", "http_stream", "sse")
ENDPOINTS = {
    "websocket": "/connection/websocket",
    "http_stream": "/connection/http_stream",
    "sse": "/connection/sse",
}
# Every HTTP transport on (Centrifugo v6 names; all off by default).
HTTP_TRANSPORTS: dict[str, Any] = {
    "http_stream": {"enabled": True},
    "sse": {"enabled": True},
    "uni_sse": {"enabled": True},
    "uni_http_stream": {"enabled": True},
    "uni_websocket": {"enabled": True},
}

PAGE_SCRIPT = """<script>
const t = window.__t = {
  state: 'disconnected', states: [], transports: [], subscribed: [], received: [],
  errors: [], transportErrors: [], connecting: [],
};
let client = null;
let sub = null;
let binary = false;
const decode = d => d instanceof Uint8Array ? JSON.parse(new TextDecoder().decode(d)) : d;
const encode = o => binary ? new TextEncoder().encode(JSON.stringify(o)) : o;
t.start = ({transports, token, channel, delay, protobuf}) => {
  binary = !!protobuf;
  client = new Centrifuge(transports, {
    token, emulationEndpoint: '/emulation', minReconnectDelay: delay, maxReconnectDelay: delay,
  });
  client.on('state', ctx => { t.state = ctx.newState; t.states.push(ctx.newState); });
  client.on('connected', ctx => t.transports.push(ctx.transport));
  client.on('connecting', ctx => t.connecting.push(ctx.code));
  client.on('error', ctx => {
    const entry = {type: ctx.type, transport: ctx.transport || null, error: ctx.error};
    (ctx.type === 'transport' ? t.transportErrors : t.errors).push(entry);
  });
  sub = client.newSubscription(channel);
  sub.on('subscribed', ctx => t.subscribed.push({wasRecovering: ctx.wasRecovering, recovered: ctx.recovered}));
  sub.on('publication', ctx => t.received.push({offset: ctx.offset, data: decode(ctx.data)}));
  sub.on('error', ctx => t.errors.push({type: 'subscription', error: ctx.error}));
  sub.subscribe();
  client.connect();
};
t.publish = obj => sub.publish(encode(obj)).then(() => true);
t.presence = () => sub.presence().then(r => Object.values(r.clients).map(c => c.user).sort());
t.history = () => sub.history({limit: 10}).then(r => ({
  offset: r.offset, epoch: r.epoch,
  publications: r.publications.map(p => ({offset: p.offset, data: decode(p.data)})),
}));
t.rpc = (method, obj) => client.rpc(method, encode(obj)).then(r => decode(r.data));
</script>
"""


def sdk_page(bundle: str) -> str:
    head = '<!doctype html>\n<meta charset="utf-8">\n<title>transports</title>\n'
    return f'{head}<script src="{bundle}"></script>\n{PAGE_SCRIPT}'


# ------------------------------------------------------------------------------ fixtures


def rpc_node(extra: dict[str, Any]) -> Node:
    """A node whose ``on_rpc`` echoes the method, the data and who called."""
    node = Node(make_settings(extra))

    @node.on_rpc
    async def rpc(event: RPCEvent) -> bytes | None:
        echo = json.loads(event.data or b"null")
        return json.dumps({"method": event.method, "echo": echo, "user": event.client.user}).encode()

    return node


@pytest.fixture
async def srv(start_server: Callable[..., Any]) -> Running:
    running: Running = await start_server(HTTP_TRANSPORTS, node=rpc_node(HTTP_TRANSPORTS))
    return running


@pytest.fixture
async def api(srv: Running) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(srv.api_url, API_KEY, timeout=5)
    yield client
    await client.close()


def transports_by_user(srv: Running) -> dict[str, str]:
    return {c.user: c.transport.info.name for c in srv.server.node.hub.connections()}  # type: ignore[attr-defined]


def codecs_by_user(srv: Running) -> dict[str, str]:
    return {c.user: c.codec.name for c in srv.server.node.hub.connections()}  # type: ignore[attr-defined]


def endpoint(srv: Running, transport: str) -> dict[str, str]:
    base = srv.ws_url.removesuffix("/connection/websocket") if transport == "websocket" else srv.http_url
    return {"transport": transport, "endpoint": base + ENDPOINTS[transport]}


class Browsed:
    """One page of the test, with what Playwright saw of its network traffic."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.page_errors: list[str] = []
        self.websockets: list[str] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, content-type)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))
        page.on("request", self._request)

    def _request(self, request: Request) -> None:
        path = request.url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
        self.requests.append((request.method, "/" + path, request.headers.get("content-type", "")))

    def posts(self, path: str) -> list[str]:
        return [ctype for method, p, ctype in self.requests if method == "POST" and p == path]

    async def wait(self, expression: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS) -> None:
        try:
            await self.page.wait_for_function(expression, arg=arg, timeout=timeout_ms)
        except PlaywrightTimeoutError:
            state = await self.page.evaluate("() => JSON.stringify(window.__t || window.__es)")
            raise AssertionError(f"{expression} not met within {timeout_ms} ms; page state: {state}") from None

    async def js(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)


async def open_page(
    browser: Browser, srv: Running, bundle: str = JSON_BUNDLE, html: str | None = None, base_url: str | None = None
) -> Browsed:
    """A page of the server's origin (or of ``base_url``, a proxy in front of it)."""
    assert (VENDOR / bundle.rsplit("/", 1)[-1]).exists(), f"{bundle} is missing: run `make setup`"
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    browsed = Browsed(page)
    response = await page.goto((base_url or srv.http_url) + bundle)
    assert response is not None and response.ok, f"{bundle} is not served"
    await page.set_content(html if html is not None else sdk_page(bundle))
    if html is None:
        await browsed.wait("() => typeof Centrifuge === 'function' && !!window.__t")
    return browsed


async def start_sdk(
    b: Browsed,
    transports: list[dict[str, str]],
    user: str,
    channel: str,
    *,
    delay_ms: int = 200,
    protobuf: bool = False,
) -> None:
    args = {"transports": transports, "token": token(user), "channel": channel, "delay": delay_ms, "protobuf": protobuf}
    await b.js("args => window.__t.start(args)", args)
    await b.wait("() => window.__t.state === 'connected' && window.__t.subscribed.length > 0")


def assert_transport_used(b: Browsed, transport: str, srv: Running, *, protobuf: bool = False) -> None:
    """What went over the network is what the transport prescribes."""
    if transport == "websocket":
        assert b.websockets and all(url.endswith(ENDPOINTS["websocket"]) for url in b.websockets)
        assert b.posts("/emulation") == []
        return
    assert b.websockets == [], "an emulated transport must not open a WebSocket"
    if transport == "http_stream":
        expected = "application/octet-stream" if protobuf else "application/json"
        assert b.posts(ENDPOINTS["http_stream"]) and set(b.posts(ENDPOINTS["http_stream"])) == {expected}
    else:
        assert any(m == "GET" and p == ENDPOINTS["sse"] for m, p, _ in b.requests), b.requests
    # Commands after the connect (subscribe, publish, ...) travel through POST /emulation.
    emulation = b.posts("/emulation")
    assert emulation, b.requests
    assert set(emulation) == {"application/octet-stream" if protobuf else "application/json"}


# ------------------------------------------------------------------------------ once per transport


@pytest.mark.browser
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sdk_over_transport(browser: Browser, srv: Running, api: AsyncClient, transport: str) -> None:
    channel = f"room-{transport}"
    b = await open_page(browser, srv)
    rec = Recorder()
    python = new_client(srv.ws_url, token=token("python"))
    await python.connect()
    python_sub = await subscribe_ready(python.new_subscription(channel, rec))
    try:
        await start_sdk(b, [endpoint(srv, transport)], "browser", channel)
        assert await b.js("() => window.__t.transports") == [transport]
        assert transports_by_user(srv) == {"browser": transport, "python": "websocket"}

        # receive: a server API publication
        await api.publish(PublishRequest(channel=channel, data={"from": "api", "n": 1}))
        await b.wait("() => window.__t.received.length === 1")
        # publish from the page: the WebSocket client and the page itself get it
        assert await b.js("() => window.__t.publish({from: 'browser', n: 2})") is True
        await b.wait("() => window.__t.received.length === 2")
        await python_sub.publish({"from": "python", "n": 3})
        await b.wait("() => window.__t.received.length === 3")
        await eventually(lambda: len(rec.publications) == 3)
        expected = [{"from": "api", "n": 1}, {"from": "browser", "n": 2}, {"from": "python", "n": 3}]
        assert await b.js("() => window.__t.received") == [
            {"offset": n, "data": data} for n, data in enumerate(expected, 1)
        ]
        assert rec.publications == list(enumerate(expected, 1))

        assert await b.js("() => window.__t.presence()") == ["browser", "python"]
        history = await b.js("() => window.__t.history()")
        assert history["offset"] == 3 and history["epoch"]
        assert history["publications"] == [{"offset": n, "data": data} for n, data in enumerate(expected, 1)]

        answer = await b.js("() => window.__t.rpc('echo', {x: [1, 'two']})")
        assert answer == {"method": "echo", "echo": {"x": [1, "two"]}, "user": "browser"}

        assert_transport_used(b, transport, srv)
        assert await b.js("() => window.__t.errors") == []
        assert await b.js("() => window.__t.transportErrors") == []
        assert b.page_errors == []
    finally:
        await python.disconnect()


# ------------------------------------------------------------------------------ recovery after a cut


async def cut_by_api(srv: Running, api: AsyncClient) -> None:
    """Server API ``disconnect`` with a reconnect code: a disconnect push, then the stream ends."""
    await api.disconnect(DisconnectRequest(user="browser", disconnect=Disconnect(code=3011, reason="cut by the test")))


async def cut_by_abort(srv: Running, api: AsyncClient) -> None:
    """The server drops the connection without a word, as a failing proxy or network would."""
    (session,) = [c for c in srv.server.node.hub.connections() if c.user == "browser"]  # type: ignore[attr-defined]
    session.transport.abort()


CUTS: dict[str, Callable[[Running, AsyncClient], Any]] = {"api-disconnect": cut_by_api, "abort": cut_by_abort}


@pytest.mark.browser
@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_recovery_after_the_stream_is_cut(
    browser: Browser, srv: Running, api: AsyncClient, transport: str, cut: str
) -> None:
    channel = f"recover-{transport}-{cut}"
    b = await open_page(browser, srv)
    # A fixed 2-s reconnect delay leaves a window in which the page is provably away.
    await start_sdk(b, [endpoint(srv, transport)], "browser", channel, delay_ms=2000)
    for n in range(1, 4):
        await api.publish(PublishRequest(channel=channel, data={"n": n}))
    await b.wait("() => window.__t.received.length === 3")

    await CUTS[cut](srv, api)
    await eventually(lambda: "browser" not in transports_by_user(srv), timeout=5)
    await b.wait("() => window.__t.state === 'connecting'")
    for n in range(4, 14):
        await api.publish(PublishRequest(channel=channel, data={"n": n}))
    # All ten went out while the page had no connection (the server holds none for it).
    assert await b.js("() => window.__t.state") == "connecting"
    assert "browser" not in transports_by_user(srv)
    assert len(await b.js("() => window.__t.received")) == 3

    await b.wait("() => window.__t.state === 'connected' && window.__t.subscribed.length === 2")
    # A marker after the recovery: once it is in, anything duplicated or reordered would be too.
    await api.publish(PublishRequest(channel=channel, data={"n": 14}))
    await b.wait("() => window.__t.received.some(p => p.data.n === 14)")

    received = await b.js("() => window.__t.received")
    assert received == [{"offset": n, "data": {"n": n}} for n in range(1, 15)]
    assert await b.js("() => window.__t.subscribed") == [
        {"wasRecovering": False, "recovered": False},
        {"wasRecovering": True, "recovered": True},
    ]
    assert await b.js("() => window.__t.transports") == [transport, transport]
    assert transports_by_user(srv) == {"browser": transport}
    # connectCalled (0) at the start; then the disconnect push's code, or transportClosed (1).
    assert await b.js("() => window.__t.connecting") == [0, 3011 if cut == "api-disconnect" else 1]
    assert await b.js("() => window.__t.errors") == []
    assert b.page_errors == []


# ------------------------------------------------------------------------------ fallback


@pytest.mark.browser
@pytest.mark.parametrize("blocked", ["refused", "404", "proxy-403"])
async def test_falls_back_to_http_stream_when_websocket_is_refused(
    browser: Browser, srv: Running, api: AsyncClient, blocked: str
) -> None:
    """``[websocket, http_stream, sse]``: the WebSocket never opens, the SDK moves on by itself.

    Three ways a WebSocket fails: nothing listens on its port; its path answers 404; a proxy
    between the page and the server (``UpgradeBlockingProxy``) answers the upgrade with 403
    and passes plain HTTP, so the page and every endpoint are reached through the proxy.
    """
    channel = "fallback"
    proxy = await UpgradeBlockingProxy(srv.port).start() if blocked == "proxy-403" else None
    if blocked == "refused":
        dead = f"ws://127.0.0.1:{free_port()}/connection/websocket"  # nothing listens there
    elif blocked == "404":
        dead = srv.ws_url.replace("/connection/websocket", "/connection/no-websocket-here")
    else:
        assert proxy is not None
        dead = f"ws://127.0.0.1:{proxy.port}/connection/websocket"
    base = srv.http_url if proxy is None else proxy.http_url
    transports = [
        {"transport": "websocket", "endpoint": dead},
        {"transport": "http_stream", "endpoint": base + ENDPOINTS["http_stream"]},
        {"transport": "sse", "endpoint": base + ENDPOINTS["sse"]},
    ]

    rec = Recorder()
    python = new_client(srv.ws_url, token=token("python"))
    await python.connect()
    python_sub = await subscribe_ready(python.new_subscription(channel, rec))
    b = await open_page(browser, srv, base_url=base)
    try:
        await start_sdk(b, transports, "browser", channel)
        if proxy is not None:
            assert proxy.refused >= 1 and proxy.relayed >= 1
        assert await b.js("() => window.__t.transports") == ["http_stream"]
        assert transports_by_user(srv) == {"browser": "http_stream", "python": "websocket"}
        failed = await b.js("() => window.__t.transportErrors")
        assert failed and {e["transport"] for e in failed} == {"websocket"}, failed

        assert await b.js("() => window.__t.publish({from: 'browser', text: 'hello over http_stream'})") is True
        await eventually(lambda: len(rec.publications) == 1)
        await python_sub.publish({"from": "python", "text": "hello over websocket"})
        await b.wait("() => window.__t.received.length === 2")
        expected = [
            {"from": "browser", "text": "hello over http_stream"},
            {"from": "python", "text": "hello over websocket"},
        ]
        await eventually(lambda: len(rec.publications) == 2)
        assert rec.publications == list(enumerate(expected, 1))
        assert await b.js("() => window.__t.received") == [
            {"offset": n, "data": data} for n, data in enumerate(expected, 1)
        ]
        assert await b.js("() => window.__t.presence()") == ["browser", "python"]
        assert b.posts(ENDPOINTS["http_stream"]) and b.posts("/emulation")
        assert await b.js("() => window.__t.errors") == []
        assert b.page_errors == []
    finally:
        await python.disconnect()
        if proxy is not None:
            await proxy.close()


# ------------------------------------------------------------------------------ Protobuf over http_stream


@pytest.mark.browser
async def test_protobuf_bundle_over_http_stream(browser: Browser, srv: Running, api: AsyncClient) -> None:
    channel = "pb-stream"
    rec = Recorder()
    python = new_client(srv.ws_url, token=token("python"))
    await python.connect()
    python_sub = await subscribe_ready(python.new_subscription(channel, rec))
    b = await open_page(browser, srv, bundle=PROTOBUF_BUNDLE)
    try:
        await start_sdk(b, [endpoint(srv, "http_stream")], "browser", channel, protobuf=True)
        assert transports_by_user(srv) == {"browser": "http_stream", "python": "websocket"}
        assert codecs_by_user(srv) == {"browser": "protobuf", "python": "json"}

        await python_sub.publish({"from": "python", "n": 1})
        await b.wait("() => window.__t.received.length === 1")
        assert await b.js("() => window.__t.publish({from: 'browser', n: 2})") is True
        await b.wait("() => window.__t.received.length === 2")
        await api.publish(PublishRequest(channel=channel, data={"from": "api", "n": 3}))
        await b.wait("() => window.__t.received.length === 3")
        await eventually(lambda: len(rec.publications) == 3)

        expected = [{"from": "python", "n": 1}, {"from": "browser", "n": 2}, {"from": "api", "n": 3}]
        assert await b.js("() => window.__t.received") == [
            {"offset": n, "data": data} for n, data in enumerate(expected, 1)
        ]
        assert rec.publications == list(enumerate(expected, 1)), "the JSON client gets JSON objects"
        history = await b.js("() => window.__t.history()")
        assert history["offset"] == 3
        assert history["publications"] == [{"offset": n, "data": data} for n, data in enumerate(expected, 1)]
        assert await b.js("() => window.__t.presence()") == ["browser", "python"]
        assert await b.js("() => window.__t.rpc('echo', {pb: true})") == {
            "method": "echo",
            "echo": {"pb": True},
            "user": "browser",
        }
        assert_transport_used(b, "http_stream", srv, protobuf=True)
        assert await b.js("() => window.__t.errors") == []
        assert b.page_errors == []
    finally:
        await python.disconnect()


# ------------------------------------------------------------------------------ a plain EventSource


EVENT_SOURCE_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>uni_sse</title>
<script>
const es = window.__es = {open: false, messages: [], errors: 0};
es.start = token => {
  const source = new EventSource('/connection/uni_sse?cf_connect=' + encodeURIComponent(JSON.stringify({token})));
  source.onopen = () => { es.open = true; };
  source.onerror = () => { es.errors += 1; };
  source.onmessage = e => es.messages.push(JSON.parse(e.data));
  es.close = () => source.close();
};
</script>
"""


@pytest.mark.browser
async def test_plain_event_source_on_uni_sse(browser: Browser, srv: Running, api: AsyncClient) -> None:
    b = await open_page(browser, srv, html=EVENT_SOURCE_PAGE)
    await b.js("t => window.__es.start(t)", token("reader", channels=["news"]))
    # The first message is a push carrying the connect result, with the server-side subscription.
    await b.wait("() => window.__es.messages.length >= 1")
    first = (await b.js("() => window.__es.messages"))[0]
    assert "news" in first["connect"]["subs"], first
    assert transports_by_user(srv) == {"reader": "uni_sse"}

    for n in range(1, 4):
        await api.publish(PublishRequest(channel="news", data={"headline": f"story {n}"}))
    await b.wait("() => window.__es.messages.filter(m => m.pub).length === 3")
    pubs = [m for m in await b.js("() => window.__es.messages") if "pub" in m]
    assert [(m["channel"], m["pub"]["data"], m["pub"].get("offset")) for m in pubs] == [
        ("news", {"headline": f"story {n}"}, n) for n in range(1, 4)
    ]
    assert await b.js("() => window.__es.open") is True
    assert await b.js("() => window.__es.errors") == 0
    assert b.websockets == []
    assert b.page_errors == []
    await b.js("() => window.__es.close()")
    await eventually(lambda: "reader" not in transports_by_user(srv), timeout=5)
