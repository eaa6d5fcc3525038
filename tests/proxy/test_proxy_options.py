"""Each proxy option, set by the test itself, changes what the backend sees or what the client gets.

A real backend process records every request (``tests/proxy/backend.py``); centrifuge-python
connects with alice's cookie (her connect answer carries ``meta: {"role": "admin"}``). Per
proxy (connect, refresh, subscribe, publish, sub_refresh, rpc):

- ``http.static_headers``: the header reaches the backend;
- ``include_connection_meta``: the request body has the connection's meta when on, none when off;
- ``http.status_to_code_transforms``: the backend's HTTP 500 becomes the configured error code or
  disconnect code instead of the internal error;

``max_concurrent_requests`` of the refresh proxies: refreshes due together past the bound are
refused at once (counted as overloaded), only that many reach the backend;

and the namespace switches (``subscribe_proxy_enabled``/``_name``, ``publish_proxy_*``,
``sub_refresh_proxy_*``, ``rpc.without_namespace.proxy_*``) route a channel without namespace
to the default or a named proxy of ``proxies``, or to none.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from centrifuge import Client, ReplyError

from tests.conftest import Running, deep_merge, eventually, token
from tests.proxy.conftest import Backend, proxy_config
from tests.sdk.helpers import ClientRecorder, Recorder, new_client, subscribe_ready
from trunkline.config import settings_from_mapping
from trunkline.errors import ConfigError

ALICE = {"Cookie": "sid=alice-sid"}
META = {"role": "admin"}
PATH = {
    "connect": "/connect",
    "refresh": "/refresh",
    "subscribe": "/subscribe",
    "publish": "/publish",
    "sub_refresh": "/sub_refresh",
    "rpc": "/rpc",
}
SECTION = {
    "connect": ("client", "proxy", "connect"),
    "refresh": ("client", "proxy", "refresh"),
    "subscribe": ("channel", "proxy", "subscribe"),
    "publish": ("channel", "proxy", "publish"),
    "sub_refresh": ("channel", "proxy", "sub_refresh"),
    "rpc": ("rpc", "proxy"),
}
Start = Callable[..., Any]


def nested(keys: tuple[str, ...], value: dict[str, Any]) -> dict[str, Any]:
    out = value
    for key in reversed(keys):
        out = {key: out}
    return out


def config(backend: Backend, kind: str, opts: dict[str, Any]) -> dict[str, Any]:
    base = proxy_config(backend.url, connect_ttl=1 if kind == "refresh" else 0)
    return deep_merge(base, nested(SECTION[kind], opts))


async def connected(srv: Running) -> Client:
    events = ClientRecorder()
    client = new_client(srv.ws_url, events, headers=ALICE)
    await client.connect()
    await eventually(lambda: events.connected)
    return client


async def trigger(kind: str, srv: Running, backend: Backend) -> dict[str, Any]:
    """Make the client cause one request of ``kind``; the backend's record of it."""
    before = len(backend.requests(PATH[kind]))
    client = await connected(srv)
    try:
        if kind in ("subscribe", "publish"):
            sub = await subscribe_ready(client.new_subscription("chat:options", Recorder()))
            if kind == "publish":
                await sub.publish({"text": "hi"})
        elif kind == "sub_refresh":
            await subscribe_ready(client.new_subscription("exp:options", Recorder()))
        elif kind == "rpc":
            assert (await client.rpc("sum", {"a": 1, "b": 2})).data == {"sum": 3}
        found = await eventually(lambda: backend.requests(PATH[kind])[before:], timeout=10)
    finally:
        await client.disconnect()
    request: dict[str, Any] = found[-1]
    return request


