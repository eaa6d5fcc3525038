"""Property tests of the MQTT codec: generated packets round-trip in both versions; garbage
(random bytes, mutated valid streams, any split) never raises anything but MalformedPacket,
never hangs, and the decoder never holds more than the packet-size limit.

The packet strategies are also used by ``test_codec_differential.py``.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trunkline.mqtt import reasons
from trunkline.mqtt.codec import Decoder, MalformedPacket, decode_packet, encode
from trunkline.mqtt.packets import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    NO_PROPERTIES,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
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
from trunkline.mqtt.properties import BINARY, BIT, BOOL, MAX_VARINT, PAIR, TABLE, U16, U32, UTF8, VARINT, WILL

# MQTT strings: no surrogates (not encodable as UTF-8), no U+0000
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
topic = text.filter(lambda t: t != "" and "+" not in t and "#" not in t)
binary = st.binary(max_size=24)
_level = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#/"), max_size=6)
any_filter = text.filter(bool)
#: topic filters with wildcards where MQTT allows them (the codec itself takes any string)
valid_filter = st.builds(
    lambda levels, hash_: "/".join(levels + ["#"] * hash_),
    st.lists(_level | st.just("+"), min_size=1, max_size=4),
    st.booleans(),
)
u16 = st.integers(0, 0xFFFF)
packet_id = st.integers(1, 0xFFFF)
qos = st.integers(0, 2)

_NONZERO = {0x0B, 0x21, 0x23, 0x27}


def _value(ident: int, kind: int) -> st.SearchStrategy[Any]:
    low = 1 if ident in _NONZERO else 0
    return {
        BOOL: st.booleans(),
        BIT: st.integers(0, 1),
        U16: st.integers(low, 0xFFFF),
        U32: st.integers(low, 2**32 - 1),
        VARINT: st.integers(1, MAX_VARINT),
        UTF8: text,
        BINARY: binary,
        PAIR: st.tuples(text, text),
    }[kind]


def properties(packet_type: int, *, subscription_ids: int = 4) -> st.SearchStrategy[Properties]:
    """Any properties allowed in ``packet_type`` (each present or absent)."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for ident, (name, kind, allowed) in TABLE.items():
        if packet_type not in allowed:
            continue
        if ident == 0x0B:
            fields[name] = st.lists(_value(ident, kind), max_size=subscription_ids).map(tuple)
        elif name == "response_topic":
            fields[name] = st.none() | topic
        elif kind == PAIR:
            fields[name] = st.lists(_value(ident, kind), max_size=3).map(tuple)
        else:
            fields[name] = st.none() | _value(ident, kind)
    return st.one_of(
        st.just(NO_PROPERTIES),
        st.fixed_dictionaries(fields)
        .filter(lambda kw: kw.get("authentication_method") is not None or kw.get("authentication_data") is None)
        .map(lambda kw: Properties(**kw)),
    )


def _props(version: int, packet_type: int, **kw: int) -> st.SearchStrategy[Properties]:
    return properties(packet_type, **kw) if version == 5 else st.just(NO_PROPERTIES)


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    clean = draw(st.booleans())
    client_id = draw(text if clean or version == 5 else text.filter(bool))
    username = draw(st.none() | text)
    password = draw(st.none() | binary) if username is not None or version == 5 else None
    will = draw(st.none() | st.builds(Will, topic, binary, qos, st.booleans(), _props(version, WILL)))
    return Connect(version, client_id, clean, draw(u16), username, password, will, draw(_props(version, CONNECT)))


@st.composite
def publishes(draw: st.DrawFn, version: int, from_client: bool = False) -> Publish:
    level = draw(qos)
    props = draw(_props(version, PUBLISH, subscription_ids=0 if from_client else 4))
    name = draw(topic | st.just("")) if props.topic_alias is not None else draw(topic)
    return Publish(
        name,
        draw(binary),
        level,
        draw(st.booleans()),
        draw(st.booleans()) if level else False,
        draw(packet_id) if level else None,
        props,
    )


