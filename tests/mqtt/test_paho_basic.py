"""paho-mqtt 2.x against Trunkline over WebSocket and TCP, MQTT 3.1.1 and 5: connect, auth, pub/sub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import SECRET, Running, token

from .paho_helpers import V5, V311, Paho, nothing_in

MQTT = {"mqtt": {"websocket": {"enabled": True}, "tcp": {"enabled": True, "address": "127.0.0.1:0"}}}
ANON = {"mqtt": {**MQTT["mqtt"], "allow_anonymous": True}}


def mqtt_port(running: Running, transport: str) -> int:
    return running.port if transport == "websockets" else running.server.mqtt_listeners[0].port


VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]
TRANSPORTS = [pytest.param("websockets", id="ws"), pytest.param("tcp", id="tcp")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_jwt_connect_publish_subscribe(start_server: Callable[..., Any], version: int, transport: str) -> None:
    running = await start_server(MQTT)
    port = mqtt_port(running, transport)
    sub = Paho(version, transport)
    assert (await sub.connect(port, username="42", password=token("42"))) == 0
    pub = Paho(version, transport)
    assert (await pub.connect(port, username="43", password=token("43"))) == 0
    try:
        granted = await sub.subscribe("nohistory/room1", 1)
        assert [int(getattr(g, "value", g)) for g in granted] == [1]
        pub.client.publish("nohistory/room1", b'{"t": 21.5}', qos=1)
        got = await sub.next()
        assert (got.topic, got.payload, got.qos, got.retain) == ("nohistory/room1", b'{"t": 21.5}', 1, False)
        pub.client.publish("nohistory/room1", b"\x00\x01binary", qos=0)
        got = await sub.next()
        assert (got.payload, got.qos) == (b"\x00\x01binary", 0)
        protocol = "mqtt5" if version == V5 else "mqtt3.1.1"
        packets = running.server.node.metrics.protocol_packets.values
        assert packets[(protocol, "in", "publish")] == 2
        assert packets[(protocol, "in", "connect")] == 2
    finally:
        sub.stop()
        pub.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_bad_token_and_anonymous_are_refused(start_server: Callable[..., Any], version: int) -> None:
    running = await start_server(MQTT)
    bad = Paho(version)
    rc = await bad.connect(running.port, username="42", password=token("42", secret=SECRET + "x"))
    assert int(getattr(rc, "value", rc)) == 0x86  # paho reports 3.1.1 return code 4 as 0x86
    mismatch = Paho(version)
    rc = await mismatch.connect(running.port, username="other", password=token("42"))
    assert int(getattr(rc, "value", rc)) == 0x86  # paho reports 3.1.1 return code 4 as 0x86
    anon = Paho(version)
    rc = await anon.connect(running.port)
    assert int(getattr(rc, "value", rc)) == 0x87  # 3.1.1: return code 5
    for c in (bad, mismatch, anon):
        c.stop()


async def test_anonymous_when_configured(start_server: Callable[..., Any]) -> None:
    running = await start_server(ANON)
    c = Paho(V5)
    assert (await c.connect(running.port)) == 0
    c.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_wildcards_and_dollar_topics(start_server: Callable[..., Any], version: int) -> None:
    running = await start_server(MQTT)
    sub = Paho(version)
    assert (await sub.connect(running.port, username="42", password=token("42"))) == 0
    pub = Paho(version)
    assert (await pub.connect(running.port, username="43", password=token("43"))) == 0
    try:
        await sub.subscribe("nohistory/+/temp", 0)
        await sub.subscribe("#", 0)
        pub.client.publish("nohistory/dev1/temp", b"1")
        pub.client.publish("nohistory/dev1/hum", b"2")
        got = sorted([(await sub.next()).topic for _ in range(3)])
        assert got == ["nohistory/dev1/hum", "nohistory/dev1/temp", "nohistory/dev1/temp"]
        assert nothing_in(sub.messages)
    finally:
        sub.stop()
        pub.stop()
