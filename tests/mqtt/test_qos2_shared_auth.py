"""Outbound QoS 2, shared subscriptions, MQTT 5 re-authentication and message expiry, over real sockets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.conftest import Running, eventually, token
from trunkline.mqtt.codec import Decoder, encode
from trunkline.mqtt.packets import (
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
)
from trunkline.mqtt.session import node_state

from .paho_helpers import V5, V311, Paho, get, nothing_in

MQTT = {
    "mqtt": {"websocket": {"enabled": True}, "tcp": {"enabled": True, "address": "127.0.0.1:0"}},
    "client": {"expired_close_delay": "0.2s"},
}


def tcp_port(running: Running) -> int:
    return running.server.mqtt_listeners[0].port


class Raw:
    """A hand-driven MQTT client on a TCP socket (our codec on the client side)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = Decoder(1 << 20, role="client", version=version)
        self.version = version
        self.pending: list[Packet] = []

    @classmethod
    async def open(cls, port: int, version: int = MQTT_5) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, version)

    def send(self, packet: Packet) -> None:
        self.writer.write(encode(packet, self.version))

    async def next(self, timeout: float = 5.0) -> Packet | None:
        """The next packet from the server; None when it closed the connection."""
        async with asyncio.timeout(timeout):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def connect(self, packet: Connect) -> ConnAck:
        self.send(packet)
        ack = await self.next()
        assert isinstance(ack, ConnAck)
        return ack

    def close(self) -> None:
        self.writer.transport.abort()


# ---------------------------------------------------------------------------------------- QoS 2 out


