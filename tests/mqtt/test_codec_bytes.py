"""Byte-literal tests of the MQTT codec: every packet type in 3.1.1 and 5, from the specs' layouts.

Each case is written out by hand from the OASIS MQTT 3.1.1 / 5.0 packet layouts;
it must encode to exactly these bytes, and these bytes must decode to the packet
(with :func:`decode_packet` and through a streaming :class:`Decoder` of the
receiving side). Then the errors: each malformed input gets its reason code.
"""

from __future__ import annotations

import pytest

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

V4, V5 = 4, 5
MQTT4 = "00 04 4d 51 54 54 04"  # protocol name "MQTT", level 4
MQTT5 = "00 04 4d 51 54 54 05"
CONNECT4 = bytes.fromhex(f"10 0f {MQTT4} 02 00 3c 00 03 61 62 63")  # client "abc", clean, keep alive 60
CONNECT5 = bytes.fromhex(f"10 10 {MQTT5} 02 00 3c 00 00 03 61 62 63")

# (version, sent by a client?, packet, bytes)
CASES: list[tuple[int, bool, Packet, str]] = [
    (V4, True, Connect(4, "abc", True, 60), f"10 0f {MQTT4} 02 00 3c 00 03 61 62 63"),
    (
        V4,
        True,
        Connect(4, "c", False, 10, "u", b"pw", Will("w", b"bye", 1, True)),
        f"10 1c {MQTT4} ec 00 0a 00 01 63 00 01 77 00 03 62 79 65 00 01 75 00 02 70 77",
    ),
    (
        V5,
        True,
        Connect(5, "abc", True, 60, properties=Properties(session_expiry_interval=120)),
        f"10 15 {MQTT5} 02 00 3c 05 11 00 00 00 78 00 03 61 62 63",
    ),
    (
        V5,
        True,
        Connect(5, "c", False, 0, "u", b"p", Will("w", b"x", properties=Properties(will_delay_interval=10))),
        f"10 20 {MQTT5} c4 00 00 00 00 01 63 05 18 00 00 00 0a 00 01 77 00 01 78 00 01 75 00 01 70",
    ),
    (V5, True, Connect(5, "", True, 0, None, b"tok"), f"10 12 {MQTT5} 42 00 00 00 00 00 00 03 74 6f 6b"),
    (V4, False, ConnAck(True, 0), "20 02 01 00"),
    (V4, False, ConnAck(False, reasons.V311_NOT_AUTHORIZED), "20 02 00 05"),
    (V5, False, ConnAck(False, 0), "20 03 00 00 00"),
    (
        V5,
        False,
        ConnAck(False, 0, Properties(server_keep_alive=60, topic_alias_maximum=10)),
        "20 09 00 00 06 13 00 3c 22 00 0a",
    ),
    (V5, False, ConnAck(False, reasons.BAD_USER_NAME_OR_PASSWORD), "20 03 00 86 00"),
    (V4, True, Publish("a/b", b"hello"), "30 0a 00 03 61 2f 62 68 65 6c 6c 6f"),
    (V4, True, Publish("a/b", b"hi", 1, True, True, 7), "3b 09 00 03 61 2f 62 00 07 68 69"),
    (V4, True, Publish("a/b", b""), "30 05 00 03 61 2f 62"),
    (V5, True, Publish("a/b", b"hello"), "30 0b 00 03 61 2f 62 00 68 65 6c 6c 6f"),
    (
        V5,
        True,
        Publish(
            "t",
            b"{}",
            2,
            packet_id=1,
            properties=Properties(
                payload_format_indicator=1,
                message_expiry_interval=60,
                content_type="text",
                topic_alias=5,
                user_properties=(("k", "v"),),
            ),
        ),
        "34 20 00 01 74 00 01 18 01 01 02 00 00 00 3c 03 00 04 74 65 78 74 23 00 05 26 00 01 6b 00 01 76 7b 7d",
    ),
    (
        V5,
        False,
        Publish("t", b"", 1, packet_id=2, properties=Properties(subscription_identifiers=(1, 200))),
        "32 0b 00 01 74 00 02 05 0b 01 0b c8 01",
    ),
    (V4, True, PubAck(7), "40 02 00 07"),
    (V5, True, PubAck(7), "40 02 00 07"),
    (V5, False, PubAck(7, reasons.NO_MATCHING_SUBSCRIBERS), "40 03 00 07 10"),
    (
        V5,
        False,
        PubAck(7, reasons.NOT_AUTHORIZED, Properties(reason_string="bad")),
        "40 0a 00 07 87 06 1f 00 03 62 61 64",
    ),
    (V4, True, PubRec(1), "50 02 00 01"),
    (V5, False, PubRec(1, reasons.QUOTA_EXCEEDED), "50 03 00 01 97"),
    (V4, True, PubRel(1), "62 02 00 01"),
    (V5, True, PubRel(1, reasons.PACKET_IDENTIFIER_NOT_FOUND), "62 03 00 01 92"),
    (V4, False, PubComp(1), "70 02 00 01"),
    (V5, False, PubComp(65535), "70 02 ff ff"),
    (
        V4,
        True,
        Subscribe(10, (Subscription("a/+", 1), Subscription("#", 2))),
        "82 0c 00 0a 00 03 61 2f 2b 01 00 01 23 02",
    ),
    (
        V5,
        True,
        Subscribe(10, (Subscription("a/+", 1, True, True, 2),), Properties(subscription_identifiers=(5,))),
        "82 0b 00 0a 02 0b 05 00 03 61 2f 2b 2d",
    ),
    (V4, False, SubAck(10, (1, 0x80)), "90 04 00 0a 01 80"),
    (V5, False, SubAck(10, (1, reasons.NOT_AUTHORIZED)), "90 05 00 0a 00 01 87"),
    (V4, True, Unsubscribe(11, ("a/b",)), "a2 07 00 0b 00 03 61 2f 62"),
    (V5, True, Unsubscribe(11, ("a/b", "c")), "a2 0b 00 0b 00 00 03 61 2f 62 00 01 63"),
    (V4, False, UnsubAck(11), "b0 02 00 0b"),
    (V5, False, UnsubAck(11, (reasons.NO_SUBSCRIPTION_EXISTED,)), "b0 04 00 0b 00 11"),
    (V4, True, PingReq(), "c0 00"),
    (V5, True, PingReq(), "c0 00"),
    (V4, False, PingResp(), "d0 00"),
    (V5, False, PingResp(), "d0 00"),
    (V4, True, Disconnect(), "e0 00"),
    (V5, True, Disconnect(), "e0 00"),
    (V5, True, Disconnect(reasons.DISCONNECT_WITH_WILL_MESSAGE), "e0 01 04"),
    (
        V5,
        False,
        Disconnect(reasons.SERVER_SHUTTING_DOWN, Properties(reason_string="x")),
        "e0 06 8b 04 1f 00 01 78",
    ),
    (V5, True, Auth(), "f0 02 00 00"),  # the short forms f0 00 / f0 01 00 are decoded too
    (
        V5,
        True,
        Auth(reasons.CONTINUE_AUTHENTICATION, Properties(authentication_method="jwt", authentication_data=b"A")),
        "f0 0c 18 0a 15 00 03 6a 77 74 16 00 01 41",
    ),
]


