"""The notifications example (examples/notifications) in Chromium: badges, catch-up, privacy.

The runner starts Trunkline and the application backend as two processes. Ann signs in and
opens two tabs; Bob, in another browser context, sends her notifications through the
backend (which publishes them with the server API): both of Ann's tabs show them and their
unread badge, Bob sees none, and Bob's direct subscribe to Ann's personal channel (and a
read of its history) is refused. Ann marks them read in one tab and the other tab's badge
clears. Ann closes her tabs, Bob sends three more, Ann comes back: exactly those three
appear, once each, in order. Offline and back online, the recovered ones also appear once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.conftest import ROOT, free_port
from tests.examples.runner import Example, percentile

SCREENSHOT = ROOT / "docs" / "img" / "notifications.png"
WAIT_MS = 20_000
FIRST = [
    "Your invoice #1042 is ready",
    "Deploy finished: api v2.3.1 is live",
    "Carol mentioned you in #design",
    "Weekly report: 12 new sign-ups",
    "Your export (orders.csv) is ready to download",
    "Reminder: stand-up in 10 minutes",
    "Payment received from Acme Ltd",
    "New comment on 'Q3 roadmap'",
    "Build #881 passed on main",
    "Dan shared a file with you",
]
MISSED = ["Server disk at 85 %", "Your trial ends in 3 days", "Eve accepted your invitation"]
WHILE_OFFLINE = ["Backup completed", "Ticket #77 was closed"]


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Example]:
    ex = Example(tmp_path, "notifications")
    yield ex
    ex.stop(signal.SIGKILL)


@pytest.fixture
async def browser(chromium: Callable[..., Any]) -> AsyncIterator[Browser]:
    yield await chromium()


class Tab:
    def __init__(self, page: Page, errors: list[str]) -> None:
        self.page = page
        page.on("pageerror", lambda exc: errors.append(str(exc)))

    @classmethod
    async def open(cls, context: BrowserContext, base: str, errors: list[str], name: str | None = None) -> Tab:
        tab = cls(await context.new_page(), errors)
        await tab.page.goto(base + "/")
        if name is not None:  # signed out: the sign-in form
            await tab.page.fill("#name", name)
            await tab.page.click("#signin button[type=submit]")
        await tab.page.wait_for_function(
            "window.notify.state === 'connected' && window.notify.catchUps.length > 0", timeout=WAIT_MS
        )
        return tab

    async def texts(self) -> list[str]:
        texts: list[str] = await self.page.evaluate("window.notify.items.map((it) => it.text)")
        return texts

    async def badge(self) -> str:
        if await self.page.locator("#badge").is_hidden():
            return ""
        return await self.page.inner_text("#badge")

    async def wait_items(self, n: int) -> None:
        await self.page.wait_for_function(f"window.notify.items.length >= {n}", timeout=WAIT_MS)

    async def send(self, to: str, text: str) -> None:
        """Through the page's form, as a person does."""
        await self.page.fill("#to", to)
        await self.page.fill("#text", text)
        await self.page.click("#send")
        await self.page.locator("#send-result", has_text=f"Sent to {to}.").wait_for(timeout=WAIT_MS)
        await self.page.evaluate("document.querySelector('#send-result').hidden = true")

    async def post(self, to: str, text: str) -> int:
        """Through the backend's route with the page's session cookie (quicker than the form)."""
        status: int = await self.page.evaluate(
            """async ([to, text]) => (await fetch('/notify', {method: 'POST',
                 headers: {'Content-Type': 'application/json'}, body: JSON.stringify({to, text})})).status""",
            [to, text],
        )
        return status


PROBE = """async (channel) => new Promise((resolve) => {
  const sub = window.notify.centrifuge.newSubscription(channel);
  sub.on('subscribed', () => resolve({subscribed: true}));
  sub.on('error', (ctx) => resolve({subscribed: false, code: ctx.error.code}));
  sub.on('unsubscribed', (ctx) => resolve({subscribed: false, code: ctx.code}));
  sub.subscribe();
})"""

HISTORY = """async (channel) => {
  try { await window.notify.centrifuge.history(channel, {limit: 10}); return 'read'; } catch (e) { return e.code; }
}"""


