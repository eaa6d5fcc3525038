"""centrifuge-js's Protobuf bundle in real Chromium, on one channel with a JSON client.

The page loads ``/static/vendor/centrifuge.protobuf.js`` (vendored by ``make setup``):
its ``Centrifuge`` always speaks Protobuf, asking for the ``centrifuge-protobuf``
subprotocol and exchanging binary frames. A centrifuge-python client in the test process
speaks JSON on the same channel. The browser's payloads are JSON bytes, so the JSON
client can receive them; the page decodes incoming ``Uint8Array`` data with TextDecoder.

The page is the test's: it is written into a document loaded from the server (the bundle
itself, so the static route is checked too), which keeps the server's origin (the
WebSocket origin check allows same-origin pages) and its local address space (Chromium
blocks a page that Playwright fulfils from connecting to 127.0.0.1:
ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Browser, Page, WebSocket
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import ROOT, Running, eventually, token
from tests.sdk.helpers import Recorder, new_client, subscribe_ready

TIMEOUT_MS = 15_000  # every Playwright wait
CHANNEL = "mixed"
BUNDLE = ROOT / "src" / "trunkline" / "web" / "static" / "vendor" / "centrifuge.protobuf.js"
BUNDLE_PATH = "/static/vendor/centrifuge.protobuf.js"
PAGE = f"""<!doctype html>
<meta charset="utf-8">
<title>Protobuf client</title>
<script src="{BUNDLE_PATH}"></script>
"""
PAGE += """<script>
const t = window.__pb = {state: 'disconnected', subscribed: false, received: [], errors: []};
const decoder = new TextDecoder();
let sub = null;
const decode = data => ({bytes: data instanceof Uint8Array, data: JSON.parse(decoder.decode(data))});
t.start = ({url, token, channel}) => {
  const client = new Centrifuge(url, {token});
  client.on('connected', () => { t.state = 'connected'; });
  client.on('disconnected', ctx => { t.state = 'disconnected'; t.errors.push(`disconnected ${ctx.code}`); });
  client.on('error', ctx => t.errors.push(`client error ${JSON.stringify(ctx.error)}`));
  sub = client.newSubscription(channel);
  sub.on('subscribed', () => { t.subscribed = true; });
  sub.on('error', ctx => t.errors.push(`subscription error ${JSON.stringify(ctx.error)}`));
  sub.on('publication', ctx => t.received.push({offset: ctx.offset, ...decode(ctx.data)}));
  sub.subscribe();
  client.connect();
};
t.publish = obj => sub.publish(new TextEncoder().encode(JSON.stringify(obj))).then(() => true);
t.history = () => sub.history({limit: 10}).then(r => ({
  offset: r.offset,
  epoch: r.epoch,
  publications: r.publications.map(p => ({offset: p.offset, ...decode(p.data)})),
}));
</script>
"""


def codecs_by_user(srv: Running) -> dict[str, str]:
    return {conn.user: conn.codec.name for conn in srv.server.node.hub.connections()}  # type: ignore[attr-defined]


class Frames:
    """Every WebSocket frame the page sends and receives, as Playwright reports them."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.sent: list[str | bytes] = []
        self.received: list[str | bytes] = []
        page.on("websocket", self._opened)

    def _opened(self, ws: WebSocket) -> None:
        self.urls.append(ws.url)

        # Playwright tags each handler with an attribute: plain functions, not list.append.
        def sent(payload: str | bytes) -> None:
            self.sent.append(payload)

        def received(payload: str | bytes) -> None:
            self.received.append(payload)

        ws.on("framesent", sent)
        ws.on("framereceived", received)


async def open_page(browser: Browser, srv: Running) -> tuple[Page, Frames, list[str]]:
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    frames = Frames(page)
    response = await page.goto(srv.http_url + BUNDLE_PATH)
    assert response is not None and response.ok, f"{BUNDLE_PATH} is not served"
    await page.set_content(PAGE)
    await page.wait_for_function("() => typeof Centrifuge === 'function'", timeout=TIMEOUT_MS)
    return page, frames, errors


async def wait(page: Page, expression: str, arg: Any = None) -> None:
    try:
        await page.wait_for_function(expression, arg=arg, timeout=TIMEOUT_MS)
    except PlaywrightTimeoutError:
        state = await page.evaluate("() => JSON.stringify(window.__pb)")
        raise AssertionError(f"{expression} not met within {TIMEOUT_MS} ms; page state: {state}") from None


@pytest.mark.browser
async def test_protobuf_browser_and_json_client_share_a_channel(
    browser: Browser, start_server: Callable[..., Any]
) -> None:
    assert BUNDLE.exists(), (
        f"{BUNDLE.relative_to(ROOT)} is missing: run `make setup`"
        f" (after `rm {BUNDLE.parent.relative_to(ROOT)}/.installed` if that stamp predates the Makefile's copy)"
    )
    srv: Running = await start_server()
    page, frames, page_errors = await open_page(browser, srv)

    rec = Recorder()
    json_client = new_client(srv.ws_url, token=token("python"))
    await json_client.connect()
    json_sub = await subscribe_ready(json_client.new_subscription(CHANNEL, rec))
    try:
        await page.evaluate(
            "args => window.__pb.start(args)", {"url": srv.ws_url, "token": token("browser"), "channel": CHANNEL}
        )
        await wait(page, "() => window.__pb.state === 'connected' && window.__pb.subscribed")

        # The browser negotiated Protobuf: the server's session uses the Protobuf codec,
        # the JSON client's the JSON one, and every frame on the page's socket is binary.
        assert codecs_by_user(srv) == {"browser": "protobuf", "python": "json"}
        assert frames.urls == [srv.ws_url]

        await json_sub.publish({"from": "python", "n": 1})
        await wait(page, "() => window.__pb.received.length === 1")
        assert await page.evaluate("() => window.__pb.publish({from: 'browser', n: 2})") is True
        await wait(page, "() => window.__pb.received.length === 2")
        await eventually(lambda: len(rec.publications) == 2)

        expected = [{"from": "python", "n": 1}, {"from": "browser", "n": 2}]
        received = await page.evaluate("() => window.__pb.received")
        assert received == [{"offset": n, "bytes": True, "data": data} for n, data in enumerate(expected, 1)]
        assert rec.publications == list(enumerate(expected, 1)), "the JSON client gets JSON objects"

        history = await page.evaluate("() => window.__pb.history()")
        assert history["offset"] == 2 and history["epoch"]
        assert history["publications"] == [
            {"offset": n, "bytes": True, "data": data} for n, data in enumerate(expected, 1)
        ]

        assert frames.sent and frames.received
        assert all(isinstance(f, bytes) for f in frames.sent + frames.received), "text frame on a Protobuf socket"
        assert await page.evaluate("() => window.__pb.errors") == []
        assert page_errors == []
    finally:
        await json_client.disconnect()