def _ids(case: tuple[int, bool, Packet, str]) -> str:
    version, _, packet, _ = case
    return f"v{version}-{type(packet).__name__}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_encode_and_decode(case: tuple[int, bool, Packet, str]) -> None:
    version, _, packet, hexa = case
    wire = bytes.fromhex(hexa)
    assert encode(packet, version).hex(" ") == wire.hex(" ")
    assert decode_packet(wire, version) == packet


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_stream_decoder_of_the_receiving_side(case: tuple[int, bool, Packet, str]) -> None:
    version, from_client, packet, hexa = case
    wire = bytes.fromhex(hexa)
    if isinstance(packet, Connect):
        decoder = Decoder(1024)
        assert decoder.feed(wire) == [packet]
        assert decoder.version == version
    elif from_client:
        decoder = Decoder(1024)
        connect = CONNECT4 if version == V4 else CONNECT5
        assert decoder.feed(connect + wire + wire) == [decode_packet(connect, version), packet, packet]
    else:
        decoder = Decoder(1024, role="client", version=version)
        assert decoder.feed(wire) == [packet]
    assert decoder.buffered == 0


def test_decode_only_forms() -> None:
    """Forms a peer may send that our encoder writes shorter."""
    assert decode_packet(bytes.fromhex("40 04 00 07 00 00"), V5) == PubAck(7)  # reason code + empty properties
    assert decode_packet(bytes.fromhex("40 03 00 07 00"), V5) == PubAck(7)
    assert decode_packet(bytes.fromhex("e0 02 00 00"), V5) == Disconnect()
    assert decode_packet(bytes.fromhex("f0 01 00"), V5) == Auth()
    assert decode_packet(bytes.fromhex("f0 00"), V5) == Auth()
    # a two-byte remaining length
    long = Publish("t", b"x" * 200)
    wire = encode(long, V4)
    assert wire[:3] == bytes.fromhex("30 cb 01")  # 203 = 0x4b | 0x80, 0x01
    assert decode_packet(wire, V4) == long


