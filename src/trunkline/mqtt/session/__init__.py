"""MQTT client sessions on the node's engine API (layer 5, beside the Centrifugo commands).

:func:`new_mqtt_session` is the factory the MQTT listeners call for each connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core import MqttSession, node_state

if TYPE_CHECKING:
    from ...contracts import Transport
    from ...node import Node

__all__ = ["MqttSession", "new_mqtt_session", "node_state"]


def new_mqtt_session(
    node: Node, transport: Transport, remote: str = "", headers: dict[str, str] | None = None
) -> MqttSession:
    return MqttSession(node, transport, remote, headers)
