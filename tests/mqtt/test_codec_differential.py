"""Differential tests of the MQTT codec against independent implementations.

* ``mqtt5`` (a Rust MQTT 5 codec): every generated MQTT 5 packet encoded by us
  is read by ``mqtt5.read`` as the same packet, and the same packet written by
  ``mqtt5`` decodes with ours to the same packet. The comparison is made on
  ``mqtt5`` objects, which fill in the spec's defaults for absent properties.
* ``paho-mqtt`` (a client): a real paho ``Client`` connects over a TCP socket on
  127.0.0.1 to a small server made of our codec, for 3.1.1 and 5, and runs the
  whole packet repertoire (CONNECT with will and credentials, SUBSCRIBE with
  options, PUBLISH QoS 0/1/2 both ways with properties, UNSUBSCRIBE, PINGREQ,
  DISCONNECT); its packets decode with ours and ours are accepted by paho.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import mqtt5
import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.mqtt.test_codec_hypothesis import SETTINGS, packets, valid_filter
from trunkline.mqtt import reasons
from trunkline.mqtt.codec import Decoder, MalformedPacket, decode_packet, encode
from trunkline.mqtt.packets import (
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
    UnsubAck,
    Unsubscribe,
    Will,
)

# ------------------------------------------------------------------ mqtt5


def _will(will: Will | None) -> mqtt5.Will | None:
    if will is None:
        return None
    p = will.properties
    return mqtt5.Will(
        will.topic,
        payload=will.payload,
        qos=mqtt5.QoS(will.qos),
        retain=will.retain,
        payload_format_indicator=p.payload_format_indicator or 0,
        message_expiry_interval=p.message_expiry_interval,
        content_type=p.content_type,
        response_topic=p.response_topic,
        correlation_data=p.correlation_data,
        will_delay_interval=p.will_delay_interval or 0,
        user_properties=list(p.user_properties),
    )


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def to_mqtt5(packet: Packet) -> mqtt5.Packet:
    """The same MQTT 5 packet as an ``mqtt5`` object."""
    p = packet.properties if hasattr(packet, "properties") else Properties()
    users = list(p.user_properties)
    if isinstance(packet, Connect):
        return mqtt5.ConnectPacket(
            packet.client_id,
            username=packet.username,
            password=packet.password,
            clean_start=packet.clean_start,
            will=_will(packet.will),
            keep_alive=packet.keepalive,
            session_expiry_interval=p.session_expiry_interval or 0,
            authentication_method=p.authentication_method,
            authentication_data=p.authentication_data,
            request_problem_info=_default(p.request_problem_information, True),
            request_response_info=_default(p.request_response_information, False),
            receive_max=_default(p.receive_maximum, 65535),
            topic_alias_max=p.topic_alias_maximum or 0,
            max_packet_size=p.maximum_packet_size,
            user_properties=users,
        )
    if isinstance(packet, ConnAck):
        return mqtt5.ConnAckPacket(
            session_present=packet.session_present,
            reason_code=mqtt5.ConnAckReasonCode(packet.reason_code),
            session_expiry_interval=p.session_expiry_interval,
            assigned_client_id=p.assigned_client_identifier,
            server_keep_alive=p.server_keep_alive,
            authentication_method=p.authentication_method,
            authentication_data=p.authentication_data,
            response_info=p.response_information,
            server_reference=p.server_reference,
            reason_str=p.reason_string,
            receive_max=_default(p.receive_maximum, 65535),
            topic_alias_max=p.topic_alias_maximum or 0,
            max_qos=mqtt5.QoS(_default(p.maximum_qos, 2)),
            retain_available=_default(p.retain_available, True),
            max_packet_size=p.maximum_packet_size,
            wildcard_subscription_available=_default(p.wildcard_subscription_available, True),
            subscription_id_available=_default(p.subscription_identifier_available, True),
            shared_subscription_available=_default(p.shared_subscription_available, True),
            user_properties=users,
        )
    if isinstance(packet, Publish):
        return mqtt5.PublishPacket(
            packet.topic,
            packet.payload,
            qos=mqtt5.QoS(packet.qos),
            retain=packet.retain,
            packet_id=packet.packet_id,
            duplicate=packet.dup,
            payload_format_indicator=p.payload_format_indicator or 0,
            message_expiry_interval=p.message_expiry_interval,
            content_type=p.content_type,
            response_topic=p.response_topic,
            correlation_data=p.correlation_data,
            subscription_ids=list(p.subscription_identifiers),
            topic_alias=p.topic_alias,
            user_properties=users,
        )
    acks: dict[type, tuple[Any, Any]] = {
        PubAck: (mqtt5.PubAckPacket, mqtt5.PubAckReasonCode),
        PubRec: (mqtt5.PubRecPacket, mqtt5.PubRecReasonCode),
        PubRel: (mqtt5.PubRelPacket, mqtt5.PubRelReasonCode),
        PubComp: (mqtt5.PubCompPacket, mqtt5.PubCompReasonCode),
    }
    if isinstance(packet, PubAck | PubRec | PubRel | PubComp):
        cls, codes = acks[type(packet)]
        return cls(  # type: ignore[no-any-return]
            packet.packet_id, reason_code=codes(packet.reason_code), reason_str=p.reason_string, user_properties=users
        )
    if isinstance(packet, Subscribe):
        filters = [
            mqtt5.TopicFilter(
                s.filter,
                max_qos=mqtt5.QoS(s.qos),
                no_local=s.no_local,
                retain_as_published=s.retain_as_published,
                retain_handling=mqtt5.RetainHandling(s.retain_handling),
            )
            for s in packet.subscriptions
        ]
        ids = p.subscription_identifiers
        return mqtt5.SubscribePacket(
            packet.packet_id, filters, subscription_id=ids[0] if ids else None, user_properties=users
        )
    if isinstance(packet, SubAck):
        return mqtt5.SubAckPacket(
            packet.packet_id,
            [mqtt5.SubAckReasonCode(c) for c in packet.reason_codes],
            reason_str=p.reason_string,
            user_properties=users,
        )
    if isinstance(packet, Unsubscribe):
        return mqtt5.UnsubscribePacket(packet.packet_id, list(packet.filters), user_properties=users)
    if isinstance(packet, UnsubAck):
        return mqtt5.UnsubAckPacket(
            packet.packet_id,
            [mqtt5.UnsubAckReasonCode(c) for c in packet.reason_codes],
            reason_str=p.reason_string,
            user_properties=users,
        )
    if isinstance(packet, PingReq):
        return mqtt5.PingReqPacket()
    if isinstance(packet, PingResp):
        return mqtt5.PingRespPacket()
    if isinstance(packet, Disconnect):
        return mqtt5.DisconnectPacket(
            reason_code=mqtt5.DisconnectReasonCode(packet.reason_code),
            session_expiry_interval=p.session_expiry_interval,
            server_reference=p.server_reference,
            reason_str=p.reason_string,
            user_properties=users,
        )
    assert isinstance(packet, Auth)
    return mqtt5.AuthPacket(
        reason_code=mqtt5.AuthReasonCode(packet.reason_code),
        authentication_method=p.authentication_method,
        authentication_data=p.authentication_data,
        reason_str=p.reason_string,
        user_properties=users,
    )


def _mqtt5_comparable(packet: Packet) -> bool:
    """mqtt5 has no field for reason strings / user properties of UNSUBSCRIBE ... ; skip what it cannot hold."""
    return not (isinstance(packet, Unsubscribe) and packet.properties.reason_string is not None)


@SETTINGS
@given(packets(5, filters=valid_filter))
def test_ours_read_by_mqtt5(packet: Packet) -> None:
    wire = encode(packet, 5)
    theirs, size = mqtt5.read(memoryview(wire))
    assert size == len(wire)
    assert theirs == to_mqtt5(packet)


@SETTINGS
@given(packets(5, filters=valid_filter))
def test_mqtt5_written_read_by_ours(packet: Packet) -> None:
    wire = to_mqtt5(packet).write()
    ours = decode_packet(wire, 5)
    assert to_mqtt5(ours) == to_mqtt5(packet)


@SETTINGS
@given(st.lists(packets(5, from_client=True, filters=valid_filter), max_size=8), st.integers(1, 7))
def test_mqtt5_stream_in_pieces(sent: list[Packet], piece: int) -> None:
    connect = mqtt5.ConnectPacket("dev", clean_start=True, keep_alive=30).write()
    stream = connect + b"".join(to_mqtt5(p).write() for p in sent)
    decoder = Decoder(1 << 16)
    got: list[Packet] = []
    for start in range(0, len(stream), piece):
        got += decoder.feed(stream[start : start + piece])
    assert decoder.version == 5
    assert [to_mqtt5(p) for p in got[1:]] == [to_mqtt5(p) for p in sent]


# ------------------------------------------------------------------ paho-mqtt over a real socket


def _paho_props(packet_type: int, **values: Any) -> PahoProperties:
    props = PahoProperties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


class CodecServer:
    """One accepted TCP connection whose bytes go through our Decoder; we answer with our encoder."""

    def __init__(self, client: paho.Client, listener: socket.socket, version: int) -> None:
        self.client = client
        self.version = version
        listener.settimeout(5)
        self.conn, _ = listener.accept()
        self.conn.settimeout(0.02)
        self.decoder = Decoder(1 << 16)
        self.pending: list[Packet] = []

    def read(self) -> Packet:
        """The next packet the client sends (driving paho's loop meanwhile), within 5 seconds."""
        deadline = time.monotonic() + 5
        while not self.pending:
            assert time.monotonic() < deadline, "no packet from paho within 5 s"
            self.client.loop(timeout=0.01)
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                continue
            assert data, "paho closed the connection"
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    def send(self, packet: Packet) -> None:
        self.conn.sendall(encode(packet, self.version))

    def until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 5
        while not done():
            assert time.monotonic() < deadline, "paho did not get there within 5 s"
            self.client.loop(timeout=0.01)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


@pytest.mark.parametrize("version", [4, 5])
def test_paho_client_against_our_codec(listener: socket.socket, version: int) -> None:
    v5 = version == 5
    seen: dict[str, list[Any]] = {"connect": [], "subscribe": [], "publish": [], "message": [], "unsubscribe": []}
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id="dev-1",
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        **({} if v5 else {"clean_session": False}),
    )
    client.on_connect = lambda c, u, flags, rc, props: seen["connect"].append((rc, props))
    client.on_subscribe = lambda c, u, mid, rcs, props: seen["subscribe"].append((mid, rcs))
    client.on_publish = lambda c, u, mid, rc, props: seen["publish"].append(mid)
    client.on_message = lambda c, u, msg: seen["message"].append(msg)
    client.on_unsubscribe = lambda c, u, mid, rcs, props: seen["unsubscribe"].append((mid, rcs))
    client.username_pw_set("alice", "jwt.token")
    will_props = (
        _paho_props(PacketTypes.WILLMESSAGE, WillDelayInterval=10, ContentType="text/plain", UserProperty=[("k", "v")])
        if v5
        else None
    )
    client.will_set("dev/1/status", b"offline", qos=1, retain=True, properties=will_props)
    port = listener.getsockname()[1]
    if v5:
        connect_props = _paho_props(PacketTypes.CONNECT, SessionExpiryInterval=300, ReceiveMaximum=20)
        client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=connect_props)
    else:
        client.connect("127.0.0.1", port, keepalive=30)
    server = CodecServer(client, listener, version)
    try:
        # CONNECT / CONNACK
        will = Will(
            "dev/1/status",
            b"offline",
            1,
            True,
            Properties(will_delay_interval=10, content_type="text/plain", user_properties=(("k", "v"),))
            if v5
            else Properties(),
        )
        props = Properties(session_expiry_interval=300, receive_maximum=20) if v5 else Properties()
        assert server.read() == Connect(version, "dev-1", False, 30, "alice", b"jwt.token", will, props)
        assert server.decoder.version == version
        server.send(ConnAck(False, 0, Properties(topic_alias_maximum=10, server_keep_alive=20)))
        server.until(lambda: bool(seen["connect"]))
        assert seen["connect"][0][0] == 0
        if v5:
            assert seen["connect"][0][1].TopicAliasMaximum == 10
            assert seen["connect"][0][1].ServerKeepAlive == 20

        # SUBSCRIBE / SUBACK
        if v5:
            options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True, retainHandling=1)
            sub_props = _paho_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7)
            _, mid = client.subscribe([("a/+", options), ("b/#", SubscribeOptions(qos=2))], properties=sub_props)
            expected_subs = (Subscription("a/+", 1, True, True, 1), Subscription("b/#", 2))
            expected_props = Properties(subscription_identifiers=(7,))
        else:
            _, mid = client.subscribe([("a/+", 1), ("b/#", 2)])
            expected_subs = (Subscription("a/+", 1), Subscription("b/#", 2))
            expected_props = Properties()
        assert mid is not None
        assert server.read() == Subscribe(mid, expected_subs, expected_props)
        server.send(SubAck(mid, (1, reasons.NOT_AUTHORIZED)))
        server.until(lambda: bool(seen["subscribe"]))
        assert seen["subscribe"][0][0] == mid
        assert [int(getattr(rc, "value", rc)) for rc in seen["subscribe"][0][1]] == [1, 0x87 if v5 else 0x80]

        # PUBLISH QoS 0, QoS 1 with properties, QoS 2
        client.publish("a/x", b"zero", qos=0)
        assert server.read() == Publish("a/x", b"zero")
        pub_props = (
            _paho_props(
                PacketTypes.PUBLISH,
                PayloadFormatIndicator=1,
                MessageExpiryInterval=60,
                ContentType="application/json",
                ResponseTopic="reply/1",
                CorrelationData=b"c1",
                UserProperty=[("a", "1"), ("a", "2")],
            )
            if v5
            else None
        )
        info = client.publish("a/y", b'{"t":1}', qos=1, retain=True, properties=pub_props)
        expected = (
            Properties(
                payload_format_indicator=1,
                message_expiry_interval=60,
                content_type="application/json",
                response_topic="reply/1",
                correlation_data=b"c1",
                user_properties=(("a", "1"), ("a", "2")),
            )
            if v5
            else Properties()
        )
        assert server.read() == Publish("a/y", b'{"t":1}', 1, True, False, info.mid, expected)
        server.send(PubAck(info.mid))
        server.until(lambda: info.mid in seen["publish"])
        info = client.publish("a/z", b"two", qos=2)
        assert server.read() == Publish("a/z", b"two", 2, packet_id=info.mid)
        server.send(PubRec(info.mid))
        assert server.read() == PubRel(info.mid)
        server.send(PubComp(info.mid))
        server.until(lambda: info.mid in seen["publish"])

        # PUBLISH to the client, QoS 1 and 2
        to_client = (
            Properties(subscription_identifiers=(7,), user_properties=(("from", "server"),)) if v5 else Properties()
        )
        server.send(Publish("a/b", b"down", 1, packet_id=1, properties=to_client))
        assert server.read() == PubAck(1)
        server.send(Publish("b/c/d", b"twice", 2, packet_id=2))
        assert server.read() == PubRec(2)
        server.send(PubRel(2))
        assert server.read() == PubComp(2)
        server.until(lambda: len(seen["message"]) == 2)
        first, second = seen["message"]
        assert (first.topic, first.payload, first.qos) == ("a/b", b"down", 1)
        assert (second.topic, second.payload, second.qos) == ("b/c/d", b"twice", 2)
        if v5:
            assert first.properties.SubscriptionIdentifier == [7]
            assert first.properties.UserProperty == [("from", "server")]

        # UNSUBSCRIBE / UNSUBACK, PINGREQ / PINGRESP
        _, mid = client.unsubscribe(["a/+", "b/#"])
        assert mid is not None
        assert server.read() == Unsubscribe(mid, ("a/+", "b/#"))
        server.send(UnsubAck(mid, (0, reasons.NO_SUBSCRIPTION_EXISTED)))
        server.until(lambda: bool(seen["unsubscribe"]))
        client._send_pingreq()  # paho's own PINGREQ builder (normally sent after keepalive seconds)
        assert server.read() == PingReq()
        server.send(PingResp())

        # DISCONNECT
        if v5:
            reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
            client.disconnect(
                reasoncode=reason, properties=_paho_props(PacketTypes.DISCONNECT, SessionExpiryInterval=0)
            )
            assert server.read() == Disconnect(
                reasons.DISCONNECT_WITH_WILL_MESSAGE, Properties(session_expiry_interval=0)
            )
        else:
            client.disconnect()
            assert server.read() == Disconnect()
        assert server.decoder.buffered == 0
    finally:
        server.conn.close()


