"""Persistent MQTT sessions through a cut TCP link: paho-mqtt 3.1.1 and 5 against Trunkline.

The subscriber talks to Trunkline's MQTT TCP listener through the project's
relay (``tests/faults/proxy.py``), which can drop every link without a FIN and
refuse new ones. While its link is down, QoS 1 publications arrive from another
MQTT client and from the server API; after paho reconnects on its own (clean
session 0 / clean start 0 with a session expiry), every one of them arrives, in
order, once, followed by live ones. A channel whose history is shorter than
the gap delivers what history holds and counts the rest.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import API_KEY, Running, eventually, token
from tests.faults.proxy import SegmentingProxy
from trunkline.mqtt.session import node_state

from .paho_helpers import V5, V311, Paho, get, nothing_in

NAMESPACE = {"allow_subscribe_for_client": True, "allow_publish_for_client": True, "history_ttl": "300s"}
CONFIG = {
    "mqtt": {"tcp": {"enabled": True, "address": "127.0.0.1:0"}, "websocket": {"enabled": True}},
    "channel": {
        "namespaces": [
            {"name": "sensors", "history_size": 100, **NAMESPACE},
            {"name": "tiny", "history_size": 3, **NAMESPACE},
            {"name": "plain", "allow_subscribe_for_client": True, "allow_publish_for_client": True},
        ]
    },
}
VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    dup: bool
    mid: int


@dataclass
class Device:
    """A paho client with a persistent session that reconnects by itself."""

    version: int
    client_id: str
    manual_ack: bool = False
    client: mqtt.Client = field(init=False)
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    connacks: queue.Queue[tuple[bool, int]] = field(default_factory=queue.Queue)
    lost: queue.Queue[int] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.version,
            clean_session=False if self.version == V311 else None,
            manual_ack=self.manual_ack,
        )
        c.reconnect_delay_set(1, 1)
        c.on_connect = lambda cl, ud, flags, rc, props: self.connacks.put((bool(flags.session_present), int(rc.value)))
        c.on_message = lambda cl, ud, m: self.messages.put(Message(m.topic, m.payload, m.qos, bool(m.dup), m.mid))
        c.on_disconnect = lambda cl, ud, flags, rc, props: self.lost.put(int(getattr(rc, "value", rc)))
        self.client = c

    async def connect(self, port: int, user: str, expiry: int = 300) -> bool:
        """Connect (clean start 0) and return CONNACK's session present."""
        self.client.username_pw_set(user, token(user))
        kwargs: dict[str, Any] = {"keepalive": 30}
        if self.version == V5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
            kwargs.update(clean_start=False, properties=props)
        await asyncio.to_thread(self.client.connect, "127.0.0.1", port, **kwargs)
        self.client.loop_start()
        present, rc = await get(self.connacks)
        assert rc == 0
        return present

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        done: queue.Queue[Any] = queue.Queue()
        self.client.on_subscribe = lambda cl, ud, mid, rcs, props: done.put(rcs)
        self.client.subscribe(topic, qos)
        rcs = await get(done)
        assert [int(getattr(r, "value", r)) for r in rcs] == [qos]

    async def take(self, count: int, timeout: float = 10.0) -> list[Message]:
        """The next ``count`` messages (a shortfall fails with what did arrive)."""
        out: list[Message] = []
        try:
            for _ in range(count):
                out.append(await get(self.messages, timeout))
        except queue.Empty:
            raise AssertionError(f"{len(out)} of {count} messages arrived: {out}") from None
        return out

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def setup(start_server: Callable[..., Any]) -> AsyncIterator[tuple[Running, SegmentingProxy, int]]:
    running: Running = await start_server(CONFIG)
    tcp_port = running.server.mqtt_listeners[0].port
    async with SegmentingProxy(tcp_port) as proxy:
        yield running, proxy, tcp_port


async def cut_and_wait(running: Running, proxy: SegmentingProxy, device: Device, client_id: str) -> None:
    """Drop the link (no FIN) and keep it down until the server has saved the session."""
    proxy.accepting = False
    proxy.cut()
    await get(device.lost)
    state = node_state(running.server.node)
    await eventually(lambda: client_id in state.stored and state.sessions.get(client_id) is None)


