"""The collaborative editing example (examples/collab): the runner as a subprocess, tabs in Chromium.

Two tabs type at the same time and converge; each shows the other's cursor (the map channel
``cursor:<room>``, key = the tab's client id) and who is here (its map presence channel); a late
joiner gets every cursor in its first sync, and a closed tab's cursor goes from the others at
once (remove_client_on_unsubscribe, well before its key's 30 s TTL); a tab that drops its
connection catches up (recovery) and sends what it typed offline; a late joiner gets the whole
document through the ``sync`` RPC; with a snapshot directory the document survives a restart,
and an open tab shows that it is reconnecting meanwhile. Hypothesis runs against the server's
parsers and its document store (examples/collab/documents.py).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from playwright.async_api import Browser, Page
from pycrdt import Doc, Text

from tests.conftest import ROOT, free_port
from tests.examples.test_iot import Procs, wait_http

EXAMPLE = ROOT / "examples" / "collab"
SCREENSHOT = ROOT / "docs" / "img" / "collab.png"
WAIT_MS = 20_000
#: edits before the late joiner arrives; TRUNKLINE_TEST_COLLAB_EDITS=10000 for the README's figure
EDITS = int(os.environ.get("TRUNKLINE_TEST_COLLAB_EDITS", "600"))


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


documents = load("collab_documents", EXAMPLE / "documents.py")


# ---------------------------------------------------------------------- parsers and store, with hypothesis


@given(st.binary(max_size=300))
def test_parsers_never_crash_on_bytes(data: bytes) -> None:
    for parse in (documents.parse_update, documents.parse_sync):
        try:
            parse(data)
        except ValueError as exc:
            assert str(exc)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["u", "a", "h", "room", "sv"]), inner),
    max_leaves=8,
)


@given(JSONISH)
def test_parsers_on_any_json(value: Any) -> None:
    data = json.dumps(value).encode()
    for parse in (documents.parse_update, documents.parse_sync):
        try:
            parse(data)
        except ValueError as exc:
            assert str(exc)


@given(st.text(max_size=40))
def test_room_names(name: str) -> None:
    try:
        room = documents.room_of(f"doc:{name}", "doc")
    except ValueError:
        assert not documents.ROOM.fullmatch(name)
    else:
        assert room == name and len(room) <= 32
    with pytest.raises(ValueError):
        documents.room_of(f"cursor:{name}", "doc")


def publication(update: bytes) -> bytes:
    return json.dumps({"u": base64.b64encode(update).decode()}).encode()


@given(st.binary(min_size=1, max_size=60))
def test_store_refuses_bytes_that_are_no_update(data: bytes) -> None:
    """What the hook does with any bytes: parse, then merge; quickly refused or merged, never a crash."""
    rooms = documents.Rooms()
    try:
        rooms.apply("r", documents.parse_update(publication(data)))
    except ValueError:
        assert "r" not in rooms.dirty
    update, _ = rooms.sync("r", b"")
    fresh = Doc()
    fresh.apply_update(update)  # whatever was accepted is a valid document


EDITS_ST = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 50), st.text("abc xyz", min_size=1, max_size=5)))


@given(EDITS_ST.filter(lambda e: len(e) <= 25), st.randoms(use_true_random=False))
def test_store_merges_concurrent_edits_like_yjs(edits: list[tuple[int, int, str]], rnd: Any) -> None:
    """Three editors edit concurrently; the store gets their updates interleaved in any order
    (each editor's own in order, as one connection delivers them) and ends with the merged text."""
    editors = [Doc() for _ in range(3)]
    texts = [d.get("text", type=Text) for d in editors]
    rooms = documents.Rooms()
    queues: list[list[bytes]] = [[], [], []]
    for who, at, chunk in edits:
        before = editors[who].get_state()
        texts[who].insert(min(at, len(texts[who])), chunk)
        queues[who].append(editors[who].get_update(before))
    updates = [u for q in queues for u in q]
    while any(queues):
        rooms.apply("r", rnd.choice([q for q in queues if q]).pop(0))
    merged = Doc()
    for update in updates:
        merged.apply_update(update)
    state, _ = rooms.sync("r", b"")
    late = Doc()
    late.apply_update(state)
    assert str(late.get("text", type=Text)) == str(merged.get("text", type=Text))
    # a tab that has everything gets an empty diff
    diff, _ = rooms.sync("r", late.get_state())
    check = Doc()
    check.apply_update(state)
    before = str(check.get("text", type=Text))
    check.apply_update(diff)
    assert str(check.get("text", type=Text)) == before


def test_a_four_byte_update_claiming_2_28_groups_is_refused_before_pycrdt() -> None:
    bomb = b"\xff\xff\xff\x7f"  # pycrdt would spend about a second reserving room for them
    with pytest.raises(ValueError, match="more client groups than bytes"):
        documents.parse_update(publication(bomb))
    with pytest.raises(ValueError, match="truncated"):
        documents.parse_update(publication(b"\x01\x80"[1:]))
    assert documents.varuint(b"\x00") == (0, 1) and documents.varuint(b"\x96\x01") == (150, 2)


def test_store_snapshots_survive_a_new_store(tmp_path: Path) -> None:
    editor = Doc()
    text = editor.get("text", type=Text)
    text += "kept across restarts"
    rooms = documents.Rooms(tmp_path)
    rooms.apply("notes", editor.get_update())
    assert rooms.save() == 1 and not rooms.dirty
    assert (tmp_path / "notes.ydoc").exists() and not list(tmp_path.glob("*.tmp"))
    again = documents.Rooms(tmp_path)
    state, _ = again.sync("notes", b"")
    late = Doc()
    late.apply_update(state)
    assert str(late.get("text", type=Text)) == "kept across restarts"
    full = documents.Rooms(max_rooms=1)
    full.doc("a")
    with pytest.raises(OverflowError):
        full.doc("b")
    with pytest.raises(ValueError):
        documents.parse_update(json.dumps({"u": base64.b64encode(b"x" * 40_000).decode()}).encode())


# ---------------------------------------------------------------------- tabs in Chromium


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    for name in list(p.procs):
        p.stop(name, 9)


async def text_of(page: Page) -> str:
    value: str = await page.evaluate("window.collab.text()")
    return value


async def open_tab(browser: Browser, base: str, name: str, errors: list[str], room: str = "spec") -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})

    async def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            errors.append(f"outside request: {route.request.url}")
            await route.abort()

    await context.route("**/*", only_local)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{base}/?room={room}&name={name}")
    await page.wait_for_function("window.collab && window.collab.state.synced", timeout=WAIT_MS)
    return page


