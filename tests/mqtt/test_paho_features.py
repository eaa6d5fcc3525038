"""Retained messages, wills, QoS 2, keepalive expiry and malformed packets, against real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.conftest import Running, token
from trunkline.mqtt.codec import Decoder, encode
from trunkline.mqtt.packets import MQTT_5, ConnAck, Connect, Disconnect, Packet, Will

from .paho_helpers import V5, V311, Paho, nothing_in

MQTT = {"mqtt": {"websocket": {"enabled": True}, "tcp": {"enabled": True, "address": "127.0.0.1:0"}}}


def tcp_port(running: Running) -> int:
    return running.server.mqtt_listeners[0].port


class Raw:
    """A hand-driven MQTT client on a TCP socket (our codec on the client side)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = Decoder(1 << 20, role="client", version=version)
        self.version = version

    @classmethod
    async def open(cls, port: int, version: int = MQTT_5) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, version)

    def send(self, packet: Packet) -> None:
        self.writer.write(encode(packet, self.version))

    async def packets(self, timeout: float = 5.0) -> list[Packet]:
        """Everything until the server closes the connection."""
        out: list[Packet] = []
        async with asyncio.timeout(timeout):
            while data := await self.reader.read(65536):
                out.extend(self.decoder.feed(data))
        self.writer.close()
        return out


async def test_retained_delivered_on_subscribe_and_deleted_by_empty_payload(
    start_server: Callable[..., Any],
) -> None:
    running = await start_server(MQTT)
    pub = Paho(V5)
    assert (await pub.connect(running.port, username="p", password=token("p"))) == 0
    try:
        await asyncio.to_thread(pub.client.publish("nohistory/a/temp", b"20", qos=1, retain=True).wait_for_publish, 5)
        await asyncio.to_thread(pub.client.publish("nohistory/b/temp", b"21", qos=1, retain=True).wait_for_publish, 5)
        sub = Paho(V311)
        assert (await sub.connect(running.port, username="s", password=token("s"))) == 0
        await sub.subscribe("nohistory/+/temp", 1)
        got = sorted([(m.topic, m.payload, m.retain) for m in [await sub.next(), await sub.next()]])
        assert got == [("nohistory/a/temp", b"20", True), ("nohistory/b/temp", b"21", True)]
        pub.client.publish("nohistory/a/temp", b"22", qos=1)  # live: retain flag off
        live = await sub.next()
        assert (live.payload, live.retain) == (b"22", False)
        await asyncio.to_thread(pub.client.publish("nohistory/a/temp", b"", qos=1, retain=True).wait_for_publish, 5)
        late = Paho(V5)
        assert (await late.connect(running.port, username="l", password=token("l"))) == 0
        await late.subscribe("nohistory/#", 0)
        only = await late.next()
        assert (only.topic, only.payload) == ("nohistory/b/temp", b"21")
        assert nothing_in(late.messages)
        sub.stop()
        late.stop()
    finally:
        pub.stop()


async def test_will_on_lost_connection_not_on_disconnect(start_server: Callable[..., Any]) -> None:
    running = await start_server(MQTT)
    watcher = Paho(V5)
    assert (await watcher.connect(running.port, username="w", password=token("w"))) == 0
    await watcher.subscribe("nohistory/status", 0)
    try:
        polite = Paho(V311, "tcp")
        will = ("nohistory/status", b"polite gone", 0, False)
        assert (await polite.connect(tcp_port(running), username="a", password=token("a"), will=will)) == 0
        polite.stop()  # a normal DISCONNECT: no will
        assert nothing_in(watcher.messages, 0.5)
        raw = await Raw.open(tcp_port(running))
        raw.send(
            Connect(
                MQTT_5,
                "dev",
                keepalive=60,
                username="d",
                password=token("d").encode(),
                will=Will("nohistory/status", b"dev lost"),
            )
        )
        await asyncio.sleep(0.2)
        raw.writer.transport.abort()  # the socket is lost without DISCONNECT
        assert (await watcher.next()).payload == b"dev lost"
    finally:
        watcher.stop()


async def test_keepalive_expiry_closes_and_sends_the_will(start_server: Callable[..., Any]) -> None:
    running = await start_server({"mqtt": {**MQTT["mqtt"], "max_keepalive": "1s"}})
    watcher = Paho(V5)
    assert (await watcher.connect(running.port, username="w", password=token("w"))) == 0
    await watcher.subscribe("nohistory/status", 0)
    raw = await Raw.open(tcp_port(running))
    raw.send(
        Connect(
            MQTT_5,
            "quiet",
            keepalive=1,
            username="q",
            password=token("q").encode(),
            will=Will("nohistory/status", b"quiet lost"),
        )
    )
    packets = await raw.packets(timeout=5)
    assert isinstance(packets[0], ConnAck) and packets[0].reason_code == 0
    assert isinstance(packets[-1], Disconnect) and packets[-1].reason_code == 0x8D
    assert (await watcher.next()).payload == b"quiet lost"
    watcher.stop()


async def test_qos2_publish_round_trip(start_server: Callable[..., Any]) -> None:
    running = await start_server(MQTT)
    sub = Paho(V5)
    assert (await sub.connect(running.port, username="s", password=token("s"))) == 0
    pub = Paho(V5, "tcp")
    assert (await pub.connect(tcp_port(running), username="p", password=token("p"))) == 0
    try:
        granted = await sub.subscribe("nohistory/q2", 2)
        assert [int(getattr(g, "value", g)) for g in granted] == [2]
        info = pub.client.publish("nohistory/q2", b"exactly once", qos=2)
        await asyncio.to_thread(info.wait_for_publish, 5)
        assert info.is_published()
        got = await sub.next()
        assert (got.payload, got.qos) == (b"exactly once", 2)  # PUBREC/PUBREL/PUBCOMP towards paho
        assert nothing_in(sub.messages)
    finally:
        sub.stop()
        pub.stop()


async def test_malformed_packet_gets_a_reason_code_and_others_are_undisturbed(
    start_server: Callable[..., Any],
) -> None:
    running = await start_server(MQTT)
    other = Paho(V5)
    assert (await other.connect(running.port, username="o", password=token("o"))) == 0
    await other.subscribe("nohistory/x", 0)
    raw = await Raw.open(tcp_port(running))
    raw.send(Connect(MQTT_5, "bad", keepalive=60, username="b", password=token("b").encode()))
    raw.writer.write(b"\x30\x02\x00")  # a PUBLISH whose topic length runs past its body
    raw.writer.write(b"\x05")
    packets = await raw.packets()
    assert isinstance(packets[0], ConnAck)
    assert isinstance(packets[-1], Disconnect) and packets[-1].reason_code == 0x81
    v3 = await Raw.open(tcp_port(running), version=4)
    v3.send(Connect(4, "bad3", keepalive=60, username="b", password=token("b").encode()))
    v3.writer.write(b"\xf0\x00")  # AUTH does not exist in 3.1.1: the connection is closed
    packets = await v3.packets()
    assert len(packets) == 1 and isinstance(packets[0], ConnAck)
    pub = Paho(V5)
    assert (await pub.connect(running.port, username="p", password=token("p"))) == 0
    pub.client.publish("nohistory/x", b"still fine")
    assert (await other.next()).payload == b"still fine"
    pub.stop()
    other.stop()
