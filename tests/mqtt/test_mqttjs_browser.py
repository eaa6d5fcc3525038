"""mqtt.js 5 in headless Chromium on one channel with centrifuge-js (same page) and paho-mqtt (this process).

The page loads the vendored bundles ``/static/vendor/mqtt.min.js`` (global ``mqtt``)
and ``/static/vendor/centrifuge.js``: two mqtt.js clients connect over ``/mqtt``,
one with protocolVersion 5 and one with 4 (MQTT 3.1.1), with the connection token
as the password, and a centrifuge-js client subscribes to the same channel over
``/connection/websocket``. paho-mqtt in the test process joins them. Each one
publishes in turn and every other one receives it (MQTT clients also get their
own publications, as MQTT does).

The page is written into a document loaded from the server (the bundle itself), so
it keeps the server's origin (the origin check allows same-origin pages) and its
local address space.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import ROOT, Running, token

from .paho_helpers import V5, Paho, nothing_in

TIMEOUT_MS = 15_000
TOPIC = "room"  # a channel without namespace: history, presence, publish for subscribers
BUNDLE = ROOT / "src" / "trunkline" / "web" / "static" / "vendor" / "mqtt.min.js"
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>mqtt.js and centrifuge-js</title>
<script src="/static/vendor/mqtt.min.js"></script>
<script src="/static/vendor/centrifuge.js"></script>
<script>
const t = window.__t = {mqtt: {}, cf: {state: 'disconnected', subscribed: false, received: []}, errors: []};
t.mqttStart = ({name, url, version, user, token, topic}) => {
  const state = t.mqtt[name] = {connected: false, subscribed: false, received: [], acks: 0, version: null};
  const client = mqtt.connect(url, {
    protocolVersion: version, clientId: name, username: user, password: token, reconnectPeriod: 0,
  });
  state.client = client;
  client.on('connect', connack => {
    state.connected = true;
    state.version = client.options.protocolVersion;
    client.subscribe(topic, {qos: 1}, (err, granted) => {
      if (err) { t.errors.push(`${name} subscribe: ${err}`); return; }
      state.granted = granted.map(g => g.qos);
      state.subscribed = true;
    });
  });
  client.on('message', (topic, payload, packet) => {
    state.received.push({topic, qos: packet.qos, data: JSON.parse(new TextDecoder().decode(payload))});
  });
  client.on('error', err => t.errors.push(`${name} error: ${err.message}`));
};
t.mqttPublish = ({name, topic, data, qos}) => new Promise((resolve, reject) => {
  t.mqtt[name].client.publish(topic, JSON.stringify(data), {qos}, err => err ? reject(String(err)) : resolve(true));
});
t.mqttReceived = name => t.mqtt[name].received;
t.cfStart = ({url, token, channel}) => {
  const client = new Centrifuge(url, {token});
  client.on('connected', () => { t.cf.state = 'connected'; });
  client.on('error', ctx => t.errors.push(`centrifuge error ${JSON.stringify(ctx.error)}`));
  const sub = t.cf.sub = client.newSubscription(channel);
  sub.on('subscribed', () => { t.cf.subscribed = true; });
  sub.on('publication', ctx => t.cf.received.push(ctx.data));
  sub.subscribe();
  client.connect();
};
t.cfPublish = data => t.cf.sub.publish(data).then(() => true);
</script>
"""


async def open_page(browser: Browser, srv: Running) -> tuple[Page, list[str]]:
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = await page.goto(srv.http_url + "/static/vendor/mqtt.min.js")
    assert response is not None and response.ok, "/static/vendor/mqtt.min.js is not served"
    await page.set_content(PAGE)
    await page.wait_for_function("() => typeof mqtt === 'object' && typeof Centrifuge === 'function'")
    return page, errors


