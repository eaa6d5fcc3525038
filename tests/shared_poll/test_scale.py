"""Backend load follows unique keys, not clients: 10 and 1 000 connections tracking the same 5 keys."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.conftest import Running, eventually

from .conftest import INTERVAL, Backend
from .test_protocol import signed, subscribed, track
from .wsclient import WsClient

KEYS = [f"item{i}" for i in range(5)]


async def _load(
    server: Running, backend: Backend, channel: str, clients: int, http: aiohttp.ClientSession
) -> tuple[float, float]:
    """(refresh calls, keys asked) per cycle with ``clients`` connections tracking KEYS."""
    for key in KEYS:
        backend.set(channel, key, {"key": key})
    conns: list[WsClient] = []
    for start in range(0, clients, 100):  # in groups: the server and the clients share one loop
        group = range(start, min(clients, start + 100))
        conns += await asyncio.gather(*(subscribed(server, channel, f"u{i}", http) for i in group))
    replies = await asyncio.gather(
        *(c.call("sub_refresh", track(channel, KEYS, signed(channel, KEYS, user=f"u{i}"))) for i, c in enumerate(conns))
    )
    assert all("error" not in r for r in replies)
    cached = [len(r["sub_refresh"].get("items", [])) for r in replies]
    # every client has every key: from a push, or already in its track reply (the node held it)
    await eventually(
        lambda: all(len(c.updates(channel)) + n == len(KEYS) for c, n in zip(conns, cached, strict=True)), timeout=10
    )
    backend.reset()
    started = time.monotonic()
    await asyncio.sleep(3 * INTERVAL)
    cycles = (time.monotonic() - started) / INTERVAL
    stats = backend.stats()
    calls = stats["calls"]["/refresh"][channel] / cycles
    keys = stats["keys"]["/refresh"][channel] / cycles
    # a change reaches every client once
    backend.set(channel, "item0", {"key": "item0", "changed": True})
    await eventually(
        lambda: all(any(u.get("data", {}).get("changed") for u in c.updates(channel, "item0")) for c in conns),
        timeout=10,
    )
    await asyncio.gather(*(c.close() for c in conns))
    return calls, keys


async def test_backend_requests_per_cycle_do_not_grow_with_clients(poll_server: Running, backend: Backend) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        few_calls, few_keys = await _load(poll_server, backend, "votes:few", 10, http)
        many_calls, many_keys = await _load(poll_server, backend, "votes:many", 1000, http)
    # one call per cycle (5 keys < refresh_batch_size) asking each key once, for 10 clients as for 1 000
    assert 0.6 <= few_calls <= 1.4 and 0.6 <= many_calls <= 1.4, (few_calls, many_calls)
    assert abs(few_keys / few_calls - len(KEYS)) < 0.01 and abs(many_keys / many_calls - len(KEYS)) < 0.01
    assert 0.7 <= many_calls / few_calls <= 1.4
