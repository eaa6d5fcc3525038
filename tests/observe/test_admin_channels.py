"""Chromium: the channel browser shows a channel real clients subscribed to, with its presence and history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Running, token

from . import connect, subscribe
from .admin_pages import open_dashboard, screenshot_path
from .test_dashboard import ADMIN


@pytest.mark.browser
async def test_channel_browser_shows_presence_and_history(
    start_server: Callable[..., Any], chromium: Callable[..., Any], tmp_path: Path
) -> None:
    running: Running = await start_server(ADMIN)
    alice = await connect(running.ws_url, token("alice", info={"name": "Alice"}))
    bob = await connect(running.ws_url, token("bob"))
    try:
        await subscribe(alice, "news")
        await subscribe(bob, "news")
        await subscribe(bob, "smallhistory:room-1")
        await alice.publish("news", {"text": "hello from alice"})
        await bob.publish("news", {"text": "hello from bob"})

        board = await open_dashboard(chromium, running.http_url)
        page = board.page
        await board.show("channels")
        await page.wait_for_selector("#channels-list tr[data-channel='news']")
        # grouped by namespace, with subscriber counts
        assert await page.text_content("#channels-list tr[data-channel='news'] td.num") == "2"
        assert (
            await page.text_content("[data-namespace='smallhistory'] tr[data-channel='smallhistory:room-1'] td.num")
            == "1"
        )
        assert await page.text_content("#channels-summary") == "2 active channels"
        assert await page.locator("#channels-list tr[data-channel^='__trunkline']").count() == 0

        # the channel view: presence and recent history
        await page.click("#channels-list tr[data-channel='news'] a")
        await page.wait_for_function("() => window.__admin.channelLoaded === 'news'", timeout=5_000)
        assert not await page.is_hidden("#channel-detail")
        clients = await page.eval_on_selector_all(
            "#channel-presence tbody tr", "rows => rows.map(r => r.dataset.client).sort()"
        )
        assert clients == sorted([alice.client_id, bob.client_id])
        users = await page.eval_on_selector_all(
            "#channel-presence tbody tr td:first-child", "t => t.map(x => x.textContent)"
        )
        assert sorted(users) == ["alice", "bob"]
        assert "Alice" in (await page.text_content("#channel-presence tbody") or "")
        history = await page.eval_on_selector_all("#channel-history tbody tr", "rows => rows.map(r => r.innerText)")
        assert len(history) == 2
        assert "hello from bob" in history[0] and "bob" in history[0]  # newest first
        assert "hello from alice" in history[1]
        assert "2 subscribers on this node" in (await page.text_content("#channel-counts") or "")

        # a pattern narrows the list
        await page.fill("#channels-pattern", "smallhistory:*")
        await page.click("#channels-form button")
        await page.wait_for_function(
            "() => !document.querySelector(\"#channels-list tr[data-channel='news']\")", timeout=5_000
        )
        assert await page.locator("#channels-list tr[data-channel='smallhistory:room-1']").count() == 1
        await page.fill("#channels-pattern", "")
        await page.click("#channels-form button")
        await page.wait_for_selector("#channels-list tr[data-channel='news']")
        await board.shot(screenshot_path("dashboard-channels.png", tmp_path))
        board.assert_clean()
    finally:
        await alice.disconnect()
        await bob.disconnect()
