"""The examples gallery at /examples, reached from the chat demo's "Examples" link at /.

Every card names an example that exists (its folder, the file it points to, its `make`
target), every example folder with a runner has a card, and the page fits a phone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import ROOT

WAIT_MS = 10_000


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


async def test_examples_route_serves_the_gallery(start_server: Callable[..., Any]) -> None:
    running = await start_server()
    async with aiohttp.ClientSession() as http:
        async with http.get(running.http_url + "/examples") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert "<h1>Examples</h1>" in await resp.text()
        async with http.get(running.http_url + "/static/examples.js") as resp:
            assert resp.status == 200


@pytest.mark.browser
async def test_gallery_lists_every_example(start_server: Callable[..., Any], chromium: Callable[..., Any]) -> None:
    running = await start_server()
    browser = await chromium()
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(running.http_url + "/")
    assert await page.locator("#join-form").is_visible()  # `make run`'s first screen is still the chat
    await page.click("a.examples-link")
    await page.wait_for_url("**/examples", timeout=WAIT_MS)

    cards = page.locator("li.example")
    names = [await cards.nth(i).get_attribute("data-example") for i in range(await cards.count())]
    assert names[0] == "chat"
    runners = sorted(p.parent.name for p in (ROOT / "examples").glob("*/run.py"))
    missing, stale = set(runners) - set(names), set(names) - set(runners) - {"chat"}
    assert not missing, f"examples without a card: add one to src/trunkline/web/static/examples.html: {missing}"
    assert not stale, f"cards for examples that do not exist: {stale}"
    targets = make_targets()
    for name in names:
        card = page.locator(f"li.example[data-example='{name}']")
        command = await card.locator(".run code").inner_text()
        assert command.startswith("make ") and command.split()[1] in targets, command
        assert await card.locator(".copy").get_attribute("data-copy") == command
        path = await card.locator(".path").inner_text()
        assert (ROOT / path).exists(), path
        if name != "chat":
            assert path.startswith(f"examples/{name}/")
            link = await card.locator(".links a").get_attribute("href")
            assert link is not None and link.startswith("http://127.0.0.1:")
            port = link.rsplit(":", 1)[1].strip("/")
            assert f"default={port}" in (ROOT / "examples" / name / "run.py").read_text(), (name, port)
    assert await page.locator("li.example[data-example='chat'] .links a").get_attribute("href") == "/"

    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert errors == []