@pytest.mark.parametrize("kind", list(PATH))
async def test_static_headers_reach_the_backend(start_server: Start, backend: Backend, kind: str) -> None:
    value = f"static-{kind}"
    srv = await start_server(config(backend, kind, {"http": {"static_headers": {"X-Option": value}}}))
    request = await trigger(kind, srv, backend)
    assert request["headers"].get("X-Option") == value


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("kind", ["refresh", "subscribe", "publish", "sub_refresh", "rpc"])
async def test_include_connection_meta(start_server: Start, backend: Backend, kind: str, on: bool) -> None:
    srv = await start_server(config(backend, kind, {"include_connection_meta": on}))
    request = await trigger(kind, srv, backend)
    if on:
        assert request["body"]["meta"] == META
    else:
        assert "meta" not in request["body"]


TO_ERROR = [{"status_code": 500, "to_error": {"code": 1777, "message": "mapped by the transform"}}]
TO_DISCONNECT = [{"status_code": 500, "to_disconnect": {"code": 4777, "reason": "mapped by the transform"}}]


def failing(backend: Backend, kind: str, transforms: list[dict[str, Any]]) -> dict[str, Any]:
    return config(backend, kind, {"endpoint": f"{backend.url}/fail", "http": {"status_to_code_transforms": transforms}})


async def test_status_to_code_transforms_connect_to_disconnect(start_server: Start, backend: Backend) -> None:
    srv = await start_server(failing(backend, "connect", TO_DISCONNECT))
    events = ClientRecorder()
    client = new_client(srv.ws_url, events, headers=ALICE)
    await client.connect()
    await eventually(lambda: events.disconnected)
    assert (events.disconnected[-1].code, events.disconnected[-1].reason) == (4777, "mapped by the transform")
    assert not events.connected
    await client.disconnect()


async def test_status_to_code_transforms_subscribe_to_error(start_server: Start, backend: Backend) -> None:
    srv = await start_server(failing(backend, "subscribe", TO_ERROR))
    client = await connected(srv)
    rec = Recorder()
    await client.new_subscription("chat:options", rec).subscribe()
    await eventually(lambda: rec.unsubscribed)
    assert rec.unsubscribed[0].code == 1777
    assert not rec.subscribed
    await client.disconnect()


@pytest.mark.parametrize("kind", ["publish", "rpc"])
async def test_status_to_code_transforms_reply_error(start_server: Start, backend: Backend, kind: str) -> None:
    srv = await start_server(failing(backend, kind, TO_ERROR))
    client = await connected(srv)
    try:
        with pytest.raises(ReplyError) as refused:
            if kind == "publish":
                sub = await subscribe_ready(client.new_subscription("chat:options", Recorder()))
                await sub.publish({"text": "hi"})
            else:
                await client.rpc("sum", {"a": 1, "b": 2})
        assert (refused.value.code, refused.value.message) == (1777, "mapped by the transform")
    finally:
        await client.disconnect()


async def test_status_without_a_transform_is_an_internal_error(start_server: Start, backend: Backend) -> None:
    # the contrast of the tests above: the same 500 with no transform configured
    srv = await start_server(failing(backend, "rpc", []))
    client = await connected(srv)
    with pytest.raises(ReplyError) as refused:
        await client.rpc("sum", {"a": 1, "b": 2})
    assert refused.value.code == 100
    await client.disconnect()


# ------------------------------------------------------------------ namespace switches and named proxies

NAMED = {"name": "named", "http": {"static_headers": {"X-Named": "yes"}}}


def without_namespace(backend: Backend, channel: dict[str, Any], rpc: dict[str, Any]) -> dict[str, Any]:
    base = proxy_config(backend.url)
    named = [
        {**NAMED, "name": "named-sub", "endpoint": f"{backend.url}/subscribe"},
        {**NAMED, "name": "named-pub", "endpoint": f"{backend.url}/publish"},
        {**NAMED, "name": "named-rpc", "endpoint": f"{backend.url}/rpc"},
    ]
    extra = {
        "proxies": base["proxies"] + named,
        "channel": {"without_namespace": channel},
        "rpc": {"without_namespace": rpc},
    }
    return deep_merge(base, extra)


