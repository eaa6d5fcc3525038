"""The demo chat (``/``) for late joiners, on a phone, and with two people of the same name.

Real Chromium against a real ``trunkline serve`` running ``examples/demo.toml``; helpers come
from ``test_demo_chat``. A late joiner loads the room's last 50 messages, each shown once, in
stream order, with its author's name; the user id from ``POST /demo/token`` (not the display
name) decides what is "mine"; at 390x844 every online name is on screen and the messages get
most of it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cent import AsyncClient, PublishRequest
from playwright.async_api import Browser, BrowserContext

from tests.conftest import Process
from tests.e2e.test_demo_chat import CHANNEL, ROOM, TIMEOUT_MS, Chat, api, assert_consecutive

__all__ = ["api"]  # the fixture, imported for these tests

PHONE = {"width": 390, "height": 844}


async def join_in(context: BrowserContext, server: Process, name: str, room: str = ROOM) -> Chat:
    """Open the page in a new tab of ``context`` (its localStorage is shared) and join as ``name``."""
    chat = Chat(await context.new_page(), name)
    await chat.page.goto(server.http_url + "/")
    await chat.page.fill("#name", name)
    await chat.page.fill("#room", room)
    await chat.page.click("#join")
    await chat.wait("name => window.__chat.state === 'connected' && window.__chat.online.includes(name)", name)
    await chat.wait("() => window.__chat.history !== null")
    chat.user = (await chat.state())["user"]
    return chat


async def new_context(browser: Browser, **options: Any) -> BrowserContext:
    context = await browser.new_context(**({"viewport": {"width": 900, "height": 600}} | options))
    context.set_default_timeout(TIMEOUT_MS)
    return context


async def messages(chat: Chat) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (await chat.state())["messages"]
    return result


async def mine(chat: Chat) -> list[str]:
    """Texts of the messages the page shows as its own."""
    texts: list[str] = await chat.page.eval_on_selector_all(
        "#messages li.mine", "items => items.map(li => li.querySelector('.text').textContent)"
    )
    return texts


# ------------------------------------------------------------------------------ late joiners


@pytest.mark.browser
async def test_late_joiner_sees_recent_history(browser: Browser, demo_server: Process, api: AsyncClient) -> None:
    alice = await Chat.join(browser, demo_server, "Alice")
    bob = await Chat.join(browser, demo_server, "Bob")
    await alice.send("a1")
    await bob.wait_for_texts(1)
    await bob.send("b1")
    await alice.wait_for_texts(2)
    await alice.send("a2")
    await api.publish(PublishRequest(channel=CHANNEL, data={"text": "from the server"}))
    await bob.wait_for_texts(4)
    await bob.page.click("#leave")  # an author who is gone still has a name in the history
    await alice.wait("() => !window.__chat.online.includes('Bob')")

    carol = await join_in(await new_context(browser), demo_server, "Carol")
    assert (await carol.state())["history"]["count"] == 4
    await carol.send("c1")
    await carol.wait_for_texts(5)
    await alice.wait_for_texts(5)

    expected = [(1, "Alice", "a1"), (2, "Bob", "b1"), (3, "Alice", "a2"), (4, "server", "from the server")]
    expected.append((5, "Carol", "c1"))
    assert await carol.rendered() == expected
    assert [m["source"] for m in await messages(carol)] == ["history"] * 4 + ["live"]
    assert await mine(carol) == ["c1"]
    assert await alice.rendered() == expected
    assert await mine(alice) == ["a1", "a2"]
    assert carol.errors == []


@pytest.mark.browser
async def test_late_joiner_gets_the_last_50(browser: Browser, demo_server: Process, api: AsyncClient) -> None:
    for i in range(1, 61):
        await api.publish(PublishRequest(channel=CHANNEL, data={"text": f"p{i}", "name": "server"}))
    carol = await Chat.join(browser, demo_server, "Carol")
    await carol.wait("() => window.__chat.history !== null")
    rows = await carol.rendered()
    assert rows == [(i, "server", f"p{i}") for i in range(11, 61)]
    assert (await carol.state())["history"]["count"] == 50


@pytest.mark.browser
async def test_late_joiner_while_the_room_is_busy(browser: Browser, demo_server: Process, api: AsyncClient) -> None:
    """Publications keep coming while the page subscribes and loads history: each shows once, in order."""
    published = 0
    ten = asyncio.Event()

    async def publish(total: int) -> None:
        nonlocal published
        while published < total:
            await api.publish(PublishRequest(channel=CHANNEL, data={"text": f"p{published + 1}", "name": "server"}))
            published += 1
            if published == 10:
                ten.set()
            await asyncio.sleep(0.02)

    publisher = asyncio.create_task(publish(45))
    try:
        await asyncio.wait_for(ten.wait(), timeout=10)
        carol = await Chat.join(browser, demo_server, "Carol")  # while the other 35 keep coming
        await asyncio.wait_for(publisher, timeout=20)
    finally:
        publisher.cancel()
    await carol.wait_for_texts(45)
    await carol.send("done")  # the last one: nothing older can still be on its way
    await carol.wait_for_texts(46)
    rows = await carol.rendered()
    assert [t for _, _, t in rows] == [f"p{i}" for i in range(1, 46)] + ["done"]
    assert_consecutive(rows)
    assert rows[0][0] == 1
    sources = {m["source"] for m in await messages(carol)}
    assert sources <= {"history", "live"} and "history" in sources
    assert carol.errors == []


# ------------------------------------------------------------------------------ who is who


@pytest.mark.browser
async def test_two_people_named_ann_are_two_users(browser: Browser, demo_server: Process) -> None:
    first = await Chat.join(browser, demo_server, "Ann")
    second = await Chat.join(browser, demo_server, "Ann")
    assert first.user != second.user
    for chat in (first, second):
        await chat.wait("() => window.__chat.members.length === 2")
    await first.send("I am the first Ann")
    await second.wait_for_texts(1)
    await second.send("I am the second Ann")
    await first.wait_for_texts(2)

    labels: dict[str, dict[str, str]] = {}  # page's user -> (user -> label) as that page shows them
    for chat, own in ((first, "I am the first Ann"), (second, "I am the second Ann")):
        assert await mine(chat) == [own]
        state = await chat.state()
        assert [(m["user"], m["mine"]) for m in state["messages"]] == [
            (first.user, chat is first),
            (second.user, chat is second),
        ]
        members = {m["user"]: m for m in state["members"]}
        assert set(members) == {first.user, second.user}
        assert [m["name"] for m in state["members"]] == ["Ann", "Ann"]
        assert members[chat.user]["me"] is True
        assert sum(m["me"] for m in state["members"]) == 1
        shown = {user: m["label"] for user, m in members.items()}
        assert len(set(shown.values())) == 2  # told apart
        assert all(label == f"Ann #{user[:4]}" for user, label in shown.items())
        authors = [a for _, a, _ in await chat.rendered()]
        assert authors == [shown[first.user], shown[second.user]]
        online = await chat.page.eval_on_selector_all(
            "#online li", "items => items.map(li => li.firstChild.textContent)"
        )
        assert sorted(online) == sorted(shown.values())
        assert await chat.page.inner_text("#me") == shown[chat.user]
        assert await chat.page.get_attribute("#online li.me", "title") == f"user {chat.user}"
        labels[chat.user] = shown
        assert chat.errors == []
    assert labels[first.user] == labels[second.user]  # both pages call each Ann the same

    await second.page.click("#leave")
    await first.wait("() => window.__chat.members.length === 1")
    assert (await first.state())["members"][0]["label"] == f"Ann #{first.user[:4]}"  # still in the history


@pytest.mark.browser
async def test_one_browser_keeps_its_user_per_name(browser: Browser, demo_server: Process) -> None:
    """Two tabs with the same name are one user (both show its messages as mine), also after a
    reload; another name in the same browser is another user."""
    context = await new_context(browser)
    tab1 = await join_in(context, demo_server, "Ann")
    tab2 = await join_in(context, demo_server, "Ann")
    bob = await join_in(context, demo_server, "Bob")
    assert tab1.user == tab2.user != bob.user
    await tab1.send("from tab 1")
    await tab2.wait_for_texts(1)
    await bob.send("from Bob")
    await tab1.wait_for_texts(2)
    await tab2.wait_for_texts(2)
    for tab in (tab1, tab2):
        assert await mine(tab) == ["from tab 1"]
        await tab.wait("() => window.__chat.members.length === 2")  # Ann (two connections) and Bob
    assert await mine(bob) == ["from Bob"]

    await tab1.page.reload()
    again = await join_in(context, demo_server, "Ann")
    assert again.user == tab1.user
    assert [t for _, _, t in await again.rendered()] == ["from tab 1", "from Bob"]  # from history
    assert await mine(again) == ["from tab 1"]


# ------------------------------------------------------------------------------ phone layout

ONLINE_BOXES = """() => {
  const list = document.getElementById("online");
  const box = list.getBoundingClientRect();
  return [...list.children].map((li) => {
    const r = li.getBoundingClientRect();
    const inside = r.width > 0 && r.height > 0 && r.top >= box.top - 0.5 && r.bottom <= box.bottom + 0.5
      && r.left >= box.left - 0.5 && r.right <= box.right + 0.5;
    return [li.firstChild.textContent, inside && r.top >= 0 && r.bottom <= innerHeight && r.right <= innerWidth];
  });
}"""

LAYOUT = """() => ({
  messages: document.getElementById("messages").getBoundingClientRect().height,
  sideways: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - innerWidth,
  toggle: !document.getElementById("online-toggle").hidden,
})"""

GUESTS = """async ({n, channel}) => {
  const subscribed = [];
  for (let i = 1; i <= n; i++) {
    const resp = await fetch("/demo/token", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({user: `Guest ${String(i).padStart(2, "0")}`}),
    });
    const {token} = await resp.json();
    const client = new Centrifuge(`ws://${location.host}/connection/websocket`, {token});
    const sub = client.newSubscription(channel);
    subscribed.push(new Promise((resolve) => sub.on("subscribed", resolve)));
    sub.subscribe();
    client.connect();
  }
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("guests timed out")), 10000));
  await Promise.race([Promise.all(subscribed), timeout]);
  return n;
}"""


async def layout(chat: Chat) -> dict[str, Any]:
    result: dict[str, Any] = await chat.page.evaluate(LAYOUT)
    return result


async def online_boxes(chat: Chat) -> dict[str, bool]:
    """Online entry label -> whether it is wholly on screen (not clipped by the strip)."""
    return dict(await chat.page.evaluate(ONLINE_BOXES))


@pytest.mark.browser
async def test_phone_layout_shows_everyone_and_the_messages(browser: Browser, demo_server: Process) -> None:
    phone = await new_context(browser, viewport=PHONE, is_mobile=True, has_touch=True)
    page = await phone.new_page()
    await page.goto(demo_server.http_url + "/")
    assert (await page.evaluate(LAYOUT))["sideways"] <= 0  # the join form fits too
    await page.close()

    others = [await Chat.join(browser, demo_server, name) for name in ("Alice", "Bob", "Christopher Long-Name")]
    zoe = await join_in(phone, demo_server, "Zoë")
    await zoe.wait("() => window.__chat.members.length === 4")
    await others[2].send("x" * 300)  # one long word
    await zoe.send("hello from a phone")
    await zoe.wait_for_texts(2)

    boxes = await online_boxes(zoe)
    assert boxes == {"Alice": True, "Bob": True, "Christopher Long-Name": True, "Zoë": True}
    shape = await layout(zoe)
    assert shape["messages"] >= 0.6 * PHONE["height"], shape
    assert shape["sideways"] <= 0, shape
    assert shape["toggle"] is False  # four names fit: nothing to expand

    # Twenty people: the strip keeps two rows and offers "Show all", which shows everyone.
    guests = await browser.new_page()
    await guests.goto(demo_server.http_url + "/")
    assert await guests.evaluate(GUESTS, {"n": 16, "channel": CHANNEL}) == 16
    await zoe.wait("() => window.__chat.members.length === 20")
    await zoe.page.wait_for_selector("#online-toggle:not([hidden])")
    collapsed = await online_boxes(zoe)
    assert len(collapsed) == 20 and not all(collapsed.values())
    assert (await layout(zoe))["messages"] >= 0.6 * PHONE["height"]
    await zoe.page.click("#online-toggle")
    assert await zoe.page.inner_text("#online-toggle") == "Show less"
    expanded = await online_boxes(zoe)
    assert all(expanded.values()), expanded
    shape = await layout(zoe)
    assert shape["messages"] >= 0.3 * PHONE["height"] and shape["sideways"] <= 0, shape
    await zoe.page.click("#online-toggle")
    assert (await layout(zoe))["messages"] >= 0.6 * PHONE["height"]
    assert zoe.errors == []
