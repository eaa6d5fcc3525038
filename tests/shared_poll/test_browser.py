"""centrifuge-js (the vendored browser bundle) in headless Chromium tracking shared-poll keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from playwright.async_api import Browser

from tests.conftest import Running, token

from .conftest import Backend
from .test_protocol import signed

BUNDLE_PATH = "/static/vendor/centrifuge.js"
PAGE = f"""<!doctype html>
<meta charset="utf-8">
<title>Shared poll</title>
<script src="{BUNDLE_PATH}"></script>
<script>
const t = window.__sp = {{updates: [], errors: [], subscribed: false}};
t.start = ({{url, token, channel, keys, signature}}) => {{
  const client = new Centrifuge(url, {{token}});
  client.on('error', ctx => t.errors.push(JSON.stringify(ctx.error)));
  const sub = client.newSharedPollSubscription(channel);
  sub.on('subscribed', () => {{ t.subscribed = true; }});
  sub.on('update', ctx => t.updates.push(
    {{key: ctx.key, data: ctx.data, version: ctx.version, removed: !!ctx.removed}}));
  sub.on('error', ctx => t.errors.push(JSON.stringify(ctx.error)));
  sub.track(keys.map(key => ({{key, version: 0}})), signature);
  sub.subscribe();
  client.connect();
}};
</script>
"""


@pytest.mark.browser
async def test_chromium_tracks_keys_and_sees_changes_and_removals(
    chromium: Callable[..., Awaitable[Browser]], poll_server: Running, backend: Backend
) -> None:
    channel = "votes:browser"
    backend.set(channel, "p1", {"votes": 1})
    backend.set(channel, "p2", {"votes": 2})
    browser = await chromium()
    page = await browser.new_page()
    page.set_default_timeout(10_000)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    response = await page.goto(poll_server.http_url + BUNDLE_PATH)  # the server's origin (WebSocket origin check)
    assert response is not None and response.ok
    await page.set_content(PAGE)
    args = {
        "url": poll_server.ws_url,
        "token": token("42"),
        "channel": channel,
        "keys": ["p1", "p2"],
        "signature": signed(channel, ["p1", "p2"]),
    }
    await page.evaluate("args => window.__sp.start(args)", args)
    await page.wait_for_function("() => window.__sp.updates.length === 2")
    backend.set(channel, "p1", {"votes": 5})
    await page.wait_for_function("() => window.__sp.updates.some(u => u.key === 'p1' && u.data.votes === 5)")
    backend.set(channel, "p2", None, removed=True)
    await page.wait_for_function("() => window.__sp.updates.some(u => u.key === 'p2' && u.removed)")
    updates = await page.evaluate("() => window.__sp.updates")
    seen = [(u["key"], u["data"], u["removed"]) for u in updates]
    # the two first values come in one backend answer, in either order; then the change, the removal
    assert sorted(seen[:2], key=str) == [("p1", {"votes": 1}, False), ("p2", {"votes": 2}, False)]
    assert seen[2:] == [("p1", {"votes": 5}, False), ("p2", None, True)]
    first = next(u for u in updates if u["key"] == "p1")
    assert updates[2]["version"] > first["version"]
    assert await page.evaluate("() => window.__sp.errors") == [] and page_errors == []