@pytest.mark.parametrize("name", ["", "named"], ids=["default", "named"])
async def test_without_namespace_proxies_enabled(start_server: Start, backend: Backend, name: str) -> None:
    channel = {
        "subscribe_proxy_enabled": True,
        "subscribe_proxy_name": name and "named-sub",
        "publish_proxy_enabled": True,
        "publish_proxy_name": name and "named-pub",
    }
    rpc = {"proxy_enabled": True, "proxy_name": name and "named-rpc"}
    srv = await start_server(without_namespace(backend, channel, rpc))
    before = {path: len(backend.requests(path)) for path in ("/subscribe", "/publish", "/rpc")}
    client = await connected(srv)
    rec = Recorder()
    sub = await subscribe_ready(client.new_subscription("plain", rec))
    assert rec.subscribed[0].data == {"hello": "plain", "meta": None}  # the backend's answer
    await sub.publish({"text": "hi"})
    await eventually(lambda: rec.publications)
    assert rec.publications[0][1] == {"text": "HI", "by": "alice"}  # rewritten by the backend
    assert (await client.rpc("sum", {"a": 2, "b": 2})).data == {"sum": 4}
    await client.disconnect()
    for path in before:
        sent = backend.requests(path)[before[path] :]
        assert len(sent) == 1, path
        assert (sent[0]["headers"].get("X-Named") == "yes") is bool(name), path  # the named proxy, or the default


async def test_without_namespace_proxies_disabled(start_server: Start, backend: Backend) -> None:
    channel = {"subscribe_proxy_enabled": False, "publish_proxy_enabled": False}
    srv = await start_server(without_namespace(backend, channel, {"proxy_enabled": False}))
    before = {path: len(backend.requests(path)) for path in ("/subscribe", "/publish", "/rpc")}
    client = await connected(srv)
    rec = Recorder()
    sub = await subscribe_ready(client.new_subscription("plain", rec))
    await sub.publish({"text": "hi"})
    await eventually(lambda: rec.publications)
    assert rec.publications[0][1] == {"text": "hi"}  # not rewritten: no backend in the way
    with pytest.raises(ReplyError):
        await client.rpc("sum", {"a": 2, "b": 2})  # no RPC proxy, no handler
    await client.disconnect()
    assert {path: len(backend.requests(path)) for path in before} == before


