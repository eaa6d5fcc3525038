"""The Message Expiry Interval finder of encoded PUBLISH packets (trunkline.mqtt.shape.expiry_at), by hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.mqtt.codec import Decoder, encode
from trunkline.mqtt.packets import MQTT_5, MQTT_311, Properties, Publish
from trunkline.mqtt.shape import expiry_at, packet_id_offset, with_expiry, with_packet_id

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=30)
properties = st.builds(
    Properties,
    payload_format_indicator=st.none() | st.sampled_from([0, 1]),
    message_expiry_interval=st.none() | st.integers(0, 2**32 - 1),
    content_type=st.none() | text,
    response_topic=st.none() | topics,
    correlation_data=st.none() | st.binary(max_size=20),
    user_properties=st.lists(st.tuples(text, text), max_size=3).map(tuple),
    subscription_identifiers=st.lists(st.integers(1, 2**28 - 1), max_size=2).map(tuple),
    topic_alias=st.none() | st.integers(1, 65535),
)


@settings(max_examples=300, deadline=None)
@given(topic=topics, payload=st.binary(max_size=50), qos=st.sampled_from([0, 1, 2]), props=properties)
def test_expiry_is_found_and_patched(topic: str, payload: bytes, qos: int, props: Properties) -> None:
    packet = Publish(topic, payload, qos, False, False, 7 if qos else None, props)
    data = encode(packet, MQTT_5)
    found = expiry_at(data)
    if props.message_expiry_interval is None:
        assert found is None
        return
    assert found is not None
    at, interval = found
    assert interval == props.message_expiry_interval
    full = with_expiry(data, at, 42)
    if qos:
        full = with_packet_id(full, 9, dup=True)
    decoded = _decode(full)
    assert decoded.properties.message_expiry_interval == 42
    assert (decoded.topic, decoded.payload, decoded.qos, decoded.packet_id) == (topic, payload, qos, 9 if qos else None)
    assert decoded.properties.content_type == props.content_type
    assert decoded.properties.user_properties == props.user_properties
    assert decoded.properties.subscription_identifiers == props.subscription_identifiers


def _decode(data: bytes) -> Publish:
    packets = Decoder(1 << 20, role="client", version=MQTT_5).feed(data)
    assert len(packets) == 1 and isinstance(packets[0], Publish)
    return packets[0]


@settings(max_examples=100, deadline=None)
@given(topic=topics, payload=st.binary(max_size=50), qos=st.sampled_from([0, 1]))
def test_mqtt311_packets_have_no_expiry(topic: str, payload: bytes, qos: int) -> None:
    data = encode(Publish(topic, payload, qos, False, False, 3 if qos else None), MQTT_311)
    assert packet_id_offset(data) > 2
    # 3.1.1 has no properties: the caller only asks for MQTT 5 packets; on 3.1.1 bytes it must not crash
    expiry_at(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=64))
def test_garbage_never_raises(data: bytes) -> None:
    found = expiry_at(bytes([0x32]) + data)
    if found is not None:
        at, _ = found
        assert at > 0 and at + 4 <= len(data) + 1
