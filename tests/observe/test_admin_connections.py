"""Chromium: the connection view lists a user's connections and disconnects a real client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Running, eventually, token

from . import connect, subscribe
from .admin_pages import Disconnects, open_dashboard, screenshot_path
from .test_dashboard import ADMIN


@pytest.mark.browser
async def test_connection_view_disconnects_a_client(
    start_server: Callable[..., Any], chromium: Callable[..., Any], tmp_path: Path
) -> None:
    running: Running = await start_server(ADMIN)
    seen = Disconnects()
    target = await connect(running.ws_url, token("carol"), events=seen)
    stays = await connect(running.ws_url, token("carol"))
    other = await connect(running.ws_url, token("dave"))
    try:
        await subscribe(target, "news")
        await subscribe(target, "smallhistory:room-1")
        board = await open_dashboard(chromium, running.http_url)
        page = board.page
        await board.show("connections")
        await page.wait_for_selector("#users tr[data-user='carol']")
        assert await page.text_content("#users tr[data-user='carol'] td.num") == "2"
        assert await page.text_content("#users tr[data-user='dave'] td.num") == "1"
        assert await page.locator("#users tr[data-user='admin']").count() == 0  # the dashboard itself is left out

        await page.click("#users tr[data-user='carol'] a")
        await page.wait_for_function("() => window.__admin.userLoaded === 'carol'", timeout=5_000)
        row = f"#user-connections tr[data-client='{target.client_id}']"
        await page.wait_for_selector(row)
        text = await page.inner_text(row)
        assert "websocket (json)" in text
        assert "127.0.0.1" in text
        assert "news, smallhistory:room-1" in text
        assert await page.locator(f"#user-connections tr[data-client='{stays.client_id}']").count() == 1
        await board.shot(screenshot_path("dashboard-connections.png", tmp_path))

        # disconnect one connection: the client sees Centrifugo's force-disconnect code, the other stays
        await page.click(f"{row} button")
        await eventually(lambda: seen.codes == [3503], timeout=5)
        await page.wait_for_selector(row, state="detached", timeout=5_000)
        assert await page.text_content("#user-action") == f"disconnected client {target.client_id}"
        assert await page.locator(f"#user-connections tr[data-client='{stays.client_id}']").count() == 1
        assert running.server.node.hub.connection(target.client_id) is None
        board.assert_clean()
    finally:
        for client in (target, stays, other):
            await client.disconnect()
