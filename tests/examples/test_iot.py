"""The IoT dashboard example (examples/iot): the runner and the devices as subprocesses, the page in Chromium.

Readings from paho-mqtt devices (one over MQTT/TCP, one over MQTT/WebSocket) reach the chart,
the map channel fleet:devices:fleet (map presence) lists the devices, and a command reaches a
device whose acknowledgement the page shows: first with centrifuge-js, then with the page's
mqtt.js toggle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from playwright.async_api import Page

from tests.conftest import ROOT, free_port

EXAMPLE = ROOT / "examples" / "iot"
SCREENSHOT = ROOT / "docs" / "img" / "iot-dashboard.png"
DEVICES = ["cellar", "greenhouse"]  # devices.py --devices 2: greenhouse over TCP, cellar over WebSocket
WAIT_MS = 20_000
EVERY_DEVICE_READ = "[...window.iot.state.devices.values()].every((d) => d.last !== null)"


class Procs:
    """Subprocesses of one test, each in its own process group, stopped by PID at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        return proc.returncode

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{(self.tmp / f'{n}.log').read_text()[-3000:]}" for n in self.procs)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    for name in list(p.procs):
        with contextlib.suppress(Exception):
            p.stop(name, signal.SIGKILL)


async def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"exited with {proc.returncode}"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


async def online(page: Page) -> list[str]:
    names: list[str] = await page.evaluate("window.iot.online()")
    return names


async def send_and_check_ack(page: Page, device: str, button: str, expect: str) -> None:
    """Click a device's command button; the page logs the device's acknowledgement."""
    acks = await page.evaluate("window.iot.state.acks.length")
    await page.click(f"li.device[data-device='{device}'] {button}")
    await page.wait_for_function(f"window.iot.state.acks.length > {acks}", timeout=WAIT_MS)
    ack = await page.evaluate("window.iot.state.acks[window.iot.state.acks.length - 1]")
    assert ack["device"] == device and ack["ok"] is True, ack
    assert ack["id"].startswith("dash-tester-")
    entry = page.locator("#log li.ack", has_text=f"{device} acknowledged").first
    await entry.wait_for(timeout=WAIT_MS)
    assert expect in await entry.inner_text()


@pytest.mark.browser
async def test_iot_dashboard(procs: Procs, chromium: Callable[..., Any], tmp_path: Path) -> None:
    # TRUNKLINE_TEST_SCREENSHOTS=1 refreshes docs/img/iot-dashboard.png; otherwise the shot stays in tmp_path
    screenshot = SCREENSHOT if os.environ.get("TRUNKLINE_TEST_SCREENSHOTS") else tmp_path / "iot-dashboard.png"
    port, mqtt_port, page_port = free_port(), free_port(), free_port()
    runner = procs.start(
        "runner",
        str(EXAMPLE / "run.py"),
        *("--port", str(port), "--mqtt-port", str(mqtt_port), "--page-port", str(page_port)),
    )
    base = f"http://127.0.0.1:{page_port}"
    await wait_http(f"http://127.0.0.1:{port}/health", runner)
    await wait_http(f"{base}/config.json", runner)
    procs.start(
        "devices",
        str(EXAMPLE / "devices.py"),
        *("--devices", "2", "--interval", "0.5", "--mqtt-port", str(mqtt_port), "--ws-port", str(port)),
    )
    browser = await chromium()
    context = await browser.new_context(viewport={"width": 1280, "height": 820})
    outside: list[str] = []
    errors: list[str] = []

    async def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_local)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await page.goto(f"{base}/?user=tester")

        # centrifuge-js: the map fleet:devices:fleet (map presence of devices:fleet) lists both devices,
        # readings reach the chart
        await page.wait_for_function(f"window.iot.online().length === {len(DEVICES)}", timeout=WAIT_MS)
        assert await online(page) == DEVICES
        assert await page.inner_text("#device-source") == "map fleet:devices:fleet"
        assert "connected as dash-tester" in await page.inner_text("#status")
        await page.wait_for_function("window.iot.points() >= 8", timeout=WAIT_MS)
        await page.wait_for_function(EVERY_DEVICE_READ, timeout=WAIT_MS)
        for name in DEVICES:
            assert "°C" in await page.inner_text(f"li.device[data-device='{name}'] .reading")
        # uPlot drew one series per device (+ x) with data
        assert await page.locator("#chart .u-legend .u-series").count() == len(DEVICES) + 1
        # the charts redraw at most every 100 ms
        await page.wait_for_function("window.iot.state.charts[0].data[0].length >= 4", timeout=WAIT_MS)

        # a command reaches the device, which acknowledges it (and its next reading shows it)
        led = await page.evaluate("window.iot.state.devices.get('greenhouse').last.led")
        await send_and_check_ack(page, "greenhouse", ".toggle-led", "LED on" if not led else "LED off")
        await page.wait_for_function(
            f"window.iot.state.devices.get('greenhouse').last.led === {'false' if led else 'true'}", timeout=WAIT_MS
        )
        await page.select_option("li.device[data-device='cellar'] select.interval", "2")
        await send_and_check_ack(page, "cellar", ".set-interval", "interval 2 s")
        await page.wait_for_function("window.iot.state.devices.get('cellar').last.interval === 2", timeout=WAIT_MS)
        await page.wait_for_function("window.iot.points() >= 16", timeout=WAIT_MS)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(screenshot), full_page=True)

        # mqtt.js: the same page as an MQTT 5 client; the device list comes from retained statuses
        await page.check("#proto-mqtt")
        await page.wait_for_function(
            "document.querySelector('#status').textContent.startsWith('mqtt.js: connected')", timeout=WAIT_MS
        )
        await page.wait_for_function(f"window.iot.online().length === {len(DEVICES)}", timeout=WAIT_MS)
        assert await online(page) == DEVICES
        assert await page.inner_text("#device-source") == "retained devices/+/status"
        await page.wait_for_function("window.iot.points() >= 4", timeout=WAIT_MS)
        await page.wait_for_function(EVERY_DEVICE_READ, timeout=WAIT_MS)
        led = await page.evaluate("window.iot.state.devices.get('cellar').last.led")
        await send_and_check_ack(page, "cellar", ".toggle-led", "LED on" if not led else "LED off")

        # devices leave: the retained statuses say offline
        procs.stop("devices")
        await page.wait_for_function("window.iot.online().length === 0", timeout=WAIT_MS)
        assert await page.locator("li.device.offline").count() == len(DEVICES)

    except Exception as exc:
        raise AssertionError(f"{exc}\n{procs.logs()}") from exc
    assert not errors, errors
    assert not outside, outside
    assert screenshot.stat().st_size > 20_000
    assert procs.stop("runner") == 0, procs.logs()
