"""Embedding: an application's async hooks on a Node, driven by the real centrifuge-python SDK."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from centrifuge import ReplyError

from tests.conftest import Running, eventually, make_settings, token
from tests.sdk.helpers import ClientRecorder, Recorder, new_client, subscribe_ready
from trunkline import errors as E
from trunkline.events import (
    ClientView,
    ConnectEvent,
    ConnectReply,
    Credentials,
    DisconnectEvent,
    PublishEvent,
    PublishReply,
    RPCEvent,
    SubscribeEvent,
)
from trunkline.node import Node


async def test_hooks_authenticate_authorize_and_answer_rpc(start_server: Callable[..., object]) -> None:
    node = Node(make_settings())
    seen: list[str] = []

    @node.on_connecting
    async def connecting(event: ConnectEvent) -> ConnectReply | None:
        if event.credentials is None:  # no token: the app decides from the connect data
            if json.loads(event.data or b"null") != {"password": "open sesame"}:
                raise E.Disconnect(4501, "who are you")
            return ConnectReply(credentials=Credentials(user="app-user"))
        return None

    @node.on_connect
    async def connected(client: ClientView) -> None:
        seen.append(f"connect:{client.user}")

    @node.on_subscribe
    async def subscribe(event: SubscribeEvent) -> None:
        if event.channel == "forbidden":
            raise E.PERMISSION_DENIED()

    @node.on_publish
    async def publish(event: PublishEvent) -> PublishReply | None:
        if b"bad" in event.data:
            raise E.ClientError(4000, "no bad words")
        return PublishReply(data=b'{"edited":true}')

    @node.on_rpc
    async def rpc(event: RPCEvent) -> bytes:
        return b'{"echo":' + (event.data or b"null") + b',"method":"' + event.method.encode() + b'"}'

    @node.on_disconnect
    async def disconnected(event: DisconnectEvent) -> None:
        seen.append(f"disconnect:{event.client.user}")

    srv: Running = await start_server(node=node)  # type: ignore[operator]

    refused = ClientRecorder()
    stranger = new_client(srv.ws_url, refused, data={"password": "wrong"})
    await stranger.connect()
    await eventually(lambda: refused.disconnected)
    assert (refused.disconnected[0].code, refused.disconnected[0].reason) == (4501, "who are you")

    client = new_client(srv.ws_url, data={"password": "open sesame"})
    await client.connect()
    await client.ready()
    await eventually(lambda: "connect:app-user" in seen)

    denied = Recorder()
    await client.new_subscription("forbidden", denied).subscribe()
    await eventually(lambda: denied.unsubscribed)
    assert denied.unsubscribed[0].code == 103

    rec = Recorder()
    sub = await subscribe_ready(client.new_subscription("room", rec))
    with pytest.raises(ReplyError) as err:
        await sub.publish({"text": "bad"})
    assert err.value.code == 4000
    await sub.publish({"text": "fine"})
    await eventually(lambda: rec.publications)
    assert rec.publications[0][1] == {"edited": True}

    result = await client.rpc("ping", {"n": 1})
    assert result.data == {"echo": {"n": 1}, "method": "ping"}

    await client.disconnect()
    await eventually(lambda: "disconnect:app-user" in seen)


async def test_rpc_without_hook_is_not_available(server: Running) -> None:
    client = new_client(server.ws_url, token=token("42"))
    await client.connect()
    with pytest.raises(ReplyError) as err:
        await client.rpc("anything", {})
    assert err.value.code == 108
    await client.disconnect()


async def test_node_publish_from_application_code(start_server: Callable[..., object]) -> None:
    node = Node(make_settings())
    srv: Running = await start_server(node=node)  # type: ignore[operator]
    client = new_client(srv.ws_url, token=token("42"))
    rec = Recorder()
    await client.connect()
    await subscribe_ready(client.new_subscription("app", rec))
    position = await node.publish("app", b'{"from":"app"}')
    assert position is not None and position.offset == 1
    await eventually(lambda: rec.publications)
    assert rec.publications == [(1, {"from": "app"})]
    with pytest.raises(E.ClientError) as err:
        await node.publish("nosuchns:x", b"{}")
    assert err.value.code == 102
    await client.disconnect()
