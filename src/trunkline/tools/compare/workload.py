"""One measured run: N clients of one mode, R publications per second for S seconds.

1. The clients connect and take their position (first poll, subscribe, stream open);
2. the *window* opens: bytes, requests and CPU counters are read;
3. the publisher sends ``R * S`` publications through the server API on an open-loop
   schedule (``t0 + n / R``, each in its own request, so a slow answer never delays the
   next: no coordinated omission), ``{"seq": n, "ts": <monotonic>, "pad": …}`` data;
4. the run waits until every client has every publication (or a drain deadline);
5. the window closes; everything in it is divided by the messages delivered.

Setup (connects, first polls, WebSocket upgrades) is reported apart, per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from . import stats
from .clients import CLIENTS, Context, Gate, Tally, Target
from .server import Server, own_cpu_seconds
from .wire import CountingConnector, WireCount

_IN_FLIGHT: Final = 256  # publish requests open at once at most
_PUBLISH_TIMEOUT: Final = 10.0
Progress = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class Params:
    clients: int
    rate: float
    seconds: float
    payload: int
    interval: float
    wait: float = 25.0

    @property
    def publications(self) -> int:
        return max(1, round(self.rate * self.seconds))


def data(seq: int, pad: str) -> dict[str, Any]:
    return {"seq": seq, "ts": time.monotonic(), "pad": pad}


def padding(payload: int) -> str:
    """Padding that makes one publication's JSON data about ``payload`` bytes long."""
    bare = len(json.dumps({"seq": 10**5, "ts": 123456.123456, "pad": ""}, separators=(",", ":")))
    return "x" * max(0, payload - bare)


async def publish_all(server: Server, channel: str, params: Params, progress: Progress) -> tuple[int, int]:
    """Publish on schedule; (succeeded, failed)."""
    pad = padding(params.payload)
    url = server.url + "/api/publish"
    headers = {"X-API-Key": server.api_key, "Content-Type": "application/json"}
    ok = failed = 0
    limit = asyncio.Semaphore(_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=_PUBLISH_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(seq: int) -> None:
            nonlocal ok, failed
            async with limit:
                body = json.dumps({"channel": channel, "data": data(seq, pad)}, separators=(",", ":"))
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        answer = await resp.json(content_type=None)
                        good = resp.status == 200 and "error" not in answer
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    good = False
                if good:
                    ok += 1
                else:
                    failed += 1

        loop = asyncio.get_running_loop()
        total = params.publications
        started = loop.time()
        tasks: list[asyncio.Task[None]] = []
        for seq in range(total):
            delay = started + seq / params.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(seq)))
            if seq % max(1, total // 100) == 0:
                progress(seq / total)
        await asyncio.gather(*tasks)
    progress(1.0)
    return ok, failed


async def _guarded(mode: str, i: int, coro: Any, tally: Tally, gate: Gate) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a client that fails counts its losses; the run goes on
        tally.error(f"{mode}: {type(exc).__name__}: {exc}")
    finally:
        gate.ready(i)


async def run_mode(
    mode: str, server: Server, params: Params, channel: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Measure ``mode`` once; the figures of its window as a JSON-ready dict."""
    report = progress or (lambda _: None)
    count = WireCount()
    channels = [channel] if mode == "sse" else None
    tokens = tuple(server.token(f"u{i}", channels) for i in range(params.clients))
    target = Target(server.url, channel, tokens, params.interval, params.wait)
    tally = Tally(params.clients, params.publications)
    gate = Gate(params.clients)
    stop = asyncio.Event()
    connector = CountingConnector(count, limit=0, force_close=False)
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=20))
    client = CLIENTS[mode]
    ctx = Context(session, tally, gate, stop, count)
    tasks = [
        asyncio.ensure_future(_guarded(mode, i, client(ctx, target, i), tally, gate)) for i in range(params.clients)
    ]
    try:
        setup_started = time.monotonic()
        async with asyncio.timeout(30 + params.clients * 0.05):
            await gate.all_ready.wait()
        setup_s = time.monotonic() - setup_started
        setup = (count.requests, count.total)
        base = (count.requests, count.sent, count.received)
        cpu0, own0, t0 = server.cpu(), own_cpu_seconds(), time.monotonic()
        ok, failed = await publish_all(server, channel, params, report)
        tally.not_published(failed)
        drain = 3.0 + (2 * params.interval if mode == "short-poll" else 0.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain):
                await tally.done.wait()
        cpu1, own1, t1 = server.cpu(), own_cpu_seconds(), time.monotonic()
        requests, sent, received = count.requests - base[0], count.sent - base[1], count.received - base[2]
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    delivered = tally.delivered()
    expected = ok * params.clients
    server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return {
        "mode": mode,
        "params": {
            "clients": params.clients,
            "rate": params.rate,
            "seconds": params.seconds,
            "payload": params.payload,
            "interval": params.interval,
        },
        "published": ok,
        "publish_errors": failed,
        "expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "duplicated": tally.duplicates,
        "unexpected": tally.unexpected,
        "missed_data_answers": tally.missed_data,
        "client_errors": dict(tally.errors.most_common(10)),
        "latency_ms": stats.latency_summary(tally.latencies),
        "latency_cdf_ms": stats.cdf(tally.latencies),
        "window_s": round(t1 - t0, 3),
        "requests": requests,
        "requests_per_message": stats.per(requests, delivered),
        "bytes_sent": sent,
        "bytes_received": received,
        "bytes_per_message": stats.per(sent + received, delivered),
        "bytes_up_per_message": stats.per(sent, delivered),
        "bytes_down_per_message": stats.per(received, delivered),
        "server_cpu_s": round(server_cpu, 3) if server_cpu is not None else None,
        "server_cpu_us_per_message": stats.per(server_cpu, delivered, 1e6),
        "client_cpu_s": round(own1 - own0, 3),
        "client_cpu_us_per_message": stats.per(own1 - own0, delivered, 1e6),
        "setup": {
            "seconds": round(setup_s, 3),
            "requests_per_client": stats.per(setup[0], params.clients),
            "bytes_per_client": stats.per(setup[1], params.clients),
            "connections": count.connections,
        },
    }