def test_paho_server_disconnect_v5(listener: socket.socket) -> None:
    """paho reads our DISCONNECT with a reason code and a reason string."""
    disconnects: list[Any] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="d", protocol=paho.MQTTv5)
    client.on_disconnect = lambda c, u, flags, rc, props: disconnects.append((rc, props))
    client.connect("127.0.0.1", listener.getsockname()[1], keepalive=30)
    server = CodecServer(client, listener, 5)
    try:
        assert isinstance(server.read(), Connect)
        server.send(ConnAck(False, 0))
        server.send(Disconnect(reasons.SERVER_SHUTTING_DOWN, Properties(reason_string="maintenance")))
        server.until(lambda: bool(disconnects))
        reason, props = disconnects[0]
        assert reason == ReasonCode(PacketTypes.DISCONNECT, "Server shutting down")
        assert props.ReasonString == "maintenance"
    finally:
        server.conn.close()


def test_paho_mqtt31_is_refused_with_unsupported_version(listener: socket.socket) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="old", protocol=paho.MQTTv31)
    client.connect("127.0.0.1", listener.getsockname()[1], keepalive=30)
    server = CodecServer(client, listener, 4)
    try:
        with pytest.raises(MalformedPacket) as info:
            server.read()
        assert info.value.reason_code == reasons.UNSUPPORTED_PROTOCOL_VERSION
        assert server.decoder.version is None
        assert reasons.connack_v311(info.value.reason_code) == reasons.V311_UNACCEPTABLE_PROTOCOL_VERSION
    finally:
        server.conn.close()


