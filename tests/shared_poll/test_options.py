"""Each shared-poll option changes what happens (evidence for tests/test_config_effects.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Running, eventually
from trunkline.config import settings_from_mapping
from trunkline.errors import ConfigError, ConfigErrors

from .conftest import HMAC, Backend
from .test_backend_failures import _metric
from .test_protocol import signed, subscribed, track


def config(backend: Backend, *, refresh: dict[str, Any] | None = None, **block: Any) -> dict[str, Any]:
    """One shared-poll namespace "sp" with ``block`` as its shared_poll options."""
    return {
        "shared_poll": {"hmac_secret_key": HMAC},
        "proxies": [{"name": "sleepy", "endpoint": f"{backend.url}/sleepy"}],
        "channel": {
            "proxy": {"shared_poll_refresh": {"endpoint": f"{backend.url}/refresh", **(refresh or {})}},
            "namespaces": [
                {
                    "name": "sp",
                    "subscription_type": "shared_poll",
                    "allow_subscribe_for_client": True,
                    "shared_poll": {"refresh_interval": "400ms", **block},
                }
            ],
        },
    }


async def _calls_in(server: Running, backend: Backend, channel: str, seconds: float) -> int:
    c = await subscribed(server, channel)
    await c.call("sub_refresh", track(channel, ["k"]))
    await asyncio.sleep(0.1)
    before = backend.calls(channel)
    await asyncio.sleep(seconds)
    await c.close()
    return backend.calls(channel) - before


async def test_refresh_interval_sets_the_cycle(start_server: Callable[..., Any], backend: Backend) -> None:
    fast: Running = await start_server(config(backend, refresh_interval="100ms"))
    slow: Running = await start_server(config(backend, refresh_interval="1s"))
    calls = await asyncio.gather(_calls_in(fast, backend, "sp:fast", 1.05), _calls_in(slow, backend, "sp:slow", 1.05))
    assert calls[0] >= 7 and calls[1] <= 2, calls


async def test_mode_versioned_sends_the_versions_held(start_server: Callable[..., Any], backend: Backend) -> None:
    for mode, expect in (("versioned", [{"key": "k", "version": 4}]), ("versionless", [{"key": "k"}])):
        server: Running = await start_server(config(backend, mode=mode))
        channel = f"sp:{mode}"
        backend.set(channel, "k", {"v": 1}, version=4)
        c = await subscribed(server, channel)
        await c.call("sub_refresh", track(channel, ["k"]))
        await eventually(lambda c=c, channel=channel: c.updates(channel, "k"))
        await eventually(lambda channel=channel, expect=expect: backend.stats()["last"][channel]["items"] == expect)
        # versionless: the node numbers the change itself; versioned: the backend's version
        assert c.updates(channel, "k")[0]["version"] == (4 if mode == "versioned" else 1)
        await c.close()


async def test_track_expired_extra_delay_untracks_unrefreshed_keys(
    start_server: Callable[..., Any], backend: Backend
) -> None:
    states = []
    for delay, kept in (("0s", False), ("25s", True)):
        server: Running = await start_server(config(backend, track_expired_extra_delay=delay))
        channel = f"sp:exp{kept}"
        c = await subscribed(server, channel)
        reply = await c.call("sub_refresh", track(channel, ["k"], signed(channel, ["k"], exp_in=1)))
        assert reply["sub_refresh"]["expires"] is True
        state = server.server.node.shared_poll.channel(channel)
        assert state is not None
        states.append((state, kept, c))
    await asyncio.sleep(2.6)  # the signatures expired over a second ago; the next cycles looked
    for state, kept, c in states:
        assert (state.keys() == ["k"]) is kept
        await c.close()


async def test_proxy_name_and_the_default_refresh_endpoint(start_server: Callable[..., Any], backend: Backend) -> None:
    named: Running = await start_server(config(backend, proxy_name="sleepy"))
    default: Running = await start_server(config(backend, proxy_name="default"))
    for server, path in ((named, "/sleepy"), (default, "/refresh")):
        channel = f"sp:{path.strip('/')}"
        c = await subscribed(server, channel)
        await c.call("sub_refresh", track(channel, ["k"]))
        await eventually(lambda channel=channel, path=path: backend.calls(channel, path) >= 1)
        await c.close()
    with pytest.raises(ConfigError) as missing:  # no endpoint and no proxy name: refused at load
        settings_from_mapping({**config(backend), "channel": {**config(backend)["channel"], "proxy": {}}})
    assert missing.value.key == "channel.namespaces[0].shared_poll.proxy_name"
    with pytest.raises(ConfigError) as unknown:
        settings_from_mapping(config(backend, proxy_name="nope"))
    assert unknown.value.key == "channel.namespaces[0].shared_poll.proxy_name"


async def test_refresh_proxy_timeout(start_server: Callable[..., Any], backend: Backend) -> None:
    # the default refresh proxy pointing at an endpoint that answers after 2 s
    short: Running = await start_server(
        config(backend, refresh={"endpoint": f"{backend.url}/slow", "timeout": "200ms"})
    )
    channel = "sp:timeout"
    c = await subscribed(short, channel)
    await c.call("sub_refresh", track(channel, ["k"]))
    await eventually(lambda: _metric(short, "trunkline_shared_poll_refreshes_total", namespace="sp", result="timeout"))
    await c.close()


async def test_refresh_proxy_static_headers_and_transforms(start_server: Callable[..., Any], backend: Backend) -> None:
    refresh = {"http": {"static_headers": {"X-Static": "yes"}}}
    server: Running = await start_server(config(backend, refresh=refresh))
    channel = "sp:headers"
    c = await subscribed(server, channel)
    await c.call("sub_refresh", track(channel, ["k"]))
    await eventually(lambda: backend.stats()["last"].get(channel, {}).get("headers", {}).get("X-Static") == "yes")
    await c.close()
    # status_to_code_transforms: the 500 of /fail becomes a backend error instead of a status failure
    transforms = [{"status_code": 500, "to_error": {"code": 1000, "message": "down"}}]
    failing = {"endpoint": f"{backend.url}/fail", "http": {"status_to_code_transforms": transforms}}
    server = await start_server(config(backend, refresh=failing))
    c = await subscribed(server, channel)
    await c.call("sub_refresh", track(channel, ["k"]))
    await eventually(lambda: _metric(server, "trunkline_shared_poll_refreshes_total", namespace="sp", result="error"))
    assert await _metric(server, "trunkline_shared_poll_refreshes_total", namespace="sp", result="status") == 0
    await c.close()


async def test_refresh_proxy_max_concurrent_requests(start_server: Callable[..., Any], backend: Backend) -> None:
    # five channels on an endpoint that takes 150 ms, one request allowed in flight: the others overloaded
    refresh = {"endpoint": f"{backend.url}/sleepy", "max_concurrent_requests": 1}
    server: Running = await start_server(config(backend, refresh=refresh))
    clients = []
    for i in range(5):
        c = await subscribed(server, f"sp:c{i}")
        await c.call("sub_refresh", track(f"sp:c{i}", ["k"]))
        clients.append(c)
    await eventually(
        lambda: _metric(server, "trunkline_shared_poll_refreshes_total", namespace="sp", result="overloaded")
    )
    for c in clients:
        await c.close()


def test_connection_options_of_the_refresh_proxy_are_refused(backend: Backend) -> None:
    refused: dict[str, Any] = {"http_headers": ["Cookie"], "include_connection_meta": True, "binary_encoding": True}
    for name, value in refused.items():
        with pytest.raises((ConfigError, ConfigErrors)) as info:
            settings_from_mapping(config(backend, refresh={name: value}))
        assert f"channel.proxy.shared_poll_refresh.{name}" in str(info.value)


async def test_channel_shutdown_delay(start_server: Callable[..., Any], backend: Backend) -> None:
    for delay, gone_within in (("0s", 0.5), ("1500ms", 2.5)):
        server: Running = await start_server(config(backend, channel_shutdown_delay=delay))
        channel = f"sp:shut{delay}"
        c = await subscribed(server, channel)
        await c.call("unsubscribe", {"channel": channel})
        poll = server.server.node.shared_poll
        left = time.monotonic()
        if delay != "0s":
            await asyncio.sleep(0.8)
            assert poll.channel(channel) is not None  # kept for the delay: a quick resubscribe reuses it
        await eventually(lambda poll=poll, channel=channel: poll.channel(channel) is None, timeout=gone_within)
        assert time.monotonic() - left <= gone_within
        await c.close()
