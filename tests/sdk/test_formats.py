"""The same SDK scenarios over both wire formats: JSON and Protobuf (centrifuge-python 0.7.0).

With ``use_protobuf=True`` the SDK asks for the ``centrifuge-protobuf`` subprotocol and
exchanges varint-delimited binary frames; payloads are bytes. JSON and Protobuf clients
share channels: each receives the other's publications, history and recovery included.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cent import AsyncClient, PublishRequest
from centrifuge import Client, ReplyError

from tests.conftest import API_KEY, Running, eventually, make_settings, token
from tests.sdk.helpers import ClientRecorder, Recorder, TcpProxy, new_client, subscribe_ready
from trunkline.events import RPCEvent
from trunkline.node import Node

FORMATS = ["json", "protobuf"]


def client_for(fmt: str, url: str, events: ClientRecorder | None = None, **kwargs: Any) -> Client:
    return new_client(url, events, use_protobuf=fmt == "protobuf", **kwargs)


def enc(fmt: str, obj: Any) -> Any:
    """What the SDK takes as a payload: objects in JSON, bytes in Protobuf."""
    return json.dumps(obj).encode() if fmt == "protobuf" else obj


def dec(data: Any) -> Any:
    return json.loads(data) if isinstance(data, bytes) else data


def codecs(srv: Running) -> set[str]:
    return {conn.codec.name for conn in srv.server.node.hub.connections()}  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_connect_subscribe_publish_presence_history(server: Running, fmt: str) -> None:
    client = client_for(fmt, server.ws_url, token=token("42", info={"name": "ann"}))
    rec = Recorder()
    await client.connect()
    await client.ready()
    assert codecs(server) == {fmt}
    sub = await subscribe_ready(client.new_subscription("room", rec))
    async with AsyncClient(server.api_url, API_KEY) as api:
        await api.publish(PublishRequest(channel="room", data={"from": "api"}))
    await sub.publish(enc(fmt, {"from": "client"}))
    await eventually(lambda: len(rec.publications) == 2)
    assert [dec(d) for _, d in rec.publications] == [{"from": "api"}, {"from": "client"}]
    assert [o for o, _ in rec.publications] == [1, 2]
    presence = await sub.presence()
    (entry,) = presence.clients.values()
    assert entry.user == "42" and dec(entry.conn_info) == {"name": "ann"}
    stats = await sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)
    history = await sub.history(limit=-1)
    assert [dec(p.data) for p in history.publications] == [{"from": "api"}, {"from": "client"}]
    assert history.offset == 2 and history.epoch
    await client.disconnect()


async def test_json_and_protobuf_clients_share_a_channel(server: Running) -> None:
    recs = {fmt: Recorder() for fmt in FORMATS}
    clients = {fmt: client_for(fmt, server.ws_url, token=token(fmt)) for fmt in FORMATS}
    subs = {}
    for fmt, client in clients.items():
        await client.connect()
        subs[fmt] = await subscribe_ready(client.new_subscription("shared", recs[fmt]))
    assert codecs(server) == set(FORMATS)
    await subs["json"].publish({"n": 1})
    await subs["protobuf"].publish(json.dumps({"n": 2}).encode())
    for rec in recs.values():
        await eventually(lambda rec=rec: len(rec.publications) == 2)  # type: ignore[misc]
        assert [dec(d) for _, d in rec.publications] == [{"n": 1}, {"n": 2}]
    pushed = recs["protobuf"].publications
    assert all(isinstance(d, bytes) for _, d in pushed), "Protobuf clients get raw bytes"
    late = client_for("protobuf", server.ws_url, token=token("late"))
    await late.connect()
    await subscribe_ready(late.new_subscription("shared", Recorder()))
    for rec in recs.values():  # join pushes in both formats
        await eventually(lambda rec=rec: any(j.info.user == "late" for j in rec.joins))  # type: ignore[misc]
    await late.disconnect()
    for rec in recs.values():
        await eventually(lambda rec=rec: any(x.info.user == "late" for x in rec.leaves))  # type: ignore[misc]
    for client in clients.values():
        await client.disconnect()


async def test_binary_data_reaches_protobuf_clients_and_closes_json_ones_with_3506(server: Running) -> None:
    events = ClientRecorder()
    json_client = client_for("json", server.ws_url, events, token=token("j"))
    pb_client = client_for("protobuf", server.ws_url, token=token("p"))
    json_rec, pb_rec = Recorder(), Recorder()
    await json_client.connect()
    await pb_client.connect()
    await subscribe_ready(json_client.new_subscription("nohistory:bin", json_rec))
    pb_sub = await subscribe_ready(pb_client.new_subscription("nohistory:bin", pb_rec))
    await pb_sub.publish(b"\x00\xffbinary")
    await eventually(lambda: pb_rec.publications)
    assert pb_rec.publications[0][1] == b"\x00\xffbinary"
    await eventually(lambda: events.disconnected)
    assert events.disconnected[0].code == 3506
    assert json_rec.publications == []
    await pb_client.disconnect()
    await json_client.disconnect()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_recovery_after_a_dropped_link(start_server: Callable[..., Any], fmt: str) -> None:
    srv: Running = await start_server()
    proxy = await TcpProxy(srv.port).start()
    events = ClientRecorder()
    client = client_for(fmt, proxy.ws_url, events, token=token("42"))
    rec = Recorder()
    try:
        await client.connect()
        await subscribe_ready(client.new_subscription("stream", rec))
        async with AsyncClient(srv.api_url, API_KEY) as api:
            for i in range(5):
                await api.publish(PublishRequest(channel="stream", data={"i": i}))
            await eventually(lambda: len(rec.publications) == 5)
            proxy.accepting = False
            proxy.cut()
            await eventually(lambda: events.disconnected or events.connecting)
            for i in range(5, 55):
                await api.publish(PublishRequest(channel="stream", data={"i": i}))
            proxy.accepting = True
            await eventually(lambda: len(rec.publications) >= 55, timeout=15)
        assert [dec(d)["i"] for _, d in rec.publications] == list(range(55))
        assert [o for o, _ in rec.publications] == list(range(1, 56))
        assert rec.subscribed[-1].was_recovering and rec.subscribed[-1].recovered
    finally:
        await client.disconnect()
        await proxy.close()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_rpc_and_errors(start_server: Callable[..., Any], fmt: str) -> None:
    node = Node(make_settings())

    @node.on_rpc
    async def rpc(event: RPCEvent) -> bytes | None:
        return json.dumps({"echo": json.loads(event.data or b"null")}).encode()

    srv: Running = await start_server(node=node)
    client = client_for(fmt, srv.ws_url, token=token("42"))
    await client.connect()
    result = await client.rpc("echo", enc(fmt, {"x": 1}))
    assert dec(result.data) == {"echo": {"x": 1}}
    with pytest.raises(ReplyError) as err:
        await client.publish("unknownns:x", enc(fmt, {"x": 1}))
    assert err.value.code == 102
    await client.disconnect()
