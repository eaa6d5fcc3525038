"""Retained MQTT messages mirrored into map channels (``mqtt.retained.map_channel_prefix``).

With the prefix set (say ``"retained:"``, naming a namespace of ``subscription_type = "map"``),
every retained message of a topic whose channel is in namespace ``N`` is also written into the
map channel ``<prefix>N``: key = the MQTT topic, data = :func:`entry_data`, info = the
publisher's ClientInfo. A retained PUBLISH with an empty payload (MQTT's delete) removes the key.
A map subscription (centrifuge-js ``newMapSubscription``) or the server API ``map_read_state`` of
``retained:sensors`` then reads every retained topic of namespace ``sensors`` as one map: the
whole set first, then a change per retained PUBLISH.

The retained store stays what MQTT subscribers read: the map is a copy written after it, by the
node that received the PUBLISH. What is not mirrored: topics of channels without a namespace,
private (``$``) and user-limited (``#``) channels (a map channel has one set of permissions for
all its keys, which would show them to every subscriber of the map), and a message the retained
store refused (bounds, Redis away). A message's MQTT 5 expiry is not a key's expiry: the map
namespace's ``map.key_ttl`` bounds how long keys stay. A failed map write is logged, not
retried: the two then differ until the topic's next retained PUBLISH.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING

from ...broker.map_base import MapLimitExceeded, MapWrite
from ..retained import RetainedMessage

if TYPE_CHECKING:
    from .core import MqttSession

log = logging.getLogger("trunkline.mqtt")


def entry_data(topic: str, message: RetainedMessage) -> bytes:
    """The map entry of a retained message: a JSON object every client protocol can read.

    ``{"topic", "qos", "time"}`` (time: Unix ms of the PUBLISH) and one of ``"json"`` (the payload
    parsed, when it is JSON), ``"text"`` (UTF-8 that is not JSON) or ``"b64"`` (anything else).
    """
    body: dict[str, object] = {"topic": topic, "qos": message.qos, "time": message.time}
    payload = message.payload
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        body["b64"] = base64.b64encode(payload).decode()
    else:
        try:
            body["json"] = json.loads(text)
        except ValueError:
            body["text"] = text
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def map_channel_of(s: MqttSession, topic: str) -> str | None:
    """The map channel mirroring ``topic``'s retained message, or None when it is not mirrored."""
    prefix = s.node.settings.mqtt.retained.map_channel_prefix
    if not prefix:
        return None
    try:
        channel = s.state.mapping.to_channel(topic)
    except ValueError:
        return None
    rules = s.node.rules
    namespace = rules.namespace_of(channel)
    if not namespace or rules.is_private(channel) or rules.is_user_limited(channel):
        return None
    return prefix + namespace


async def mirror(s: MqttSession, topic: str, message: RetainedMessage) -> None:
    """Write (or, for an empty payload, remove) ``topic``'s key in its map channel; failures are logged."""
    channel = map_channel_of(s, topic)
    if channel is None:
        return
    node = s.node
    try:
        if message.payload:
            await node.map_publish(channel, MapWrite(key=topic, data=entry_data(topic, message), info=message.info))
        else:
            await node.map_remove(channel, topic, info=message.info)
    except MapLimitExceeded:
        log.warning("retained message of topic %r not in map %s: it holds map.max_keys keys", topic, channel)
    except Exception as exc:  # the MQTT publish succeeded; the copy is best effort
        log.warning("retained message of topic %r not in map %s: %s", topic, channel, exc)
