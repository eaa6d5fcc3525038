"""Sans-I/O MQTT 3.1.1 and 5 codec: a byte stream in arbitrary pieces <-> typed packets.

:class:`Decoder` takes the bytes of one connection as they arrive (a packet split
across pieces, several packets in one piece, empty pieces) and returns complete
packets. On the server side the first packet must be CONNECT, and its protocol
level (4 = 3.1.1, 5 = 5.0) fixes the version for the rest of the stream.
Malformed input raises :class:`MalformedPacket` with the MQTT 5 reason code the
session answers with (CONNACK before the connection is established, DISCONNECT
after; a 3.1.1 connection is closed instead). A packet bigger than the decoder's
``max_packet_size`` is refused from its fixed header, before its body is buffered.

:func:`encode` writes any packet for a given version.
"""

from __future__ import annotations

from typing import Final, Literal

from . import reasons
from .decode import (
    DECODERS,
    FIXED_FLAGS,
    FROM_CLIENT,
    FROM_SERVER,
    NAMES,
    decode_connect,
    protocol_level,
    publish_at,
)
from .encode import ENCODERS
from .packets import CONNECT, MQTT_311, PUBLISH, VERSIONS, MalformedPacket, Packet
from .properties import MAX_VARINT

__all__ = ["MAX_PACKET_SIZE", "Decoder", "MalformedPacket", "decode_packet", "encode"]

#: the largest packet MQTT can express: 1 type byte, 4 length bytes, 268 435 455 body bytes
MAX_PACKET_SIZE: Final = 1 + 4 + MAX_VARINT
_NO_TYPES: Final[frozenset[int]] = frozenset()


def _check_first_byte(first: int) -> None:
    """Reserved packet type and reserved fixed-header flags (MQTT 5.0 §2.1.3)."""
    packet_type = first >> 4
    if not packet_type:
        raise MalformedPacket(reasons.MALFORMED_PACKET, "packet type 0 is reserved")
    if packet_type == PUBLISH:
        if first & 0x06 == 0x06:
            raise MalformedPacket(reasons.MALFORMED_PACKET, "PUBLISH with QoS 3", PUBLISH)
    elif first & 0x0F != FIXED_FLAGS[packet_type]:
        raise MalformedPacket(
            reasons.MALFORMED_PACKET, f"{NAMES[packet_type]} has reserved fixed-header flags set", packet_type
        )


