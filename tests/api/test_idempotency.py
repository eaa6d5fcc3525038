"""Issue 9 item 4 (API part): ``idempotency_key`` of ``publish`` and ``broadcast`` reaches the node.

A retry with the same key on the same channel publishes nothing and gets the first
publication's reply; another key, or the same key on another channel, publishes again.
Run against both brokers.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_KEY, Running

Start = Callable[..., Awaitable[Running]]


@pytest.fixture(params=["memory", "redis"])
async def running(request: pytest.FixtureRequest, start_server: Start) -> Running:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        prefix = f"idem-{uuid.uuid4().hex[:8]}"  # the redis-server is shared by the whole run
        return await start_server({"engine": {"type": "redis", "redis": {"address": url, "prefix": prefix}}})
    return await start_server()


async def call(running: Running, method: str, params: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{running.api_url}/{method}", json=params, headers={"X-API-Key": API_KEY}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        reply: dict[str, Any] = await resp.json()
        assert "error" not in reply, reply
        result: dict[str, Any] = reply["result"]
        return result


async def history(running: Running, channel: str) -> list[Any]:
    result = await call(running, "history", {"channel": channel, "limit": -1})
    return [p["data"] for p in result["publications"]]


async def test_publish_with_the_same_key_publishes_once(running: Running) -> None:
    first = await call(running, "publish", {"channel": "idem", "data": {"n": 1}, "idempotency_key": "k1"})
    assert first["offset"] == 1 and first["epoch"]
    again = await call(running, "publish", {"channel": "idem", "data": {"n": 2}, "idempotency_key": "k1"})
    assert again == first
    assert await history(running, "idem") == [{"n": 1}]

    other_key = await call(running, "publish", {"channel": "idem", "data": {"n": 3}, "idempotency_key": "k2"})
    assert other_key == {"offset": 2, "epoch": first["epoch"]}
    other_channel = await call(running, "publish", {"channel": "idem-2", "data": {"n": 4}, "idempotency_key": "k1"})
    assert other_channel["offset"] == 1
    no_key = await call(running, "publish", {"channel": "idem", "data": {"n": 5}})
    assert no_key["offset"] == 3
    assert await history(running, "idem") == [{"n": 1}, {"n": 3}, {"n": 5}]
    assert await history(running, "idem-2") == [{"n": 4}]


async def test_broadcast_with_the_same_key_publishes_once_per_channel(running: Running) -> None:
    params = {"channels": ["idem-a", "idem-b"], "data": {"n": 1}, "idempotency_key": "b1"}
    first = await call(running, "broadcast", params)
    assert [r["result"]["offset"] for r in first["responses"]] == [1, 1]
    again = await call(running, "broadcast", {**params, "data": {"n": 2}})
    assert again == first
    assert await history(running, "idem-a") == [{"n": 1}]
    assert await history(running, "idem-b") == [{"n": 1}]
    other = await call(running, "broadcast", {**params, "idempotency_key": "b2"})
    assert [r["result"]["offset"] for r in other["responses"]] == [2, 2]
