"""The MQTT wire shapes: a neutral publication record as an MQTT PUBLISH packet.

One :class:`MqttShape` per distinct way of encoding (protocol version, granted
QoS, retain-as-published, subscription identifier, no-local owner): the hub
encodes a publication once per shape present on a channel and hands the same
bytes to every subscriber of that shape. The topic comes from the channel through
the :class:`~trunkline.mqtt.topics.TopicMapping`; the payload is the record's data,
unchanged.

QoS 1 and 2 packets are encoded with packet identifier 1 as a placeholder: each
session writes its own identifier into its copy (:func:`packet_id_offset` says
where), so the encoding itself is still shared. QoS 0 bytes go out as they are.

What an MQTT publisher set (QoS, retain flag, MQTT 5 properties) travels with the
record as :class:`MqttMeta` in ``Publication.meta``; a record from elsewhere (a
Centrifugo client, the server API) counts as QoS 1 and has no properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from ..records import Publication, Undeliverable
from .codec import encode
from .packets import MQTT_5, NO_PROPERTIES, Properties, Publish
from .topics import TopicMapping, Unmappable

#: the QoS of a publication that did not come from MQTT (it is kept in history, so at least once)
DEFAULT_QOS = 1
PLACEHOLDER_ID = 1


class MqttMeta(msgspec.Struct, array_like=True, omit_defaults=True, frozen=True):
    """What an MQTT publisher set, as it travels with the record."""

    qos: int = 0
    retain: bool = False
    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(MqttMeta)


def encode_meta(meta: MqttMeta) -> bytes:
    return _meta_encoder.encode(meta)


def decode_meta(data: bytes | None) -> MqttMeta | None:
    """The MQTT metadata of a record, or None (not from MQTT, or unreadable)."""
    if not data:
        return None
    try:
        return _meta_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def meta_of(qos: int, retain: bool, props: Properties) -> MqttMeta:
    return MqttMeta(
        qos=qos,
        retain=retain,
        payload_format_indicator=props.payload_format_indicator,
        message_expiry_interval=props.message_expiry_interval,
        content_type=props.content_type,
        response_topic=props.response_topic,
        correlation_data=props.correlation_data,
        user_properties=props.user_properties,
    )


def properties_of(meta: MqttMeta | None, subscription_id: int | None) -> Properties:
    """The MQTT 5 PUBLISH properties a subscriber gets."""
    ids = (subscription_id,) if subscription_id else ()
    if meta is None:
        return Properties(subscription_identifiers=ids) if ids else NO_PROPERTIES
    return Properties(
        payload_format_indicator=meta.payload_format_indicator,
        message_expiry_interval=meta.message_expiry_interval,
        content_type=meta.content_type,
        response_topic=meta.response_topic,
        correlation_data=meta.correlation_data,
        user_properties=meta.user_properties,
        subscription_identifiers=ids,
    )


class LastEncoded:
    """The encodings of one publication on one channel, by encoding options: the persistent
    sessions' shapes are their own (their trackers differ) but encode alike, so one fan-out
    encodes once per option set, as for shared shapes. Only the last publication is kept."""

    __slots__ = ("channel", "encoded", "pub")

    def __init__(self) -> None:
        self.pub: Publication | None = None
        self.channel = ""
        self.encoded: dict[tuple[object, ...], bytes] = {}


class TopicCache:
    """A bounded cache of channel -> topic (the mapping is pure, so entries never go stale)."""

    __slots__ = ("_mapping", "_topics", "last")
    MAX = 10000

    def __init__(self, mapping: TopicMapping) -> None:
        self._mapping = mapping
        self._topics: dict[str, str | None] = {}
        #: the encodings of the publication being fanned out, by shape options (tracked shapes share them)
        self.last = LastEncoded()

    @property
    def mapping(self) -> TopicMapping:
        return self._mapping

    def topic(self, channel: str) -> str | None:
        """The topic of ``channel``, or None when the channel has none."""
        try:
            return self._topics[channel]
        except KeyError:
            pass
        try:
            topic: str | None = self._mapping.to_topic(channel)
        except (Unmappable, ValueError):
            topic = None
        if len(self._topics) >= self.MAX:
            self._topics.clear()
        self._topics[channel] = topic
        return topic


class Tracker:
    """Where one persistent session stands in each concrete channel it received (identity-hashed).

    Every shape of a persistent session's QoS 1/2 subscriptions carries the
    session's tracker, so such shapes are the session's own: encoding a
    publication for one of them *is* a delivery to that session, and the tracker
    notes the publication's (offset, epoch) for its channel. That is the position
    the session resumes from after a reconnect, for exact filters and for every
    channel a wildcard filter delivered.

    While a channel is *held* (a resumed wildcard subscription reads the
    channel's history), its live publications are kept here instead of being
    encoded (the shape returns ``b""``, which the session does not send); the
    session then delivers history and held publications in offset order, once.
    At most :attr:`limit` channels are remembered (the oldest is forgotten and
    counted in :attr:`evicted`); at most :attr:`hold_limit` publications are held
    per channel (more are counted in :attr:`overflow`).
    """

    __slots__ = ("evicted", "held", "hold_limit", "limit", "overflow", "positions")

    def __init__(self, limit: int = 10000, hold_limit: int = 10000) -> None:
        self.positions: dict[str, tuple[int, str]] = {}
        self.held: dict[str, dict[int, Publication]] = {}
        self.limit = limit
        self.hold_limit = hold_limit
        self.evicted = 0
        self.overflow = 0

    def accept(self, channel: str, pub: Publication) -> bool:
        """Note ``pub`` as delivered on ``channel`` (False: held, do not send it now)."""
        held = self.held.get(channel)
        if held is not None:
            if len(held) < self.hold_limit or pub.offset in held:
                held[pub.offset] = pub
            else:
                self.overflow += 1
            return False
        self.note(channel, pub.offset, pub.epoch)
        return True

    def note(self, channel: str, offset: int, epoch: str) -> None:
        positions = self.positions
        if channel not in positions and len(positions) >= self.limit:
            del positions[next(iter(positions))]
            self.evicted += 1
        positions[channel] = (offset, epoch)


@dataclass(frozen=True, slots=True)
class MqttShape:
    """Encodes publications for MQTT subscribers that share these options."""

    topics: TopicCache = field(compare=True, hash=True)
    version: int
    qos: int = 0  # the QoS granted to the subscription (the maximum it receives)
    retain_as_published: bool = False
    subscription_id: int | None = None
    #: the connection whose own publications this shape leaves out (MQTT 5 no-local): encoded as b""
    no_local: str | None = None
    #: the positions of a persistent session (its shapes are its own); None: not positioned
    tracker: Tracker | None = field(default=None, compare=True, hash=True)

    def publication(self, channel: str, pub: Publication) -> bytes:
        tracker = self.tracker
        if tracker is not None and pub.offset and not tracker.accept(channel, pub):
            return b""
        if self.no_local is not None and pub.info is not None and pub.info.client == self.no_local:
            return b""
        if tracker is None:
            return self._encode(channel, pub)
        last = self.topics.last
        key = (self.version, self.qos, self.retain_as_published, self.subscription_id)
        if last.pub is pub and last.channel == channel:
            data = last.encoded.get(key)
            if data is None:
                data = last.encoded[key] = self._encode(channel, pub)
            return data
        data = self._encode(channel, pub)
        last.pub, last.channel, last.encoded = pub, channel, {key: data}
        return data

    def _encode(self, channel: str, pub: Publication) -> bytes:
        topic = self.topics.topic(channel)
        if topic is None:
            raise Undeliverable("the channel has no MQTT topic")
        meta = decode_meta(pub.meta)
        qos = min(self.qos, meta.qos if meta is not None else DEFAULT_QOS)
        retain = self.retain_as_published and meta is not None and meta.retain
        props = properties_of(meta, self.subscription_id) if self.version == MQTT_5 else NO_PROPERTIES
        return encode(
            Publish(topic, pub.data, qos, retain, False, PLACEHOLDER_ID if qos else None, props), self.version
        )

    def join_leave(self, channel: str, kind: str, info: bytes) -> bytes:
        return b""  # MQTT has no join/leave messages (MQTT sessions never ask for them)


def packet_qos(data: bytes) -> int:
    """The QoS of an encoded PUBLISH."""
    return (data[0] >> 1) & 3


def packet_id_offset(data: bytes) -> int:
    """Where the packet identifier of an encoded QoS 1/2 PUBLISH starts."""
    pos = 1
    while data[pos] & 0x80:
        pos += 1
    pos += 1
    topic_length = (data[pos] << 8) | data[pos + 1]
    return pos + 2 + topic_length


def with_packet_id(data: bytes, packet_id: int, dup: bool = False) -> bytes:
    """A copy of an encoded QoS 1/2 PUBLISH with ``packet_id`` (and the DUP flag)."""
    at = packet_id_offset(data)
    first = data[0] | 0x08 if dup else data[0]
    return bytes((first,)) + data[1:at] + packet_id.to_bytes(2, "big") + data[at + 2 :]


_FIXED = {0x01: 1, 0x02: 4, 0x23: 2}  # PUBLISH properties of a fixed size
_PREFIXED = {0x03: 1, 0x08: 1, 0x09: 1, 0x26: 2}  # length-prefixed strings/binary (a pair: two)
MESSAGE_EXPIRY = 0x02


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("malformed variable byte integer")


def expiry_at(data: bytes) -> tuple[int, int] | None:
    """Where the Message Expiry Interval of an encoded MQTT 5 PUBLISH is, and its value (None: none)."""
    try:
        pos = packet_id_offset(data) + (2 if packet_qos(data) else 0)
        length, pos = _varint(data, pos)
        end = pos + length
        while pos < end:
            ident = data[pos]
            pos += 1
            if ident == MESSAGE_EXPIRY:
                if pos + 4 > min(end, len(data)):
                    return None
                return pos, int.from_bytes(data[pos : pos + 4], "big")
            if ident in _FIXED:
                pos += _FIXED[ident]
            elif ident in _PREFIXED:
                for _ in range(_PREFIXED[ident]):
                    pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
            elif ident == 0x0B:
                _, pos = _varint(data, pos)
            else:
                return None
    except (IndexError, ValueError):
        return None
    return None


def with_expiry(data: bytes, at: int, seconds: int) -> bytes:
    """A copy of an encoded MQTT 5 PUBLISH whose Message Expiry Interval (at ``at``) is ``seconds``."""
    return data[:at] + seconds.to_bytes(4, "big") + data[at + 4 :]