# ------------------------------------------------------------------ paho's tables


def test_property_table_matches_paho() -> None:
    """Identifier, value type and allowed packets of every MQTT 5 property, against paho's table."""
    from trunkline.mqtt.properties import BINARY, BIT, BOOL, PAIR, TABLE, U16, U32, UTF8, VARINT, WILL

    paho_kind = {BOOL: 0, BIT: 0, U16: 1, U32: 2, VARINT: 3, BINARY: 4, UTF8: 5, PAIR: 6}  # index in paho's types
    theirs = PahoProperties(PacketTypes.PUBLISH).properties
    assert set(theirs) == set(TABLE)
    for ident, (name, kind, allowed) in TABLE.items():
        their_kind, their_packets = theirs[ident]
        assert paho_kind[kind] == their_kind, name
        assert {WILL if t == PacketTypes.WILLMESSAGE else t for t in their_packets} == set(allowed), name


def test_reason_code_tables_match_paho() -> None:
    """Which reason code is valid in which packet, against paho's ReasonCode table."""
    theirs: dict[int, set[int]] = {}
    for code, names in ReasonCode(PacketTypes.CONNACK).names.items():
        for packet_types in names.values():
            for packet_type in packet_types:
                theirs.setdefault(packet_type, set()).add(code)
    ours = {
        PacketTypes.CONNACK: reasons.CONNACK_CODES,
        PacketTypes.PUBACK: reasons.PUBACK_CODES,
        PacketTypes.PUBREC: reasons.PUBACK_CODES,
        PacketTypes.PUBREL: reasons.PUBREL_CODES,
        PacketTypes.PUBCOMP: reasons.PUBREL_CODES,
        PacketTypes.SUBACK: reasons.SUBACK_CODES,
        PacketTypes.UNSUBACK: reasons.UNSUBACK_CODES,
        PacketTypes.DISCONNECT: reasons.DISCONNECT_CODES,
        PacketTypes.AUTH: reasons.AUTH_CODES,
    }
    # MQTT 5.0 §3.2.2.2 lists 0x99 (payload format invalid: the will payload) for CONNACK; paho's table
    # leaves it out, mqtt5's ConnAckReasonCode has it
    theirs[PacketTypes.CONNACK].add(reasons.PAYLOAD_FORMAT_INVALID)
    assert int(mqtt5.ConnAckReasonCode.PAYLOAD_FORMAT_INVALID) == reasons.PAYLOAD_FORMAT_INVALID
    # and paho allows 0x8C (bad authentication method) in DISCONNECT, which §3.14.2.1 does not list (nor mqtt5)
    theirs[PacketTypes.DISCONNECT].discard(reasons.BAD_AUTHENTICATION_METHOD)
    for packet_type, codes in ours.items():
        assert set(codes) == theirs[packet_type], PacketTypes.Names[packet_type]
