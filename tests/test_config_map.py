"""Map subscription settings: subscription_type, the map block, presence prefixes and map_broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trunkline.config import load_settings, settings_from_mapping
from trunkline.errors import ConfigError


def _ns(**options: Any) -> dict[str, Any]:
    return {"channel": {"namespaces": [{"name": "m1", **options}]}}


def _error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    return info.value


def test_a_map_namespace_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[map_broker]\ntype = "memory"\ncleanup_interval = "250ms"\n'
        '[[channel.namespaces]]\nname = "cursors"\nsubscription_type = "map"\n'
        'map_clients_presence_channel_prefix = "clients:"\n'
        '[channel.namespaces.map]\nmode = "recoverable"\nkey_ttl = "30s"\nclient_key = "client_id"\n'
        '[[channel.namespaces]]\nname = "clients"\nsubscription_type = "map_clients"\n'
        '[channel.namespaces.map]\nmode = "durable"\n'
    )
    s = load_settings(str(path), env={})
    cursors = s.namespace("cursors")
    assert cursors is not None and cursors.is_map
    assert (cursors.map.mode, cursors.map.key_ttl, cursors.map.client_key) == ("durable", 30.0, "client_id")
    assert cursors.map_clients_presence_channel_prefix == "clients:"
    assert s.map_broker.cleanup_interval == 0.25
    assert s.map_broker_redis == s.engine.redis  # no map_broker.redis.address: engine.redis


def test_environment_sets_map_keys() -> None:
    env = {
        "TRUNKLINE_CHANNEL_WITHOUT_NAMESPACE_SUBSCRIPTION_TYPE": "map",
        "TRUNKLINE_CHANNEL_WITHOUT_NAMESPACE_MAP_MODE": "persistent",
        "TRUNKLINE_CHANNEL_WITHOUT_NAMESPACE_MAP_MAX_KEYS": "5",
        "TRUNKLINE_MAP_BROKER_TYPE": "redis",
        "TRUNKLINE_MAP_BROKER_REDIS_ADDRESS": "redis://u:pw@127.0.0.1:6390/1",
    }
    s = load_settings(None, env=env)
    assert s.channel.without_namespace.map.max_keys == 5
    assert s.map_broker_redis.address == "redis://u:pw@127.0.0.1:6390/1"
    assert s.masked_dict()["map_broker"]["redis"]["address"] == "redis://u:***@127.0.0.1:6390/1"


def test_map_broker_redis_names_its_own_server_by_address_cluster_or_sentinels() -> None:
    engine = {"engine": {"redis": {"address": "redis://127.0.0.1:6390"}}}
    s = settings_from_mapping(engine)
    assert s.map_broker_redis is s.engine.redis
    own = settings_from_mapping({**engine, "map_broker": {"redis": {"cluster_address": ["127.0.0.1:7000"]}}})
    assert own.map_broker_redis is own.map_broker.redis
    sentinel = {"sentinel_address": ["127.0.0.1:26379"], "sentinel_master_name": "m", "sentinel_password": "pw"}
    own = settings_from_mapping({**engine, "map_broker": {"redis": sentinel}})
    assert own.map_broker_redis.sentinel_master_name == "m"
    assert own.masked_dict()["map_broker"]["redis"]["sentinel_password"] == "***"


def test_stream_namespaces_are_the_default() -> None:
    ns = settings_from_mapping({}).channel.without_namespace
    assert ns.subscription_type == "stream" and not ns.is_map


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (_ns(subscription_type="map"), "channel.namespaces[0].map.mode", "required"),
        (_ns(subscription_type="map_users"), "channel.namespaces[0].map.mode", "required"),
        (_ns(subscription_type="map", map={"mode": "forever"}), "channel.namespaces[0].map.mode", "must be one of"),
        (_ns(subscription_type="map", map={"mode": "ephemeral"}), "channel.namespaces[0].map.key_ttl", "required"),
        (_ns(subscription_type="map", map={"mode": "durable"}), "channel.namespaces[0].map.key_ttl", "required"),
        (
            _ns(subscription_type="map", history_size=10, history_ttl="1m", map={"mode": "persistent"}),
            "channel.namespaces[0].history_size",
            "keeps no history",
        ),
        (
            _ns(subscription_type="map", map={"mode": "ephemeral", "key_ttl": "1s", "stream_size": 5}),
            "channel.namespaces[0].map.stream_size",
            "no stream",
        ),
        (
            _ns(subscription_type="map", map={"mode": "persistent", "default_page_size": 5000}),
            "channel.namespaces[0].map.default_page_size",
            "between",
        ),
        (
            _ns(subscription_type="map", map={"mode": "persistent", "min_page_size": 0}),
            "channel.namespaces[0].map.min_page_size",
            "at least 1",
        ),
        (
            _ns(subscription_type="map", map={"mode": "persistent", "client_key": "session"}),
            "channel.namespaces[0].map.client_key",
            "must be one of",
        ),
        (
            _ns(subscription_type="map", delta_publish=True, map={"mode": "persistent"}),
            "channel.namespaces[0].delta_publish",
            "not supported",
        ),
        (_ns(map={"mode": "persistent"}), "channel.namespaces[0].map.mode", "needs subscription_type"),
        (_ns(map={"max_keys": 5}), "channel.namespaces[0].map", "needs subscription_type"),
        (_ns(subscription_type="mapp"), "channel.namespaces[0].subscription_type", "must be one of"),
        (
            _ns(map_clients_presence_channel_prefix="nowhere:"),
            "channel.namespaces[0].map_clients_presence_channel_prefix",
            "does not exist",
        ),
        (
            {
                "channel": {
                    "namespaces": [
                        {"name": "m1", "map_users_presence_channel_prefix": "m2:"},
                        {"name": "m2", "subscription_type": "map_clients", "map": {"mode": "ephemeral"}},
                    ]
                }
            },
            "channel.namespaces[0].map_users_presence_channel_prefix",
            "must be 'map_users'",
        ),
        ({"map_broker": {"type": "postgres"}}, "map_broker.type", "PostgreSQL"),
        ({"map_broker": {"type": "etcd"}}, "map_broker.type", "must be one of"),
        ({"map_broker": {"redis": {"address": "http://x"}}}, "map_broker.redis.address", "redis://"),
        ({"map_broker": {"cleanup_interval": "0s"}}, "map_broker.cleanup_interval", "above 0"),
        ({"map_broker": {"cleanup_batch_size": 0}}, "map_broker.cleanup_batch_size", "at least 1"),
    ],
)
def test_bad_map_settings_name_the_key(data: dict[str, Any], key: str, words: str) -> None:
    error = _error(data)
    assert error.key == key, error
    assert words in error.message, error.message


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"map": {"mode": "persistent", "publish_proxy_enabled": True}}, "map.publish_proxy_enabled"),
        ({"map": {"mode": "persistent", "external_state": True}}, "map.external_state"),
    ],
)
def test_centrifugo_map_options_trunkline_lacks_are_named(block: dict[str, Any], key: str) -> None:
    error = _error(_ns(subscription_type="map", **block))
    assert error.key == f"channel.namespaces[0].{key}"
    assert error.message.startswith("not supported by Trunkline (")


def test_postgres_map_broker_section_is_named() -> None:
    error = _error({"map_broker": {"postgres": {"dsn": "postgres://x"}}})
    assert error.key == "map_broker.postgres" and "PostgreSQL" in error.message
