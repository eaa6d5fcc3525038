"""A map namespace's config resolved into the broker's MapOptions and the page limits (hub/map_options)."""

from __future__ import annotations

from typing import Any

import pytest

from trunkline.broker.map_base import MapOptions
from trunkline.config import NamespaceOptions, settings_from_mapping
from trunkline.hub.map_options import map_options, page_limit, stream_limit


def _ns(subscription_type: str = "map", **map_block: Any) -> NamespaceOptions:
    settings = settings_from_mapping(
        {"channel": {"namespaces": [{"name": "m1", "subscription_type": subscription_type, "map": map_block}]}}
    )
    ns = settings.namespace("m1")
    assert ns is not None
    return ns


def test_ephemeral_keeps_no_stream() -> None:
    opts = map_options(_ns(mode="ephemeral", key_ttl="30s"), history_meta_ttl=100.0)
    assert opts == MapOptions(stream_size=0, stream_ttl=0.0, meta_ttl=100.0, key_ttl=30.0, max_keys=100000)
    assert not opts.keeps_stream


@pytest.mark.parametrize("mode", ["durable", "recoverable", "persistent"])
def test_stream_size_and_stream_ttl_are_derived_for_durable_and_persistent(mode: str) -> None:
    extra = {"key_ttl": "10s"} if mode != "persistent" else {}
    opts = map_options(_ns(mode=mode, **extra))
    assert (opts.stream_size, opts.stream_ttl) == (100, 60.0)
    assert opts.keeps_stream


def test_stream_size_stream_ttl_meta_ttl_set() -> None:
    ns = _ns(mode="durable", key_ttl="10s", stream_size=7, stream_ttl="5s", meta_ttl="1h")
    opts = map_options(ns, history_meta_ttl=100.0)
    assert (opts.stream_size, opts.stream_ttl, opts.meta_ttl, opts.key_ttl) == (7, 5.0, 3600.0, 10.0)


def test_key_ttl_defaults_to_60s_for_presence_maps() -> None:
    assert map_options(_ns("map_clients", mode="durable")).key_ttl == 60.0
    assert map_options(_ns("map_users", mode="ephemeral", key_ttl="5s")).key_ttl == 5.0
    assert map_options(_ns(mode="persistent")).key_ttl == 0.0  # a persistent map: keys never expire


def test_max_keys_and_ordered() -> None:
    opts = map_options(_ns(mode="persistent", max_keys=3, ordered=True))
    assert (opts.max_keys, opts.ordered) == (3, True)
    assert map_options(_ns(mode="persistent", max_keys=0)).max_keys == 0  # unlimited
    assert map_options(_ns(mode="persistent")).ordered is False


def test_page_sizes_clamp_the_asked_limit() -> None:
    m = _ns(mode="persistent", default_page_size=20, min_page_size=10, max_page_size=50).map
    assert page_limit(m, 0) == 20
    assert page_limit(m, 3) == 10
    assert page_limit(m, 30) == 30
    assert page_limit(m, 5000) == 50
    defaults = _ns(mode="persistent").map
    assert (page_limit(defaults, 0), page_limit(defaults, 1), page_limit(defaults, 10**6)) == (100, 100, 1000)


def test_live_transition_max_publication_limit() -> None:
    assert stream_limit(_ns(mode="durable", key_ttl="1s", live_transition_max_publication_limit=7).map) == 7
    assert stream_limit(_ns(mode="durable", key_ttl="1s", max_page_size=300).map) == 300


def test_map_write_permissions() -> None:
    """map.allow_publish_for_* / allow_remove_for_* as commands/map_subscribing.can_write decides them."""
    from trunkline.commands.map_subscribing import can_write

    nothing = _ns(mode="persistent").map
    assert not any(can_write(nothing, user, sub, rm, False) for user in ("", "u") for sub in (0, 1) for rm in (0, 1))
    assert can_write(nothing, "", False, True, insecure=True)
    subscriber_removes = _ns(mode="persistent", allow_remove_for_subscriber=True).map
    assert can_write(subscriber_removes, "u", subscribed=True, remove=True, insecure=False)
    assert not can_write(subscriber_removes, "u", subscribed=False, remove=True, insecure=False)
    assert not can_write(subscriber_removes, "u", subscribed=True, remove=False, insecure=False), "removing only"
    assert not can_write(subscriber_removes, "", subscribed=True, remove=True, insecure=False), "not anonymous"
    anonymous = _ns(
        mode="persistent",
        allow_publish_for_client=True,
        allow_remove_for_subscriber=True,
        allow_publish_for_anonymous=True,
        allow_remove_for_anonymous=True,
    ).map
    assert can_write(anonymous, "", subscribed=False, remove=False, insecure=False)
    assert can_write(anonymous, "", subscribed=True, remove=True, insecure=False)
    assert not can_write(anonymous, "", subscribed=False, remove=True, insecure=False)
    no_anonymous_remove = _ns(mode="persistent", allow_remove_for_subscriber=True, allow_publish_for_anonymous=True).map
    assert not can_write(no_anonymous_remove, "", subscribed=True, remove=True, insecure=False)
