"""Typed MQTT control packets, one class per packet type, shared by MQTT 3.1.1 and 5.

The same classes describe both protocol versions; fields that only MQTT 5 has on the
wire (properties, reason codes on acknowledgements, subscription options beyond QoS)
keep their defaults in 3.1.1 packets. :func:`trunkline.mqtt.codec.encode` writes a
packet for a given version and leaves out what that version cannot express.

Reason codes are MQTT 5 codes (:mod:`trunkline.mqtt.reasons`) everywhere except
:attr:`ConnAck.reason_code` of a 3.1.1 packet as decoded, which is the 3.1.1 return
code (0-5); the encoder translates a 5 code for a 3.1.1 CONNACK
(:func:`trunkline.mqtt.reasons.connack_v311`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: protocol levels of the CONNECT packet
MQTT_311 = 4
MQTT_5 = 5
VERSIONS = (MQTT_311, MQTT_5)


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """The MQTT 5 properties of a packet (or of a will); ``None`` / empty means absent.

    Which property may appear in which packet is checked by the decoder; a
    property that the target packet does not allow is an error when encoding.
    """

    payload_format_indicator: int | None = None  # 0 unspecified bytes, 1 UTF-8
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: bool | None = None
    will_delay_interval: int | None = None
    request_response_information: bool | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: bool | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: bool | None = None
    subscription_identifier_available: bool | None = None
    shared_subscription_available: bool | None = None

    def __repr__(self) -> str:
        present = [
            f"{name}={getattr(self, name)!r}"
            for name in self.__dataclass_fields__
            if getattr(self, name) not in (None, ())
        ]
        return f"Properties({', '.join(present)})"


#: the shared "no properties" value (decoded packets without properties carry this one)
NO_PROPERTIES = Properties()


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    protocol_level: int  # 4 = MQTT 3.1.1, 5 = MQTT 5
    client_id: str
    clean_start: bool = True  # "clean session" in 3.1.1
    keepalive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # present exactly when qos > 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRec:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRel:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubComp:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscription:
    filter: str
    qos: int = 0  # the maximum QoS the subscriber accepts
    no_local: bool = False  # MQTT 5 only
    retain_as_published: bool = False  # MQTT 5 only
    retain_handling: int = 0  # MQTT 5 only: 0 send on subscribe, 1 only if new, 2 never


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]  # granted QoS 0-2 or a failure code >= 0x80
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int
    reason_codes: tuple[int, ...] = ()  # MQTT 5 only (a 3.1.1 UNSUBACK has none)
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int = 0  # MQTT 5 only (a 3.1.1 DISCONNECT is empty)
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:  # MQTT 5 only
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)


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


#: fixed-header packet type numbers
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15
