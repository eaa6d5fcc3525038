"""Browser fixtures: Debian's Chromium driven through Playwright's async API.

Browsers cannot be downloaded here, so Playwright launches ``/usr/bin/chromium``
(``make system-deps`` installs it); tests using ``browser`` skip when it is missing.
"""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from tests.conftest import ROOT, Process

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DEMO_CONFIG_PATH = ROOT / "examples" / "demo.toml"


def demo_config() -> dict[str, Any]:
    """``examples/demo.toml`` (what ``make run`` serves) with quiet logs; the port comes from the fixture."""
    data = tomllib.loads(DEMO_CONFIG_PATH.read_text())
    data.pop("http_server", None)
    data["log"] = {"level": "warning"}
    return data


@pytest.fixture
def demo_server(server_process: Callable[..., Process]) -> Process:
    """A ``trunkline serve`` subprocess running the demo configuration."""
    return server_process(demo_config())


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"needs {CHROMIUM} (make system-deps)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