def test_v311_leaves_out_what_it_cannot_express() -> None:
    props = Properties(reason_string="why", user_properties=(("a", "b"),))
    assert encode(PubAck(1, reasons.NO_MATCHING_SUBSCRIBERS, props), V4) == bytes.fromhex("40 02 00 01")
    assert encode(ConnAck(False, reasons.NOT_AUTHORIZED), V4) == bytes.fromhex("20 02 00 05")
    assert encode(ConnAck(False, reasons.BAD_USER_NAME_OR_PASSWORD), V4) == bytes.fromhex("20 02 00 04")
    assert encode(ConnAck(False, reasons.SERVER_BUSY), V4) == bytes.fromhex("20 02 00 03")
    assert encode(SubAck(3, (1, reasons.NOT_AUTHORIZED, 2)), V4) == bytes.fromhex("90 05 00 03 01 80 02")
    assert encode(UnsubAck(3, (0x11,)), V4) == bytes.fromhex("b0 02 00 03")
    assert encode(Disconnect(reasons.SERVER_SHUTTING_DOWN), V4) == bytes.fromhex("e0 00")
    assert encode(Subscribe(1, (Subscription("a", 1, True, True, 2),)), V4) == bytes.fromhex("82 06 00 01 00 01 61 01")
    with pytest.raises(ValueError, match="MQTT 5 only"):
        encode(Auth(), V4)


def test_connack_mapping() -> None:
    assert reasons.connack_v311(reasons.SUCCESS) == 0
    assert reasons.connack_v311(reasons.UNSUPPORTED_PROTOCOL_VERSION) == 1
    assert reasons.connack_v311(reasons.CLIENT_IDENTIFIER_NOT_VALID) == 2
    assert reasons.connack_v311(reasons.SERVER_UNAVAILABLE) == 3
    assert reasons.connack_v311(reasons.BAD_USER_NAME_OR_PASSWORD) == 4
    assert reasons.connack_v311(reasons.NOT_AUTHORIZED) == 5
    assert reasons.connack_v311(reasons.BANNED) == 5
    assert reasons.connack_v311(reasons.QUOTA_EXCEEDED) == 3
    assert reasons.suback_v311(reasons.TOPIC_FILTER_INVALID) == 0x80
    assert all(code in reasons.NAMES for code in reasons.DISCONNECT_CODES | reasons.CONNACK_CODES)


