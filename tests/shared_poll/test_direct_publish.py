"""shared_poll_publish (server API): a new version of a key reaches its trackers at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import API_KEY, Running, eventually

from .conftest import Backend, poll_config
from .test_protocol import subscribed, track
from .wsclient import WsClient


async def api(server: Running, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"apikey {API_KEY}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.api_url}/shared_poll_publish", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        answer: dict[str, Any] = await resp.json()
        return answer


async def tracking_x(server: Running, backend: Backend, channel: str, version: int) -> WsClient:
    """A client of ``server`` tracking key "x" of ``channel`` (the backend's version ``version``),
    its first update received."""
    backend.set(channel, "x", {"p": 1}, version=version)
    client = await subscribed(server, channel)
    await client.call("sub_refresh", track(channel, ["x"]))
    await eventually(lambda: client.updates(channel, "x"))
    return client


async def test_direct_publish_in_versioned_mode(poll_server: Running, backend: Backend) -> None:
    channel = "ver:direct"
    c = await tracking_x(poll_server, backend, channel, 3)
    assert await api(poll_server, {"channel": channel, "key": "x", "data": {"p": 2}, "version": 5}) == {"result": {}}
    pushed = (await eventually(lambda: c.updates(channel, "x")[1:]))[0]
    assert pushed == {"data": {"p": 2}, "key": "x", "version": 5}
    # a version not above the one held is stale: dropped (and the backend's version 3 is not a change either)
    await api(poll_server, {"channel": channel, "key": "x", "data": {"p": 0}, "version": 4})
    await api(poll_server, {"channel": channel, "key": "x", "data": {"p": 9}, "version": 6})
    await eventually(lambda: len(c.updates(channel, "x")) == 3)
    assert [u["version"] for u in c.updates(channel, "x")] == [3, 5, 6]
    await c.close()


async def test_direct_publish_refusals(poll_server: Running) -> None:
    cases = {
        "votes:a": 107,  # versionless: Centrifugo refuses direct publish there
        "plain": 107,  # not a shared-poll channel
        "nowhere:a": 102,
    }
    for channel, code in cases.items():
        answer = await api(poll_server, {"channel": channel, "key": "k", "data": 1, "version": 1})
        assert answer["error"]["code"] == code, (channel, answer)
    for body in ({"channel": "ver:a", "data": 1, "version": 1}, {"channel": "ver:a", "key": "k", "data": 1}):
        assert (await api(poll_server, body))["error"]["code"] == 107


async def test_publish_enabled_carries_direct_publishes_to_every_node(
    start_server: Callable[..., Any], backend: Backend, redis_url: str
) -> None:
    channel = "ver:shared"  # versioned namespace; publish_enabled is set below for both nodes
    config = poll_config(backend.url)
    for ns in config["channel"]["namespaces"]:
        if ns["name"] == "ver":
            ns["shared_poll"]["publish_enabled"] = True
    config["engine"] = {"type": "redis", "redis": {"address": redis_url, "prefix": f"sp{uuid.uuid4().hex[:8]}"}}
    a: Running = await start_server(config)
    b: Running = await start_server(config)
    on_b = await tracking_x(b, backend, channel, 1)
    # node a has nobody tracking "x": the publish goes through Redis to node b's client
    assert await api(a, {"channel": channel, "key": "x", "data": {"p": 2}, "version": 2}) == {"result": {}}
    pushed = (await eventually(lambda: on_b.updates(channel, "x")[1:]))[0]
    assert pushed == {"data": {"p": 2}, "key": "x", "version": 2}
    await on_b.close()


async def test_without_publish_enabled_a_direct_publish_stays_on_its_node(
    start_server: Callable[..., Any], backend: Backend, redis_url: str
) -> None:
    channel = "ver:local"
    config = {**poll_config(backend.url), "engine": {"type": "redis", "redis": {"address": redis_url, "prefix": "spl"}}}
    a: Running = await start_server(config)
    b: Running = await start_server(config)
    on_b = await tracking_x(b, backend, channel, 1)
    await api(a, {"channel": channel, "key": "x", "data": {"p": 2}, "version": 2})
    await asyncio.sleep(0.3)
    assert len(on_b.updates(channel, "x")) == 1  # node a delivered to its own trackers only (none)
    await api(b, {"channel": channel, "key": "x", "data": {"p": 3}, "version": 3})
    await eventually(lambda: len(on_b.updates(channel, "x")) == 2)
    await on_b.close()