async def wait(page: Page, expression: str, arg: Any = None) -> None:
    try:
        await page.wait_for_function(expression, arg=arg, timeout=TIMEOUT_MS)
    except PlaywrightTimeoutError:
        state = await page.evaluate(
            "() => JSON.stringify({cf: window.__t.cf.received, errors: window.__t.errors,"
            " mqtt: Object.fromEntries(Object.entries(window.__t.mqtt).map(([k, v]) => [k, v.received]))})"
        )
        raise AssertionError(f"{expression} not met within {TIMEOUT_MS} ms; page: {state}") from None


@pytest.mark.browser
async def test_mqttjs_v5_and_v4_with_centrifuge_js_and_paho(
    chromium: Callable[..., Awaitable[Browser]], start_server: Callable[..., Any]
) -> None:
    assert BUNDLE.exists(), f"{BUNDLE.relative_to(ROOT)} is missing: run `make setup`"
    srv: Running = await start_server({"mqtt": {"websocket": {"enabled": True}}})
    browser = await chromium()
    page, page_errors = await open_page(browser, srv)
    mqtt_url = f"ws://127.0.0.1:{srv.port}/mqtt"
    paho = Paho(V5, client_id="paho")
    assert (await paho.connect(srv.port, username="py", password=token("py"))) == 0
    try:
        for name, version in (("m5", 5), ("m4", 4)):
            await page.evaluate(
                "a => window.__t.mqttStart(a)",
                {"name": name, "url": mqtt_url, "version": version, "user": name, "token": token(name), "topic": TOPIC},
            )
        await page.evaluate(
            "a => window.__t.cfStart(a)", {"url": srv.ws_url, "token": token("browser"), "channel": TOPIC}
        )
        await wait(page, "() => ['m5', 'm4'].every(n => window.__t.mqtt[n]?.subscribed) && window.__t.cf.subscribed")
        assert await page.evaluate("() => [window.__t.mqtt.m5.version, window.__t.mqtt.m4.version]") == [5, 4]
        assert await page.evaluate("() => [window.__t.mqtt.m5.granted, window.__t.mqtt.m4.granted]") == [[1], [1]]
        await paho.subscribe(TOPIC, 1)
        protocols = {c.client_id: c.protocol for c in srv.server.node.hub.connections() if hasattr(c, "protocol")}
        assert protocols == {"m5": "mqtt5", "m4": "mqtt3.1.1", "paho": "mqtt5"}

        sent: list[dict[str, str]] = []
        for step, (who, data) in enumerate(
            [("m5", {"from": "m5"}), ("cf", {"from": "cf"}), ("paho", {"from": "paho"}), ("m4", {"from": "m4"})], 1
        ):
            if who == "cf":
                assert await page.evaluate("d => window.__t.cfPublish(d)", data) is True
            elif who == "paho":
                paho.client.publish(TOPIC, json.dumps(data).encode(), qos=1)
            else:
                arg = {"name": who, "topic": TOPIC, "data": data, "qos": 1 if who == "m5" else 0}
                assert await page.evaluate("a => window.__t.mqttPublish(a)", arg) is True
            sent.append(data)
            await wait(
                page,
                "n => window.__t.cf.received.length === n"
                " && ['m5', 'm4'].every(k => window.__t.mqtt[k].received.length === n)",
                step,
            )
            got = await paho.next()
            assert (got.topic, json.loads(got.payload)) == (TOPIC, data)

        assert await page.evaluate("() => window.__t.cf.received") == sent
        for name in ("m5", "m4"):
            received = await page.evaluate("n => window.__t.mqttReceived(n)", name)
            assert [r["data"] for r in received] == sent
            assert all(r["topic"] == TOPIC for r in received)
            # QoS: the lower of the subscription's (1) and the publisher's (m4 published QoS 0)
            assert [r["qos"] for r in received] == [1, 1, 1, 0]
        assert nothing_in(paho.messages)
        assert await page.evaluate("() => window.__t.errors") == []
        assert page_errors == []
    finally:
        paho.stop()
        await page.close()