@pytest.mark.parametrize(
    ("bad_encode", "match"),
    [
        (lambda: encode(Publish("t", b"", 1), V4), "packet identifier"),
        (lambda: encode(Publish("t", b"", 3, packet_id=1), V4), "QoS"),
        (lambda: encode(Publish("t", b"", 0, dup=True), V4), "QoS 0"),
        (lambda: encode(PubAck(0), V5), "packet identifier"),
        (lambda: encode(Publish("t", b"", properties=Properties(session_expiry_interval=1)), V5), "not allowed"),
        (lambda: encode(Publish("t", b"", properties=Properties(topic_alias=0)), V5), "out of range"),
        (lambda: encode(Connect(5, "x"), V4), "protocol level"),
        (lambda: encode(Connect(4, "x", password=b"p"), V4), "password"),
        (lambda: encode(Subscribe(1, ()), V5), "at least one"),
        (lambda: encode(ConnAck(False, 0x05), V5), "CONNACK reason code"),
    ],
)
def test_encode_refuses_bad_fields(bad_encode: object, match: str) -> None:
    assert callable(bad_encode)
    with pytest.raises(ValueError, match=match):
        bad_encode()


# ------------------------------------------------------------------ malformed input

# (version, bytes after the CONNECT, reason code)
AFTER_CONNECT: list[tuple[int, str, int]] = [
    (V4, "30 ff ff ff ff 7f", reasons.MALFORMED_PACKET),  # remaining length of 5 bytes
    (V4, "30 80 00", reasons.MALFORMED_PACKET),  # remaining length not minimal
    (V4, "00 00", reasons.MALFORMED_PACKET),  # packet type 0
    (V4, "f0 00", reasons.MALFORMED_PACKET),  # AUTH does not exist in 3.1.1
    (V4, "60 02 00 01", reasons.MALFORMED_PACKET),  # PUBREL flags must be 0010
    (V4, "80 06 00 01 00 01 61 00", reasons.MALFORMED_PACKET),  # SUBSCRIBE flags must be 0010
    (V4, "41 02 00 01", reasons.MALFORMED_PACKET),  # PUBACK flags must be 0000
    (V4, "36 05 00 01 61 00 01", reasons.MALFORMED_PACKET),  # QoS 3
    (V4, "38 03 00 01 61", reasons.MALFORMED_PACKET),  # DUP on QoS 0
    (V4, "30 04 00 02 c3 28", reasons.MALFORMED_PACKET),  # invalid UTF-8
    (V4, "30 05 00 03 ed a0 80", reasons.MALFORMED_PACKET),  # a UTF-16 surrogate in UTF-8
    (V4, "30 05 00 03 61 00 62", reasons.MALFORMED_PACKET),  # U+0000
    (V4, "30 05 00 05 61 2f 62", reasons.MALFORMED_PACKET),  # topic runs past the packet
    (V4, "30 05 00 03 61 2f 2b", reasons.TOPIC_NAME_INVALID),  # wildcard in a topic name
    (V4, "30 02 00 00", reasons.TOPIC_NAME_INVALID),  # empty topic
    (V4, "32 05 00 01 61 00 00", reasons.PROTOCOL_ERROR),  # packet identifier 0
    (V4, "40 02 00 00", reasons.PROTOCOL_ERROR),
    (V4, "40 03 00 01 00", reasons.MALFORMED_PACKET),  # 3.1.1 PUBACK is 2 bytes
    (V4, "82 02 00 01", reasons.PROTOCOL_ERROR),  # SUBSCRIBE without filters
    (V4, "82 06 00 01 00 01 61 04", reasons.MALFORMED_PACKET),  # 3.1.1 options upper bits reserved
    (V4, "82 06 00 01 00 01 61 03", reasons.MALFORMED_PACKET),  # QoS 3
    (V4, "82 05 00 01 00 01 61", reasons.MALFORMED_PACKET),  # no options byte
    (V4, "a2 02 00 01", reasons.PROTOCOL_ERROR),  # UNSUBSCRIBE without filters
    (V4, "c0 01 00", reasons.MALFORMED_PACKET),  # PINGREQ with a body
    (V4, "e0 01 00", reasons.MALFORMED_PACKET),  # 3.1.1 DISCONNECT is empty
    (V4, "20 02 00 00", reasons.PROTOCOL_ERROR),  # CONNACK from a client
    (V4, "90 03 00 01 00", reasons.PROTOCOL_ERROR),  # SUBACK from a client
    (V4, "d0 00", reasons.PROTOCOL_ERROR),  # PINGRESP from a client
    (V4, CONNECT4.hex(), reasons.PROTOCOL_ERROR),  # a second CONNECT
    (V5, "30 04 00 01 61 05", reasons.MALFORMED_PACKET),  # property length past the end
    (V5, "30 03 00 01 61", reasons.MALFORMED_PACKET),  # no property length at all
    (V5, "30 09 00 01 61 05 11 00 00 00 01", reasons.MALFORMED_PACKET),  # session expiry in PUBLISH
    (V5, "30 0b 00 01 61 07 03 00 01 61 03 00 00", reasons.PROTOCOL_ERROR),  # content type twice
    (V5, "30 06 00 01 61 02 01 02", reasons.PROTOCOL_ERROR),  # payload format indicator 2
    (V5, "30 07 00 01 61 03 23 00 00", reasons.TOPIC_ALIAS_INVALID),  # topic alias 0
    (V5, "30 03 00 00 00", reasons.PROTOCOL_ERROR),  # empty topic without a topic alias
    (V5, "30 06 00 01 61 02 0b 01", reasons.PROTOCOL_ERROR),  # subscription identifier from a client
    (V5, "30 09 00 01 61 05 08 00 02 61 23", reasons.PROTOCOL_ERROR),  # response topic "a#"
    (V5, "30 05 00 01 61 01 7f", reasons.MALFORMED_PACKET),  # unknown property 0x7f
    (V5, "30 06 00 01 61 02 01 00 ff", reasons.MALFORMED_PACKET),  # property runs past property length
    (V5, "40 03 00 01 05", reasons.MALFORMED_PACKET),  # 0x05 is no PUBACK reason code
    (V5, "62 03 00 01 10", reasons.MALFORMED_PACKET),  # 0x10 is no PUBREL reason code
    (V5, "82 07 00 01 00 00 01 61 30", reasons.PROTOCOL_ERROR),  # retain handling 3
    (V5, "82 07 00 01 00 00 01 61 40", reasons.MALFORMED_PACKET),  # reserved option bits
    (V5, "82 03 00 01 00", reasons.PROTOCOL_ERROR),  # no filters
    (V5, "82 0a 00 01 04 0b 01 0b 02 00 01 61 00", reasons.PROTOCOL_ERROR),  # two subscription identifiers
    (V5, "82 07 00 01 02 0b 00 00 01 61 00", reasons.PROTOCOL_ERROR),  # subscription identifier 0
    (
        V5,
        "82 10 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 04",
        reasons.PROTOCOL_ERROR,
    ),  # no local on $share/g/a
    (V5, "e0 01 05", reasons.MALFORMED_PACKET),  # 0x05 is no DISCONNECT reason code
    (V5, "e0 02 00 05", reasons.MALFORMED_PACKET),  # properties past the end
    (V5, "f0 01 01", reasons.MALFORMED_PACKET),  # 0x01 is no AUTH reason code
    (V5, "f0 04 18 02 11 00", reasons.MALFORMED_PACKET),  # session expiry in AUTH
    (V5, "f0 06 18 04 16 00 01 41", reasons.PROTOCOL_ERROR),  # authentication data without a method
]


