"""A slow or failing refresh backend: other channels keep their interval, errors are in the metrics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import Running, eventually

from .conftest import INTERVAL, Backend, poll_config
from .test_protocol import subscribed, track


async def _metric(server: Running, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{server.http_url}/metrics") as resp:
        text = await resp.text()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


async def test_slow_and_failing_backends_do_not_hold_up_other_channels(poll_server: Running, backend: Backend) -> None:
    clients = []
    channels = ("slow:a", "fail:a", "error:a", "votes:healthy")
    for channel in channels:
        backend.set(channel, "k", {"n": 0})
        c = await subscribed(poll_server, channel)
        assert "error" not in await c.call("sub_refresh", track(channel, ["k"]))
        clients.append(c)
    healthy = clients[-1]
    await eventually(lambda: healthy.updates("votes:healthy", "k"))
    for n in range(1, 4):  # the healthy channel keeps its interval while the others time out or fail
        backend.set("votes:healthy", "k", {"n": n})
        changed = time.monotonic()
        await eventually(lambda n=n: any(u["data"] == {"n": n} for u in healthy.updates("votes:healthy", "k")))
        assert time.monotonic() - changed <= INTERVAL + 0.3
    for c, channel in zip(clients[:3], channels, strict=False):  # no data came through the broken backends
        assert c.updates(channel) == []
    assert await _metric(poll_server, "trunkline_shared_poll_refreshes_total", namespace="slow", result="timeout") >= 1
    assert await _metric(poll_server, "trunkline_shared_poll_refreshes_total", namespace="fail", result="status") >= 2
    assert await _metric(poll_server, "trunkline_shared_poll_refreshes_total", namespace="error", result="error") >= 2
    for namespace in ("slow", "fail", "error"):
        assert await _metric(poll_server, "trunkline_shared_poll_errors_total", namespace=namespace) >= 1
    assert await _metric(poll_server, "trunkline_shared_poll_errors_total", namespace="votes") == 0
    assert await _metric(poll_server, "trunkline_shared_poll_refreshes_total", namespace="votes", result="ok") >= 3
    for c in clients:
        await c.close()


async def _max_in_flight(server: Running, backend: Backend) -> int:
    clients = []
    for i in range(4):
        channel = f"sleepy:c{i}"
        c = await subscribed(server, channel)
        await c.call("sub_refresh", track(channel, ["k"]))
        clients.append(c)
    backend.reset()
    await asyncio.sleep(3 * INTERVAL)
    for c in clients:
        await c.close()
    return int(backend.stats()["max_in_flight"])


async def test_concurrency_limit_bounds_calls_in_flight(start_server: Callable[..., Any], backend: Backend) -> None:
    # four channels whose backend takes 150 ms: in flight together by default, one at a time with the limit 1
    free = await start_server(poll_config(backend.url))
    assert await _max_in_flight(free, backend) >= 2
    limited = await start_server(poll_config(backend.url, concurrency_limit=1))
    assert await _max_in_flight(limited, backend) == 1


async def _gauge(server: Running, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{server.http_url}/metrics") as resp:
        text = await resp.text()
    found = [float(line.split()[1]) for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(found) == 1, f"{name} is not exported"
    return found[0]


async def test_channels_and_keys_gauges(poll_server: Running, backend: Backend) -> None:
    assert await _gauge(poll_server, "trunkline_shared_poll_channels") == 0
    assert await _gauge(poll_server, "trunkline_shared_poll_keys") == 0
    c = await subscribed(poll_server, "votes:gauges")
    await c.call("sub_refresh", track("votes:gauges", ["a", "b"]))
    assert await _gauge(poll_server, "trunkline_shared_poll_channels") == 1
    assert await _gauge(poll_server, "trunkline_shared_poll_keys") == 2
    await c.close()