async def published(publisher: Paho, topic: str, payload: bytes, qos: int = 1) -> None:
    """Publish and wait (in a thread: the server runs on this loop) until the server acknowledged it."""
    info = publisher.client.publish(topic, payload, qos=qos)
    await asyncio.to_thread(info.wait_for_publish, 5)
    assert info.is_published()


async def api_publish(running: Running, channel: str, data: Any) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{running.api_url}/publish", json={"channel": channel, "data": data}, headers={"X-API-Key": API_KEY}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("version", VERSIONS)
async def test_missed_qos1_publications_arrive_in_order_once(
    setup: tuple[Running, SegmentingProxy, int], version: int
) -> None:
    running, proxy, tcp_port = setup
    client_id = f"device-{version}"
    device = Device(version, client_id)
    publisher = Paho(version, "tcp")
    assert (await publisher.connect(tcp_port, username="pub", password=token("pub"))) == 0
    try:
        assert await device.connect(proxy.port, "dev") is False
        await device.subscribe("sensors/dev1")  # exact filter: one channel
        await device.subscribe("sensors/+/temp")  # wildcard: positions per channel it delivered
        publisher.client.publish("sensors/dev1", b"live-0", qos=1)
        publisher.client.publish("sensors/a/temp", b"a-0", qos=1)
        publisher.client.publish("sensors/b/temp", b"b-0", qos=1)
        first = await device.take(3)
        assert sorted(m.payload for m in first) == [b"a-0", b"b-0", b"live-0"]
        session = node_state(running.server.node).sessions[client_id]
        await eventually(lambda: not session.inflight)  # paho acknowledged them (else they come again, DUP)

        await cut_and_wait(running, proxy, device, client_id)
        for i in range(1, 21):
            await published(publisher, "sensors/dev1", f"m-{i}".encode(), qos=1)
            await published(publisher, "sensors/a/temp", f"a-{i}".encode(), qos=1)
            if i % 5 == 0:
                await api_publish(running, "sensors:dev1", {"api": i})
        await published(publisher, "sensors/b/temp", b"b-1", qos=1)

        proxy.accepting = True  # paho reconnects by itself (clean start 0)
        present, rc = await get(device.connacks, 10)
        assert (present, rc) == (True, 0)
        publisher.client.publish("sensors/dev1", b"live-1", qos=1)
        got = await device.take(20 + 4 + 20 + 1 + 1)
        by_topic: dict[str, list[bytes]] = {}
        for m in got:
            by_topic.setdefault(m.topic, []).append(m.payload)
        expected_dev1: list[bytes] = []
        for i in range(1, 21):
            expected_dev1.append(f"m-{i}".encode())
            if i % 5 == 0:
                expected_dev1.append(b'{"api": %d}' % i)  # the server API's JSON, as it is stored
        assert by_topic["sensors/dev1"] == [*expected_dev1, b"live-1"]
        assert by_topic["sensors/a/temp"] == [f"a-{i}".encode() for i in range(1, 21)]
        assert by_topic["sensors/b/temp"] == [b"b-1"]
        assert all(m.qos == 1 for m in got)
        assert nothing_in(device.messages)
        metrics = running.server.node.metrics.protocol_dropped.values
        assert not any(reason in ("history_gap", "stream_reset") for _, reason in metrics)
    finally:
        device.stop()
        publisher.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_unacknowledged_messages_are_resent_with_dup(
    setup: tuple[Running, SegmentingProxy, int], version: int
) -> None:
    running, proxy, tcp_port = setup
    client_id = f"slow-{version}"
    device = Device(version, client_id, manual_ack=True)
    publisher = Paho(version, "tcp")
    assert (await publisher.connect(tcp_port, username="pub", password=token("pub"))) == 0
    try:
        await device.connect(proxy.port, "dev")
        await device.subscribe("sensors/slow")
        publisher.client.publish("sensors/slow", b"one", qos=1)
        publisher.client.publish("sensors/slow", b"two", qos=1)
        one, two = await device.take(2)
        device.client.ack(one.mid, 1)  # "two" stays unacknowledged
        session = node_state(running.server.node).sessions[client_id]
        await eventually(lambda: len(session.inflight) == 1)
        await cut_and_wait(running, proxy, device, client_id)
        await published(publisher, "sensors/slow", b"three", qos=1)
        proxy.accepting = True
        assert (await get(device.connacks, 10)) == (True, 0)
        again, three = await device.take(2)
        assert (again.payload, again.dup, again.mid) == (b"two", True, two.mid)
        assert (three.payload, three.dup) == (b"three", False)
        device.client.ack(again.mid, 1)
        device.client.ack(three.mid, 1)
        session = node_state(running.server.node).sessions[client_id]
        await eventually(lambda: not session.inflight)
    finally:
        device.stop()
        publisher.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_history_too_short_is_counted_and_logged(
    setup: tuple[Running, SegmentingProxy, int], version: int, caplog: pytest.LogCaptureFixture
) -> None:
    running, proxy, tcp_port = setup
    client_id = f"tiny-{version}"
    device = Device(version, client_id)
    publisher = Paho(version, "tcp")
    assert (await publisher.connect(tcp_port, username="pub", password=token("pub"))) == 0
    try:
        await device.connect(proxy.port, "dev")
        await device.subscribe("tiny/x")
        publisher.client.publish("tiny/x", b"0", qos=1)
        assert (await device.take(1))[0].payload == b"0"
        session = node_state(running.server.node).sessions[client_id]
        await eventually(lambda: not session.inflight)
        await cut_and_wait(running, proxy, device, client_id)
        for i in range(1, 8):
            await published(publisher, "tiny/x", str(i).encode(), qos=1)
        with caplog.at_level(logging.WARNING, logger="trunkline.mqtt"):
            proxy.accepting = True
            assert (await get(device.connacks, 10)) == (True, 0)
            got = [m.payload for m in await device.take(3)]
        assert got == [b"5", b"6", b"7"]  # what history (size 3) still holds, in order
        assert nothing_in(device.messages)
        protocol = "mqtt5" if version == V5 else "mqtt3.1.1"
        assert running.server.node.metrics.protocol_dropped.get(protocol, "history_gap") == 4
        assert any("missed 4 publications of tiny:x" in r.getMessage() for r in caplog.records)
    finally:
        device.stop()
        publisher.stop()


