"""Encoding of every MQTT packet type for MQTT 3.1.1 (level 4) and 5.

For 3.1.1 what the version cannot express is left out (properties, reason codes of
acknowledgements and DISCONNECT, MQTT 5 subscription options); a CONNACK reason
code >= 0x80 becomes the nearest 3.1.1 return code and a SUBACK failure 0x80.
Fields out of range are a ValueError: the encoder is fed by our own code, so a bad
value is a bug, not input. Strings are not checked for U+0000 (our strings come
from decoded packets or configuration).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from . import reasons
from .packets import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    MQTT_5,
    MQTT_311,
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
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from .properties import MAX_VARINT, WILL, write_binary, write_properties, write_string, write_varint

_PINGREQ: Final = b"\xc0\x00"
_PINGRESP: Final = b"\xd0\x00"
_DISCONNECT_311: Final = b"\xe0\x00"


def _frame(first: int, body: bytes) -> bytes:
    size = len(body)
    if size > MAX_VARINT:
        raise ValueError(f"packet body of {size} bytes exceeds the MQTT maximum")
    if size < 128:
        return bytes((first, size)) + body
    return bytes((first,)) + write_varint(size) + body


def _packet_id(packet_id: int | None) -> bytes:
    if packet_id is None or not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier must be 1-65535, not {packet_id}")
    return packet_id.to_bytes(2, "big")


def _qos(qos: int) -> int:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
    return qos


#: topic -> its length-prefixed UTF-8 form; fan-out writes the same topics over and over (bounded: cleared when full)
_TOPICS: dict[str, bytes] = {}
_TOPICS_MAX: Final = 4096


def _topic(topic: str) -> bytes:
    raw = topic.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("topic longer than 65535 bytes")
    if len(_TOPICS) >= _TOPICS_MAX:
        _TOPICS.clear()
    prefixed = _TOPICS[topic] = len(raw).to_bytes(2, "big") + raw
    return prefixed


def encode_publish(p: Publish, version: int) -> bytes:
    qos = p.qos
    head = _TOPICS.get(p.topic) or _topic(p.topic)
    if qos:
        packet_id = p.packet_id
        if qos > 2 or qos < 0:
            raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
        if packet_id is None or not 0 < packet_id <= 0xFFFF:
            raise ValueError(f"QoS {qos} PUBLISH needs a packet identifier 1-65535, not {packet_id}")
        first = 0x30 | (qos << 1) | (p.dup << 3) | p.retain
        head += packet_id.to_bytes(2, "big")
    else:
        if p.dup or p.packet_id is not None:
            raise ValueError("a QoS 0 PUBLISH has neither DUP nor a packet identifier")
        first = 0x31 if p.retain else 0x30
    if version == MQTT_5:
        props = p.properties
        head += b"\x00" if props is NO_PROPERTIES else write_properties(props, PUBLISH)
    payload = p.payload
    size = len(head) + len(payload)
    if size < 0x80:
        return bytes((first, size)) + head + payload
    if size < 0x4000:
        return bytes((first, (size & 0x7F) | 0x80, size >> 7)) + head + payload
    if size > MAX_VARINT:
        raise ValueError(f"packet body of {size} bytes exceeds the MQTT maximum")
    return b"".join((bytes((first,)), write_varint(size), head, payload))


def encode_connect(p: Connect, version: int) -> bytes:
    if p.protocol_level != version:
        raise ValueError(f"CONNECT of protocol level {p.protocol_level} encoded as version {version}")
    if not 0 <= p.keepalive <= 0xFFFF:
        raise ValueError("keep alive must be 0-65535")
    flags = 0x02 if p.clean_start else 0
    parts = [b"\x00\x04MQTT", bytes((version,)), b"", p.keepalive.to_bytes(2, "big")]
    if version == MQTT_5:
        parts.append(write_properties(p.properties, CONNECT))
    parts.append(write_string(p.client_id))
    if p.will is not None:
        flags |= 0x04 | (_qos(p.will.qos) << 3) | (0x20 if p.will.retain else 0)
        if version == MQTT_5:
            parts.append(write_properties(p.will.properties, WILL))
        parts.append(write_string(p.will.topic))
        parts.append(write_binary(p.will.payload))
    if p.username is not None:
        flags |= 0x80
        parts.append(write_string(p.username))
    if p.password is not None:
        if version == MQTT_311 and p.username is None:
            raise ValueError("an MQTT 3.1.1 CONNECT cannot carry a password without a user name")
        flags |= 0x40
        parts.append(write_binary(p.password))
    parts[2] = bytes((flags,))
    return _frame(0x10, b"".join(parts))


def encode_connack(p: ConnAck, version: int) -> bytes:
    code = p.reason_code
    if version == MQTT_311:
        if code not in reasons.V311_CONNACK_CODES:
            code = reasons.connack_v311(code)
        return bytes((0x20, 2, 1 if p.session_present else 0, code))
    if code not in reasons.CONNACK_CODES:
        raise ValueError(f"0x{code:02X} is not a CONNACK reason code")
    return _frame(0x20, bytes((1 if p.session_present else 0, code)) + write_properties(p.properties, CONNACK))


_ACK_FIRST: Final = {PUBACK: 0x40, PUBREC: 0x50, PUBREL: 0x62, PUBCOMP: 0x70}


def _encode_ack(packet_type: int, packet_id: int, code: int, props: Any, version: int) -> bytes:
    ident = _packet_id(packet_id)
    first = _ACK_FIRST[packet_type]
    if version == MQTT_311 or (code == 0 and props is NO_PROPERTIES):
        return bytes((first, 2)) + ident
    if not 0 <= code <= 0xFF:
        raise ValueError(f"reason code out of range: {code}")
    if props is NO_PROPERTIES:
        return bytes((first, 3)) + ident + bytes((code,))
    return _frame(first, ident + bytes((code,)) + write_properties(props, packet_type))


def encode_puback(p: PubAck, version: int) -> bytes:
    return _encode_ack(PUBACK, p.packet_id, p.reason_code, p.properties, version)


def encode_pubrec(p: PubRec, version: int) -> bytes:
    return _encode_ack(PUBREC, p.packet_id, p.reason_code, p.properties, version)


def encode_pubrel(p: PubRel, version: int) -> bytes:
    return _encode_ack(PUBREL, p.packet_id, p.reason_code, p.properties, version)


def encode_pubcomp(p: PubComp, version: int) -> bytes:
    return _encode_ack(PUBCOMP, p.packet_id, p.reason_code, p.properties, version)


def encode_subscribe(p: Subscribe, version: int) -> bytes:
    if not p.subscriptions:
        raise ValueError("SUBSCRIBE needs at least one subscription")
    parts = [_packet_id(p.packet_id)]
    if version == MQTT_5:
        parts.append(write_properties(p.properties, SUBSCRIBE))
    for sub in p.subscriptions:
        options = _qos(sub.qos)
        if version == MQTT_5:
            if sub.retain_handling not in (0, 1, 2):
                raise ValueError(f"retain handling must be 0, 1 or 2, not {sub.retain_handling}")
            options |= (sub.no_local << 2) | (sub.retain_as_published << 3) | (sub.retain_handling << 4)
        parts.append(write_string(sub.filter))
        parts.append(bytes((options,)))
    return _frame(0x82, b"".join(parts))


def _codes(codes: tuple[int, ...], what: str) -> bytes:
    if not codes:
        raise ValueError(f"{what} needs at least one reason code")
    if any(not 0 <= code <= 0xFF for code in codes):
        raise ValueError(f"{what} reason code out of range")
    return bytes(codes)


def encode_suback(p: SubAck, version: int) -> bytes:
    ident = _packet_id(p.packet_id)
    if version == MQTT_311:
        return _frame(0x90, ident + _codes(tuple(reasons.suback_v311(c) for c in p.reason_codes), "SUBACK"))
    return _frame(0x90, ident + write_properties(p.properties, SUBACK) + _codes(p.reason_codes, "SUBACK"))


def encode_unsubscribe(p: Unsubscribe, version: int) -> bytes:
    if not p.filters:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    parts = [_packet_id(p.packet_id)]
    if version == MQTT_5:
        parts.append(write_properties(p.properties, UNSUBSCRIBE))
    parts.extend(write_string(f) for f in p.filters)
    return _frame(0xA2, b"".join(parts))


def encode_unsuback(p: UnsubAck, version: int) -> bytes:
    ident = _packet_id(p.packet_id)
    if version == MQTT_311:
        return b"\xb0\x02" + ident
    return _frame(0xB0, ident + write_properties(p.properties, UNSUBACK) + _codes(p.reason_codes, "UNSUBACK"))


def encode_pingreq(p: PingReq, version: int) -> bytes:
    return _PINGREQ


def encode_pingresp(p: PingResp, version: int) -> bytes:
    return _PINGRESP


def _code_and_properties(first: int, packet_type: int, code: int, props: Any) -> bytes:
    if not 0 <= code <= 0xFF:
        raise ValueError(f"reason code out of range: {code}")
    if props is NO_PROPERTIES:
        return bytes((first, 0)) if code == 0 else bytes((first, 1, code))
    return _frame(first, bytes((code,)) + write_properties(props, packet_type))


def encode_disconnect(p: Disconnect, version: int) -> bytes:
    if version == MQTT_311:
        return _DISCONNECT_311
    return _code_and_properties(0xE0, DISCONNECT, p.reason_code, p.properties)


def encode_auth(p: Auth, version: int) -> bytes:
    """Always with reason code and property length: the short forms are legal, but some peers refuse them."""
    if version != MQTT_5:
        raise ValueError("AUTH exists in MQTT 5 only")
    if not 0 <= p.reason_code <= 0xFF:
        raise ValueError(f"reason code out of range: {p.reason_code}")
    return _frame(0xF0, bytes((p.reason_code,)) + write_properties(p.properties, AUTH))


#: packet class -> its encoder
ENCODERS: Final[dict[type, Callable[[Any, int], bytes]]] = {
    Connect: encode_connect,
    ConnAck: encode_connack,
    Publish: encode_publish,
    PubAck: encode_puback,
    PubRec: encode_pubrec,
    PubRel: encode_pubrel,
    PubComp: encode_pubcomp,
    Subscribe: encode_subscribe,
    SubAck: encode_suback,
    Unsubscribe: encode_unsubscribe,
    UnsubAck: encode_unsuback,
    PingReq: encode_pingreq,
    PingResp: encode_pingresp,
    Disconnect: encode_disconnect,
    Auth: encode_auth,
}