@pytest.mark.parametrize("version", [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")])
async def test_qos2_to_paho_completes_and_frees_the_packet_id(start_server: Callable[..., Any], version: int) -> None:
    running = await start_server(MQTT)
    sub = Paho(version, client_id=f"q2-{version}")
    assert (await sub.connect(running.port, username="s", password=token("s"))) == 0
    pub = Paho(V5, "tcp")
    assert (await pub.connect(tcp_port(running), username="p", password=token("p"))) == 0
    try:
        await sub.subscribe("nohistory/q2", 2)
        for i in range(5):
            pub.client.publish("nohistory/q2", f"once-{i}".encode(), qos=2)
        got = [await sub.next() for _ in range(5)]
        assert [(m.payload, m.qos) for m in got] == [(f"once-{i}".encode(), 2) for i in range(5)]
        session = node_state(running.server.node).sessions[f"q2-{version}"]
        await eventually(lambda: not session.inflight)  # PUBREC -> PUBREL -> PUBCOMP done for all five
        assert nothing_in(sub.messages)
    finally:
        sub.stop()
        pub.stop()


async def test_qos2_state_survives_a_reconnect_as_pubrel(start_server: Callable[..., Any]) -> None:
    running = await start_server(MQTT)
    port = tcp_port(running)
    connect = Connect(
        MQTT_5, "q2-raw", False, 30, "r", token("r").encode(), properties=Properties(session_expiry_interval=60)
    )
    raw = await Raw.open(port)
    assert (await raw.connect(connect)).session_present is False
    raw.send(Subscribe(1, (Subscription("nohistory/raw", 2),)))
    assert isinstance(await raw.next(), SubAck)
    pub = Paho(V5, "tcp")
    assert (await pub.connect(port, username="p", password=token("p"))) == 0
    pub.client.publish("nohistory/raw", b"exactly", qos=2)
    publish = await raw.next()
    assert isinstance(publish, Publish) and publish.qos == 2 and publish.packet_id is not None
    pid = publish.packet_id
    raw.send(PubRec(pid))
    rel = await raw.next()
    assert isinstance(rel, PubRel) and rel.packet_id == pid
    raw.close()  # no PUBCOMP: the server keeps the id as "released"
    state = node_state(running.server.node)
    await eventually(lambda: "q2-raw" in state.stored)
    again = await Raw.open(port)
    assert (await again.connect(connect)).session_present is True
    rel = await again.next()
    assert isinstance(rel, PubRel) and rel.packet_id == pid  # PUBREL again, not the message
    again.send(PubComp(pid))
    session = state.sessions["q2-raw"]
    await eventually(lambda: not session.inflight)
    again.send(PingReq())
    assert isinstance(await again.next(), PingResp)  # and nothing else came first
    again.close()
    pub.stop()


# ---------------------------------------------------------------------------------------- shared


async def test_shared_subscription_round_robin_and_handover(start_server: Callable[..., Any]) -> None:
    running = await start_server(MQTT)
    members = [Paho(V5, client_id="w1"), Paho(V5, client_id="w2"), Paho(V311, client_id="w3")]
    plain = Paho(V5)
    pub = Paho(V5, "tcp")
    for i, c in enumerate([*members, plain]):
        assert (await c.connect(running.port, username=f"u{i}", password=token(f"u{i}"))) == 0
    assert (await pub.connect(tcp_port(running), username="p", password=token("p"))) == 0
    try:
        for m in members:
            assert [int(getattr(g, "value", g)) for g in await m.subscribe("$share/workers/nohistory/jobs", 1)] == [1]
        await plain.subscribe("nohistory/jobs", 1)
        for i in range(9):
            pub.client.publish("nohistory/jobs", f"job-{i}".encode(), qos=1)
        everything = [(await plain.next()).payload for _ in range(9)]
        assert everything == [f"job-{i}".encode() for i in range(9)]
        shares = [[(await m.next()).payload for _ in range(3)] for m in members]  # three each, in turn
        assert sorted(p for share in shares for p in share) == sorted(everything)
        assert all(nothing_in(m.messages, 0.1) for m in members)
        assert shares[0] == [b"job-0", b"job-3", b"job-6"]
        # the member the group was registered under leaves: the others carry on
        members[0].stop()
        await eventually(lambda: "w1" not in node_state(running.server.node).sessions)
        for i in range(4):
            pub.client.publish("nohistory/jobs", f"later-{i}".encode(), qos=1)
        later = sorted(
            [(await members[1].next()).payload for _ in range(2)]
            + [(await members[2].next()).payload for _ in range(2)]
        )
        assert later == [f"later-{i}".encode() for i in range(4)]
    finally:
        for c in [*members[1:], plain, pub]:
            c.stop()
    await eventually(lambda: not node_state(running.server.node).shared)  # the group ended with its last member
    await eventually(lambda: not running.server.node.patterns)


async def test_shared_subscription_with_no_local_is_a_protocol_error(start_server: Callable[..., Any]) -> None:
    running = await start_server(MQTT)
    c = Paho(V5)
    assert (await c.connect(running.port, username="u", password=token("u"))) == 0
    c.client.subscribe("$share/g/nohistory/x", options=SubscribeOptions(qos=1, noLocal=True))
    assert int(getattr(await get(c.disconnected), "value", 0)) == 0x82
    c.client.loop_stop()


# ---------------------------------------------------------------------------------------- re-authentication


def jwt_connect(client_id: str, user: str, ttl: float) -> Connect:
    props = Properties(authentication_method="jwt", authentication_data=token(user, ttl=ttl).encode())
    return Connect(MQTT_5, client_id, True, 30, user, None, properties=props)


async def test_reauthentication_with_a_fresh_token_keeps_the_connection(start_server: Callable[..., Any]) -> None:
    running = await start_server(MQTT)
    raw = await Raw.open(tcp_port(running))
    ack = await raw.connect(jwt_connect("re1", "alice", 2))
    assert ack.reason_code == 0 and ack.properties.authentication_method == "jwt"
    fresh = Properties(authentication_method="jwt", authentication_data=token("alice", ttl=3600).encode())
    raw.send(Auth(0x19, fresh))
    answer = await raw.next()
    assert isinstance(answer, Auth) and answer.reason_code == 0
    session = node_state(running.server.node).sessions["re1"]
    await eventually(
        lambda: session.expire_at is not None and session.expire_at > running.server.node.clock.time() + 60
    )
    await asyncio.sleep(2.5)  # past the first token's exp: the connection must still be open
    raw.send(PingReq())
    assert isinstance(await raw.next(), PingResp)
    raw.close()


async def test_expired_token_without_reauthentication_disconnects_with_0xa0(
    start_server: Callable[..., Any],
) -> None:
    running = await start_server(MQTT)
    raw = await Raw.open(tcp_port(running))
    assert (await raw.connect(jwt_connect("re2", "bob", 1))).reason_code == 0
    packet = await raw.next(timeout=5)
    assert isinstance(packet, Disconnect) and packet.reason_code == 0xA0  # maximum connect time
    raw.close()


async def test_reauthentication_refusals(start_server: Callable[..., Any]) -> None:
    running = await start_server(MQTT)
    port = tcp_port(running)
    raw = await Raw.open(port)
    assert (await raw.connect(jwt_connect("re3", "carol", 3600))).reason_code == 0
    other = Properties(authentication_method="jwt", authentication_data=token("mallory").encode())
    raw.send(Auth(0x19, other))
    packet = await raw.next()
    assert isinstance(packet, Disconnect) and packet.reason_code == 0x87
    raw.close()
    # AUTH on a connection that did not use the method: protocol error
    plain = await Raw.open(port)
    connect = Connect(MQTT_5, "re4", True, 30, "dave", token("dave").encode())
    assert (await plain.connect(connect)).reason_code == 0
    plain.send(Auth(0x19, Properties(authentication_method="jwt", authentication_data=b"x")))
    packet = await plain.next()
    assert isinstance(packet, Disconnect) and packet.reason_code == 0x82
    plain.close()
    # an unknown method is refused in the CONNACK
    odd = await Raw.open(port)
    props = Properties(authentication_method="SCRAM-SHA-1", authentication_data=b"x")
    ack = await odd.connect(Connect(MQTT_5, "re5", True, 30, properties=props))
    assert ack.reason_code == 0x8C
    odd.close()


# ---------------------------------------------------------------------------------------- message expiry


async def test_queued_message_expires_and_left_time_is_sent(start_server: Callable[..., Any]) -> None:
    running = await start_server({**MQTT, "mqtt": {**MQTT["mqtt"], "max_inflight": 1}})
    port = tcp_port(running)
    raw = await Raw.open(port)
    assert (await raw.connect(Connect(MQTT_5, "slowpoke", True, 30, "s", token("s").encode()))).reason_code == 0
    raw.send(Subscribe(1, (Subscription("nohistory/exp", 1),)))
    assert isinstance(await raw.next(), SubAck)
    pub = Paho(V5, "tcp")
    assert (await pub.connect(port, username="p", password=token("p"))) == 0
    for payload, expiry in ((b"first", None), (b"short", 1), (b"long", 100)):
        props = PahoProperties(PacketTypes.PUBLISH)
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        pub.client.publish("nohistory/exp", payload, qos=1, properties=props)
    first = await raw.next()
    assert isinstance(first, Publish) and first.payload == b"first"
    session = node_state(running.server.node).sessions["slowpoke"]
    await eventually(lambda: len(session.queue) == 2)  # the window (1) is full: two wait
    await asyncio.sleep(2.1)  # "short" (1 s) expires while it waits; "long" loses 2 s
    assert first.packet_id is not None
    raw.send(PubAck(first.packet_id))
    nxt = await raw.next()
    assert isinstance(nxt, Publish) and nxt.payload == b"long"
    assert nxt.properties.message_expiry_interval == 98
    assert running.server.node.metrics.protocol_dropped.get("mqtt5", "expired") == 1
    raw.close()
    pub.stop()


async def test_shared_groups_are_per_node(start_server: Callable[..., Any], redis_url: str) -> None:
    engine = {"engine": {"type": "redis", "redis": {"address": redis_url, "prefix": f"share-{uuid.uuid4().hex[:8]}"}}}
    a: Running = await start_server({**MQTT, **engine})
    b: Running = await start_server({**MQTT, **engine})
    on_a, on_b = Paho(V5, client_id="wa"), Paho(V5, client_id="wb")
    assert (await on_a.connect(a.port, username="a", password=token("a"))) == 0
    assert (await on_b.connect(b.port, username="b", password=token("b"))) == 0
    pub = Paho(V5)
    assert (await pub.connect(a.port, username="p", password=token("p"))) == 0
    try:
        await on_a.subscribe("$share/g/nohistory/tasks", 1)
        await on_b.subscribe("$share/g/nohistory/tasks", 1)
        for i in range(3):
            pub.client.publish("nohistory/tasks", f"t{i}".encode(), qos=1)
        # each node delivers every message to its one member: one copy per node, not per cluster
        assert [(await on_a.next()).payload for _ in range(3)] == [b"t0", b"t1", b"t2"]
        assert [(await on_b.next()).payload for _ in range(3)] == [b"t0", b"t1", b"t2"]
    finally:
        for c in (on_a, on_b, pub):
            c.stop()
