"""Map subscriptions in real Chromium: centrifuge-js's JSON and Protobuf bundles (``make setup`` vendors them).

The page (written into a document loaded from the server, which keeps its origin) syncs a
map of several state pages, applies an update and a removal, and writes a key with
``mapPublish`` that the server's state then holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
from playwright.async_api import Browser, Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from tests.conftest import Running, token
from tests.map.test_map_js import CONFIG, put, state_of

from trunkline.broker.map_base import MapStateQuery

TIMEOUT_MS = 15_000
BUNDLES = {"json": "/static/vendor/centrifuge.js", "protobuf": "/static/vendor/centrifuge.protobuf.js"}
SCRIPT = """
const t = window.__map = {synced: null, updates: [], errors: []};
const enc = new TextEncoder(), dec = new TextDecoder();
const binary = BUNDLE_KIND === 'protobuf';
const value = d => (d === undefined || d === null) ? null : binary ? (d.length ? JSON.parse(dec.decode(d)) : null) : d;
let client = null;
t.start = ({url, token, channel}) => {
  client = new Centrifuge(url, {token});
  client.on('error', ctx => t.errors.push(`client ${JSON.stringify(ctx.error)}`));
  const sub = client.newMapSubscription(channel, {mapPageSize: 2});
  sub.on('sync', ctx => { t.synced = ctx.entries.map(e => ({key: e.key, data: value(e.data)})); });
  sub.on('update', ctx => t.updates.push({key: ctx.key, removed: !!ctx.removed, data: value(ctx.data)}));
  sub.on('error', ctx => t.errors.push(`sub ${JSON.stringify(ctx.error)}`));
  sub.subscribe();
  client.connect();
};
t.write = ({channel, key, data}) => client.mapPublish(channel, key, binary ? enc.encode(JSON.stringify(data)) : data)
  .then(() => true, err => `refused ${err.code}`);
true;  // the value of the script: not a function, which Playwright would call
"""


async def wait(page: Page, expression: str) -> None:
    try:
        await page.wait_for_function(expression, timeout=TIMEOUT_MS)
    except PlaywrightTimeoutError:
        state = await page.evaluate("() => JSON.stringify(window.__map)")
        raise AssertionError(f"{expression} not met within {TIMEOUT_MS} ms; page state: {state}") from None


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["json", "protobuf"])
async def test_map_subscription_in_chromium(
    chromium: Callable[..., Awaitable[Browser]], start_server: Callable[..., Awaitable[Running]], kind: str
) -> None:
    srv = await start_server(CONFIG)
    node = srv.server.node
    for i in range(5):
        await put(node, "mm:browser", f"k{i}", i)
    browser = await chromium()
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    bundle = BUNDLES[kind]
    response = await page.goto(srv.http_url + bundle)
    assert response is not None and response.ok
    await page.set_content(f'<!doctype html><meta charset="utf-8"><script src="{bundle}"></script>')
    await page.wait_for_function("() => typeof Centrifuge === 'function'", timeout=TIMEOUT_MS)
    await page.evaluate(f"BUNDLE_KIND = {kind!r};" + SCRIPT)
    await page.evaluate(
        "a => window.__map.start(a)", {"url": srv.ws_url, "token": token("browser"), "channel": "mm:browser"}
    )
    await wait(page, "() => window.__map.synced !== null")
    synced: list[dict[str, Any]] = await page.evaluate("() => window.__map.synced")
    assert {e["key"]: e["data"] for e in synced} == await state_of(node, "mm:browser")
    assert len(synced) == 5

    await put(node, "mm:browser", "k2", "updated")
    await node.map_remove("mm:browser", "k0")
    await wait(page, "() => window.__map.updates.length >= 2")
    assert await page.evaluate("() => window.__map.updates") == [
        {"key": "k2", "removed": False, "data": {"v": "updated"}},
        {"key": "k0", "removed": True, "data": None},
    ]
    written = await page.evaluate(
        "a => window.__map.write(a)", {"channel": "mm:browser", "key": "mine", "data": {"by": kind}}
    )
    assert written is True
    await wait(page, "() => window.__map.updates.length >= 3")
    state = await node.map_read_state("mm:browser", MapStateQuery(key="mine"))
    assert [msgspec.json.decode(e.data) for e in state.entries] == [{"by": kind}]
    assert page_errors == [] and await page.evaluate("() => window.__map.errors") == []
    await page.close()