def _ack(cls: Any, packet_type: int, codes: frozenset[int], version: int) -> st.SearchStrategy[Packet]:
    if version == 4:
        return st.builds(cls, packet_id)
    return st.builds(cls, packet_id, st.sampled_from(sorted(codes)), properties(packet_type))


@st.composite
def subscriptions(draw: st.DrawFn, version: int, filters: st.SearchStrategy[str]) -> Subscription:
    name = draw(filters)
    if version == 4:
        return Subscription(name, draw(qos))
    no_local = draw(st.booleans()) and not name.startswith("$share/")
    return Subscription(name, draw(qos), no_local, draw(st.booleans()), draw(st.integers(0, 2)))


def packets(
    version: int, *, from_client: bool | None = None, filters: st.SearchStrategy[str] = any_filter
) -> st.SearchStrategy[Packet]:
    """Any packet for ``version``; ``from_client`` limits it to one direction (CONNECT left out)."""
    v = version
    client: list[st.SearchStrategy[Any]] = [
        publishes(v, from_client=True),
        _ack(PubAck, PUBACK, reasons.PUBACK_CODES, v),
        _ack(PubRec, PUBREC, reasons.PUBACK_CODES, v),
        _ack(PubRel, PUBREL, reasons.PUBREL_CODES, v),
        _ack(PubComp, PUBCOMP, reasons.PUBREL_CODES, v),
        st.builds(
            Subscribe,
            packet_id,
            st.lists(subscriptions(v, filters), min_size=1, max_size=4).map(tuple),
            _props(v, SUBSCRIBE, subscription_ids=1),
        ),
        st.builds(Unsubscribe, packet_id, st.lists(filters, min_size=1, max_size=4).map(tuple), _props(v, UNSUBSCRIBE)),
        st.just(PingReq()),
    ]
    suback_codes = sorted(reasons.SUBACK_CODES) if v == 5 else [0, 1, 2, 0x80]
    server: list[st.SearchStrategy[Any]] = [
        st.builds(
            ConnAck,
            st.booleans(),
            st.sampled_from(sorted(reasons.CONNACK_CODES if v == 5 else reasons.V311_CONNACK_CODES)),
            _props(v, CONNACK),
        ),
        publishes(v),
        st.builds(
            SubAck,
            packet_id,
            st.lists(st.sampled_from(suback_codes), min_size=1, max_size=4).map(tuple),
            _props(v, SUBACK),
        ),
        st.builds(
            UnsubAck,
            packet_id,
            st.lists(st.sampled_from(sorted(reasons.UNSUBACK_CODES)), min_size=1, max_size=4).map(tuple)
            if v == 5
            else st.just(()),
            _props(v, UNSUBACK),
        ),
        st.just(PingResp()),
    ]
    if v == 5:
        disconnects = st.builds(Disconnect, st.sampled_from(sorted(reasons.DISCONNECT_CODES)), properties(DISCONNECT))
        auths = st.builds(Auth, st.sampled_from(sorted(reasons.AUTH_CODES)), properties(AUTH))
        client += [disconnects, auths]
        server += [disconnects, auths]
    else:
        client.append(st.just(Disconnect()))
    if from_client is True:
        return st.one_of(client)
    if from_client is False:
        return st.one_of(server)
    return st.one_of([connects(v), *client, *server])


versions = st.sampled_from([4, 5])
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ round trips


@SETTINGS
@given(st.data())
def test_round_trip(data: st.DataObject) -> None:
    version = data.draw(versions)
    packet = data.draw(packets(version))
    wire = encode(packet, version)
    assert decode_packet(wire, version) == packet


