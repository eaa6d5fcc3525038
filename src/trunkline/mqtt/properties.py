"""MQTT 5 properties (MQTT 5.0 §2.2.2): the table, and their wire form in both directions.

A property is a variable byte integer identifier followed by a value of the type
the identifier fixes. Each identifier is allowed in certain packet types only (an
identifier not allowed there is a malformed packet); each may appear once, except
user properties and (in PUBLISH) subscription identifiers.
"""

from __future__ import annotations

from typing import Any, Final

from . import reasons
from .packets import (
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
    MalformedPacket,
    Properties,
)

#: the "packet type" of the properties of a will in CONNECT (type 0 is reserved, so free)
WILL: Final = 0

# value kinds
BOOL: Final = 0  # one byte, 0 or 1, as bool
BIT: Final = 1  # one byte, 0 or 1, as int
U16: Final = 2
U32: Final = 3
VARINT: Final = 4
UTF8: Final = 5
BINARY: Final = 6
PAIR: Final = 7

_ACKS = (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK)

#: identifier -> (field of Properties, kind, packet types that allow it)
TABLE: Final[dict[int, tuple[str, int, frozenset[int]]]] = {
    0x01: ("payload_format_indicator", BIT, frozenset({PUBLISH, WILL})),
    0x02: ("message_expiry_interval", U32, frozenset({PUBLISH, WILL})),
    0x03: ("content_type", UTF8, frozenset({PUBLISH, WILL})),
    0x08: ("response_topic", UTF8, frozenset({PUBLISH, WILL})),
    0x09: ("correlation_data", BINARY, frozenset({PUBLISH, WILL})),
    0x0B: ("subscription_identifiers", VARINT, frozenset({PUBLISH, SUBSCRIBE})),
    0x11: ("session_expiry_interval", U32, frozenset({CONNECT, CONNACK, DISCONNECT})),
    0x12: ("assigned_client_identifier", UTF8, frozenset({CONNACK})),
    0x13: ("server_keep_alive", U16, frozenset({CONNACK})),
    0x15: ("authentication_method", UTF8, frozenset({CONNECT, CONNACK, AUTH})),
    0x16: ("authentication_data", BINARY, frozenset({CONNECT, CONNACK, AUTH})),
    0x17: ("request_problem_information", BOOL, frozenset({CONNECT})),
    0x18: ("will_delay_interval", U32, frozenset({WILL})),
    0x19: ("request_response_information", BOOL, frozenset({CONNECT})),
    0x1A: ("response_information", UTF8, frozenset({CONNACK})),
    0x1C: ("server_reference", UTF8, frozenset({CONNACK, DISCONNECT})),
    0x1F: ("reason_string", UTF8, frozenset({CONNACK, DISCONNECT, AUTH, *_ACKS})),
    0x21: ("receive_maximum", U16, frozenset({CONNECT, CONNACK})),
    0x22: ("topic_alias_maximum", U16, frozenset({CONNECT, CONNACK})),
    0x23: ("topic_alias", U16, frozenset({PUBLISH})),
    0x24: ("maximum_qos", BIT, frozenset({CONNACK})),
    0x25: ("retain_available", BOOL, frozenset({CONNACK})),
    0x26: ("user_properties", PAIR, frozenset({CONNECT, CONNACK, PUBLISH, WILL, SUBSCRIBE, UNSUBSCRIBE, *_ACKS})),
    0x27: ("maximum_packet_size", U32, frozenset({CONNECT, CONNACK})),
    0x28: ("wildcard_subscription_available", BOOL, frozenset({CONNACK})),
    0x29: ("subscription_identifier_available", BOOL, frozenset({CONNACK})),
    0x2A: ("shared_subscription_available", BOOL, frozenset({CONNACK})),
}
for _extra in (DISCONNECT, AUTH):  # user properties are allowed in every packet that has properties
    _name, _kind, _allowed = TABLE[0x26]
    TABLE[0x26] = (_name, _kind, _allowed | {_extra})

#: (identifier, field, kind, allowed) in identifier order, for encoding
_ORDER: Final = tuple((pid, name, kind, allowed) for pid, (name, kind, allowed) in sorted(TABLE.items()))
_REPEATABLE: Final = frozenset({0x0B, 0x26})
#: properties whose value 0 is a protocol error, and the reason code to use
_NONZERO: Final[dict[int, int]] = {
    0x0B: reasons.PROTOCOL_ERROR,
    0x21: reasons.PROTOCOL_ERROR,
    0x23: reasons.TOPIC_ALIAS_INVALID,
    0x27: reasons.PROTOCOL_ERROR,
}
MAX_VARINT: Final = 268_435_455


def _malformed(message: str, packet_type: int) -> MalformedPacket:
    return MalformedPacket(reasons.MALFORMED_PACKET, message, packet_type)


def read_varint(data: bytes, pos: int, end: int, packet_type: int) -> tuple[int, int]:
    """A variable byte integer at ``pos``: (value, position after it); at most 4 bytes, minimal."""
    value = 0
    shift = 0
    for i in range(4):
        if pos >= end:
            raise _malformed("variable byte integer runs past the end", packet_type)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i:
                raise _malformed("variable byte integer is not minimally encoded", packet_type)
            return value, pos
        shift += 7
    raise _malformed("variable byte integer longer than 4 bytes", packet_type)


