"""Browser fixtures: Debian's Chromium driven through Playwright's async API.

``browser`` is one Chromium from the shared ``chromium`` launcher in ``tests/conftest.py``
(``/usr/bin/chromium``; a missing browser fails the test, it is never skipped).
"""

from __future__ import annotations

import tomllib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.conftest import ROOT, Process

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
async def browser(chromium: Callable[..., Awaitable[Browser]]) -> Browser:
    return await chromium()
