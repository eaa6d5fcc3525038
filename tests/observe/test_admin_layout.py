"""Chromium: every dashboard page fits a phone (no horizontal scroll), and chart legends show values on hover."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Running, token

from . import connect, subscribe
from .admin_pages import open_dashboard, screenshot_path
from .test_dashboard import ADMIN

PHONE = {"width": 390, "height": 844}
NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


@pytest.mark.browser
async def test_every_page_fits_a_phone(
    start_server: Callable[..., Any], chromium: Callable[..., Any], tmp_path: Path
) -> None:
    running: Running = await start_server(ADMIN)
    user = await connect(running.ws_url, token("a-user-with-a-rather-long-name-for-a-phone-screen"))
    try:
        await subscribe(user, "news")
        await subscribe(user, "smallhistory:a-channel-name-long-enough-to-need-wrapping-on-a-phone")
        await user.publish("news", {"text": "a message long enough that it cannot fit on one line of a phone screen"})
        board = await open_dashboard(chromium, running.http_url, viewport=PHONE)
        page = board.page
        await page.wait_for_function("() => window.__dashboard.updates >= 2", timeout=10_000)
        assert await page.evaluate("window.innerWidth") == 390
        assert await page.evaluate(NO_SIDEWAYS_SCROLL), await page.evaluate("document.documentElement.scrollWidth")
        await board.shot(screenshot_path("dashboard-phone.png", tmp_path))
        pages = {
            "channels/news": "#channel-history tbody tr",
            "connections/a-user-with-a-rather-long-name-for-a-phone-screen": "#user-connections tbody tr[data-client]",
            "actions": "#action-method option",
            "events": "#events tr[data-type='connect']",
        }
        for view, ready in pages.items():
            await board.show(view)
            await page.wait_for_selector(ready, state="attached", timeout=5_000)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert await page.evaluate(NO_SIDEWAYS_SCROLL), (view, width)
            # nothing sticks out of the screen either (a wide table scrolls inside its own box)
            widest = await page.evaluate(
                "() => Math.max(...[...document.querySelectorAll('main > section:not([hidden]) .panel, nav, header')]"
                ".map(e => e.getBoundingClientRect().right))"
            )
            assert widest <= 390, (view, widest)
        await board.show("events")
        await board.shot(screenshot_path("dashboard-phone-events.png", tmp_path))
        board.assert_clean()
    finally:
        await user.disconnect()


@pytest.mark.browser
async def test_chart_legend_shows_the_value_under_the_cursor(
    start_server: Callable[..., Any], chromium: Callable[..., Any]
) -> None:
    running: Running = await start_server(ADMIN)
    clients = [await connect(running.ws_url, token(f"u{i}")) for i in range(2)]
    try:
        board = await open_dashboard(chromium, running.http_url)
        page = board.page
        await page.wait_for_function(
            "() => window.__dashboard.updates >= 3 && window.__dashboard.last.connections === 2", timeout=10_000
        )
        value = "#chart-connections .u-legend .u-series:nth-child(2) .u-value"
        assert await page.text_content(value) == "–"  # no cursor, no value
        box = await page.locator("#chart-connections .u-over").bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] / 2)
        await page.wait_for_function(f"() => document.querySelector({value!r}).textContent !== '–'", timeout=5_000)
        idx = await page.evaluate("window.__dashboard.charts.connections.cursor.idx")
        expected = await page.evaluate(f"window.__dashboard.charts.connections.data[1][{idx}]")
        assert await page.text_content(value) == str(expected)
        assert expected == 2  # the right-most points: both clients connected
        time_value = await page.text_content("#chart-connections .u-legend .u-series:nth-child(1) .u-value")
        assert time_value and time_value != "–"
        # the latency chart too, with its own units
        box = await page.locator("#chart-latency .u-over").bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 10)
        await page.wait_for_function(
            "() => window.__dashboard.charts.latency.cursor.idx != null && document.querySelector("
            "'#chart-latency .u-legend .u-series:nth-child(1) .u-value').textContent !== '–'",
            timeout=5_000,
        )
        board.assert_clean()
    finally:
        for client in clients:
            await client.disconnect()