async def test_clean_start_discards_and_expiry_removes_the_session(
    setup: tuple[Running, SegmentingProxy, int],
) -> None:
    running, _, tcp_port = setup
    state = node_state(running.server.node)
    device = Device(V5, "short")
    assert await device.connect(tcp_port, "dev", expiry=1) is False
    await device.subscribe("sensors/short")
    device.stop()
    await eventually(lambda: "short" in state.stored)
    await eventually(lambda: "short" not in state.stored, timeout=5)  # expired after 1 s
    again = Device(V5, "short")
    assert await again.connect(tcp_port, "dev") is False
    again.stop()
    # MQTT 3.1.1 clean session 1 after a persistent one: the old session is discarded
    old = Device(V311, "old")
    assert await old.connect(tcp_port, "dev") is False
    await old.subscribe("sensors/old")
    old.stop()
    await eventually(lambda: "old" in state.stored)
    clean = Paho(V311, "tcp", client_id="old")
    assert (await clean.connect(tcp_port, username="dev", password=token("dev"))) == 0
    assert "old" not in state.stored
    clean.stop()


async def test_a_saved_session_belongs_to_its_user(setup: tuple[Running, SegmentingProxy, int]) -> None:
    running, _, tcp_port = setup
    device = Device(V5, "mine")
    await device.connect(tcp_port, "dev")
    device.stop()
    await eventually(lambda: "mine" in node_state(running.server.node).stored)
    thief = Device(V5, "mine")
    thief.client.username_pw_set("other", token("other"))
    await asyncio.to_thread(thief.client.connect, "127.0.0.1", tcp_port, clean_start=False)
    thief.client.loop_start()
    _, rc = await get(thief.connacks)
    assert rc == 0x85  # client identifier not valid
    thief.client.loop_stop()


async def test_takeover_moves_the_live_session(setup: tuple[Running, SegmentingProxy, int]) -> None:
    _, _, tcp_port = setup
    publisher = Paho(V5, "tcp")
    assert (await publisher.connect(tcp_port, username="pub", password=token("pub"))) == 0
    first = Device(V5, "twin")
    second = Device(V5, "twin")
    try:
        assert await first.connect(tcp_port, "dev") is False
        await first.subscribe("sensors/twin")
        first.client.reconnect_delay_set(60, 60)  # the old client stays away once taken over
        assert await second.connect(tcp_port, "dev") is True  # the subscription came along
        assert (await get(first.lost)) == 0x8E  # session taken over
        await published(publisher, "sensors/twin", b"to the new one")
        assert [m.payload for m in await second.take(1)] == [b"to the new one"]
        assert nothing_in(first.messages)
    finally:
        first.client.loop_stop()
        second.stop()
        publisher.stop()