@pytest.mark.parametrize(("version", "hexa", "code"), AFTER_CONNECT)
def test_malformed_after_connect(version: int, hexa: str, code: int) -> None:
    decoder = Decoder(1024)
    connect = CONNECT4 if version == V4 else CONNECT5
    assert len(decoder.feed(connect)) == 1
    with pytest.raises(MalformedPacket) as info:
        decoder.feed(bytes.fromhex(hexa))
    assert info.value.reason_code == code, info.value.message
    with pytest.raises(MalformedPacket) as again:  # the decoder stays broken
        decoder.feed(b"\xc0\x00")
    assert again.value.reason_code == code
    assert decoder.buffered == 0


CONNECTS: list[tuple[str, int, int | None]] = [
    ("30 00", reasons.PROTOCOL_ERROR, None),  # PUBLISH before CONNECT
    ("c0 00", reasons.PROTOCOL_ERROR, None),
    ("11 00", reasons.MALFORMED_PACKET, None),  # CONNECT flags reserved
    # MQTT 3.1 "MQIsdp" level 3
    ("10 0f 00 06 4d 51 49 73 64 70 03 02 00 3c 00 01 61", reasons.UNSUPPORTED_PROTOCOL_VERSION, None),
    ("10 0d 00 04 4d 51 54 54 06 02 00 3c 00 01 61", reasons.UNSUPPORTED_PROTOCOL_VERSION, None),  # level 6
    ("10 0d 00 04 4d 51 54 54 03 02 00 3c 00 01 61", reasons.UNSUPPORTED_PROTOCOL_VERSION, None),  # level 3
    ("10 0d 00 04 4d 51 54 58 04 02 00 3c 00 01 61", reasons.UNSUPPORTED_PROTOCOL_VERSION, None),  # "MQTX"
    (f"10 0c {MQTT4} 00 00 3c 00 00", reasons.CLIENT_IDENTIFIER_NOT_VALID, V4),  # empty id without clean
    (f"10 0d {MQTT4} 03 00 3c 00 01 61", reasons.MALFORMED_PACKET, V4),  # reserved connect flag
    (f"10 0d {MQTT4} 1a 00 3c 00 01 61", reasons.MALFORMED_PACKET, V4),  # will QoS 3
    (f"10 0d {MQTT4} 22 00 3c 00 01 61", reasons.MALFORMED_PACKET, V4),  # will retain without a will
    (f"10 10 {MQTT4} 42 00 3c 00 01 61 00 01 70", reasons.MALFORMED_PACKET, V4),  # password without user
    (f"10 0d {MQTT4} 82 00 3c 00 01 61", reasons.MALFORMED_PACKET, V4),  # user name flag, no user name
    (f"10 0e {MQTT4} 02 00 3c 00 01 61 00", reasons.MALFORMED_PACKET, V4),  # trailing byte
    (f"10 12 {MQTT4} 06 00 3c 00 01 61 00 01 2b 00 00", reasons.TOPIC_NAME_INVALID, V4),  # will topic "+"
    (f"10 0e {MQTT5} 02 00 3c 01 27 00 01 61", reasons.MALFORMED_PACKET, V5),  # property past its length
    (f"10 12 {MQTT5} 02 00 3c 05 27 00 00 00 00 00 01 61", reasons.PROTOCOL_ERROR, V5),  # max packet size 0
    (f"10 10 {MQTT5} 02 00 3c 03 21 00 00 00 01 61", reasons.PROTOCOL_ERROR, V5),  # receive maximum 0
    (f"10 0f {MQTT5} 02 00 3c 02 17 02 00 01 61", reasons.PROTOCOL_ERROR, V5),  # request problem info 2
    (f"10 0f {MQTT5} 02 00 3c 02 23 00 00 01 61", reasons.MALFORMED_PACKET, V5),  # topic alias in CONNECT
]


