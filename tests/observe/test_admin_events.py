"""The live event log: the hub observer's budgets and ring buffer, and Chromium showing and pausing it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Running, eventually, token
from trunkline.node import SYSTEM_PREFIX, Node
from trunkline.observe import admin_events
from trunkline.records import ClientInfo, Publication

from . import connect, subscribe
from .admin_pages import open_dashboard, screenshot_path
from .test_dashboard import ADMIN


class FakeConn:
    """Just what the observer reads of a connection."""

    def __init__(self, n: int, admin: bool = False) -> None:
        self.client_id = f"c{n}"
        self.user = f"u{n}"
        self.is_admin = admin
        self.close_code = 3503
        self.remote = "10.0.0.1"


def test_budgets_ring_buffer_and_what_is_left_out() -> None:
    assert admin_events.EVENTS_CHANNEL.startswith(SYSTEM_PREFIX)
    node = Node()
    log = admin_events.EventLog(node, keep=50, now=lambda: 1000.0)
    conns = [FakeConn(i) for i in range(100)]
    for conn in conns:
        log.connection_added(conn)  # type: ignore[arg-type]
    log.connection_added(FakeConn(999, admin=True))  # type: ignore[arg-type]  # the dashboard's own
    for i in range(10):
        log.published("news", Publication(data=b'{"n":%d}' % i, info=ClientInfo("u1", "c1"), offset=i + 1))
    log.published(admin_events.EVENTS_CHANNEL, Publication(data=b"{}"))
    log.subscribed("__trunkline:stats", conns[0])  # type: ignore[arg-type]
    waiter = FakeConn(7)
    waiter.client_id = ""  # a long poll waiting on a channel: no connection
    log.subscribed("news", waiter)  # type: ignore[arg-type]
    log.connection_removed(conns[0])  # type: ignore[arg-type]

    batch = log.flush()
    assert batch is not None
    kinds = [e["type"] for e in batch["events"]]
    budget = admin_events.BUDGET
    assert kinds.count("connect") == budget["connect"]
    assert kinds.count("publication") == budget["publication"]
    assert kinds.count("disconnect") == 1
    assert "subscribe" not in kinds  # system channels and long-poll waiters are left out
    assert batch["skipped"] == {"connect": 100 - budget["connect"], "publication": 10 - budget["publication"]}
    assert all(e["user"] != "u999" for e in batch["events"])
    first = batch["events"][0]
    assert first == {
        "type": "connect",
        "client": "c0",
        "user": "u0",
        "transport": "",
        "remote": "10.0.0.1",
        "seq": 1,
        "time": 1000.0,
    }
    pub = next(e for e in batch["events"] if e["type"] == "publication")
    assert (pub["channel"], pub["offset"], pub["user"], pub["data"], pub["size"]) == ("news", 1, "u1", '{"n":0}', 7)
    gone = next(e for e in batch["events"] if e["type"] == "disconnect")
    assert (gone["code"], gone["reason"]) == (3503, "force disconnect")
    assert [e["seq"] for e in batch["events"]] == sorted(e["seq"] for e in batch["events"])

    assert log.flush() is None  # nothing since
    # the next interval has a fresh budget; the ring buffer keeps the last 50
    for conn in conns[:5]:
        log.connection_added(conn)  # type: ignore[arg-type]
    again = log.flush()
    assert again is not None and len(again["events"]) == 5 and again["skipped"] == {}
    assert len(log.recent) == 29 + 5
    for _ in range(2):
        for conn in conns:
            log.connection_added(conn)  # type: ignore[arg-type]
        assert log.flush() is not None
    assert len(log.recent) == 50  # bounded: the oldest are gone
    assert log.recent[0]["seq"] == 34 + 50 - 50 + 1
    assert log.publish(again) == 0  # nobody subscribed


def test_a_long_publication_is_cut_in_the_preview() -> None:
    log = admin_events.EventLog(Node())
    log.published("news", Publication(data=b'"' + "é".encode() * 200 + b'"'))
    (event,) = log.recent
    assert event["size"] == 402
    assert event["data"].endswith("…")
    assert len(event["data"]) <= admin_events.PREVIEW + 1


@pytest.mark.browser
async def test_event_log_shows_connects_and_disconnects_and_pauses(
    start_server: Callable[..., Any], chromium: Callable[..., Any], tmp_path: Path
) -> None:
    running: Running = await start_server(ADMIN)
    board = await open_dashboard(chromium, running.http_url)
    page = board.page
    await board.show("events")
    await page.wait_for_function("() => window.__admin.eventsSub && window.__admin.eventsSub.state === 'subscribed'")

    eve = await connect(running.ws_url, token("eve"))
    await subscribe(eve, "news")
    for n in range(20):
        await eve.publish("news", {"n": n})
    connect_row = f"#events tr[data-type='connect'][data-client='{eve.client_id}']"
    await page.wait_for_selector(connect_row, timeout=5_000)
    assert "user eve" in await page.inner_text(connect_row)
    assert "websocket" in await page.inner_text(connect_row)
    await page.wait_for_selector(f"#events tr[data-type='subscribe'][data-client='{eve.client_id}']")
    # publications are sampled: a few rows and a count of the rest
    await page.wait_for_function("() => (window.__admin.skipped.publication || 0) > 0", timeout=5_000)
    shown = await page.locator("#events tr[data-type='publication']").count()
    assert 1 <= shown <= 2 * admin_events.BUDGET["publication"]
    assert "sampled out:" in (await page.text_content("#events-summary") or "")

    # disconnected by the server API: the row has the code and its reason
    await running.server.node.disconnect_user("eve")
    gone_row = f"#events tr[data-type='disconnect'][data-client='{eve.client_id}']"
    await page.wait_for_selector(gone_row, timeout=5_000)
    assert "code 3503 (force disconnect)" in await page.inner_text(gone_row)
    await board.shot(screenshot_path("dashboard-events.png", tmp_path))

    # pause: events keep arriving (counted) but the table stands still
    await page.click("#events-pause")
    assert await page.text_content("#events-pause") == "Resume"
    rows = await page.locator("#events tbody tr").count()
    received = await page.evaluate("window.__admin.eventsReceived")
    frank = await connect(running.ws_url, token("frank"))
    try:
        await page.wait_for_function(f"() => window.__admin.eventsReceived > {received}", timeout=5_000)
        assert await page.locator(f"#events tr[data-client='{frank.client_id}']").count() == 0
        assert await page.locator("#events tbody tr").count() == rows
        assert "paused · 1 new event waiting" in (await page.text_content("#events-summary") or "")
        # resume: it shows what came meanwhile
        await page.click("#events-pause")
        await page.wait_for_selector(f"#events tr[data-type='connect'][data-client='{frank.client_id}']")
        await frank.disconnect()
        closed = f"#events tr[data-type='disconnect'][data-client='{frank.client_id}']"
        await page.wait_for_selector(closed, timeout=5_000)
        assert "code 3000 (connection closed)" in await page.inner_text(closed)  # the client went away itself
    finally:
        await frank.disconnect()
    await eventually(lambda: running.server.node.hub.num_clients == 1)  # the dashboard's connection
    board.assert_clean()
