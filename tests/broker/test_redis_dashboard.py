"""Issue 19 item 1: the dashboard's node list shows every worker of ``trunkline serve --workers 2``.

Real processes (the supervisor, two workers on one port, a redis-server) and a real Chromium:
whichever worker serves the dashboard, its nodes table lists both workers, fed by the
control messages every worker sends through Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_workers import Workers

PASSWORD = "correct horse battery staple"
ADMIN = {"admin": {"enabled": True, "password": PASSWORD, "secret": "admin-secret-0123456789abcdef0123456789"}}

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture
def two_workers(tmp_path: Path, redis_url: str) -> Iterator[Workers]:
    running = Workers(tmp_path, redis_url, count=2, extra=ADMIN)
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def test_dashboard_lists_both_workers_as_nodes(two_workers: Workers, chromium: Callable[..., Any]) -> None:
    nodes = await two_workers.ready()  # both workers announced themselves through Redis
    assert len(nodes) == 2
    browser = await chromium()
    page = await browser.new_page()
    await page.goto(f"{two_workers.base}/dashboard")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_function("() => window.__dashboard && window.__dashboard.state === 'live'", timeout=20_000)
    # every worker learns of the other through control messages (node info): eventually both are listed
    await page.wait_for_function(
        "() => window.__dashboard.last && window.__dashboard.last.nodes.length === 2"
        " && document.querySelectorAll('#nodes tbody tr').length === 2",
        timeout=30_000,
    )
    served = await page.evaluate("window.__dashboard.last.nodes.map(n => n.name)")
    assert sorted(served) == sorted(nodes), "the stats document of the serving worker names both"
    text = await page.text_content("#nodes tbody")
    assert text is not None
    for name in nodes:
        assert name in text, f"{name} is in the dashboard's node list"
