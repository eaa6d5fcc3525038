"""/health and /ready, as Kubernetes liveness and readiness probes use them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.broker.conftest import REDIS_SERVER, RedisServer
from tests.conftest import Running, eventually, make_settings, token
from trunkline.broker.memory import MemoryBroker
from trunkline.events import DisconnectEvent
from trunkline.node import Node

from . import connect


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def test_health_and_ready(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server()
    assert await _get(f"{running.http_url}/health") == (200, {"status": "ok"})
    assert await _get(f"{running.http_url}/ready") == (200, {"status": "ok"})


async def test_ready_is_503_while_shutting_down(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server()
    node = running.server.node
    release = asyncio.Event()
    closing = asyncio.Event()

    @node.on_disconnect
    async def slow_goodbye(event: DisconnectEvent) -> None:
        closing.set()
        await release.wait()

    client = await connect(running.ws_url, token("u1"))
    shutdown = asyncio.ensure_future(node.shutdown(timeout=10))
    try:
        await asyncio.wait_for(closing.wait(), 5)  # shutdown is under way, held by the hook
        status, body = await _get(f"{running.http_url}/ready")
        assert status == 503
        assert body["status"] == "unavailable"
        assert "accepting" in body["reason"]
        # the process still answers: liveness stays 200, so Kubernetes does not restart it
        assert await _get(f"{running.http_url}/health") == (200, {"status": "ok"})
    finally:
        release.set()
        await shutdown
        await client.disconnect()


class UnreachableBroker(MemoryBroker):
    """A memory broker whose health check fails, as a broker behind a broken network would."""

    async def ping(self) -> None:
        raise ConnectionError("broker unreachable")


async def test_ready_is_503_when_broker_ping_fails(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(node=Node(make_settings(), broker=UnreachableBroker()))
    status, body = await _get(f"{running.http_url}/ready")
    assert status == 503
    assert body == {"status": "unavailable", "reason": "broker unreachable: ConnectionError"}
    assert (await _get(f"{running.http_url}/health"))[0] == 200


@pytest.mark.redis
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_ready_follows_a_real_redis(start_server: Callable[..., Any], tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        running: Running = await start_server(
            {"engine": {"type": "redis", "redis": {"address": redis.url, "connect_timeout": "1s", "io_timeout": "1s"}}}
        )
        ready = f"{running.http_url}/ready"
        assert (await _get(ready))[0] == 200

        redis.stop()

        async def unavailable() -> bool:
            status, body = await _get(ready)
            return status == 503 and body["reason"].startswith("broker unreachable")

        await eventually(unavailable, timeout=10)
        assert (await _get(f"{running.http_url}/health"))[0] == 200

        redis.start()  # same port: the broker reconnects by itself

        async def available() -> bool:
            return (await _get(ready))[0] == 200

        await eventually(available, timeout=15)
    finally:
        redis.stop()


async def test_ready_turns_503_before_the_port_closes_on_shutdown(start_server: Callable[..., Any]) -> None:
    running = await start_server({"shutdown": {"ready_delay": "1s"}})
    stopping = asyncio.ensure_future(running.server.stop(timeout=1))
    try:
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as http, http.get(f"{running.http_url}/ready") as resp:
            assert resp.status == 503  # still answering, but no longer ready
            assert (await resp.json())["status"] == "unavailable"
    finally:
        await stopping
