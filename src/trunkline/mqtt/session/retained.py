"""Retained messages of the MQTT sessions of a node: stored on PUBLISH with retain, sent on SUBSCRIBE.

The last PUBLISH with the retain flag of each topic is kept (an empty payload
deletes it), bounded by ``mqtt.retained.max_messages``, ``max_bytes`` and
``max_payload_size``: a message past a bound is delivered but not retained, and
the refusal is logged (never an eviction of another topic's message). A SUBSCRIBE
gets every retained message whose topic matches its filter (after the SUBACK,
before live publications), with the retain flag set, the subscriber's QoS and
what the subscriber may receive (the same checks as live deliveries).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..filters import matches
from ..packets import MQTT_5, NO_PROPERTIES, Properties, Publish
from ..shape import meta_of, properties_of

if TYPE_CHECKING:
    from .core import MqttSession
    from .subs import MqttSubscription

log = logging.getLogger("trunkline.mqtt")


@dataclass(frozen=True, slots=True)
class Retained:
    payload: bytes
    qos: int
    properties: Properties
    stored_at: float


class MemoryRetainedStore:
    """Retained messages of one node, by topic, with an index by first topic level."""

    def __init__(self, max_messages: int, max_bytes: int, max_payload: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_payload = max_payload
        self._by_level: dict[str, dict[str, Retained]] = {}
        self.count = 0
        self.size = 0

    def set(self, topic: str, message: Retained | None) -> bool:
        """Store (or with ``None`` delete) the retained message of ``topic``; False if a bound refuses it."""
        level = topic.partition("/")[0]
        bucket = self._by_level.get(level)
        old = bucket.get(topic) if bucket is not None else None
        if message is None:
            if old is not None and bucket is not None:
                del bucket[topic]
                if not bucket:
                    del self._by_level[level]
                self.count -= 1
                self.size -= len(old.payload)
            return True
        grow = len(message.payload) - (len(old.payload) if old is not None else 0)
        if (self.max_payload and len(message.payload) > self.max_payload) or (
            self.max_bytes and self.size + grow > self.max_bytes
        ):
            return False
        if old is None and self.max_messages and self.count >= self.max_messages:
            return False
        self._by_level.setdefault(level, {})[topic] = message
        self.count += old is None
        self.size += grow
        return True

    def matching(self, topic_filter: str) -> list[tuple[str, Retained]]:
        first = topic_filter.partition("/")[0]
        if first in ("+", "#"):
            buckets = list(self._by_level.values())
        else:
            bucket = self._by_level.get(first)
            buckets = [bucket] if bucket is not None else []
        return [(t, m) for b in buckets for t, m in b.items() if matches(topic_filter, t)]


def _store_of(s: MqttSession) -> MemoryRetainedStore | None:
    state = s.state
    settings = s.node.settings.mqtt
    if not settings.retained.enabled:
        return None
    if state.retained is None:
        r = settings.retained
        state.retained = MemoryRetainedStore(
            r.max_messages, r.max_bytes, r.max_payload_size or settings.max_packet_size
        )
    store: MemoryRetainedStore = state.retained
    return store


async def store(s: MqttSession, topic: str, payload: bytes, qos: int, props: Properties) -> bool:
    retained = _store_of(s)
    if retained is None:
        return False
    message = Retained(payload, qos, props, s.node.clock.monotonic()) if payload else None
    if not retained.set(topic, message):
        log.warning("retained message of client=%s not kept: mqtt.retained limits reached", s.client_id)
        return False
    return True


async def deliver_retained(s: MqttSession, sub: MqttSubscription) -> None:
    """Send ``sub``'s matching retained messages (retain flag set) through the session's push."""
    retained = _store_of(s)
    if retained is None:
        return
    now = s.node.clock.monotonic()
    access = s.state.access
    mapping = s.state.mapping
    push = s.push_for(sub.shape)
    from ..codec import encode

    for topic, message in retained.matching(sub.filter):
        expiry = message.properties.message_expiry_interval
        props = message.properties
        if expiry is not None:
            left = int(expiry - (now - message.stored_at))
            if left <= 0:
                retained.set(topic, None)
                continue
            props = dataclasses.replace(props, message_expiry_interval=left)
        try:
            channel = mapping.to_channel(topic)
        except ValueError:
            continue
        if sub.matcher is not None and not access.allowed(channel, s.user):
            continue
        qos = min(sub.qos, message.qos)
        out = (
            properties_of(meta_of(qos, True, props), sub.shape.subscription_id)
            if s.version == MQTT_5
            else NO_PROPERTIES
        )
        push(encode(Publish(topic, message.payload, qos, True, False, 1 if qos else None, out), s.version))