async def test_only_what_came_while_subscribed_is_replayed(setup: tuple[Running, SegmentingProxy, int]) -> None:
    running, proxy, tcp_port = setup
    device = Device(V5, "picky")
    publisher = Paho(V5, "tcp")
    assert (await publisher.connect(tcp_port, username="pub", password=token("pub"))) == 0
    try:
        await device.connect(proxy.port, "dev")
        await device.subscribe("sensors/u")
        await published(publisher, "sensors/u", b"0")
        assert [m.payload for m in await device.take(1)] == [b"0"]
        done: queue.Queue[Any] = queue.Queue()
        device.client.on_unsubscribe = lambda *args: done.put(True)
        device.client.unsubscribe("sensors/u")
        await get(done)
        await published(publisher, "sensors/u", b"not subscribed")
        await device.subscribe("sensors/u")
        session = node_state(running.server.node).sessions["picky"]
        await eventually(lambda: not session.inflight)
        await cut_and_wait(running, proxy, device, "picky")
        await published(publisher, "sensors/u", b"while away")
        proxy.accepting = True
        assert (await get(device.connacks, 10)) == (True, 0)
        assert [m.payload for m in await device.take(1)] == [b"while away"]
        assert nothing_in(device.messages)
    finally:
        device.stop()
        publisher.stop()


async def test_saved_sessions_are_bounded(start_server: Callable[..., Any]) -> None:
    config = {**CONFIG, "mqtt": {**CONFIG["mqtt"], "max_stored_sessions": 2}}
    running: Running = await start_server(config)
    port = running.server.mqtt_listeners[0].port
    state = node_state(running.server.node)
    for name in ("s1", "s2", "s3"):
        device = Device(V5, name)
        await device.connect(port, "dev")
        device.stop()
        await eventually(lambda name=name: name in state.stored)  # type: ignore[misc]
    assert list(state.stored) == ["s2", "s3"]  # the oldest made room
    assert running.server.node.metrics.protocol_dropped.get("mqtt5", "session_evicted") == 1


async def test_takeover_during_a_catch_up_keeps_every_subscription(start_server: Callable[..., Any]) -> None:
    from trunkline.mqtt.packets import MQTT_5, Connect, Disconnect
    from trunkline.mqtt.packets import Properties as MqttProperties

    from .test_qos2_shared_auth import Raw

    running: Running = await start_server(CONFIG)
    port = running.server.mqtt_listeners[0].port
    node = running.server.node
    state = node_state(node)
    device = Device(V5, "racer")
    publisher = Paho(V5, "tcp")
    assert (await publisher.connect(port, username="pub", password=token("pub"))) == 0
    try:
        await device.connect(port, "dev")
        await device.subscribe("sensors/one")
        await device.subscribe("sensors/two")
        device.stop()
        await eventually(lambda: "racer" in state.stored)
        await published(publisher, "sensors/one", b"1a")
        await published(publisher, "sensors/two", b"2a")
        # history reads wait at a gate: the first connection's catch-up is stuck in its first channel
        gate = asyncio.Event()
        history = node.broker.history
        reads: list[str] = []

        async def gated(channel: str, query: Any) -> Any:
            reads.append(channel)
            await gate.wait()
            return await history(channel, query)

        node.broker.history = gated  # type: ignore[method-assign]
        connect = Connect(
            MQTT_5,
            "racer",
            False,
            30,
            "dev",
            token("dev").encode(),
            properties=MqttProperties(session_expiry_interval=300),
        )
        first = await Raw.open(port)
        assert (await first.connect(connect)).session_present is True
        await eventually(lambda: reads)
        again = Device(V5, "racer")
        connecting = asyncio.ensure_future(again.connect(port, "dev"))
        packet = await first.next()
        assert isinstance(packet, Disconnect) and packet.reason_code == 0x8E
        first.close()
        gate.set()
        assert await connecting is True
        got = sorted(m.payload for m in await again.take(2))
        assert got == [b"1a", b"2a"]  # both subscriptions survived the takeover, each caught up once
        assert nothing_in(again.messages)
        again.stop()
    finally:
        publisher.stop()