def read_string(data: bytes, pos: int, end: int, packet_type: int) -> tuple[str, int]:
    """A UTF-8 string (two-byte length prefix): valid UTF-8, no surrogates, no U+0000."""
    if pos + 2 > end:
        raise _malformed("string length runs past the end", packet_type)
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise _malformed("string runs past the end", packet_type)
    try:
        text = data[pos + 2 : stop].decode()
    except UnicodeDecodeError:
        raise _malformed("string is not valid UTF-8", packet_type) from None
    if "\x00" in text:
        raise _malformed("string contains U+0000", packet_type)
    return text, stop


def read_binary(data: bytes, pos: int, end: int, packet_type: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise _malformed("binary data length runs past the end", packet_type)
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise _malformed("binary data runs past the end", packet_type)
    return data[pos + 2 : stop], stop


def read_properties(data: bytes, pos: int, end: int, packet_type: int) -> tuple[Properties, int]:
    """The property length and properties at ``pos``: (properties, position after them)."""
    length, pos = read_varint(data, pos, end, packet_type)
    if not length:
        return NO_PROPERTIES, pos
    stop = pos + length
    if stop > end:
        raise _malformed("properties run past the end of the packet", packet_type)
    fields: dict[str, Any] = {}
    seen: set[int] = set()
    while pos < stop:
        ident = data[pos]
        pos += 1
        entry = TABLE.get(ident)
        if entry is None or packet_type not in entry[2]:
            raise _malformed(f"property 0x{ident:02X} is not valid in this packet", packet_type)
        name, kind, _ = entry
        if ident in seen and ident not in _REPEATABLE:
            raise MalformedPacket(reasons.PROTOCOL_ERROR, f"property {name} appears twice", packet_type)
        seen.add(ident)
        value: Any
        if kind <= BIT:
            if pos >= stop:
                raise _malformed(f"property {name} runs past the end", packet_type)
            value = data[pos]
            pos += 1
            if value > 1:
                raise MalformedPacket(reasons.PROTOCOL_ERROR, f"property {name} must be 0 or 1", packet_type)
            if kind == BOOL:
                value = bool(value)
        elif kind == U16:
            if pos + 2 > stop:
                raise _malformed(f"property {name} runs past the end", packet_type)
            value = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif kind == U32:
            if pos + 4 > stop:
                raise _malformed(f"property {name} runs past the end", packet_type)
            value = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
        elif kind == VARINT:
            value, pos = read_varint(data, pos, stop, packet_type)
        elif kind == UTF8:
            value, pos = read_string(data, pos, stop, packet_type)
        elif kind == BINARY:
            value, pos = read_binary(data, pos, stop, packet_type)
        else:
            key, pos = read_string(data, pos, stop, packet_type)
            text, pos = read_string(data, pos, stop, packet_type)
            value = (key, text)
        if value == 0 and ident in _NONZERO and kind > BIT:
            raise MalformedPacket(_NONZERO[ident], f"property {name} must not be 0", packet_type)
        if ident in _REPEATABLE:
            fields.setdefault(name, []).append(value)
        else:
            fields[name] = value
    if pos != stop:
        raise _malformed("a property runs past the property length", packet_type)
    for name in ("subscription_identifiers", "user_properties"):
        if name in fields:
            fields[name] = tuple(fields[name])
    return Properties(**fields), pos


def write_varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def write_binary(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT binary data is at most 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _write_value(ident: int, name: str, kind: int, value: Any) -> bytes:
    head = bytes((ident,))
    if kind <= BIT:
        if value not in (0, 1):
            raise ValueError(f"property {name} must be 0 or 1")
        return head + bytes((int(value),))
    if kind in (U16, U32):
        size = 2 if kind == U16 else 4
        if not 0 <= value < 1 << (8 * size) or (value == 0 and ident in _NONZERO):
            raise ValueError(f"property {name} out of range: {value}")
        return head + int(value).to_bytes(size, "big")
    if kind == VARINT:
        if not 1 <= value <= MAX_VARINT:
            raise ValueError(f"property {name} out of range: {value}")
        return head + write_varint(value)
    if kind == UTF8:
        return head + write_string(value)
    if kind == BINARY:
        return head + write_binary(value)
    key, text = value
    return head + write_string(key) + write_string(text)


def write_properties(props: Properties, packet_type: int) -> bytes:
    """The property length and properties; a property not allowed in ``packet_type`` is a ValueError."""
    if props is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for ident, name, kind, allowed in _ORDER:
        value = getattr(props, name)
        if value is None or (ident in _REPEATABLE and not value):
            continue
        if packet_type not in allowed:
            raise ValueError(f"property {name} is not allowed in packet type {packet_type}")
        if ident in _REPEATABLE:
            parts.extend(_write_value(ident, name, kind, item) for item in value)
        else:
            parts.append(_write_value(ident, name, kind, value))
    body = b"".join(parts)
    return write_varint(len(body)) + body