@pytest.mark.browser
async def test_notifications_reach_every_tab_of_one_user_only(
    example: Example, browser: Browser, tmp_path: Path
) -> None:
    screenshot = SCREENSHOT if os.environ.get("TRUNKLINE_TEST_SCREENSHOTS") else tmp_path / "notifications.png"
    port, page_port = free_port(), free_port()
    example.start("run.py", *("--port", str(port), "--page-port", str(page_port)))
    base = f"http://127.0.0.1:{page_port}"
    await example.wait_http(f"{base}/static/app.js")
    errors: list[str] = []
    try:
        ann_ctx = await browser.new_context(viewport={"width": 1280, "height": 860})
        bob_ctx = await browser.new_context(viewport={"width": 1280, "height": 860})
        ann1 = await Tab.open(ann_ctx, base, errors, name="ann")
        ann2 = await Tab.open(ann_ctx, base, errors)  # the session cookie signs the second tab in
        bob = await Tab.open(bob_ctx, base, errors, name="bob")
        assert await ann2.page.inner_text("#me") == "ann"
        assert await ann1.page.inner_text("#channel") == "notify:#ann"
        assert await ann1.badge() == "" and await ann1.texts() == []

        # 1. Bob notifies Ann: both of her tabs get it and the badge, Bob gets nothing
        await bob.send("ann", FIRST[0])
        for tab in (ann1, ann2):
            await tab.wait_items(1)
            assert await tab.badge() == "1"
            assert await tab.page.inner_text("#items .item.unread .text") == FIRST[0]
        await bob.send("ann", FIRST[1])
        for text in FIRST[2:]:
            assert await bob.post("ann", text) == 200
        for tab in (ann1, ann2):
            await tab.wait_items(len(FIRST))
            assert await tab.texts() == FIRST
            assert await tab.badge() == str(len(FIRST))
            assert await tab.page.title() == f"({len(FIRST)}) Inbox · Relay"
        latencies = await ann1.page.evaluate("window.notify.latencies") + await ann2.page.evaluate(
            "window.notify.latencies"
        )
        assert len(latencies) == 2 * len(FIRST)

        # 2. another user never sees them, and cannot read Ann's channel directly
        assert await bob.texts() == [] and await bob.badge() == ""
        assert await bob.page.evaluate(PROBE, "notify:#ann") == {"subscribed": False, "code": 103}
        assert await bob.page.evaluate(HISTORY, "notify:#ann") == 103
        assert await bob.page.evaluate(HISTORY, "notify:#bob") == "read"  # his own, server-side subscribed

        # 3. read in one tab: every tab's badge clears (the backend publishes a read marker)
        await ann1.page.click("#mark-read")
        for tab in (ann1, ann2):
            await tab.page.wait_for_function("window.notify.unread === 0", timeout=WAIT_MS)
            assert await tab.badge() == ""
            assert await tab.page.locator("#items .item.unread").count() == 0

        # 4. Ann closes her tabs; three notifications arrive meanwhile; she comes back
        await ann1.page.close()
        await ann2.page.close()
        for text in MISSED:
            await bob.send("ann", text)
        ann = await Tab.open(ann_ctx, base, errors)
        await ann.wait_items(len(FIRST) + len(MISSED))
        assert await ann.texts() == FIRST + MISSED  # exactly those three, once each, in order
        assert await ann.badge() == str(len(MISSED))
        unread = await ann.page.locator("#items .item.unread .text").all_inner_texts()
        assert unread == list(reversed(MISSED))  # newest first on the page
        assert "3 new while you were away" in await ann.page.inner_text("#caught-up")
        applied = await ann.page.evaluate("window.notify.applied")
        assert applied == sorted(set(applied))  # each offset once, in order
        assert await ann.page.evaluate("window.notify.catchUps") == [{"missed": len(MISSED), "gap": False}]
        await ann.page.screenshot(path=str(screenshot))

        # 5. offline and back: the server recovers what was sent meanwhile, once
        await ann_ctx.set_offline(True)
        await ann.page.wait_for_function("window.notify.state !== 'connected'", timeout=WAIT_MS)
        await ann.page.locator("#banner", has_text="Reconnecting").wait_for(timeout=WAIT_MS)
        for text in WHILE_OFFLINE:
            await bob.send("ann", text)
        await ann_ctx.set_offline(False)
        await ann.wait_items(len(FIRST) + len(MISSED) + len(WHILE_OFFLINE))
        await ann.page.wait_for_function("window.notify.state === 'connected'", timeout=WAIT_MS)
        assert await ann.texts() == FIRST + MISSED + WHILE_OFFLINE
        assert await ann.badge() == str(len(MISSED) + len(WHILE_OFFLINE))
        applied = await ann.page.evaluate("window.notify.applied")
        assert applied == sorted(set(applied))
        assert len(await ann.page.evaluate("window.notify.catchUps")) == 1  # recovered, no new catch-up

        # 6. Bob still has nothing; bad input gets a clear answer; a phone-sized viewport fits
        assert await bob.texts() == [] and await bob.badge() == ""
        assert await bob.post("ann", "") == 400
        assert await bob.post("not a name!", "hi") == 400
        await bob.page.set_viewport_size({"width": 390, "height": 844})
        assert await bob.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert await bob.page.locator("#badge").is_hidden() and await bob.page.locator("#compose").is_visible()

        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(f"\nnotifications: {len(latencies)} deliveries to 2 tabs, backend->tab p50 {p50:.1f} ms p99 {p99:.1f} ms")
        assert p99 < 2000
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- runner\n{example.output()}") from exc
    assert not errors, errors
    assert screenshot.stat().st_size > 20_000
    assert example.stop() == 0, example.output()