async def subscribe_raw(
    srv: Running, channel: str, sub_token: str, until: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Connect as alice (cookie), subscribe with a subscription token; the subscribe result.

    The socket stays open until ``until()`` holds (polled with a deadline), if given."""
    frames = [{"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": channel, "token": sub_token}}]
    result: dict[str, Any] | None = None
    async with websockets.connect(srv.ws_url, additional_headers=ALICE) as ws:
        await ws.send("\n".join(json.dumps(f) for f in frames))
        for _ in range(20):
            for line in (await asyncio.wait_for(ws.recv(), 5)).split("\n"):
                reply = json.loads(line)
                if reply.get("id") == 2:
                    assert "subscribe" in reply, reply
                    result = reply["subscribe"]
            if result is not None:
                break
        assert result is not None, "no subscribe reply"
        if until is not None:
            await eventually(until, timeout=10)
    return result


@pytest.mark.parametrize("name", ["", "named"], ids=["default", "named"])
async def test_without_namespace_sub_refresh_proxy(start_server: Start, backend: Backend, name: str) -> None:
    channel = {"sub_refresh_proxy_enabled": True, "sub_refresh_proxy_name": name and "named-subref"}
    config = without_namespace(backend, channel, {})
    config["proxies"].append({**NAMED, "name": "named-subref", "endpoint": f"{backend.url}/sub_refresh"})
    srv = await start_server(config)
    before = len(backend.requests("/sub_refresh"))
    result = await subscribe_raw(
        srv, "plain", token("alice", ttl=2, channel="plain"), until=lambda: backend.requests("/sub_refresh")[before:]
    )
    assert not result.get("expires")  # the server refreshes the subscription: the client is told no expiry
    sent = backend.requests("/sub_refresh")[before:]
    assert sent[0]["body"]["channel"] == "plain" and sent[0]["body"]["user"] == "alice"
    assert (sent[0]["headers"].get("X-Named") == "yes") is bool(name)  # the named proxy, or the default


async def test_without_namespace_sub_refresh_proxy_disabled(start_server: Start, backend: Backend) -> None:
    srv = await start_server(without_namespace(backend, {"sub_refresh_proxy_enabled": False}, {}))
    result = await subscribe_raw(srv, "plain", token("alice", ttl=60, channel="plain"))
    assert result["expires"] is True and 0 < result["ttl"] <= 60  # the client refreshes its token itself


@pytest.mark.parametrize("limit", [1, 2])
@pytest.mark.parametrize("kind", ["refresh", "sub_refresh"])
async def test_refresh_max_concurrent_requests(start_server: Start, backend: Backend, kind: str, limit: int) -> None:
    # the backend's /slow answers after seconds: refreshes due together exceed the bound
    opts = {"endpoint": f"{backend.url}/slow", "timeout": "5s", "max_concurrent_requests": limit}
    srv = await start_server(config(backend, kind, opts))
    before = len(backend.requests("/slow"))
    clients = [await connected(srv) for _ in range(3)]
    try:
        if kind == "sub_refresh":
            for c in clients:
                await subscribe_ready(c.new_subscription("exp:bounded", Recorder()))
        overloaded = srv.server.node.metrics.proxy_requests.labels("default", kind, "overloaded")
        await eventually(lambda: overloaded._value.get() == 3 - limit, timeout=10)
        # only that many reached the backend (the refused ones are retried much later)
        await eventually(lambda: len(backend.requests("/slow")[before:]) == limit, timeout=5)
        assert overloaded._value.get() == 3 - limit
    finally:
        for c in clients:
            await c.disconnect()


async def test_status_to_code_transforms_refresh_to_disconnect(start_server: Start, backend: Backend) -> None:
    # the connect answer expires in 1 s; the server's refresh call gets a 500, which the transform
    # turns into a disconnect: the client is closed with that code (not retried as a plain failure)
    srv = await start_server(failing(backend, "refresh", TO_DISCONNECT))
    events = ClientRecorder()
    client = new_client(srv.ws_url, events, headers=ALICE)
    await client.connect()
    await eventually(lambda: events.connected)
    await eventually(lambda: events.disconnected, timeout=10)
    assert (events.disconnected[-1].code, events.disconnected[-1].reason) == (4777, "mapped by the transform")
    await client.disconnect()


async def test_status_to_code_transforms_sub_refresh_to_disconnect(start_server: Start, backend: Backend) -> None:
    # "exp:" subscriptions expire quickly; the sub refresh call's 500 becomes the disconnect
    srv = await start_server(failing(backend, "sub_refresh", TO_DISCONNECT))
    events = ClientRecorder()
    client = new_client(srv.ws_url, events, headers=ALICE)
    await client.connect()
    await eventually(lambda: events.connected)
    await subscribe_ready(client.new_subscription("exp:options", Recorder()))
    await eventually(lambda: events.disconnected, timeout=10)
    assert (events.disconnected[-1].code, events.disconnected[-1].reason) == (4777, "mapped by the transform")
    await client.disconnect()


def test_connect_include_connection_meta_is_refused() -> None:
    # a connection has no meta before the connect proxy answers: the option cannot mean anything there
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"client": {"proxy": {"connect": {"include_connection_meta": True}}}})
    assert info.value.key == "client.proxy.connect.include_connection_meta"
    assert "refresh, subscribe, publish, sub_refresh or rpc" in info.value.message