@SETTINGS
@given(st.data())
def test_stream_round_trip_at_any_split(data: st.DataObject) -> None:
    """A CONNECT and a run of client packets, cut into arbitrary pieces (empty ones too)."""
    version = data.draw(versions)
    connect = data.draw(connects(version))
    sent = [connect, *data.draw(st.lists(packets(version, from_client=True), max_size=8))]
    stream = b"".join(encode(p, version) for p in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = Decoder(len(stream) + 1)
    got: list[Packet] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(stream[start:cut])
        start = cut
    assert got == sent
    assert decoder.version == version
    assert decoder.buffered == 0


# ------------------------------------------------------------------ garbage


def _feed_all(decoder: Decoder, pieces: list[bytes], limit: int) -> list[Packet]:
    """Feed every piece; only MalformedPacket may come out, and the buffer stays within the limit."""
    got: list[Packet] = []
    for piece in pieces:
        try:
            got += decoder.feed(piece)
        except MalformedPacket as exc:
            assert 0x80 <= exc.reason_code <= 0xA2
            got += exc.packets
            break
        finally:
            assert decoder.buffered <= limit + 5
    return got


def _reencodes(packets_: list[Packet], version: int | None) -> None:
    """Whatever the decoder accepted, the encoder writes back to the same packet."""
    for packet in packets_:
        if isinstance(packet, Connect):
            version = packet.protocol_level
        assert version is not None
        assert decode_packet(encode(packet, version), version) == packet


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=8), st.integers(2, 80))
def test_random_bytes_as_the_first_packets(pieces: list[bytes], limit: int) -> None:
    decoder = Decoder(limit)
    _reencodes(_feed_all(decoder, pieces, limit), None)


@SETTINGS
@given(versions, st.lists(st.binary(max_size=64), max_size=8), st.integers(2, 80))
def test_random_bytes_after_connect(version: int, pieces: list[bytes], limit: int) -> None:
    decoder = Decoder(200)
    decoder.feed(encode(Connect(version, "x"), version))
    decoder.max_packet_size = limit  # the session may lower the limit once connected
    _reencodes(_feed_all(decoder, pieces, limit), version)


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[int, bytes]:
    version = draw(versions)
    sent = [draw(connects(version)), *draw(st.lists(packets(version, from_client=True), max_size=6))]
    stream = bytearray(b"".join(encode(p, version) for p in sent))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(len(stream) - 1, 0)))
        if action == "insert" or not stream:
            stream[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del stream[at : at + draw(st.integers(1, 4))]
        elif action == "flip":
            stream[at] ^= 1 << draw(st.integers(0, 7))
        else:
            stream[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
    return version, bytes(stream)


@SETTINGS
@given(mutated_streams(), st.lists(st.integers(0, 400), max_size=10), st.integers(8, 400))
def test_mutated_streams(mutated: tuple[int, bytes], cuts: list[int], limit: int) -> None:
    _, stream = mutated
    bounds = [0, *sorted(c for c in cuts if c <= len(stream)), len(stream)]
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    decoder = Decoder(limit)
    _reencodes(_feed_all(decoder, pieces, limit), None)


@SETTINGS
@given(versions, st.binary(max_size=80))
def test_decode_packet_of_garbage(version: int, data: bytes) -> None:
    try:
        packet = decode_packet(data, version)
    except MalformedPacket as exc:
        assert exc.reason_code >= 0x80
    else:
        _reencodes([packet], version)


@SETTINGS
@given(versions, st.integers(0, 268_435_455), st.integers(2, 1000))
def test_declared_size_beyond_the_limit_is_refused_at_once(version: int, remaining: int, limit: int) -> None:
    """Whatever size a header declares, the decoder never buffers more than the limit."""
    decoder = Decoder(2000)
    decoder.feed(encode(Connect(version, "x"), version))
    decoder.max_packet_size = limit
    header = bytes((0x30,)) + _varint(remaining)
    try:
        decoder.feed(header + b"\x00" * min(remaining, limit + 10))
    except MalformedPacket as exc:
        assert (len(header) + remaining > limit) == (exc.reason_code == reasons.PACKET_TOO_LARGE)
    else:
        assert len(header) + remaining <= limit
    assert decoder.buffered <= limit


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
