"""Retained messages of the MQTT sessions: stored on PUBLISH with retain, sent on SUBSCRIBE.

The store is :mod:`trunkline.mqtt.retained`, chosen by the node's engine: with the
Redis engine a :class:`~trunkline.mqtt.retained.RedisRetained` on the broker's
client and prefix, so every node sharing that Redis sees the same retained
messages; otherwise a :class:`~trunkline.mqtt.retained.MemoryRetained` of this
node. Bounds are ``mqtt.retained.max_messages``, ``max_bytes`` and
``max_payload_size``: a message past a bound is delivered but not retained, and
the refusal is logged (never an eviction of another topic's message). A
SUBSCRIBE gets every retained message whose topic matches its filter (after the
SUBACK, before live publications), with the retain flag set, the subscriber's
QoS, the Message Expiry Interval that is left, and only what the subscriber may
receive (the same checks as live deliveries).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...broker.redis import RedisBroker, RedisUnavailable
from ...broker.redis_sharding import ShardedRedisBroker
from ..codec import encode
from ..packets import MQTT_5, NO_PROPERTIES, Properties, Publish
from ..retained import (
    MemoryRetained,
    RedisRetained,
    RetainedFull,
    RetainedLimits,
    RetainedMessage,
    RetainedStore,
    expiry_deadline,
)
from .retained_map import mirror

if TYPE_CHECKING:
    from .core import MqttSession
    from .subs import MqttSubscription

log = logging.getLogger("trunkline.mqtt")


def store_of(s: MqttSession) -> RetainedStore | None:
    """The node's retained store (made by the first session that needs it); None when retained is off."""
    state = s.state
    node = s.node
    settings = node.settings.mqtt
    if not settings.retained.enabled:
        return None
    if state.retained is None:
        r = settings.retained
        limits = RetainedLimits(r.max_messages, r.max_bytes, r.max_payload_size or settings.max_packet_size)
        broker = node.broker
        if isinstance(broker, ShardedRedisBroker):
            broker = broker.shards[0]  # consistent shards: the retained store lives on the first one
        if isinstance(broker, RedisBroker):
            prefix = node.settings.engine.redis.prefix
            if node.settings.engine.redis.cluster_address:
                prefix = f"{{{prefix}}}"  # Redis Cluster: one hash tag puts the store's keys in one slot
            state.retained = RedisRetained.from_client(broker.client, prefix, limits=limits, clock=node.clock)
        else:
            state.retained = MemoryRetained(limits, clock=node.clock)
    store: RetainedStore = state.retained
    return store


async def store(s: MqttSession, topic: str, payload: bytes, qos: int, props: Properties) -> bool:
    """Retain (or with an empty payload delete) ``topic``'s message; False when a bound or Redis refused."""
    retained = store_of(s)
    if retained is None:
        return False
    now = s.node.clock.time()
    message = RetainedMessage(
        payload,
        qos,
        payload_format=props.payload_format_indicator or 0,
        content_type=props.content_type,
        response_topic=props.response_topic,
        correlation_data=props.correlation_data,
        user_properties=props.user_properties,
        expires_at=expiry_deadline(props.message_expiry_interval, now),
        info=s.client_info(),
        time=int(now * 1000),
    )
    try:
        await retained.set(topic, message)
    except RetainedFull as exc:
        log.warning("retained message of client=%s not kept: %s (mqtt.retained limits)", s.client_id, exc.reason)
        return False
    except RedisUnavailable as exc:
        log.warning("retained message of client=%s not kept: %s", s.client_id, exc)
        return False
    if s.node.settings.mqtt.retained.map_channel_prefix:
        await mirror(s, topic, message)  # a copy in the namespace's map channel
    return True


async def deliver_retained(s: MqttSession, sub: MqttSubscription) -> None:
    """Send ``sub``'s matching retained messages (retain flag set) through the session's push."""
    retained = store_of(s)
    if retained is None:
        return
    try:
        found = await retained.matching(sub.filter)
    except RedisUnavailable as exc:
        log.warning("cannot read retained messages for client=%s: %s", s.client_id, exc)
        return
    now = s.node.clock.time()
    access = s.state.access
    mapping = s.state.mapping
    push = s.push_for(sub.shape)
    for topic, message in found:
        if message.expired(now):
            continue
        try:
            channel = mapping.to_channel(topic)
        except ValueError:
            continue
        if sub.matcher is not None and not access.allowed(channel, s.user):
            continue
        qos = min(sub.qos, message.qos)
        props = NO_PROPERTIES
        if s.version == MQTT_5:
            ids = (sub.shape.subscription_id,) if sub.shape.subscription_id else ()
            props = Properties(
                payload_format_indicator=message.payload_format or None,
                message_expiry_interval=message.remaining_expiry(now),
                content_type=message.content_type,
                response_topic=message.response_topic,
                correlation_data=message.correlation_data,
                user_properties=message.user_properties,
                subscription_identifiers=ids,
            )
        push(encode(Publish(topic, message.payload, qos, True, False, 1 if qos else None, props), s.version))
