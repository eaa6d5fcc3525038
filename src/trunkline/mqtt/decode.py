"""Decoding of one MQTT packet body (everything after the fixed header), per version.

The fixed header (type, flags, remaining length) is read by
:class:`trunkline.mqtt.codec.Decoder`; :func:`decode_body` turns the body into a
packet or raises :class:`MalformedPacket` with the MQTT 5 reason code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from . import reasons
from .packets import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    MQTT_5,
    MQTT_311,
    NO_PROPERTIES,
    PINGREQ,
    PINGRESP,
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
    MalformedPacket,
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
from .properties import WILL, read_binary, read_properties, read_string

#: the fixed-header flags each packet type must carry (PUBLISH's flags are its own)
FIXED_FLAGS: Final = {t: 0 for t in range(1, 16)} | {PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2}
NAMES: Final = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}
_SHARE = "$share/"


def _malformed(message: str, packet_type: int) -> MalformedPacket:
    return MalformedPacket(reasons.MALFORMED_PACKET, message, packet_type)


def _protocol(message: str, packet_type: int) -> MalformedPacket:
    return MalformedPacket(reasons.PROTOCOL_ERROR, message, packet_type)


def _packet_id(body: bytes, pos: int, end: int, packet_type: int) -> int:
    if pos + 2 > end:
        raise _malformed(f"{NAMES[packet_type]} ends before its packet identifier", packet_type)
    packet_id = (body[pos] << 8) | body[pos + 1]
    if not packet_id:
        raise _protocol(f"{NAMES[packet_type]} has packet identifier 0", packet_type)
    return packet_id


def _check_topic_name(topic: str, packet_type: int) -> None:
    if "+" in topic or "#" in topic:
        raise MalformedPacket(reasons.TOPIC_NAME_INVALID, "topic name contains a wildcard", packet_type)


def _check_response_topic(props: Properties, packet_type: int) -> None:
    topic = props.response_topic
    if topic is not None and (not topic or "+" in topic or "#" in topic):
        raise _protocol("response topic is empty or contains a wildcard", packet_type)


def _check_authentication(props: Properties, packet_type: int) -> None:
    if props.authentication_data is not None and props.authentication_method is None:
        raise _protocol("authentication data without an authentication method", packet_type)


def protocol_level(body: bytes) -> int | None:
    """The protocol level of a CONNECT body if it names MQTT 3.1.1 or 5 correctly, else None."""
    if len(body) >= 7 and body[:6] == b"\x00\x04MQTT" and body[6] in (MQTT_311, MQTT_5):
        return body[6]
    return None


def decode_connect(body: bytes, flags: int, version: int, from_client: bool) -> Connect:
    end = len(body)
    name, pos = read_string(body, 0, end, CONNECT)
    if pos >= end:
        raise _malformed("CONNECT ends before the protocol level", CONNECT)
    level = body[pos]
    if name != "MQTT" or level not in (MQTT_311, MQTT_5):
        what = "MQTT 3.1 (MQIsdp)" if name == "MQIsdp" else f"protocol {name!r} level {level}"
        raise MalformedPacket(reasons.UNSUPPORTED_PROTOCOL_VERSION, f"{what} is not supported", CONNECT)
    if pos + 4 > end:
        raise _malformed("CONNECT ends before its keep alive", CONNECT)
    cflags = body[pos + 1]
    keepalive = (body[pos + 2] << 8) | body[pos + 3]
    pos += 4
    if cflags & 0x01:
        raise _malformed("CONNECT reserved flag is set", CONNECT)
    clean = bool(cflags & 0x02)
    has_will = bool(cflags & 0x04)
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    has_password = bool(cflags & 0x40)
    has_username = bool(cflags & 0x80)
    if will_qos == 3:
        raise _malformed("CONNECT will QoS 3", CONNECT)
    if not has_will and (will_qos or will_retain):
        raise _malformed("CONNECT will QoS or retain set without a will", CONNECT)
    if level == MQTT_311 and has_password and not has_username:
        raise _malformed("MQTT 3.1.1 CONNECT with a password but no user name", CONNECT)
    props = NO_PROPERTIES
    if level == MQTT_5:
        props, pos = read_properties(body, pos, end, CONNECT)
        _check_authentication(props, CONNECT)
    client_id, pos = read_string(body, pos, end, CONNECT)
    if level == MQTT_311 and not client_id and not clean:
        raise MalformedPacket(
            reasons.CLIENT_IDENTIFIER_NOT_VALID, "an empty client identifier needs clean session", CONNECT
        )
    will = None
    if has_will:
        will_props = NO_PROPERTIES
        if level == MQTT_5:
            will_props, pos = read_properties(body, pos, end, WILL)
            _check_response_topic(will_props, CONNECT)
        will_topic, pos = read_string(body, pos, end, CONNECT)
        if not will_topic:
            raise MalformedPacket(reasons.TOPIC_NAME_INVALID, "will topic is empty", CONNECT)
        _check_topic_name(will_topic, CONNECT)
        will_payload, pos = read_binary(body, pos, end, CONNECT)
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = None
    if has_username:
        username, pos = read_string(body, pos, end, CONNECT)
    password = None
    if has_password:
        password, pos = read_binary(body, pos, end, CONNECT)
    if pos != end:
        raise _malformed("CONNECT has bytes after its payload", CONNECT)
    return Connect(level, client_id, clean, keepalive, username, password, will, props)


def decode_connack(body: bytes, flags: int, version: int, from_client: bool) -> ConnAck:
    end = len(body)
    if end < 2:
        raise _malformed("CONNACK shorter than 2 bytes", CONNACK)
    ack_flags, code = body[0], body[1]
    if ack_flags & 0xFE:
        raise _malformed("CONNACK reserved acknowledge flags are set", CONNACK)
    if version == MQTT_311:
        if end != 2:
            raise _malformed("MQTT 3.1.1 CONNACK longer than 2 bytes", CONNACK)
        if code not in reasons.V311_CONNACK_CODES:
            raise _malformed(f"CONNACK return code {code} is reserved", CONNACK)
        return ConnAck(bool(ack_flags), code)
    if code not in reasons.CONNACK_CODES:
        raise _malformed(f"CONNACK reason code 0x{code:02X} is not valid", CONNACK)
    props, pos = read_properties(body, 2, end, CONNACK)
    _check_authentication(props, CONNACK)
    if pos != end:
        raise _malformed("CONNACK has bytes after its properties", CONNACK)
    return ConnAck(bool(ack_flags), code, props)


def _bad_topic(topic: str) -> MalformedPacket:
    if "\x00" in topic:
        return _malformed("PUBLISH topic contains U+0000", PUBLISH)
    return MalformedPacket(reasons.TOPIC_NAME_INVALID, "topic name contains a wildcard", PUBLISH)


def publish_at(data: bytes, pos: int, end: int, flags: int, version: int, from_client: bool) -> Publish:  # noqa: PLR0917
    """The PUBLISH whose body is ``data[pos:end]`` (the hot path: no body copy, checks inlined)."""
    if end - pos < 2:
        raise _malformed("PUBLISH ends before its topic", PUBLISH)
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise _malformed("PUBLISH topic runs past the end", PUBLISH)
    try:
        topic = data[pos + 2 : stop].decode()
    except UnicodeDecodeError:
        raise _malformed("PUBLISH topic is not valid UTF-8", PUBLISH) from None
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise _bad_topic(topic)
    qos = (flags >> 1) & 0x03
    if qos:
        if qos == 3:
            raise _malformed("PUBLISH with QoS 3", PUBLISH)
        if stop + 2 > end:
            raise _malformed("PUBLISH ends before its packet identifier", PUBLISH)
        packet_id: int | None = (data[stop] << 8) | data[stop + 1]
        if not packet_id:
            raise _protocol("PUBLISH has packet identifier 0", PUBLISH)
        pos = stop + 2
    else:
        if flags & 0x08:
            raise _malformed("PUBLISH with QoS 0 and DUP set", PUBLISH)
        packet_id = None
        pos = stop
    props = NO_PROPERTIES
    if version == MQTT_5:
        if pos < end and data[pos] == 0:
            pos += 1
        else:
            props, pos = read_properties(data, pos, end, PUBLISH)
            if from_client and props.subscription_identifiers:
                raise _protocol("PUBLISH from a client carries a subscription identifier", PUBLISH)
            _check_response_topic(props, PUBLISH)
        if not topic and props.topic_alias is None:
            raise _protocol("PUBLISH with an empty topic and no topic alias", PUBLISH)
    elif not topic:
        raise MalformedPacket(reasons.TOPIC_NAME_INVALID, "PUBLISH with an empty topic", PUBLISH)
    return Publish(topic, data[pos:end], qos, bool(flags & 0x01), bool(flags & 0x08), packet_id, props)


def decode_publish(body: bytes, flags: int, version: int, from_client: bool) -> Publish:
    return publish_at(body, 0, len(body), flags, version, from_client)


_Ack = PubAck | PubRec | PubRel | PubComp
_ACK_CLASSES: Final[dict[int, type[_Ack]]] = {
    PUBACK: PubAck,
    PUBREC: PubRec,
    PUBREL: PubRel,
    PUBCOMP: PubComp,
}
_ACK_CODES: Final = {
    PUBACK: reasons.PUBACK_CODES,
    PUBREC: reasons.PUBACK_CODES,
    PUBREL: reasons.PUBREL_CODES,
    PUBCOMP: reasons.PUBREL_CODES,
}


def _decode_ack(packet_type: int, body: bytes, version: int) -> _Ack:
    end = len(body)
    packet_id = _packet_id(body, 0, end, packet_type)
    cls = _ACK_CLASSES[packet_type]
    if end == 2:
        return cls(packet_id)
    if version == MQTT_311:
        raise _malformed(f"MQTT 3.1.1 {NAMES[packet_type]} longer than 2 bytes", packet_type)
    code = body[2]
    if code not in _ACK_CODES[packet_type]:
        raise _malformed(f"{NAMES[packet_type]} reason code 0x{code:02X} is not valid", packet_type)
    props = NO_PROPERTIES
    if end > 3:
        props, pos = read_properties(body, 3, end, packet_type)
        if pos != end:
            raise _malformed(f"{NAMES[packet_type]} has bytes after its properties", packet_type)
    return cls(packet_id, code, props)


def decode_puback(body: bytes, flags: int, version: int, from_client: bool) -> Packet:
    return _decode_ack(PUBACK, body, version)


def decode_pubrec(body: bytes, flags: int, version: int, from_client: bool) -> Packet:
    return _decode_ack(PUBREC, body, version)


def decode_pubrel(body: bytes, flags: int, version: int, from_client: bool) -> Packet:
    return _decode_ack(PUBREL, body, version)


def decode_pubcomp(body: bytes, flags: int, version: int, from_client: bool) -> Packet:
    return _decode_ack(PUBCOMP, body, version)


def _head(packet_type: int, body: bytes, version: int) -> tuple[int, Properties, int]:
    """Packet identifier and (MQTT 5) properties: (packet id, properties, position after)."""
    end = len(body)
    packet_id = _packet_id(body, 0, end, packet_type)
    if version == MQTT_5:
        props, pos = read_properties(body, 2, end, packet_type)
        return packet_id, props, pos
    return packet_id, NO_PROPERTIES, 2


def decode_subscribe(body: bytes, flags: int, version: int, from_client: bool) -> Subscribe:
    packet_id, props, pos = _head(SUBSCRIBE, body, version)
    if len(props.subscription_identifiers) > 1:
        raise _protocol("SUBSCRIBE with more than one subscription identifier", SUBSCRIBE)
    end = len(body)
    subs: list[Subscription] = []
    while pos < end:
        topic_filter, pos = read_string(body, pos, end, SUBSCRIBE)
        if pos >= end:
            raise _malformed("SUBSCRIBE ends before the subscription options", SUBSCRIBE)
        options = body[pos]
        pos += 1
        qos = options & 0x03
        if qos == 3:
            raise _malformed("SUBSCRIBE with QoS 3", SUBSCRIBE)
        if version == MQTT_311:
            if options & 0xFC:
                raise _malformed("MQTT 3.1.1 SUBSCRIBE reserved option bits are set", SUBSCRIBE)
            subs.append(Subscription(topic_filter, qos))
            continue
        if options & 0xC0:
            raise _malformed("SUBSCRIBE reserved option bits are set", SUBSCRIBE)
        retain_handling = (options >> 4) & 0x03
        if retain_handling == 3:
            raise _protocol("SUBSCRIBE with retain handling 3", SUBSCRIBE)
        no_local = bool(options & 0x04)
        if no_local and topic_filter.startswith(_SHARE):
            raise _protocol("no local on a shared subscription", SUBSCRIBE)
        subs.append(Subscription(topic_filter, qos, no_local, bool(options & 0x08), retain_handling))
    if not subs:
        raise _protocol("SUBSCRIBE without a topic filter", SUBSCRIBE)
    return Subscribe(packet_id, tuple(subs), props)


def decode_suback(body: bytes, flags: int, version: int, from_client: bool) -> SubAck:
    packet_id, props, pos = _head(SUBACK, body, version)
    codes = tuple(body[pos:])
    if not codes:
        raise _protocol("SUBACK without a return code", SUBACK)
    valid = reasons.SUBACK_CODES if version == MQTT_5 else frozenset({0, 1, 2, 0x80})
    for code in codes:
        if code not in valid:
            raise _malformed(f"SUBACK return code 0x{code:02X} is not valid", SUBACK)
    return SubAck(packet_id, codes, props)


def decode_unsubscribe(body: bytes, flags: int, version: int, from_client: bool) -> Unsubscribe:
    packet_id, props, pos = _head(UNSUBSCRIBE, body, version)
    end = len(body)
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = read_string(body, pos, end, UNSUBSCRIBE)
        filters.append(topic_filter)
    if not filters:
        raise _protocol("UNSUBSCRIBE without a topic filter", UNSUBSCRIBE)
    return Unsubscribe(packet_id, tuple(filters), props)


def decode_unsuback(body: bytes, flags: int, version: int, from_client: bool) -> UnsubAck:
    if version == MQTT_311:
        packet_id = _packet_id(body, 0, len(body), UNSUBACK)
        if len(body) != 2:
            raise _malformed("MQTT 3.1.1 UNSUBACK longer than 2 bytes", UNSUBACK)
        return UnsubAck(packet_id)
    packet_id, props, pos = _head(UNSUBACK, body, version)
    codes = tuple(body[pos:])
    if not codes:
        raise _protocol("UNSUBACK without a reason code", UNSUBACK)
    for code in codes:
        if code not in reasons.UNSUBACK_CODES:
            raise _malformed(f"UNSUBACK reason code 0x{code:02X} is not valid", UNSUBACK)
    return UnsubAck(packet_id, codes, props)


def _empty(packet_type: int, body: bytes) -> None:
    if body:
        raise _malformed(f"{NAMES[packet_type]} must have no body", packet_type)


def decode_pingreq(body: bytes, flags: int, version: int, from_client: bool) -> PingReq:
    _empty(PINGREQ, body)
    return PingReq()


def decode_pingresp(body: bytes, flags: int, version: int, from_client: bool) -> PingResp:
    _empty(PINGRESP, body)
    return PingResp()


def _code_and_properties(packet_type: int, body: bytes, valid: frozenset[int]) -> tuple[int, Properties]:
    """MQTT 5 DISCONNECT / AUTH: an optional reason code, then optional properties."""
    end = len(body)
    if not end:
        return 0, NO_PROPERTIES
    code = body[0]
    if code not in valid:
        raise _malformed(f"{NAMES[packet_type]} reason code 0x{code:02X} is not valid", packet_type)
    if end == 1:
        return code, NO_PROPERTIES
    props, pos = read_properties(body, 1, end, packet_type)
    if pos != end:
        raise _malformed(f"{NAMES[packet_type]} has bytes after its properties", packet_type)
    return code, props


def decode_disconnect(body: bytes, flags: int, version: int, from_client: bool) -> Disconnect:
    if version == MQTT_311:
        _empty(DISCONNECT, body)
        return Disconnect()
    code, props = _code_and_properties(DISCONNECT, body, reasons.DISCONNECT_CODES)
    return Disconnect(code, props)


def decode_auth(body: bytes, flags: int, version: int, from_client: bool) -> Auth:
    if version == MQTT_311:
        raise _malformed("packet type 15 is reserved in MQTT 3.1.1", AUTH)
    code, props = _code_and_properties(AUTH, body, reasons.AUTH_CODES)
    _check_authentication(props, AUTH)
    return Auth(code, props)


BodyDecoder = Callable[[bytes, int, int, bool], Packet]

#: packet type -> decoder of its body: (body, fixed-header flags, version, sent by a client?)
DECODERS: Final[dict[int, BodyDecoder]] = {
    CONNECT: decode_connect,
    CONNACK: decode_connack,
    PUBLISH: decode_publish,
    PUBACK: decode_puback,
    PUBREC: decode_pubrec,
    PUBREL: decode_pubrel,
    PUBCOMP: decode_pubcomp,
    SUBSCRIBE: decode_subscribe,
    SUBACK: decode_suback,
    UNSUBSCRIBE: decode_unsubscribe,
    UNSUBACK: decode_unsuback,
    PINGREQ: decode_pingreq,
    PINGRESP: decode_pingresp,
    DISCONNECT: decode_disconnect,
    AUTH: decode_auth,
}
#: what a client may send after CONNECT, and what a server may send, per version
FROM_CLIENT: Final = {
    MQTT_311: frozenset({PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT}),
    MQTT_5: frozenset({PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH}),
}
FROM_SERVER: Final = {
    MQTT_311: frozenset({CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP}),
    MQTT_5: frozenset(
        {CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP, DISCONNECT, AUTH}
    ),
}
