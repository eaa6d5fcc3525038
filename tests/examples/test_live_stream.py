"""The live stream room example (examples/live_stream): the runner as a subprocess, viewers in Chromium.

Two viewers and a moderator watch the feed, see each other's reactions and the viewer count;
slow mode refuses a second message; the moderator removes a message (gone on every page and
for a late joiner) and disconnects a viewer, whose page says so and stays disconnected.
Hypothesis runs against the room's rules (examples/live_stream/chat.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from playwright.async_api import BrowserContext, Page

from tests.conftest import ROOT, free_port
from tests.examples.test_iot import Procs, wait_http

EXAMPLE = ROOT / "examples" / "live_stream"
SCREENSHOT = ROOT / "docs" / "img" / "live-stream.png"
WAIT_MS = 20_000


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


chat = load("live_chat", EXAMPLE / "chat.py")


# ---------------------------------------------------------------------- the rules, with hypothesis


@given(st.binary(max_size=300))
def test_parsers_never_crash_on_bytes(data: bytes) -> None:
    for parse in (chat.parse_chat, chat.parse_reaction):
        try:
            value = parse(data)
        except ValueError as exc:
            assert str(exc)
        else:
            assert isinstance(value, str) and value


@given(st.text(max_size=400))
def test_chat_text_is_clean_and_bounded(text: str) -> None:
    try:
        cleaned = chat.parse_chat(json.dumps({"text": text}).encode())
    except ValueError:
        assert chat.clean_text(text, chat.MAX_TEXT) == ""  # refused only when nothing is left
        return
    assert 1 <= len(cleaned) <= chat.MAX_TEXT
    assert cleaned == cleaned.strip() and "\n" not in cleaned and "  " not in cleaned
    assert not any(unicodedata.category(ch)[0] == "C" for ch in cleaned)


@given(st.one_of(st.sampled_from(chat.REACTIONS), st.text(max_size=4)))
def test_reactions_are_the_five(emoji: str) -> None:
    try:
        assert chat.parse_reaction(json.dumps({"emoji": emoji}).encode()) == emoji
    except ValueError:
        assert emoji not in chat.REACTIONS


INFOS = st.dictionaries(
    st.sampled_from(["name", "role", "x"]), st.one_of(st.text(max_size=40), st.integers(), st.none())
)


@given(st.one_of(st.none(), st.binary(max_size=100), INFOS.map(lambda v: json.dumps(v).encode())))
def test_viewer_from_any_info(info: bytes | None) -> None:
    who = chat.viewer(info, "u-x")
    assert who.role in chat.ROLES
    assert 1 <= len(who.name) <= chat.MAX_NAME


STEPS = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 10)), max_size=60)


@given(STEPS, st.floats(0.1, 5), st.integers(1, 4))
def test_slow_mode_is_a_token_bucket(steps: list[tuple[str, float]], interval: float, burst: int) -> None:
    now = [0.0]
    slow = chat.SlowMode(interval, burst=burst, clock=lambda: now[0])
    allowed: dict[str, list[float]] = {}
    for user, dt in steps:
        now[0] += dt
        wait = slow.check(user)
        assert 0 <= wait <= interval
        if wait == 0:
            allowed.setdefault(user, []).append(now[0])
    for times in allowed.values():  # in any window: at most burst + its length / interval
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= burst + (times[j] - start) / interval + 1e-6


@given(STEPS, st.integers(1, 3))
def test_slow_mode_memory_is_bounded(steps: list[tuple[str, float]], max_users: int) -> None:
    now = [0.0]
    slow = chat.SlowMode(1.0, clock=lambda: now[0], max_users=max_users)
    for user, dt in steps:
        now[0] += dt
        slow.check(user)
        assert len(slow) <= max_users


def test_slow_mode_refuses_the_second_message_within_the_window() -> None:
    now = [100.0]
    slow = chat.SlowMode(5.0, clock=lambda: now[0])
    assert slow.check("u-bob") == 0.0
    now[0] += 1.0
    assert slow.check("u-bob") == pytest.approx(4.0)
    assert slow.check("u-amy") == 0.0  # per user
    now[0] += 4.0
    assert slow.check("u-bob") == 0.0
    with pytest.raises(ValueError):
        chat.SlowMode(0)


# ---------------------------------------------------------------------- the room in Chromium


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    for name in list(p.procs):
        p.stop(name, 9)


async def state(page: Page, expr: str) -> Any:
    return await page.evaluate(f"window.live.state.{expr}")


async def open_viewer(context: BrowserContext, base: str, query: str, errors: list[str]) -> Page:
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{base}/?{query}")
    await page.wait_for_function("window.live && window.live.state.connection === 'connected'", timeout=WAIT_MS)
    return page


async def send(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.click("#send")


async def message_id(page: Page, text: str) -> str:
    li = page.locator("#messages li", has_text=text).first
    await li.wait_for(timeout=WAIT_MS)
    ident = await li.get_attribute("data-id")
    assert ident
    return ident


@pytest.mark.browser
async def test_live_stream_room(procs: Procs, chromium: Callable[..., Any], tmp_path: Path) -> None:
    screenshot = SCREENSHOT if os.environ.get("TRUNKLINE_TEST_SCREENSHOTS") else tmp_path / "live-stream.png"
    port, page_port = free_port(), free_port()
    runner = procs.start(
        "runner",
        str(EXAMPLE / "run.py"),
        *("--port", str(port), "--page-port", str(page_port), "--rate", "200", "--crowd", "2"),
        *("--slow-mode", "30", "--mod-key", "test-mod-key"),
    )
    base = f"http://127.0.0.1:{page_port}"
    await wait_http(f"{base}/config.json", runner)
    browser = await chromium()
    outside: list[str] = []
    errors: list[str] = []

    async def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    contexts = []
    for _ in range(4):
        ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
        await ctx.route("**/*", only_local)
        contexts.append(ctx)
    try:
        alice = await open_viewer(contexts[0], base, "name=Alice", errors)
        bob = await open_viewer(contexts[1], base, "name=Bob", errors)

        # the feed reaches both pages at its rate, in order, with a measured latency
        for page in (alice, bob):
            await page.wait_for_function("window.live.state.events > 300", timeout=WAIT_MS)
            assert await state(page, "seqGaps") == 0
            lat = await page.evaluate("window.live.latency()")
            assert lat["n"] > 300 and 0 <= lat["p50"] < 1000, lat
            assert await page.locator("#board li").count() == 12
        assert int(await alice.inner_text("#rate")) > 100

        # the viewer count (presence stats of chat:main) follows who is watching
        await alice.wait_for_function("window.live.state.viewers === 2", timeout=WAIT_MS)
        mod = await open_viewer(contexts[2], base, "name=Marshal&mod=test-mod-key", errors)
        assert await mod.is_visible("#mod-badge")
        for page in (alice, bob, mod):
            await page.wait_for_function("window.live.state.viewers === 3", timeout=WAIT_MS)
            assert (await page.inner_text("#viewer-count")) == "3"

        # reactions: each viewer sees the other's
        await alice.click("#reaction-bar button[data-emoji='🔥']")
        await bob.click("#reaction-bar button[data-emoji='👏']")
        for page in (alice, bob):
            seen = "window.live.state.reactions.map(r => `${r.user}/${r.emoji}`)"
            await page.wait_for_function(f"['u-alice/🔥', 'u-bob/👏'].every(k => {seen}.includes(k))", timeout=WAIT_MS)
        assert "1" in await alice.inner_text("#reaction-bar button[data-emoji='👏']")

        # slow mode: Bob's second message within the window is refused by the server (111)
        await send(bob, "first from bob")
        bob_msg = await message_id(alice, "first from bob")
        await bob.wait_for_function("document.querySelector('#text').value === ''", timeout=WAIT_MS)
        await send(bob, "second from bob")
        await bob.wait_for_function("document.querySelector('#chat-error').dataset.code === '111'", timeout=WAIT_MS)
        assert "slow mode: wait" in await bob.inner_text("#chat-error")
        assert await bob.input_value("#text") == "second from bob"  # kept, to send later
        await send(mod, "moderators are not slowed")  # after Bob's refused one, on the same channel
        await message_id(alice, "moderators are not slowed")
        await send(mod, "not even twice")
        await message_id(bob, "not even twice")
        for page in (alice, bob, mod):
            assert await page.locator("#messages li", has_text="second from bob").count() == 0

        # the moderator removes Bob's message: gone on every page, and for a late joiner
        line = mod.locator(f"#messages li[data-id='{bob_msg}']")
        await line.locator("button.remove").click()
        for page in (alice, bob, mod):
            await page.wait_for_function(
                f"!document.querySelector(\"#messages li[data-id='{bob_msg}']\")", timeout=WAIT_MS
            )
            assert bob_msg in await page.evaluate("[...window.live.state.removed]")
        carol = await open_viewer(contexts[3], base, "name=Carol", errors)
        await message_id(carol, "not even twice")  # history reached her
        assert await carol.locator(f"#messages li[data-id='{bob_msg}']").count() == 0
        assert await carol.locator("#messages li", has_text="first from bob").count() == 0
        await carol.close()

        bob_shot = bob
        await bob_shot.screenshot(path=str(screenshot))

        # the moderator disconnects Alice: her page says so and does not reconnect
        await send(alice, "alice was here")
        alice_msg = await message_id(mod, "alice was here")
        line = mod.locator(f"#messages li[data-id='{alice_msg}']")
        await line.locator("button.kick").click()
        await alice.wait_for_function("window.live.state.connection === 'disconnected'", timeout=WAIT_MS)
        assert await state(alice, "disconnect") == {"code": 3503, "reason": "disconnected by a moderator"}
        assert "disconnected by a moderator" in await alice.inner_text("#banner")
        assert await alice.is_disabled("#text")
        await bob.wait_for_function("window.live.state.viewers === 2", timeout=WAIT_MS)  # Bob and the moderator
        await alice.wait_for_timeout(2500)  # longer than the SDK's first reconnect delay
        assert await alice.evaluate("window.live.client.state") == "disconnected"
        assert await state(alice, "connection") == "disconnected"
        await alice.reload()  # a new page gets no token
        await alice.wait_for_function("window.live.state.connection === 'disconnected'", timeout=WAIT_MS)
        assert "Cannot join" in await alice.inner_text("#banner")

        # a phone-sized screen: everything fits without sideways scrolling
        await bob.set_viewport_size({"width": 390, "height": 844})
        await bob.wait_for_timeout(200)
        assert await bob.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert await bob.is_visible("#composer")
    except Exception as exc:
        raise AssertionError(f"{exc}\n{procs.logs()}") from exc
    assert not errors, errors
    assert not outside, outside
    assert screenshot.stat().st_size > 20_000
    assert procs.stop("runner") == 0, procs.logs()
