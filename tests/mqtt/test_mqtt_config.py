"""The ``mqtt`` config section: defaults, environment, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkline.config import load_settings, settings_from_mapping
from trunkline.errors import ConfigError


def test_defaults_are_off_and_bounded() -> None:
    m = load_settings(env={}).mqtt
    assert (m.websocket.enabled, m.tcp.enabled, m.tls.enabled) == (False, False, False)
    assert m.websocket.path == "/mqtt"
    assert m.tcp.address == "127.0.0.1:1883"
    assert m.allow_anonymous is False
    assert m.max_packet_size == 1048576 and m.receive_maximum == 64 and m.max_inflight == 64
    assert m.topic_mapping.mode == "namespace"


def test_environment_sets_nested_keys() -> None:
    env = {"TRUNKLINE_MQTT_TCP_ENABLED": "true", "TRUNKLINE_MQTT_MAX_KEEPALIVE": "2m"}
    m = load_settings(env=env).mqtt
    assert m.tcp.enabled is True
    assert m.max_keepalive == 120.0


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"websocket": {"path": "mqtt"}}, "mqtt.websocket.path"),
        ({"websocket": {"path": "/connection/websocket"}}, "mqtt.websocket.path"),
        ({"tcp": {"address": "127.0.0.1"}}, "mqtt.tcp.address"),
        ({"tcp": {"address": "127.0.0.1:70000"}}, "mqtt.tcp.address"),
        ({"tls": {"enabled": True}}, "mqtt.tls.enabled"),
        ({"max_packet_size": 3}, "mqtt.max_packet_size"),
        ({"receive_maximum": 0}, "mqtt.receive_maximum"),
        ({"max_inflight": 70000}, "mqtt.max_inflight"),
        ({"max_keepalive": "0s"}, "mqtt.max_keepalive"),
        ({"topic_mapping": {"mode": "flat"}}, "mqtt.topic_mapping.mode"),
        ({"topic_mapping": {"mode": "prefix", "prefix": "nope"}}, "mqtt.topic_mapping.prefix"),
        ({"tcp": {"adress": "x"}}, "mqtt.tcp.adress"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, data: dict[str, object], key: str) -> None:
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mqtt": data}))
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert key in str(info.value)
    assert str(path) in str(info.value)


def test_prefix_mode_with_a_known_namespace() -> None:
    s = settings_from_mapping(
        {
            "channel": {"namespaces": [{"name": "devices"}]},
            "mqtt": {"topic_mapping": {"mode": "prefix", "prefix": "devices"}},
        }
    )
    assert s.mqtt.topic_mapping.prefix == "devices"


@pytest.mark.parametrize(
    ("channel", "key"),
    [
        ({"user_boundary": "::"}, "channel.user_boundary"),
        ({"namespace_boundary": "/"}, "channel.namespace_boundary"),
        ({"namespace_boundary": "#", "user_boundary": "@"}, "channel.namespace_boundary"),
        ({"user_boundary": ":"}, "channel.user_boundary"),
    ],
)
def test_channel_boundaries_the_topic_mapping_cannot_use_are_refused(channel: dict[str, str], key: str) -> None:
    data = {"mqtt": {"websocket": {"enabled": True}}, "channel": channel}
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    assert info.value.key == key
