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

from typing import Literal

from .packets import Packet


class MalformedPacket(Exception):
    """The stream holds a packet that breaks the MQTT spec; the connection ends.

    ``reason_code`` is an MQTT 5 reason code (0x81 malformed packet, 0x82 protocol
    error, 0x84 unsupported protocol version, 0x85 client identifier not valid,
    0x94 topic alias invalid, 0x95 packet too large ...). ``packet_type`` is the
    fixed-header type of the offending packet when it is known. ``packets`` holds
    the complete packets that :meth:`Decoder.feed` decoded before the bad one in
    the same call, so the session can act on them first.
    """

    def __init__(self, reason_code: int, message: str, packet_type: int | None = None) -> None:
        super().__init__(f"{message} (reason code 0x{reason_code:02X})")
        self.reason_code = reason_code
        self.message = message
        self.packet_type = packet_type
        self.packets: list[Packet] = []


class Decoder:
    """Decode the byte stream of one MQTT connection.

    ``role="server"`` (the default) decodes what a client sends: the first packet
    must be CONNECT and only client-to-server packet types are accepted.
    ``role="client"`` decodes what a server sends, for ``version`` (4 or 5), which
    must then be given.
    """

    def __init__(
        self,
        max_packet_size: int,
        *,
        role: Literal["server", "client"] = "server",
        version: int | None = None,
    ) -> None:
        raise NotImplementedError

    #: 4 or 5 once the CONNECT's protocol level has been read, else None
    version: int | None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete packet (never more than ``max_packet_size``)."""
        raise NotImplementedError

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Take the next piece of the stream; return the packets it completes, in order.

        Raises :class:`MalformedPacket`; after that the decoder raises the same
        error on every call.
        """
        raise NotImplementedError


def decode_packet(data: bytes | bytearray | memoryview, version: int) -> Packet:
    """Decode exactly one complete packet of any type (either direction) for ``version``."""
    raise NotImplementedError


def encode(packet: Packet, version: int) -> bytes:
    """The wire bytes of ``packet`` for ``version`` (4 = 3.1.1, 5 = 5.0).

    For 3.1.1, what that version cannot express is left out: properties, reason
    codes of acknowledgements and DISCONNECT, MQTT 5 subscription options. A
    CONNACK reason code >= 0x80 is translated to a 3.1.1 return code
    (:func:`trunkline.mqtt.reasons.connack_v311`), a SUBACK failure to 0x80.
    AUTH has no 3.1.1 form (ValueError). A property that the packet type does not
    allow, or a field out of range, is a ValueError.
    """
    raise NotImplementedError
