"""Delta compression proven with centrifuge-js in headless Chromium (JSON and Protobuf bundles).

The page subscribes with ``delta: 'fossil'`` through a counting TCP relay (the page is
loaded through the relay too, so its WebSocket is same-origin). The server API
publishes versions of a 2 KiB JSON document with non-ASCII text; the relay drops
the link mid-stream and centrifuge-js reconnects and recovers. Every publication the
page sees equals the published one (Protobuf: the bytes; JSON: the parsed value, and
the SDK's delta base holds exactly the published bytes), and the SDK's own
``deltaStats()`` and the relay count fewer bytes than the documents.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import Running, eventually, token
from tests.delta.helpers import NAMESPACES, document
from tests.delta.test_sdk import CountingRelay, api_publish

TIMEOUT_MS = 15_000
CHANNEL = "delta:book"
VERSIONS = 30
CUT_AT = 12
BUNDLES = {"json": "/static/vendor/centrifuge.js", "protobuf": "/static/vendor/centrifuge.protobuf.js"}

SCRIPT = """
const t = window.__d = {subscribed: 0, recovered: [], received: [], errors: [], negotiated: null};
const b64 = bytes => btoa(Array.from(bytes, b => String.fromCharCode(b)).join(''));
t.start = ({url, token, channel}) => {
  const client = new Centrifuge(url, {token, minReconnectDelay: 100, maxReconnectDelay: 300});
  client.on('error', ctx => t.errors.push(`client error ${JSON.stringify(ctx.error)}`));
  const sub = t.sub = client.newSubscription(channel, {delta: 'fossil'});
  sub.on('subscribed', ctx => {
    t.subscribed += 1;
    t.recovered.push(!!ctx.recovered);
    t.negotiated = sub._delta_negotiated;
  });
  sub.on('error', ctx => t.errors.push(`subscription error ${JSON.stringify(ctx.error)}`));
  sub.on('publication', ctx => t.received.push(ctx.data instanceof Uint8Array ? b64(ctx.data) : ctx.data));
  sub.subscribe();
  client.connect();
};
t.base = () => b64(t.sub._prevValueMap.get(''));
t.stats = () => t.sub.deltaStats();
"""


async def wait(page: Page, expression: str) -> None:
    try:
        await page.wait_for_function(expression, timeout=TIMEOUT_MS)
    except PlaywrightTimeoutError:
        state = await page.evaluate("() => JSON.stringify({...window.__d, sub: undefined})")
        raise AssertionError(f"{expression} not met within {TIMEOUT_MS} ms; page state: {state}") from None


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
async def test_centrifuge_js_applies_deltas_across_a_dropped_link(
    chromium: Callable[..., Awaitable[Browser]], start_server: Callable[..., Any], fmt: str
) -> None:
    srv: Running = await start_server({"channel": {"namespaces": NAMESPACES}})
    relay = await CountingRelay(srv.port).start()
    browser = await chromium()
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    versions = [document(i) for i in range(VERSIONS)]
    try:
        base = f"http://127.0.0.1:{relay.port}"
        response = await page.goto(base + BUNDLES[fmt])
        assert response is not None and response.ok
        await page.set_content(f'<!doctype html><meta charset="utf-8"><script src="{BUNDLES[fmt]}"></script>')
        await page.wait_for_function("() => typeof Centrifuge === 'function'")
        await page.add_script_tag(content=SCRIPT)
        relay.down_bytes = 0  # from here on: the WebSocket
        await page.evaluate("a => window.__d.start(a)", {"url": relay.ws_url, "token": token("js"), "channel": CHANNEL})
        await wait(page, "() => window.__d.subscribed === 1")
        assert await page.evaluate("() => window.__d.negotiated") is True

        async with aiohttp.ClientSession() as http:
            for data in versions[:CUT_AT]:
                await api_publish(http, srv.api_url, CHANNEL, data)
            await wait(page, f"() => window.__d.received.length === {CUT_AT}")
            relay.accepting = False
            relay.cut()
            for data in versions[CUT_AT : CUT_AT + 8]:
                await api_publish(http, srv.api_url, CHANNEL, data)
            relay.accepting = True
            await wait(page, "() => window.__d.subscribed >= 2")
            for data in versions[CUT_AT + 8 :]:
                await api_publish(http, srv.api_url, CHANNEL, data)
            await wait(page, f"() => window.__d.received.length === {VERSIONS}")

        received = await page.evaluate("() => window.__d.received")
        if fmt == "protobuf":
            assert received == [base64.b64encode(v).decode() for v in versions]
        else:
            assert received == [json.loads(v) for v in versions]
        assert base64.b64decode(await page.evaluate("() => window.__d.base()")) == versions[-1]
        assert (await page.evaluate("() => window.__d.recovered"))[-1] is True

        stats = await page.evaluate("() => window.__d.stats()")
        assert stats["numPublications"] == VERSIONS
        assert stats["numDeltaPayloads"] >= VERSIONS - 4  # full: the first, after the drop, …
        assert stats["bytesReceived"] < sum(len(v) for v in versions) / 4, stats
        await eventually(lambda: relay.down_bytes > 0)
        assert relay.down_bytes < sum(len(v) for v in versions) / 2, relay.down_bytes
        assert await page.evaluate("() => window.__d.errors") == []
        assert page_errors == []
    finally:
        await page.close()
        await relay.close()
