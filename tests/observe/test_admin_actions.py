"""Chromium: the actions page runs server API methods; a cross-site form post is refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import Running, free_port, token

from . import connect, subscribe
from .admin_pages import open_dashboard, screenshot_path
from .test_dashboard import ADMIN


@asynccontextmanager
async def evil_site(target: str) -> AsyncIterator[str]:
    """Another origin on the same site (127.0.0.1, another port): a page with a form posting to ``target``.

    Same-site, so the browser sends even a SameSite=Strict cookie along: only the CSRF token can stop it.
    """
    page = f"""<!doctype html><title>cute cats</title>
<form method="post" action="{target}" id="f">
<input name="channel" value="news"><input name="data" value='{{"text": "forged"}}'>
<button type="submit">see cats</button></form>"""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@pytest.mark.browser
async def test_actions_page_publishes_to_a_real_subscriber(
    start_server: Callable[..., Any], chromium: Callable[..., Any], tmp_path: Path
) -> None:
    running: Running = await start_server(ADMIN)
    reader = await connect(running.ws_url, token("reader"))
    try:
        _, received = await subscribe(reader, "news")
        board = await open_dashboard(chromium, running.http_url)
        page = board.page
        await board.show("actions")

        # a cross-site form post, with the admin's cookie, is refused: no publication
        async with evil_site(f"{running.http_url}/dashboard/api/publish") as evil:
            forged = await board.context.new_page()
            await forged.goto(evil)
            async with forged.expect_navigation() as navigation:
                await forged.click("button")
            response = await navigation.value
            assert response.status == 403  # not 401: the cookie was sent, the token was missing
            assert json.loads(await response.text()) == {"error": "missing or wrong CSRF token"}
            await forged.close()

        # every method of the server API is offered, each with an example
        methods = await page.eval_on_selector_all("#action-method option", "os => os.map(o => o.value)")
        assert {"publish", "broadcast", "unsubscribe", "disconnect", "history_remove", "batch"} <= set(methods)
        await page.select_option("#action-method", "presence_stats")
        assert json.loads(await page.input_value("#action-params")) == {"channel": "news"}

        await page.select_option("#action-method", "publish")
        await page.fill("#action-params", json.dumps({"channel": "news", "data": {"text": "from the actions page"}}))
        await page.click("#action-run")
        await received.wait_for(1)
        assert received.publications == [{"text": "from the actions page"}]  # the forged one never arrived
        await page.wait_for_function("() => document.querySelector('#action-status').textContent === 'done'")
        result = json.loads(await page.text_content("#action-result") or "")
        assert result["result"]["offset"] == 1

        # a method's error is shown as the server API answers it
        await page.fill("#action-params", json.dumps({"channel": "nosuchns:x", "data": {}}))
        await page.click("#action-run")
        await page.wait_for_function("() => document.querySelector('#action-status').textContent === 'error'")
        assert json.loads(await page.text_content("#action-result") or "") == {
            "error": {"code": 102, "message": "unknown channel"}
        }
        # not JSON: refused in the page, nothing sent
        await page.fill("#action-params", "{channel: news")
        await page.click("#action-run")
        await page.wait_for_function(
            "() => document.querySelector('#action-status').textContent.startsWith('not JSON')"
        )

        # history_remove, then history shows the channel empty
        await page.select_option("#action-method", "history_remove")
        await page.click("#action-run")
        await page.wait_for_function("() => document.querySelector('#action-status').textContent === 'done'")
        await page.select_option("#action-method", "history")
        await page.click("#action-run")
        await page.wait_for_function(
            "() => document.querySelector('#action-status').textContent === 'done'"
            " && document.querySelector('#action-result').textContent.includes('publications')"
        )
        assert json.loads(await page.text_content("#action-result") or "")["result"]["publications"] == []
        await page.select_option("#action-method", "publish")
        await page.fill("#action-params", json.dumps({"channel": "news", "data": {"text": "hello"}}, indent=2))
        await page.click("#action-run")
        await received.wait_for(2)
        await page.wait_for_function("() => document.querySelector('#action-status').textContent === 'done'")
        await board.shot(screenshot_path("dashboard-actions.png", tmp_path))
        board.assert_clean()
    finally:
        await reader.disconnect()