@pytest.mark.parametrize(("hexa", "code", "version"), CONNECTS)
def test_malformed_connect(hexa: str, code: int, version: int | None) -> None:
    decoder = Decoder(1024)
    with pytest.raises(MalformedPacket) as info:
        decoder.feed(bytes.fromhex(hexa))
    assert info.value.reason_code == code, info.value.message
    # the version is known as soon as the protocol level is read, so a broken MQTT 5 CONNECT gets a 5 CONNACK
    assert decoder.version == version


def test_too_large_is_refused_from_the_fixed_header() -> None:
    decoder = Decoder(100)
    assert decoder.feed(CONNECT4) != []
    assert decoder.feed(b"\x30") == []
    assert decoder.feed(b"\x62") == []  # remaining 98 + 2 header bytes = 100: fits
    assert decoder.feed(bytes.fromhex("00 01 61") + b"x" * 95) == [Publish("a", b"x" * 95)]
    for header in ("30 63", "30 ff ff ff 7f", "82 80 01"):  # 101 bytes; the MQTT maximum; 130 bytes
        decoder = Decoder(100)
        decoder.feed(CONNECT4)
        with pytest.raises(MalformedPacket) as info:
            decoder.feed(bytes.fromhex(header))
        assert info.value.reason_code == reasons.PACKET_TOO_LARGE
        assert decoder.buffered == 0


