"""Load the live room: a busy feed, 200 viewers (2 real Chromium pages + lightweight WebSocket viewers).

    .venv/bin/python examples/live_stream/load.py                      # 500 publications/s, 200 viewers, 30 s
    .venv/bin/python examples/live_stream/load.py --rate 200 --viewers 50 --seconds 10

Starts ``run.py`` as its own process, connects ``viewers - 2`` plain WebSocket clients (the
Centrifugo JSON protocol, each subscribed to the feed, the chat and the reactions like the page)
and opens two pages of the room in headless Chromium. After a warm-up it resets the pages'
latency samples, waits, and prints the end-to-end latency the pages measured (publish time in
the event to ``Date.now()`` on receipt), the same for a few of the lightweight viewers, and the
runner's CPU (user + system time over the window / wall time; 100 % = one core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright

HERE = Path(__file__).resolve().parent
SAMPLERS = 8  # lightweight viewers that decode every event to measure latency (the others count lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Viewer:
    def __init__(self, n: int, sample: bool) -> None:
        self.n = n
        self.sample = sample
        self.events = 0
        self.latencies: list[float] = []
        self.recording = False

    async def run(self, http: aiohttp.ClientSession, page: str, ws_url: str, ready: asyncio.Event) -> None:
        async with http.post(f"{page}/token", json={"name": f"load {self.n:03d}"}) as r:
            token = (await r.json())["token"]
        async with http.ws_connect(ws_url, max_msg_size=0) as ws:
            commands = [{"id": 1, "connect": {"token": token, "name": "load"}}]
            commands += [{"id": i + 2, "subscribe": {"channel": c}} for i, c in enumerate(CHANNELS)]
            await ws.send_str("\n".join(json.dumps(c) for c in commands))
            replies = 0
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                lines = msg.data.split("\n")
                if "{}" in lines:
                    await ws.send_str("{}")  # pong
                if replies < 1 + len(CHANNELS):
                    replies += sum(1 for line in lines if line.startswith('{"id":'))
                    if replies >= 1 + len(CHANNELS):
                        ready.set()
                if not self.sample:
                    self.events += len(lines)
                    continue
                now = time.time() * 1000
                for line in lines:
                    if '"tick"' in line:
                        self.events += 1
                        if self.recording:
                            self.latencies.append(now - json.loads(line)["push"]["pub"]["data"]["ts"])


CHANNELS = ["events:main", "chat:main", "reactions:main"]


async def main(a: argparse.Namespace) -> None:
    port, page_port = free_port(), free_port()
    argv = [sys.executable, str(HERE / "run.py"), "--port", str(port), "--page-port", str(page_port)]
    runner = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [*argv, "--rate", str(a.rate), "--crowd", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    page_url = f"http://127.0.0.1:{page_port}"
    ws_url = f"ws://127.0.0.1:{port}/connection/websocket"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for _ in range(100):
                try:
                    async with http.get(f"{page_url}/config.json") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            light = max(0, a.viewers - 2)
            viewers = [Viewer(i, i < SAMPLERS) for i in range(light)]
            readies = [asyncio.Event() for _ in viewers]
            tasks = []
            for v, ready in zip(viewers, readies, strict=True):
                tasks.append(asyncio.ensure_future(v.run(http, page_url, ws_url, ready)))
                await asyncio.sleep(0.005)
            try:
                await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
            except TimeoutError:
                failed = [t.exception() for t in tasks if t.done() and not t.cancelled()]
                raise SystemExit(
                    f"{sum(not r.is_set() for r in readies)} viewers not ready; errors: {failed[:3]}"
                ) from None
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
                pages = []
                for name in ("Page One", "Page Two"):
                    page = await browser.new_page(viewport={"width": 1280, "height": 800})
                    await page.goto(f"{page_url}/?name={name.replace(' ', '%20')}")
                    await page.wait_for_function("window.live.state.connection === 'connected'", timeout=20_000)
                    pages.append(page)
                await asyncio.sleep(a.warmup)
                for page in pages:
                    await page.evaluate("window.live.state.latCount = 0")
                for v in viewers:
                    v.recording = True
                    v.latencies.clear()
                counts = [v.events for v in viewers]
                cpu0, t0 = cpu_seconds(runner.pid), time.monotonic()
                await asyncio.sleep(a.seconds)
                cpu1, t1 = cpu_seconds(runner.pid), time.monotonic()
                wall = t1 - t0
                print(
                    f"feed {a.rate:g} publications/s, {a.viewers} viewers ({len(pages)} Chromium pages + {light} light)"
                )
                for i, page in enumerate(pages):
                    lat = await page.evaluate("window.live.latency()")
                    viewers_seen = await page.evaluate("window.live.state.viewers")
                    gaps = await page.evaluate("window.live.state.seqGaps")
                    print(
                        f"  page {i + 1}: {lat['n'] / wall:.0f} events/s, latency p50 {lat['p50']:.0f} ms, "
                        f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms; "
                        f"viewer count shown {viewers_seen}; feed gaps {gaps}"
                    )
                sampled = [x for v in viewers if v.sample for x in v.latencies]
                rate = sum(v.events - c for v, c in zip(viewers, counts, strict=True)) / wall
                print(
                    f"  light viewers: {rate:.0f} messages/s in all; latency of {SAMPLERS} of them: "
                    f"p50 {percentile(sampled, 0.5):.0f} ms, p99 {percentile(sampled, 0.99):.0f} ms"
                )
                print(f"  server CPU: {100 * (cpu1 - cpu0) / wall:.0f} % of one core over {wall:.0f} s")
                await browser.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        runner.terminate()
        runner.wait(10)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--viewers", type=int, default=200)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--warmup", type=float, default=5)
    asyncio.run(main(p.parse_args()))
