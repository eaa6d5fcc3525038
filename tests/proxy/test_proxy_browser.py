"""centrifuge-js in headless Chromium: logged in by a cookie the backend set, no token anywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import Browser

from tests.conftest import Running
from tests.proxy.conftest import Backend, proxy_config

SCRIPT = """
async (url) => {
  const out = {};
  const c = new Centrifuge(url, {minReconnectDelay: 100, maxReconnectDelay: 500});
  await new Promise((resolve, reject) => {
    c.on('connected', (ctx) => { out.connected = ctx.data; resolve(); });
    c.on('disconnected', (ctx) => reject(new Error('disconnected ' + ctx.code + ' ' + ctx.reason)));
    c.connect();
  });
  const sub = c.newSubscription('chat:js');
  const pubs = [];
  sub.on('publication', (ctx) => pubs.push(ctx.data));
  const subscribed = new Promise((resolve) => sub.on('subscribed', (ctx) => resolve(ctx.data)));
  sub.subscribe();
  out.subscribed = await subscribed;
  await sub.publish({text: 'from js'});
  for (let i = 0; i < 100 && pubs.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  out.publication = pubs[0] || null;
  out.rpc = (await c.rpc('sum', {a: 4, b: 5})).data;
  try { await c.rpc('fail:x', {}); } catch (e) { out.rpcError = {code: e.code, message: e.message}; }
  const denied = c.newSubscription('chat:secret');
  out.denied = await new Promise((resolve) => {
    denied.on('unsubscribed', (ctx) => resolve(ctx.code));
    denied.subscribe();
  });
  c.disconnect();
  return out;
}
"""


async def test_centrifuge_js_through_the_proxy(
    start_server: Callable[..., Any], backend: Backend, chromium: Callable[..., Awaitable[Browser]]
) -> None:
    running: Running = await start_server(proxy_config(backend.url))
    browser = await chromium()
    page = await browser.new_page()
    login = await page.goto(f"{backend.url}/login?user=bob")  # the backend sets its session cookie
    assert login is not None and login.status == 200
    await page.goto(f"{running.http_url}/static/vendor/centrifuge.js")  # a page of Trunkline's origin
    await page.add_script_tag(url="/static/vendor/centrifuge.js")
    out = await page.evaluate(SCRIPT, running.ws_url)
    assert out["connected"] == {"welcome": "bob", "client_data": None}
    assert out["subscribed"] == {"hello": "chat:js", "meta": None}
    assert out["publication"] == {"text": "FROM JS", "by": "bob"}
    assert out["rpc"] == {"sum": 9}
    assert out["rpcError"] == {"code": 100, "message": "internal server error"}
    assert out["denied"] == 403
    connect = [r for r in backend.requests("/connect") if r["body"].get("name") == "js"]
    assert connect and connect[-1]["headers"]["Cookie"] == "sid=bob-sid"
    await browser.close()
