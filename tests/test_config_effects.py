"""Every option Trunkline accepts does something: each key of the schema must point to a test.

``trunkline.config.setting_keys()`` lists every settable key. For each one this file
finds the evidence that it has an effect, in this order:

1. ``PROVEN``: the key names a test (``path::function``) that sets the option and asserts
   what changes; the named test must exist and its file must name the option.
2. otherwise a search of the test suite: a test function whose body names the option's
   last segment, in a test module that also names the key's sections (``mqtt``,
   ``retained``…). This is a tripwire, weaker than 1: it finds options that no test
   touches at all, which is how ``allowed_delta_types`` and ``delta_publish`` went
   unnoticed while Trunkline accepted and ignored them.
3. ``GAPS``: keys known to have no such test yet, each with the reason; they are expected
   failures (strict: once a test appears, the entry must go).

``NO_EFFECT`` lists keys that are accepted and do nothing (found while testing them): they
always fail (expected, strict) until Trunkline implements them or stops accepting them.

Any key with none of the three fails with a message that says what to add.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from trunkline.config import setting_keys

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: files that only parse or document options; naming a key there proves no effect
NOT_EVIDENCE = {
    "test_config.py",
    "test_config_compat.py",
    "test_config_map.py",
    "test_docs.py",
    "test_config_effects.py",
}

_OPTIONS = "tests/proxy/test_proxy_options.py"
_PROXY_SECTIONS = (
    ("client", "proxy", "connect"),
    ("client", "proxy", "refresh"),
    ("channel", "proxy", "subscribe"),
    ("channel", "proxy", "publish"),
    ("channel", "proxy", "sub_refresh"),
    ("rpc", "proxy"),
)
PROVEN: dict[str, str] = {
    "engine.redis.cluster_address": (
        "tests/broker/test_redis_cluster.py::test_sdk_subscriber_recovers_after_a_dropped_link_with_two_nodes_on_the_cluster"
    ),
    "engine.redis.sentinel_address": (
        "tests/broker/test_redis_sentinel.py::test_trunkline_follows_the_master_through_a_failover_and_loses_nothing_silently"
    ),
    "engine.redis.sentinel_master_name": (
        "tests/broker/test_redis_sentinel.py::test_trunkline_follows_the_master_through_a_failover_and_loses_nothing_silently"
    ),
    "engine.redis.sentinel_user": (
        "tests/broker/test_redis_sentinel.py::test_sentinel_user_and_sentinel_password_are_what_the_sentinels_check"
    ),
    "engine.redis.sentinel_password": (
        "tests/broker/test_redis_sentinel.py::test_sentinel_user_and_sentinel_password_are_what_the_sentinels_check"
    ),
    "channel.without_namespace.allowed_delta_types": (
        "tests/delta/test_delta_session.py::test_without_allowed_delta_types_no_delta"
    ),
    "channel.without_namespace.delta_publish": (
        "tests/delta/test_delta_session.py::test_without_delta_publish_patches_only_when_the_publish_asks"
    ),
    "client.token.user_id_claim": "tests/auth/test_jwt.py::test_user_id_claim",
    "client.subscription_token.user_id_claim": "tests/auth/test_jwt.py::test_user_id_claim",
    "client.subscription_token.jwks_public_endpoint": "tests/auth/test_jwks.py::test_rotation_end_to_end",
    "uni_websocket.message_size_limit": "tests/security/test_limits.py::test_oversized_message_is_closed_1009",
    "uni_websocket.compression": "tests/security/test_limits.py::test_compressed_bomb_is_closed_1009",
    "rpc.namespace_boundary": "tests/hub/test_channels.py::test_custom_separators",
    "mqtt.tls.cert_pem_file": "tests/test_startup_errors.py::test_missing_tls_certificate",
    "channel.without_namespace.allow_subscribe_for_client": "tests/hub/test_permissions.py::test_can_subscribe",
    "channel.without_namespace.allow_publish_for_client": (
        "tests/hub/test_permissions.py::test_publish_presence_history"
    ),
    "channel.without_namespace.allow_presence_for_subscriber": (
        "tests/security/test_channels.py::test_namespace_allow_options"
    ),
    "channel.without_namespace.allow_history_for_subscriber": (
        "tests/security/test_channels.py::test_namespace_allow_options"
    ),
    "channel.without_namespace.allow_user_limited_channels": (
        "tests/security/test_channels.py::test_user_limited_channel"
    ),
    "channel.without_namespace.channel_regex": "tests/transport/test_poll.py::test_namespace_permissions",
    "channel.position_check_interval": "tests/mqtt/test_persistent_gap.py::test_feed_gap_is_filled_from_history",
    "uni_websocket.enabled": "tests/transport/test_uni.py::test_uni_websocket",
    "http_stream.handler_prefix": (
        "tests/transport/test_handler_prefixes.py::test_http_stream_and_emulation_served_at_their_prefixes"
    ),
    "emulation.handler_prefix": (
        "tests/transport/test_handler_prefixes.py::test_http_stream_and_emulation_served_at_their_prefixes"
    ),
    "uni_websocket.handler_prefix": "tests/transport/test_handler_prefixes.py::test_uni_websocket_served_at_its_prefix",
    "uni_sse.handler_prefix": (
        "tests/transport/test_handler_prefixes.py::test_uni_sse_and_uni_http_stream_served_at_their_prefixes"
    ),
    "uni_http_stream.handler_prefix": (
        "tests/transport/test_handler_prefixes.py::test_uni_sse_and_uni_http_stream_served_at_their_prefixes"
    ),
    "http_api.handler_prefix": "tests/transport/test_handler_prefixes.py::test_http_api_served_at_its_prefix",
    **{
        f"{'.'.join(section)}.http.static_headers": f"{_OPTIONS}::test_static_headers_reach_the_backend"
        for section in _PROXY_SECTIONS
    },
    **{
        f"{'.'.join(section)}.include_connection_meta": f"{_OPTIONS}::test_include_connection_meta"
        for section in _PROXY_SECTIONS
        if section != ("client", "proxy", "connect")
    },
    "client.proxy.connect.http.status_to_code_transforms": (
        "tests/proxy/test_proxy_options.py::test_status_to_code_transforms_connect_to_disconnect"
    ),
    "channel.proxy.subscribe.http.status_to_code_transforms": (
        "tests/proxy/test_proxy_options.py::test_status_to_code_transforms_subscribe_to_error"
    ),
    "channel.proxy.publish.http.status_to_code_transforms": (
        "tests/proxy/test_proxy_options.py::test_status_to_code_transforms_reply_error"
    ),
    "client.proxy.refresh.http.status_to_code_transforms": (
        "tests/proxy/test_proxy_options.py::test_status_to_code_transforms_refresh_to_disconnect"
    ),
    "channel.proxy.sub_refresh.http.status_to_code_transforms": (
        "tests/proxy/test_proxy_options.py::test_status_to_code_transforms_sub_refresh_to_disconnect"
    ),
    "client.proxy.connect.include_connection_meta": (
        "tests/proxy/test_proxy_options.py::test_connect_include_connection_meta_is_refused"
    ),
    "client.subscribe_to_user_personal_channel.single_connection": (
        "tests/test_option_effects_channels.py::test_single_connection_keeps_the_newest"
    ),
    "channel.without_namespace.publication_data_format": (
        "tests/test_option_effects_channels.py::test_publication_data_format"
    ),
    "rpc.proxy.http.status_to_code_transforms": (
        "tests/proxy/test_proxy_options.py::test_status_to_code_transforms_reply_error"
    ),
    "channel.proxy.sub_refresh.endpoint": "tests/proxy/test_proxy_options.py::test_static_headers_reach_the_backend",
    **{
        f"channel.without_namespace.{kind}_proxy_{what}": (
            "tests/proxy/test_proxy_options.py::test_without_namespace_proxies_enabled"
        )
        for kind in ("subscribe", "publish")
        for what in ("enabled", "name")
    },
    **{
        f"channel.without_namespace.sub_refresh_proxy_{what}": (
            "tests/proxy/test_proxy_options.py::test_without_namespace_sub_refresh_proxy"
        )
        for what in ("enabled", "name")
    },
    "rpc.without_namespace.proxy_enabled": "tests/proxy/test_proxy_options.py::test_without_namespace_proxies_enabled",
    "rpc.without_namespace.proxy_name": "tests/proxy/test_proxy_options.py::test_without_namespace_proxies_enabled",
    "proxies": "tests/proxy/test_proxy_options.py::test_without_namespace_proxies_enabled",
    **{
        f"{section}.max_concurrent_requests": f"{_OPTIONS}::test_refresh_max_concurrent_requests"
        for section in ("client.proxy.refresh", "channel.proxy.sub_refresh")
    },
    "client.write_delay": "tests/test_option_effects_frames.py::test_write_delay_joins_pushes_into_one_frame",
    "uni_websocket.join_push_messages": "tests/test_option_effects_frames.py::test_uni_websocket_join_push_messages",
    "http_api.error_mode": "tests/test_option_effects_api.py::test_error_mode_transport_answers_with_the_http_status",
    **{
        f"channel.without_namespace.allow_{kind}_for_{who}": (
            f"tests/test_option_effects_permissions.py::test_allow_for_{who}"
            + ("_not_subscribed" if who == "client" else "")
        )
        for kind in ("publish", "presence", "history")
        for who in ("client", "anonymous")
        if (kind, who) != ("publish", "client")  # proven by tests/hub/test_permissions.py
    },
    "mqtt.max_subscriptions": "tests/test_option_effects_mqtt.py::test_max_subscriptions",
    "mqtt.session_expiry_max": "tests/test_option_effects_mqtt.py::test_session_expiry_max",
    "mqtt.retained.enabled": "tests/test_option_effects_mqtt.py::test_retained_enabled",
    "mqtt.retained.max_messages": "tests/test_option_effects_mqtt.py::test_retained_max_messages",
    "mqtt.retained.map_channel_prefix": (
        "tests/mqtt/test_retained_map.py::test_retained_topics_are_keys_of_the_namespaces_map"
    ),
    "mqtt.max_queued_messages": "tests/test_option_effects_mqtt.py::test_max_queued_messages",
    "client.subscribe_to_user_personal_channel.personal_channel_namespace": (
        "tests/test_option_effects_channels.py::test_personal_channel_namespace"
    ),
    "channel.without_namespace.allow_positioning": "tests/test_option_effects_channels.py::test_allow_positioning",
    "http_server.internal_address": "tests/test_option_effects_listeners.py::test_internal_address",
    **{
        f"{section}.tls.key_pem_file": (
            "tests/test_option_effects_listeners.py::test_tls_key_of_another_certificate_refused"
        )
        for section in ("http_server", "mqtt")
    },
    **{
        f"channel.without_namespace.map.{key}": f"tests/hub/test_map_options.py::{test}"
        for key, test in (
            ("mode", "test_stream_size_and_stream_ttl_are_derived_for_durable_and_persistent"),
            ("default_page_size", "test_page_sizes_clamp_the_asked_limit"),
            ("min_page_size", "test_page_sizes_clamp_the_asked_limit"),
            ("max_page_size", "test_page_sizes_clamp_the_asked_limit"),
            ("live_transition_max_publication_limit", "test_live_transition_max_publication_limit"),
        )
    },
    **{
        f"channel.without_namespace.map.{key}": (
            "tests/broker/test_map_memory.py::test_namespace_map_settings_take_effect_in_the_broker"
        )
        for key in ("key_ttl", "ordered", "max_keys", "stream_size", "stream_ttl", "meta_ttl")
    },
    "channel.without_namespace.subscription_type": (
        "tests/broker/test_map_memory.py::test_subscription_type_decides_which_channels_are_maps"
    ),
    **{
        f"channel.without_namespace.map.{key}": "tests/map/test_map_js.py::test_client_writes_follow_permissions"
        for key in ("allow_publish_for_client", "allow_publish_for_subscriber", "allow_remove_for_client")
    },
    **{
        f"channel.without_namespace.map.{key}": "tests/hub/test_map_options.py::test_map_write_permissions"
        for key in ("allow_publish_for_anonymous", "allow_remove_for_subscriber", "allow_remove_for_anonymous")
    },
    **{
        f"channel.without_namespace.map.{key}": "tests/map/test_map_js.py::test_client_key_and_remove_on_unsubscribe"
        for key in ("client_key", "remove_client_on_unsubscribe")
    },
    "channel.without_namespace.map_clients_presence_channel_prefix": (
        "tests/map/test_presence_keys.py::test_a_client_key_carries_its_info_and_goes_on_leave"
    ),
    "channel.without_namespace.map_users_presence_channel_prefix": (
        "tests/map/test_presence_keys.py::test_a_user_key_lives_while_one_connection_holds_it"
    ),
    **{
        key: "tests/broker/test_map_redis.py::test_make_map_broker_follows_map_broker_type"
        for key in ("map_broker.type", "map_broker.redis.address", "map_broker.redis.prefix")
    },
    **{
        f"map_broker.redis.{key}": (
            "tests/broker/test_map_redis.py::test_the_map_broker_finds_its_master_through_map_broker_redis_sentinels"
        )
        for key in ("sentinel_address", "sentinel_master_name", "sentinel_user", "sentinel_password")
    },
    "map_broker.redis.cluster_address": (
        "tests/broker/test_map_redis.py::test_sharded_addresses_are_refused_and_a_cluster_is_accepted"
    ),
    "map_broker.cleanup_interval": "tests/broker/test_map_memory.py::test_cleanup_interval_drives_the_cleanup",
    "map_broker.cleanup_batch_size": (
        "tests/broker/test_map_memory.py::test_cleanup_removes_at_most_cleanup_batch_size_keys_per_channel_per_run"
    ),
}

GAPS: dict[str, str] = {}

#: keys accepted but (found while writing their tests) without any effect: Trunkline must implement
#: them or stop accepting them; a search hit in the suite does not count for these
NO_EFFECT: dict[str, str] = {}


@functools.cache
def _suite() -> dict[str, tuple[str, dict[str, str]]]:
    """Test module path -> (source, {test function: its source})."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        if path.name in NOT_EVIDENCE:
            continue
        source = path.read_text()
        tree = ast.parse(source)
        functions = {
            node.name: ast.get_source_segment(source, node) or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        }
        out[str(path.relative_to(ROOT))] = (source, functions)
    return out