def test_packets_before_the_bad_one_are_kept() -> None:
    decoder = Decoder(1024)
    good = encode(Publish("a", b"1"), V4)
    with pytest.raises(MalformedPacket) as info:
        decoder.feed(CONNECT4 + good + good + bytes.fromhex("40 02 00 00") + good)
    assert info.value.packets == [decode_packet(CONNECT4, V4), Publish("a", b"1"), Publish("a", b"1")]
    assert info.value.reason_code == reasons.PROTOCOL_ERROR


def test_stream_pieces() -> None:
    """Split at every offset, byte by byte, and with empty pieces in between."""
    stream = CONNECT5 + b"".join(bytes.fromhex(h) for v, c, _, h in CASES if v == V5 and c and not h.startswith("10"))
    expected = Decoder(4096).feed(stream)
    assert len(expected) > 10
    for cut in range(len(stream) + 1):
        decoder = Decoder(4096)
        got = decoder.feed(stream[:cut]) + decoder.feed(b"") + decoder.feed(stream[cut:])
        assert got == expected
        assert decoder.buffered == 0
    decoder = Decoder(4096)
    got = []
    for i in range(len(stream)):
        got += decoder.feed(memoryview(stream)[i : i + 1])
        got += decoder.feed(bytearray())
    assert got == expected


def test_client_role() -> None:
    decoder = Decoder(1024, role="client", version=V5)
    wire = encode(ConnAck(False, 0), V5) + encode(Publish("a", b"x", 1, packet_id=1), V5)
    assert decoder.feed(wire) == [ConnAck(False, 0), Publish("a", b"x", 1, packet_id=1)]
    with pytest.raises(MalformedPacket) as info:
        decoder.feed(encode(Subscribe(1, (Subscription("a"),)), V5))
    assert info.value.reason_code == reasons.PROTOCOL_ERROR
    with pytest.raises(ValueError, match="version"):
        Decoder(1024, role="client")


def test_long_packets_in_pieces() -> None:
    """Remaining lengths of 2, 3 and 4 bytes, through the buffer of a streaming decoder."""
    for size, header_len in ((200, 3), (20_000, 4), (2_100_000, 5)):
        packet = Publish("t/long", bytes(range(256)) * (size // 256) + b"x" * (size % 256), 1, packet_id=9)
        for version in (V4, V5):
            wire = encode(packet, version)
            assert wire[header_len - 1] < 0x80 <= wire[header_len - 2]
            decoder = Decoder(len(wire))
            decoder.feed(CONNECT4 if version == V4 else CONNECT5)
            got = []
            for start in range(0, len(wire), 65_536):
                got += decoder.feed(wire[start : start + 65_536])
                assert decoder.buffered <= len(wire)
            assert got == [packet]
    with pytest.raises(ValueError, match="65535"):
        encode(Publish("t" * 65_536, b""), V4)
