"""centrifuge-python through every proxy: a real backend process answers, no token anywhere."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from centrifuge import ReplyError

from tests.conftest import Running, eventually, make_settings
from tests.proxy.conftest import Backend, proxy_config
from tests.sdk.helpers import ClientRecorder, Recorder, new_client, subscribe_ready
from trunkline import errors as E
from trunkline.events import ConnectEvent, ConnectReply, PublishEvent, PublishReply
from trunkline.node import Node

ALICE = {"Cookie": "sid=alice-sid", "X-Test": "forwarded", "X-Other": "not forwarded"}
BOB = {"Cookie": "sid=bob-sid"}


@pytest.fixture
async def proxied(start_server: Callable[..., Any], backend: Backend) -> Running:
    running: Running = await start_server(proxy_config(backend.url))
    return running


async def test_connect_by_cookie_without_token(proxied: Running, backend: Backend) -> None:
    events = ClientRecorder()
    client = new_client(proxied.ws_url, events, headers=ALICE, data={"hi": 1})
    await client.connect()
    await eventually(lambda: events.connected)
    assert events.connected[0].data == {"welcome": "alice", "client_data": {"hi": 1}}
    request = backend.requests("/connect")[-1]
    body, headers = request["body"], request["headers"]
    assert body["client"] == events.connected[0].client
    assert (body["transport"], body["protocol"], body["encoding"]) == ("websocket", "json", "json")
    assert body["data"] == {"hi": 1} and body["name"] == "python"
    assert headers["Cookie"] == "sid=alice-sid" and headers["X-Test"] == "forwarded"
    assert "X-Other" not in headers  # only the http_headers allow-list is forwarded
    await client.disconnect()


async def test_connect_refused_by_backend_disconnect(proxied: Running) -> None:
    events = ClientRecorder()
    client = new_client(proxied.ws_url, events)  # no cookie: the backend answers disconnect 4501
    await client.connect()
    await eventually(lambda: events.disconnected)
    assert (events.disconnected[-1].code, events.disconnected[-1].reason) == (4501, "unauthorized")
    await client.disconnect()


async def test_connect_result_channels_and_subs_are_server_side(proxied: Running) -> None:
    events = ClientRecorder()
    client = new_client(proxied.ws_url, events, headers=BOB)
    await client.connect()
    await eventually(lambda: len(events.server_subscribed) == 2)
    by_channel = {ctx.channel: ctx for ctx in events.server_subscribed}
    assert set(by_channel) == {"news:bob", "news:all"}
    assert by_channel["news:all"].data == {"first": True}
    await client.disconnect()


async def test_subscribe_proxy_decides_per_channel(proxied: Running, backend: Backend) -> None:
    client = new_client(proxied.ws_url, headers=BOB)
    await client.connect()
    rec = Recorder()
    sub = await subscribe_ready(client.new_subscription("chat:room", rec))
    assert rec.subscribed[0].data == {"hello": "chat:room", "meta": None}
    sent = backend.requests("/subscribe")[-1]["body"]
    assert (sent["channel"], sent["user"]) == ("chat:room", "bob")
    denied = Recorder()
    await client.new_subscription("chat:secret", denied).subscribe()
    await eventually(lambda: denied.unsubscribed)
    assert denied.unsubscribed[0].code == 403  # the backend's error code reaches the SDK
    await sub.unsubscribe()
    await client.disconnect()


async def test_subscribe_proxy_gets_meta_and_static_headers(proxied: Running, backend: Backend) -> None:
    client = new_client(proxied.ws_url, headers=ALICE)
    await client.connect()
    rec = Recorder()
    await subscribe_ready(client.new_subscription("meta:x", rec))
    assert rec.subscribed[0].data == {"hello": "meta:x", "meta": {"role": "admin"}}
    headers = backend.requests("/subscribe")[-1]["headers"]
    assert headers["X-Static"] == "yes"
    assert "Cookie" not in headers  # this proxy has no http_headers: nothing of the client's is forwarded
    await client.disconnect()


async def test_publish_proxy_rewrites_data(proxied: Running) -> None:
    reader = new_client(proxied.ws_url, headers=ALICE)
    writer = new_client(proxied.ws_url, headers=BOB)
    await reader.connect()
    await writer.connect()
    rec = Recorder()
    await subscribe_ready(reader.new_subscription("chat:pub", rec))
    wsub = await subscribe_ready(writer.new_subscription("chat:pub", Recorder()))
    await wsub.publish({"text": "hello"})
    await eventually(lambda: rec.publications)
    assert rec.publications[0][1] == {"text": "HELLO", "by": "bob"}
    with pytest.raises(ReplyError) as refused:
        await wsub.publish({"text": "bad"})
    assert (refused.value.code, refused.value.message) == (1000, "bad word")
    await asyncio.sleep(0)  # nothing was published for the refused one
    assert len(rec.publications) == 1
    await reader.disconnect()
    await writer.disconnect()


async def test_rpc_proxy_answers(proxied: Running, backend: Backend) -> None:
    client = new_client(proxied.ws_url, headers=ALICE)
    await client.connect()
    assert (await client.rpc("sum", {"a": 2, "b": 3})).data == {"sum": 5}
    assert (await client.rpc("whoami", None)).data == {"user": "alice", "meta": {"role": "admin"}}
    with pytest.raises(ReplyError) as unknown:
        await client.rpc("nope", {})
    assert unknown.value.code == 404
    await client.disconnect()


async def test_refresh_proxy_extends_the_session(start_server: Callable[..., Any], backend: Backend) -> None:
    running: Running = await start_server(proxy_config(backend.url, connect_ttl=1))
    events = ClientRecorder()
    client = new_client(running.ws_url, events, headers=ALICE)
    await client.connect()
    await eventually(lambda: events.connected)
    started = time.time()
    refreshed = await eventually(
        lambda: (
            backend.requests("/refresh")
            and [r for r in backend.requests("/refresh") if r["body"]["client"] == events.connected[0].client]
        ),
        timeout=10,
    )
    body = refreshed[-1]["body"]
    assert body["user"] == "alice" and body["meta"] == {"role": "admin"}
    assert time.time() - started < 5
    # the session lives on past its first expiry (1 s + expired_close_delay would close it otherwise)
    assert (await client.rpc("sum", {"a": 1, "b": 1})).data == {"sum": 2}
    assert not events.disconnected
    await client.disconnect()


async def test_sub_refresh_proxy_extends_the_subscription(proxied: Running, backend: Backend) -> None:
    client = new_client(proxied.ws_url, headers=ALICE)
    await client.connect()
    rec = Recorder()
    await subscribe_ready(client.new_subscription("exp:room", rec))  # the subscribe proxy says expire in 2 s
    found = await eventually(
        lambda: [r for r in backend.requests("/sub_refresh") if r["body"]["channel"] == "exp:room"], timeout=10
    )
    assert found[-1]["body"]["user"] == "alice"
    assert not rec.unsubscribed
    await client.disconnect()


async def test_hooks_run_after_the_proxy(start_server: Callable[..., Any], backend: Backend) -> None:
    """The proxy decides first; the hooks see its result and may change it or refuse."""
    node = Node(make_settings(proxy_config(backend.url)))
    seen: list[Any] = []

    @node.on_connecting
    async def connecting(event: ConnectEvent) -> ConnectReply | None:
        assert event.credentials is not None
        seen.append(event.credentials.user)  # the connect proxy's user
        return None

    @node.on_publish
    async def publish(event: PublishEvent) -> PublishReply | None:
        seen.append(json.loads(event.data))  # the publish proxy's rewritten data
        if json.loads(event.data)["text"] == "VETO":
            raise E.PERMISSION_DENIED()
        return PublishReply(data=json.dumps({**json.loads(event.data), "hooked": True}).encode())

    running: Running = await start_server(node=node)
    client = new_client(running.ws_url, headers=ALICE)
    await client.connect()
    rec = Recorder()
    sub = await subscribe_ready(client.new_subscription("chat:hooks", rec))
    await sub.publish({"text": "hi"})
    await eventually(lambda: rec.publications)
    assert rec.publications[0][1] == {"text": "HI", "by": "alice", "hooked": True}
    with pytest.raises(ReplyError) as vetoed:
        await sub.publish({"text": "veto"})
    assert vetoed.value.code == 103
    assert seen == ["alice", {"text": "HI", "by": "alice"}, {"text": "VETO", "by": "alice"}]
    await client.disconnect()
