"""``trunkline compare``: a real ``--quick`` run (subprocess, its own server), then the report.

The figures are checked for sanity with generous margins, not timing thresholds: every
mode delivered every publication exactly once, short polling's median latency is about
half its interval, WebSocket and SSE send no request per message, and the bytes per
message come in the expected order. The report opens in headless Chromium with no
network and draws its charts.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import ROOT
from trunkline.cli import main
from trunkline.tools.compare.clients import MODES
from trunkline.tools.compare.main import from_cli, parse_sweep
from trunkline.tools.compare.stats import cdf, latency_summary, quantile
from trunkline.tools.compare.wire import CountingConnector, WireCount

SWEEP = (5.0, 20.0)
RUN_TIMEOUT = 150
MODE_KEYS = {
    "published",
    "expected",
    "delivered",
    "lost",
    "duplicated",
    "latency_ms",
    "latency_cdf_ms",
    "requests",
    "requests_per_message",
    "bytes_sent",
    "bytes_received",
    "bytes_per_message",
    "server_cpu_us_per_message",
    "client_cpu_us_per_message",
    "setup",
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("compare")
    proc = subprocess.run(
        [sys.executable, "-m", "trunkline", "compare", "--quick", "--sweep", "rate=5,20", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), out, proc.stdout


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_the_report_has_every_mode_and_the_sweep(quick: tuple[dict[str, Any], Path, str]) -> None:
    results, out, stdout = quick
    assert results["version"] == 1
    assert {"trunkline", "python", "cpus", "pinned", "server"} <= set(results["setup"])
    assert results["run"]["params"]["clients"] == 5 and results["run"]["params"]["interval"] == 0.5
    assert list(results["run"]["modes"]) == list(MODES)
    for result in results["run"]["modes"].values():
        assert "error" not in result, result
        assert result.keys() >= MODE_KEYS
        assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max", "mean"}
        assert len(result["latency_cdf_ms"]) == 51 and result["latency_cdf_ms"] == sorted(result["latency_cdf_ms"])
    points = results["sweeps"]["rate"]
    assert [p["value"] for p in points] == list(SWEEP)
    assert all(list(p["modes"]) == list(MODES) for p in points)
    for mode in MODES:
        assert mode in stdout
    assert "sweep rate" in stdout and (out / "report.html").is_file()


def _every_run(results: dict[str, Any]) -> list[dict[str, Any]]:
    runs = list(results["run"]["modes"].values())
    for point in results["sweeps"]["rate"]:
        runs += list(point["modes"].values())
    return runs


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_every_mode_delivered_every_publication_once(quick: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = quick
    for r in _every_run(results):
        planned = max(1, round(r["params"]["rate"] * r["params"]["seconds"]))
        assert r["published"] == planned and r["publish_errors"] == 0, r
        assert r["expected"] == planned * r["params"]["clients"]
        assert (r["delivered"], r["lost"], r["duplicated"], r["unexpected"]) == (r["expected"], 0, 0, 0), r
        assert r["missed_data_answers"] == 0 and r["client_errors"] == {}, r


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_the_figures_are_sane(quick: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = quick
    modes = results["run"]["modes"]
    short, long_, sse, ws = (modes[m] for m in MODES)
    interval_ms = results["run"]["params"]["interval"] * 1000
    # short polling: about half its interval (the publication waits for the client's next tick)
    assert 0.2 * interval_ms <= short["latency_ms"]["p50"] <= 0.9 * interval_ms, short["latency_ms"]
    # pushed modes are faster than the short poll's median
    for r in (long_, sse, ws):
        assert r["latency_ms"]["p50"] < short["latency_ms"]["p50"], r["mode"]
    # WebSocket and SSE: one request per client at setup, none per message
    for r in (sse, ws):
        assert r["requests"] == 0 and r["requests_per_message"] == 0, r["mode"]
        assert r["setup"]["requests_per_client"] == 1 and r["setup"]["connections"] == 5
    # short polling: about clients * seconds / interval requests; long polling: at most one per message
    clients, seconds = 5, results["run"]["params"]["seconds"]
    assert 0.5 * clients * seconds / 0.5 <= short["requests"] <= 2.5 * clients * seconds / 0.5
    assert 0 < long_["requests_per_message"] <= 1 + clients / long_["delivered"] + 0.01
    # bytes per message: the streams carry the least, a request per answer the most
    assert max(ws["bytes_per_message"], sse["bytes_per_message"]) < short["bytes_per_message"]
    assert short["bytes_per_message"] < long_["bytes_per_message"]
    assert long_["bytes_per_message"] > 1.5 * ws["bytes_per_message"]
    # every message is at least its data: ~100 bytes
    assert all(r["bytes_down_per_message"] > 100 for r in (short, long_, sse, ws))
    for r in (short, long_, sse, ws):
        assert r["server_cpu_us_per_message"] is not None and r["server_cpu_us_per_message"] >= 0
        assert r["client_cpu_us_per_message"] is not None and r["client_cpu_us_per_message"] > 0


@pytest.mark.timeout(RUN_TIMEOUT + 60)
async def test_the_report_opens_offline_in_chromium(quick: tuple[dict[str, Any], Path, str], chromium: Any) -> None:
    _, out, _ = quick
    report = Path(os.environ.get("TRUNKLINE_TEST_COMPARE_REPORT", out / "report.html"))
    text = await asyncio.to_thread(report.read_text)
    assert "<script" not in text and "src=" not in text and "href=" not in text
    browser = await chromium()
    page = await browser.new_page(viewport={"width": 1220, "height": 1250})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.goto(report.as_uri())
    assert requests == [report.as_uri()]  # nothing but the file itself
    charts = page.locator("svg")
    assert await charts.count() >= 6 + 5  # six charts of the run, five per sweep
    box = await charts.first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 200
    assert await page.locator("table tr").count() >= 5
    for mode in MODES:
        assert await page.get_by_text(mode, exact=True).count() > 0
    shot = os.environ.get("TRUNKLINE_TEST_SCREENSHOT")
    if shot:
        await page.screenshot(path=shot, full_page=False)


# ------------------------------------------------------------------------------ pieces


def test_cli_refuses_bad_options_with_usage_errors() -> None:
    runner = CliRunner()
    for args, words in [
        (["--modes", "carrier-pigeon"], "--modes"),
        (["--sweep", "rate"], "rate=V1"),
        (["--sweep", "speed=1,2"], "expected"),
        (["--sweep", "clients=1.5"], "whole numbers"),
        (["--url", "http://127.0.0.1:1"], "--api-key"),
        (["--clients", "0"], "0"),
    ]:
        result = runner.invoke(main, ["compare", *args])
        assert result.exit_code == 2 and words in result.output, (args, result.output)


def test_from_cli_quick_defaults_and_explicit_options() -> None:
    options = from_cli(quick=True, clients=7)
    assert options.params.clients == 7 and options.params.interval == 0.5 and options.sweep_seconds == 1.0
    options = from_cli(modes="websocket,sse,websocket", sweep=("clients=10,100",))
    assert options.modes == ("websocket", "sse") and options.sweeps == {"clients": (10.0, 100.0)}
    assert options.params.clients == 100 and options.params.rate == 10


@given(st.text(max_size=40))
def test_parse_sweep_accepts_or_explains(text: str) -> None:
    try:
        name, points = parse_sweep(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert name in {"rate", "clients"} and 1 <= len(points) <= 12 and all(p > 0 for p in points)


def test_stats() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2 and quantile([1, 2, 3, 4], 1.0) == 4 and quantile([5], 0.0) == 5
    summary = latency_summary([0.001, 0.002, 0.003, 0.1])
    assert summary["p50"] == 2.0 and summary["max"] == 100.0
    assert latency_summary([])["p50"] is None and cdf([]) == []
    assert cdf([0.01] * 10) == [10.0] * 51


async def test_the_wire_count_is_every_byte_on_the_socket() -> None:
    """A raw TCP server records what it reads and writes; the counting connector must agree."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
    seen = bytearray()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while b"\r\n\r\n" not in seen:
            chunk = await reader.read(4096)
            if not chunk:
                return
            seen.extend(chunk)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    count = WireCount()
    async with (
        aiohttp.ClientSession(connector=CountingConnector(count)) as session,
        session.get(f"http://127.0.0.1:{port}/x?y=1", headers={"X-Test": "1"}) as resp,
    ):
        assert await resp.read() == b"hello"
    server.close()
    await server.wait_closed()
    assert count.sent == len(seen) and count.received == len(answer) and count.connections == 1