def _leaf(key: str) -> tuple[str, list[str]]:
    parts = key.split(".")
    return parts[-1], [p for p in parts[:-1] if p not in ("without_namespace", "http")]


def _searched(key: str) -> str | None:
    """The first test whose body names the option, in a module that names its sections."""
    leaf, sections = _leaf(key)
    word = re.compile(rf"\b{re.escape(leaf)}\b")
    for path, (source, functions) in _suite().items():
        if not all(section in source for section in sections):
            continue
        for name, body in functions.items():
            if word.search(body):
                return f"{path}::{name}"
    return None


def _check_named(key: str, ref: str) -> None:
    path, _, name = ref.partition("::")
    suite = _suite()
    assert path in suite, f"{key}: {ref} names a test file that does not exist"
    source, functions = suite[path]
    assert name in functions, f"{key}: {ref} names a test that does not exist"
    leaf, _ = _leaf(key)
    assert leaf in source, f"{key}: {path} never names {leaf!r}, so {name} cannot be what sets it"


def _cases() -> list[object]:
    cases: list[object] = []
    for key in setting_keys():
        if key in NO_EFFECT:
            cases.append(pytest.param(key, marks=pytest.mark.xfail(strict=True, reason=NO_EFFECT[key]), id=key))
        elif key in GAPS:
            cases.append(pytest.param(key, marks=pytest.mark.xfail(strict=True, reason=GAPS[key]), id=key))
        else:
            cases.append(pytest.param(key, id=key))
    return cases


@pytest.mark.parametrize("key", _cases())
def test_every_accepted_option_has_a_test_of_its_effect(key: str) -> None:
    if key in NO_EFFECT:
        pytest.fail(f"{key} is accepted and does nothing: {NO_EFFECT[key]}")
    if key in PROVEN:
        _check_named(key, PROVEN[key])
        return
    found = _searched(key)
    assert found is not None, (
        f"{key} is accepted by the config but no test shows what it does: add a test that sets it and"
        f" asserts the difference, name it in PROVEN in {Path(__file__).name}, or stop accepting the key"
    )


def test_the_registries_name_only_real_keys() -> None:
    keys = set(setting_keys())
    assert set(PROVEN) <= keys, set(PROVEN) - keys
    assert set(GAPS) <= keys, set(GAPS) - keys
    assert set(NO_EFFECT) <= keys, set(NO_EFFECT) - keys
    assert not set(PROVEN) & set(GAPS)
    assert not (set(PROVEN) | set(GAPS)) & set(NO_EFFECT)


def test_a_made_up_option_would_be_caught() -> None:
    # the search is not vacuous: an option that no test names is not found
    assert _searched("channel.without_namespace.frobnicate_publications") is None
    assert _searched("client.queue_max_size") is not None
