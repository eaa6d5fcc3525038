"""Retained messages through the engine's store: shared by two nodes on one Redis, node-local in memory."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import Running, deep_merge, token
from trunkline.mqtt.retained import MemoryRetained, RedisRetained
from trunkline.mqtt.session import node_state

from .paho_helpers import V5, V311, Paho, nothing_in

MQTT = {"mqtt": {"websocket": {"enabled": True}}}


def redis_config(url: str, prefix: str) -> dict[str, Any]:
    return deep_merge(MQTT, {"engine": {"type": "redis", "redis": {"address": url, "prefix": prefix}}})


async def test_retained_is_shared_by_nodes_on_one_redis(start_server: Callable[..., Any], redis_url: str) -> None:
    prefix = f"retained-{uuid.uuid4().hex[:8]}"
    a: Running = await start_server(redis_config(redis_url, prefix))
    b: Running = await start_server(redis_config(redis_url, prefix))
    device = Paho(V5, client_id="thermo")
    assert (await device.connect(a.port, username="dev", password=token("dev"))) == 0
    try:
        info = device.client.publish("nohistory/temp", b"21.5", qos=1, retain=True)
        await _published(info)
        # a subscriber on the other node gets it, retain flag set
        watcher = Paho(V311)
        assert (await watcher.connect(b.port, username="w", password=token("w"))) == 0
        await watcher.subscribe("nohistory/#", 1)
        got = await watcher.next()
        assert (got.topic, got.payload, got.retain, got.qos) == ("nohistory/temp", b"21.5", True, 1)
        watcher.stop()
        assert isinstance(node_state(b.server.node).retained, RedisRetained)
        # deleted on node b (empty retained payload), gone for a new subscriber on node a
        other = Paho(V5)
        assert (await other.connect(b.port, username="o", password=token("o"))) == 0
        await _published(other.client.publish("nohistory/temp", b"", qos=1, retain=True))
        other.stop()
        late = Paho(V5)
        assert (await late.connect(a.port, username="l", password=token("l"))) == 0
        await late.subscribe("nohistory/+", 1)
        assert nothing_in(late.messages)
        late.stop()
    finally:
        device.stop()


async def test_memory_engine_keeps_retained_on_the_node_with_expiry(start_server: Callable[..., Any]) -> None:
    running: Running = await start_server(MQTT)
    device = Paho(V5)
    assert (await device.connect(running.port, username="dev", password=token("dev"))) == 0
    try:
        publish_props = Properties(PacketTypes.PUBLISH)
        publish_props.MessageExpiryInterval = 100
        publish_props.ContentType = "text/plain"
        await _published(device.client.publish("nohistory/x", b"kept", qos=1, retain=True, properties=publish_props))
        assert isinstance(node_state(running.server.node).retained, MemoryRetained)
        sub = Paho(V5)
        assert (await sub.connect(running.port, username="s", password=token("s"))) == 0
        await sub.subscribe("nohistory/x", 1)
        got = await sub.next()
        assert (got.payload, got.retain) == (b"kept", True)
        assert got.properties.ContentType == "text/plain"
        assert 99 <= got.properties.MessageExpiryInterval <= 100  # what is left
        sub.stop()
    finally:
        device.stop()


async def _published(info: Any) -> None:
    import asyncio

    await asyncio.to_thread(info.wait_for_publish, 5)
    assert info.is_published()