def _remaining_length(data: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """The remaining length after the type byte at ``pos - 1``: (length, header size), or None if incomplete."""
    value = 0
    shift = 0
    for size in range(2, 6):
        if pos >= end:
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and size > 2:
                raise MalformedPacket(reasons.MALFORMED_PACKET, "remaining length is not minimally encoded")
            return value, size
        shift += 7
    raise MalformedPacket(reasons.MALFORMED_PACKET, "remaining length longer than 4 bytes")


class Decoder:
    """Decode the byte stream of one MQTT connection.

    ``role="server"`` (the default) decodes what a client sends: the first packet
    must be CONNECT and only client-to-server packet types are accepted after it.
    ``role="client"`` decodes what a server sends, for ``version`` (4 or 5), which
    must then be given. ``max_packet_size`` counts the whole packet (fixed header
    included), as MQTT 5's Maximum Packet Size does.
    """

    __slots__ = ("_allowed", "_buf", "_error", "_first", "_hlen", "_need", "_server", "max_packet_size", "version")

    def __init__(
        self,
        max_packet_size: int,
        *,
        role: Literal["server", "client"] = "server",
        version: int | None = None,
    ) -> None:
        if max_packet_size < 2:
            raise ValueError("max_packet_size must be at least 2")
        self.max_packet_size = min(max_packet_size, MAX_PACKET_SIZE)
        self._server = role == "server"
        if self._server:
            if version is not None:
                raise ValueError("a server-side decoder learns the version from CONNECT")
            self._allowed: frozenset[int] = _NO_TYPES
        else:
            if version not in VERSIONS:
                raise ValueError("a client-side decoder needs version 4 or 5")
            self._allowed = FROM_SERVER[version]
        #: 4 or 5 once the CONNECT's protocol level has been read, else None
        self.version: int | None = version
        self._buf = bytearray()
        self._need = 0  # size of the packet in _buf once its fixed header is complete
        self._hlen = 0
        self._first = 0
        self._error: MalformedPacket | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete packet (never more than ``max_packet_size``)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Take the next piece of the stream; return the packets it completes, in order.

        Raises :class:`MalformedPacket` (whose ``packets`` are the complete packets
        before the bad one); after that every call raises the same error again.
        """
        if self._error is not None:
            error = self._error
            raise MalformedPacket(error.reason_code, error.message, error.packet_type)
        out: list[Packet] = []
        try:
            self._feed(data, out)
        except MalformedPacket as exc:
            exc.packets = out
            self._error = exc
            self._buf = bytearray()
            self._need = 0
            raise
        return out

    def _header(self, data: bytes | bytearray, pos: int, end: int) -> tuple[int, int, int] | None:
        """(type byte, packet size, header size) of the packet at ``pos``, or None if incomplete."""
        first = data[pos]
        packet_type = first >> 4
        if packet_type not in self._allowed:
            _check_first_byte(first)
            if self._server and self.version is None:
                if packet_type != CONNECT:
                    raise MalformedPacket(reasons.PROTOCOL_ERROR, "the first packet must be CONNECT", packet_type)
            elif packet_type == CONNECT:
                raise MalformedPacket(reasons.PROTOCOL_ERROR, "a second CONNECT", CONNECT)
            elif packet_type == 15 and self.version == MQTT_311:
                raise MalformedPacket(reasons.MALFORMED_PACKET, "packet type 15 is reserved in MQTT 3.1.1")
            else:
                side = "a client" if self._server else "a server"
                raise MalformedPacket(
                    reasons.PROTOCOL_ERROR, f"{NAMES[packet_type]} may not be sent by {side}", packet_type
                )
        elif packet_type == PUBLISH:
            if first & 0x06 == 0x06:
                raise MalformedPacket(reasons.MALFORMED_PACKET, "PUBLISH with QoS 3", PUBLISH)
        elif first & 0x0F != FIXED_FLAGS[packet_type]:
            _check_first_byte(first)
        length = _remaining_length(data, pos + 1, end)
        if length is None:
            return None
        size = length[0] + length[1]
        if size > self.max_packet_size:
            raise MalformedPacket(
                reasons.PACKET_TOO_LARGE,
                f"{NAMES[packet_type]} of {size} bytes exceeds the maximum packet size {self.max_packet_size}",
                packet_type,
            )
        return first, size, length[1]

    def _decode(self, first: int, body: bytes) -> Packet:
        packet_type = first >> 4
        if packet_type == CONNECT:
            level = protocol_level(body)
            if level is not None:
                self.version = level
            packet = decode_connect(body, 0, level or MQTT_311, True)
            self._allowed = FROM_CLIENT[packet.protocol_level]
            return packet
        assert self.version is not None
        return DECODERS[packet_type](body, first & 0x0F, self.version, self._server)

    def _feed(self, data: bytes | bytearray | memoryview, out: list[Packet]) -> None:
        if type(data) is not bytes:
            data = bytes(data)
        end = len(data)
        pos = 0
        buf = self._buf
        if buf:
            while not self._need:  # complete the fixed header first: at most 5 bytes
                if pos >= end:
                    return
                buf.append(data[pos])
                pos += 1
                header = self._header(buf, 0, len(buf))
                if header is not None:
                    self._first, self._need, self._hlen = header
            take = min(self._need - len(buf), end - pos)
            buf += data[pos : pos + take]
            pos += take
            if len(buf) < self._need:
                return
            body = bytes(buf[self._hlen :])
            self._buf = bytearray()
            self._need = 0
            out.append(self._decode(self._first, body))
        allowed = self._allowed
        limit = self.max_packet_size
        while pos < end:
            first = data[pos]
            if first >> 4 == PUBLISH and PUBLISH in allowed and pos + 2 < end:
                # the hot path: a PUBLISH with a remaining length of one or two bytes
                size = data[pos + 1]
                if size < 0x80:
                    start = pos + 2
                else:
                    second = data[pos + 2]
                    size = (size & 0x7F) | (second << 7)
                    start = pos + 3
                    if second & 0x80 or not second:
                        size = -1  # longer or not minimal: the general path decides
                stop = start + size
                if size >= 0 and stop <= end and stop - pos <= limit:
                    assert self.version is not None
                    out.append(publish_at(data, start, stop, first & 0x0F, self.version, self._server))
                    pos = stop
                    continue
            header = self._header(data, pos, end)
            if header is None:
                self._buf = bytearray(data[pos:])
                return
            first, size, hlen = header
            if pos + size > end:
                self._buf = bytearray(data[pos:])
                self._first, self._need, self._hlen = header
                return
            out.append(self._decode(first, data[pos + hlen : pos + size]))
            pos += size


def decode_packet(data: bytes | bytearray | memoryview, version: int) -> Packet:
    """Decode exactly one complete packet of any type (either direction) for ``version``."""
    if version not in VERSIONS:
        raise ValueError("version must be 4 or 5")
    data = bytes(data)
    if not data:
        raise MalformedPacket(reasons.MALFORMED_PACKET, "no packet")
    first = data[0]
    _check_first_byte(first)
    packet_type = first >> 4
    if packet_type == 15 and version == MQTT_311:
        raise MalformedPacket(reasons.MALFORMED_PACKET, "packet type 15 is reserved in MQTT 3.1.1")
    length = _remaining_length(data, 1, len(data))
    if length is None or length[0] + length[1] != len(data):
        raise MalformedPacket(reasons.MALFORMED_PACKET, "data is not exactly one packet", packet_type)
    body = data[length[1] :]
    if packet_type == CONNECT:
        return decode_connect(body, 0, version, True)
    return DECODERS[packet_type](body, first & 0x0F, version, False)


def encode(packet: Packet, version: int) -> bytes:
    """The wire bytes of ``packet`` for ``version`` (4 = 3.1.1, 5 = 5.0).

    For 3.1.1, what that version cannot express is left out: properties, reason
    codes of acknowledgements and DISCONNECT, MQTT 5 subscription options. A
    CONNACK reason code >= 0x80 is translated to a 3.1.1 return code
    (:func:`trunkline.mqtt.reasons.connack_v311`), a SUBACK failure to 0x80.
    AUTH has no 3.1.1 form (ValueError). A property that the packet type does not
    allow, or a field out of range, is a ValueError.
    """
    if version not in VERSIONS:
        raise ValueError("version must be 4 or 5")
    return ENCODERS[type(packet)](packet, version)
