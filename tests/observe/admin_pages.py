"""Helpers of the Chromium tests of the dashboard's administration pages (tests/observe/test_admin_*.py)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from centrifuge import ClientEventHandler, DisconnectedContext

from tests.conftest import ROOT

from .test_dashboard import PASSWORD

IMG = ROOT / "docs" / "img"


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """docs/img/<name> with TRUNKLINE_TEST_SCREENSHOTS=1 (refreshes the docs' pictures), else under tmp_path."""
    return IMG / name if os.environ.get("TRUNKLINE_TEST_SCREENSHOTS") else tmp_path / name


@dataclass
class Dashboard:
    page: Any
    context: Any
    base: str
    console_errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    async def show(self, view: str) -> None:
        """Go to a page of the dashboard (``channels``, ``channels/news``, ``events`` ...) by its address."""
        await self.page.evaluate("(hash) => { window.location.hash = hash; }", view)
        name = view.split("/", maxsplit=1)[0]
        await self.page.wait_for_function(f"() => window.__admin.view === {name!r}", timeout=5_000)

    async def shot(self, path: Path) -> None:
        shot = await self.page.screenshot(path=str(path), full_page=True)
        assert len(shot) > 10_000

    def assert_clean(self) -> None:
        assert self.outside == []
        assert self.console_errors == []


async def open_dashboard(
    chromium: Callable[..., Awaitable[Any]], base: str, viewport: dict[str, int] | None = None
) -> Dashboard:
    """A Chromium page logged in to the dashboard through the form, live (its WebSocket connected)."""
    browser = await chromium()
    context = await browser.new_context(viewport=viewport or {"width": 1360, "height": 800})
    page = await context.new_page()
    board = Dashboard(page, context, base)

    async def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            await route.continue_()
        else:
            board.outside.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_local)
    page.on("console", lambda msg: board.console_errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(f"{base}/dashboard")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_function(
        "() => window.__dashboard && window.__dashboard.state === 'live' && window.__admin && window.__admin.ready",
        timeout=10_000,
    )
    return board


class Disconnects(ClientEventHandler):
    """Records the disconnect codes a centrifuge-python client sees."""

    def __init__(self) -> None:
        self.codes: list[int] = []

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.codes.append(ctx.code)