async def converged(pages: list[Page], *parts: str) -> str:
    """Wait until every page has the same text, containing every part; return it."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        texts = [await text_of(p) for p in pages]
        if len(set(texts)) == 1 and all(part in texts[0] for part in parts):
            for p in pages:  # the textarea shows the document too
                assert await p.input_value("#text") == texts[0]
            return texts[0]
        if time.monotonic() > deadline:
            errors = [await p.evaluate("window.collab.state.errors.slice(-5)") for p in pages]
            lengths = [len(t) for t in texts]
            raise AssertionError(f"not converged: lengths {lengths}, page errors {errors}, texts {texts!r:.2000}")
        await pages[0].wait_for_timeout(100)


@pytest.mark.browser
async def test_collaborative_editing(procs: Procs, chromium: Callable[..., Any], tmp_path: Path) -> None:
    screenshot = SCREENSHOT if os.environ.get("TRUNKLINE_TEST_SCREENSHOTS") else tmp_path / "collab.png"
    port, page_port = free_port(), free_port()
    snapshots = tmp_path / "snapshots"
    argv = (str(EXAMPLE / "run.py"), "--port", str(port), "--page-port", str(page_port))
    argv += ("--snapshot-dir", str(snapshots))
    runner = procs.start("runner", *argv)
    base = f"http://127.0.0.1:{page_port}"
    browser = await chromium()
    errors: list[str] = []
    try:
        await wait_http(f"{base}/config.json", runner)
        ada = await open_tab(browser, base, "Ada", errors)
        bob = await open_tab(browser, base, "Bob", errors)

        # who is here: each tab lists both
        for page in (ada, bob):
            await page.wait_for_function("document.querySelectorAll('#people li').length === 2", timeout=WAIT_MS)
            assert await page.locator("#people-list li[data-user='u-ada']").count() == 1
            assert await page.locator("#people-list li[data-user='u-bob']").count() == 1

        # both type at the same time, Ada at the start and Bob at the end: one text on both
        await ada.click("#text")
        await ada.type("#text", "Meeting notes. ", delay=15)
        await converged([ada, bob], "Meeting notes. ")
        await ada.evaluate("document.querySelector('#text').setSelectionRange(0, 0)")
        await bob.click("#text")
        await bob.evaluate(
            "const t = document.querySelector('#text'); t.setSelectionRange(t.value.length, t.value.length)"
        )
        await asyncio.gather(
            ada.keyboard.type("Ada types here. ", delay=25),
            bob.keyboard.type("Bob adds this.", delay=25),
        )
        text = await converged([ada, bob], "Ada types here. ", "Bob adds this.")
        assert text == "Ada types here. Meeting notes. Bob adds this."

        # cursors: each tab draws the other's caret at its place in the text
        await ada.wait_for_selector(".caret[data-name='Bob'] .label", timeout=WAIT_MS)
        await bob.wait_for_selector(".caret[data-name='Ada'] .label", timeout=WAIT_MS)
        assert await ada.locator(".caret").count() == 1  # not its own
        await bob.keyboard.press("Shift+Home")  # Bob selects his line: Ada sees the highlight
        await ada.wait_for_selector("#mirror mark", timeout=WAIT_MS)
        await ada.screenshot(path=str(screenshot))
        await bob.keyboard.press("End")
        # the cursors are map entries keyed by the writer's client id (chosen by the server)
        ada_id = await ada.evaluate("window.collab.state.client")
        bob_id = await bob.evaluate("window.collab.state.client")
        assert await ada.evaluate(f"window.collab.state.cursors.has({json.dumps(bob_id)})")
        assert await bob.evaluate(f"window.collab.state.cursors.has({json.dumps(ada_id)})")

        # Bob drops his connection; Ada keeps typing; Bob types offline; both end up with everything
        await bob.evaluate("window.collab.client.disconnect()")
        await bob.wait_for_function("window.collab.state.connection === 'disconnected'", timeout=WAIT_MS)
        await ada.keyboard.type("Online. ", delay=10)
        await bob.keyboard.type(" Offline.", delay=10)
        assert "Offline edits" in await bob.inner_text("#sync-state")
        await bob.evaluate("window.collab.client.connect()")
        text = await converged([ada, bob], "Online. ", " Offline.")
        recoveries = await bob.evaluate("window.collab.state.recoveries")
        assert recoveries[-1] == {"wasRecovering": True, "recovered": True}, recoveries
        assert (await bob.evaluate("window.collab.state.syncs"))[-1]["pushed"] > 0  # the offline edit

        # many edits, then a late joiner gets the whole document through `sync`
        await ada.evaluate(f"window.collab.typeBurst({EDITS}, 300)")
        await converged([ada, bob])
        full = await text_of(ada)
        assert len(full) == len(text) + EDITS
        started = time.perf_counter()
        carol = await open_tab(browser, base, "Carol", errors)
        await converged([ada, bob, carol])
        joined = time.perf_counter() - started
        sync = (await carol.evaluate("window.collab.state.syncs"))[0]
        loaded = await carol.evaluate("window.collab.state.loadedAt")
        print(f"late joiner after {EDITS} edits: {joined * 1000:.0f} ms from a new tab to the full document")
        print(f"  (navigation start to document applied {loaded:.0f} ms; sync RPC {sync})")
        assert sync["bytes"] > EDITS  # the whole document came in the sync answer

        # the late joiner got Ada's and Bob's cursors in the first sync of the cursor map, and draws
        # them; Bob's key from before his reconnect went with that connection (a new client id now)
        old_bob_id, bob_id = bob_id, await bob.evaluate("window.collab.state.client")
        assert bob_id != old_bob_id
        first_sync = (await carol.evaluate("window.collab.state.cursorSyncs"))[0]
        assert set(first_sync) == {ada_id, bob_id}, first_sync
        await carol.wait_for_function("document.querySelectorAll('.caret').length === 2", timeout=WAIT_MS)
        for page in (ada, bob):
            await page.wait_for_function("document.querySelectorAll('#people-list li').length === 3", timeout=WAIT_MS)
        carol_id = await carol.evaluate("window.collab.state.client")
        await ada.wait_for_function(f"window.collab.state.cursors.has({json.dumps(carol_id)})", timeout=WAIT_MS)

        # Carol closes her tab: her cursor and her row go from the others at once (the map's key_ttl is 30 s)
        closed = time.perf_counter()
        await carol.context.close()
        gone = f"!window.collab.state.cursors.has({json.dumps(carol_id)})"
        for page in (ada, bob):
            await page.wait_for_function(gone, timeout=5_000)
            await page.wait_for_function("document.querySelectorAll('#people-list li').length === 2", timeout=5_000)
        removal = time.perf_counter() - closed
        print(f"a closed tab's cursor left the other tabs in {removal * 1000:.0f} ms")
        assert removal < 10  # the unsubscribe removal, not the TTL
        assert await ada.locator(".caret").count() == 1 and await bob.locator(".caret").count() == 1

        # every tab closed, the server restarted: the snapshot brings the document back
        await ada.context.close()
        await bob.context.close()
        assert procs.stop("runner") == 0, procs.logs()
        assert (snapshots / "spec.ydoc").exists()
        runner = procs.start("runner", *argv)
        await wait_http(f"{base}/config.json", runner)
        dave = await open_tab(browser, base, "Dave", errors)
        assert await text_of(dave) == full

        # an open tab during a restart: it says it is reconnecting, then carries on
        assert procs.stop("runner") == 0, procs.logs()
        await dave.wait_for_function("window.collab.state.connection === 'connecting'", timeout=WAIT_MS)
        assert "Reconnecting" in await dave.inner_text("#status")
        runner = procs.start("runner", *argv)
        await wait_http(f"{base}/config.json", runner)
        await dave.wait_for_function("window.collab.state.connection === 'connected'", timeout=WAIT_MS)
        await dave.click("#text")
        await dave.keyboard.press("Control+End")
        await dave.keyboard.type(" After the restart.", delay=10)
        eve = await open_tab(browser, base, "Eve", errors)
        await converged([dave, eve], " After the restart.")

        # a phone-sized screen: no sideways scrolling, the editor is there
        await eve.set_viewport_size({"width": 390, "height": 844})
        await eve.wait_for_timeout(200)
        assert await eve.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert await eve.is_visible("#text")
    except Exception as exc:
        raise AssertionError(f"{exc}\n{procs.logs()}") from exc
    assert not errors, errors
    assert screenshot.stat().st_size > 20_000
    assert procs.stop("runner") == 0, procs.logs()
